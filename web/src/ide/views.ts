// The editor area's non-editor views: the welcome page, the binary-file page, the preview pane
// and the notice bar above the editor.

import { h, icon, keys, logo } from '../lib/dom';
import { bytes } from '../lib/time';

export interface NoticeAction {
  label: string;
  run: () => void;
  primary?: boolean;
}

export interface Notice {
  kind: 'info' | 'warning' | 'error';
  text: string;
  actions?: NoticeAction[];
}

export function noticeBar(n: Notice): HTMLElement {
  const names = { info: 'info', warning: 'warning', error: 'error' };
  return h(
    'div',
    { class: `notice ${n.kind}`, role: n.kind === 'info' ? 'status' : 'alert' },
    icon(names[n.kind]),
    h('span', { class: 'text' }, n.text),
    (n.actions ?? []).map((a) => h('button', { class: `btn ${a.primary ? '' : 'secondary'}`, on: { click: a.run } }, a.label)),
  );
}

export function welcome(): HTMLElement {
  const row = (label: string, combo: string) => h('div', { class: 'shortcut' }, h('span', null, label), h('kbd', null, keys(combo)));
  return h(
    'div',
    { class: 'welcome' },
    h('div', { class: 'welcome-mark' }, logo(72)),
    h('div', { class: 'shortcuts' },
      row('Save', 'Ctrl+S'),
      row('Toggle Terminal', 'Ctrl+`'),
      row('New Terminal', 'Ctrl+Shift+`'),
      row('Toggle Side Bar', 'Ctrl+B'),
      row('Focus Explorer', 'Ctrl+Shift+E'),
      row('Source Control', 'Ctrl+Shift+G'),
      row('Close Editor', 'Alt+W'),
    ),
  );
}

export function binaryView(name: string, size: number): HTMLElement {
  return h(
    'div',
    { class: 'placeholder-view' },
    icon('file-binary', 'big'),
    h('h3', null, name),
    h('p', null, `This file is not displayed in the editor because it is binary or uses an unsupported text encoding (${bytes(size)}).`),
  );
}

export function previewView(port: number, url: string): HTMLElement {
  const frame = h('iframe', { class: 'preview-frame', src: url, title: `Preview of port ${port}`, referrerpolicy: 'no-referrer' });
  const address = h('input', { class: 'input preview-url', value: url, readonly: true, 'aria-label': 'Preview URL' });
  return h(
    'div',
    { class: 'preview' },
    h(
      'div',
      { class: 'preview-bar' },
      h('button', { class: 'icon-btn', title: 'Reload', on: { click: () => (frame.src = url) } }, icon('refresh')),
      address,
      h('a', { class: 'icon-btn', href: url, target: '_blank', rel: 'noopener', title: 'Open in a new tab' }, icon('link-external')),
    ),
    frame,
  );
}
