// File-type icons for the tree and tabs: a codicon and a colour per extension, Seti-style.

const byExt: Record<string, [string, string]> = {
  ts: ['file-code', '#519aba'], tsx: ['file-code', '#519aba'], js: ['file-code', '#cbcb41'], mjs: ['file-code', '#cbcb41'],
  jsx: ['file-code', '#cbcb41'], py: ['file-code', '#4b8bbe'], rs: ['file-code', '#dea584'], go: ['file-code', '#519aba'],
  c: ['file-code', '#599eff'], h: ['file-code', '#a074c4'], cpp: ['file-code', '#f34b7d'], java: ['file-code', '#cc3e44'],
  rb: ['file-code', '#cc3e44'], php: ['file-code', '#a074c4'], sh: ['terminal', '#89e051'], bash: ['terminal', '#89e051'],
  html: ['file-code', '#e37933'], css: ['file-code', '#519aba'], scss: ['file-code', '#f55385'], vue: ['file-code', '#8dc149'],
  json: ['json', '#cbcb41'], toml: ['settings', '#9c4221'], yaml: ['settings', '#a074c4'], yml: ['settings', '#a074c4'],
  md: ['markdown', '#519aba'], txt: ['file', '#9d9d9d'], log: ['output', '#9d9d9d'], lock: ['lock', '#8dc149'],
  png: ['file-media', '#a074c4'], jpg: ['file-media', '#a074c4'], jpeg: ['file-media', '#a074c4'], gif: ['file-media', '#a074c4'],
  svg: ['file-media', '#e37933'], ico: ['file-media', '#cbcb41'], zip: ['file-zip', '#cc3e44'], gz: ['file-zip', '#cc3e44'],
  tar: ['file-zip', '#cc3e44'], pdf: ['file-pdf', '#cc3e44'], sql: ['database', '#f55385'], xml: ['file-code', '#e37933'],
};

const byName: Record<string, [string, string]> = {
  dockerfile: ['file-code', '#519aba'], makefile: ['tools', '#e37933'], '.gitignore': ['git-commit', '#41535b'],
  '.bashrc': ['terminal', '#89e051'], '.profile': ['terminal', '#89e051'], 'package.json': ['json', '#8dc149'],
  'cargo.toml': ['package', '#dea584'], license: ['law', '#cbcb41'], 'readme.md': ['book', '#519aba'],
};

export function fileIcon(name: string, type: string, open = false): [string, string] {
  if (type === 'dir') return [open ? 'folder-opened' : 'folder', '#c09553'];
  if (type === 'symlink') return ['file-symlink-file', '#9d9d9d'];
  const lower = name.toLowerCase();
  if (byName[lower]) return byName[lower];
  const ext = lower.includes('.') ? lower.split('.').pop()! : '';
  return byExt[ext] ?? ['file', '#9d9d9d'];
}
