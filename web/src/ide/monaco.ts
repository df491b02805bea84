// Monaco, trimmed to what a session editor uses: the core editor and its common contributions
// (find, folding, multi-cursor, comments, word-based suggestions…) and the tokenizers of every
// basic language. No language servers: their workers weigh megabytes and need a project model.

import 'monaco-editor/editor/browser/coreCommands.js';
import 'monaco-editor/editor/browser/widget/codeEditor/codeEditorWidget.js';
import 'monaco-editor/editor/browser/widget/diffEditor/diffEditor.contribution.js';
import 'monaco-editor/editor/contrib/bracketMatching/browser/bracketMatching.js';
import 'monaco-editor/editor/contrib/caretOperations/browser/caretOperations.js';
import 'monaco-editor/editor/contrib/clipboard/browser/clipboard.js';
import 'monaco-editor/editor/contrib/comment/browser/comment.js';
import 'monaco-editor/editor/contrib/contextmenu/browser/contextmenu.js';
import 'monaco-editor/editor/contrib/cursorUndo/browser/cursorUndo.js';
import 'monaco-editor/editor/contrib/find/browser/findController.js';
import 'monaco-editor/editor/contrib/folding/browser/folding.js';
import 'monaco-editor/editor/contrib/fontZoom/browser/fontZoom.js';
import 'monaco-editor/editor/contrib/hover/browser/hoverContribution.js';
import 'monaco-editor/editor/contrib/indentation/browser/indentation.js';
import 'monaco-editor/editor/contrib/linesOperations/browser/linesOperations.js';
import 'monaco-editor/editor/contrib/links/browser/links.js';
import 'monaco-editor/editor/contrib/multicursor/browser/multicursor.js';
import 'monaco-editor/editor/contrib/smartSelect/browser/smartSelect.js';
import 'monaco-editor/editor/contrib/suggest/browser/suggestController.js';
import 'monaco-editor/editor/contrib/tokenization/browser/tokenization.js';
import 'monaco-editor/editor/contrib/wordHighlighter/browser/wordHighlighter.js';
import 'monaco-editor/editor/contrib/wordOperations/browser/wordOperations.js';
import 'monaco-editor/editor/contrib/readOnlyMessage/browser/contribution.js';
import 'monaco-editor/editor/standalone/browser/quickAccess/standaloneGotoLineQuickAccess.js';
import 'monaco-editor/editor/standalone/browser/quickAccess/standaloneCommandsQuickAccess.js';
import 'monaco-editor/basic-languages/monaco.contribution.js';
import * as monaco from 'monaco-editor/editor/editor.api.js';
import EditorWorker from 'monaco-editor/editor/editor.worker.js?worker';

self.MonacoEnvironment = { getWorker: () => new EditorWorker() };

monaco.editor.defineTheme('mayfly-dark', {
  base: 'vs-dark',
  inherit: true,
  rules: [],
  colors: {
    'editor.background': '#1f1f1f',
    'editor.lineHighlightBackground': '#ffffff0a',
    'editorLineNumber.foreground': '#6e7681',
    'editorLineNumber.activeForeground': '#cccccc',
    'editorGutter.background': '#1f1f1f',
    'editorWidget.background': '#252526',
    'editorWidget.border': '#454545',
    'editorIndentGuide.background1': '#404040',
    'scrollbarSlider.background': '#79797966',
  },
});

/** The Monaco language id for a file name (by extension, file name or first line). */
export function languageFor(path: string, firstLine = ''): string {
  const name = path.split('/').pop() ?? path;
  const lower = name.toLowerCase();
  for (const lang of monaco.languages.getLanguages()) {
    if (lang.filenames?.some((f) => f.toLowerCase() === lower)) return lang.id;
  }
  let best: [string, number] = ['plaintext', 0];
  for (const lang of monaco.languages.getLanguages()) {
    for (const ext of lang.extensions ?? []) {
      if (lower.endsWith(ext.toLowerCase()) && ext.length > best[1]) best = [lang.id, ext.length];
    }
  }
  if (best[1]) return best[0];
  if (firstLine.startsWith('#!')) {
    if (/\b(ba|z|da)?sh\b/.test(firstLine)) return 'shell';
    if (/python/.test(firstLine)) return 'python';
    if (/node/.test(firstLine)) return 'javascript';
  }
  if (['makefile', 'dockerfile'].includes(lower)) return lower;
  return 'plaintext';
}

/** The human name of a language id (`Python`). */
export function languageName(id: string): string {
  const l = monaco.languages.getLanguages().find((x) => x.id === id);
  return l?.aliases?.[0] ?? (id === 'plaintext' ? 'Plain Text' : id);
}

export { monaco };
