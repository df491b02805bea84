// The login page: the server token is exchanged once for an HttpOnly cookie, then the browser
// goes on to `next` (a path on this origin) or the sessions page.

import '../lib/theme.css';
import './login.css';
import { api, ApiError } from '../lib/api';
import { h, icon, logo, render } from '../lib/dom';

/** Same rule as the server: a path on this origin, else `/`. */
export function safeNext(raw: string | null): string {
  if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.includes('\\') || /[\u0000-\u001f]/.test(raw)) return '/';
  return raw;
}

const next = safeNext(new URLSearchParams(location.search).get('next'));
const token = h('input', {
  class: 'input',
  id: 'token',
  type: 'password',
  name: 'token',
  autocomplete: 'current-password',
  placeholder: 'Server token',
  spellcheck: false,
  required: true,
});
const error = h('div', { class: 'login-error', role: 'alert' });
const submit = h('button', { class: 'btn', type: 'submit' }, 'Sign in');

async function signIn(e: Event) {
  e.preventDefault();
  const value = token.value.trim();
  if (!value) return;
  submit.disabled = true;
  render(error);
  try {
    await api.login(value);
    location.replace(next);
  } catch (err) {
    const msg =
      err instanceof ApiError && err.status === 401 ? 'That token is not valid for this server.' : (err as Error).message;
    render(error, icon('error'), h('span', null, msg));
    submit.disabled = false;
    token.select();
  }
}

render(
  document.getElementById('app')!,
  h(
    'main',
    { class: 'login' },
    h(
      'form',
      { class: 'login-card', on: { submit: signIn } },
      h('div', { class: 'login-brand' }, logo(40), h('div', null, h('h1', null, 'Mayfly'), h('p', null, 'A fresh VM for every session'))),
      h('label', { for: 'token' }, 'Server token'),
      token,
      error,
      submit,
      h(
        'p',
        { class: 'login-hint' },
        icon('info'),
        h(
          'span',
          null,
          'The token is printed by ',
          h('code', null, 'mayfly serve'),
          ' when it first starts and kept in ',
          h('code', null, '<data dir>/token'),
          '.',
        ),
      ),
    ),
  ),
);
token.focus();
