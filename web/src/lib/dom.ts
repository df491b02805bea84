// A tiny element builder: enough structure for a hand-made UI without a framework.

export type Child = Node | string | number | null | undefined | false | Child[];
type Handler = (ev: any) => void;
export type Props = {
  class?: string;
  style?: Partial<CSSStyleDeclaration> | string;
  on?: Record<string, Handler>;
  dataset?: Record<string, string>;
  [attr: string]: unknown;
};

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props?: Props | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = String(v);
    else if (k === 'style') {
      if (typeof v === 'string') el.setAttribute('style', v);
      else Object.assign(el.style, v);
    } else if (k === 'on') {
      for (const [ev, fn] of Object.entries(v as Record<string, Handler>)) el.addEventListener(ev, fn);
    } else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') (el as any)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function render(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A codicon (`@vscode/codicons`). */
export function icon(name: string, extra = ''): HTMLElement {
  return h('i', { class: `codicon codicon-${name}${extra ? ' ' + extra : ''}`, 'aria-hidden': 'true' });
}

/** The Mayfly mark (also the favicon). */
export function logo(size = 28): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 32 32');
  svg.setAttribute('width', String(size));
  svg.setAttribute('height', String(size));
  svg.setAttribute('class', 'logo');
  svg.innerHTML =
    '<rect width="32" height="32" rx="7" fill="#0e639c"/>' +
    '<path d="M16 6c1.6 0 2.6 1.5 2.6 3.4 0 1.2-.4 2.2-1 2.9l.4 9.7c0 1.8-.9 4-2 4s-2-2.2-2-4l.4-9.7c-.6-.7-1-1.7-1-2.9C13.4 7.5 14.4 6 16 6z" fill="#fff"/>' +
    '<path d="M14.6 13.5C11 10.6 6.2 9.2 4.8 11c-1.3 1.8 1.6 5.4 8.9 5.6zM17.4 13.5c3.6-2.9 8.4-4.3 9.8-2.5 1.3 1.8-1.6 5.4-8.9 5.6z" fill="#9cdcfe" opacity=".9"/>';
  return svg;
}

export const isMac = /Mac|iPhone|iPad/.test(navigator.platform);
/** `Ctrl+S` or `⌘S`. */
export function keys(combo: string): string {
  return isMac ? combo.replace(/Ctrl\+/g, '⌘').replace(/Shift\+/g, '⇧').replace(/Alt\+/g, '⌥') : combo;
}
