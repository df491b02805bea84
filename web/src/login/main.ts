// The sign-in page: "Sign in with <provider>" (OpenID Connect, when configured), email and
// password, or — secondary — a pasted token (the server token or an API token). Each is
// exchanged for an HttpOnly cookie, then the browser goes on to `next` (a path on this origin).

import '../lib/theme.css';
import './login.css';
import { api, ApiError, AuthProviders } from '../lib/api';
import { h, icon, logo, render } from '../lib/dom';

/** Same rule as the server: a path on this origin, else `/`. */
export function safeNext(raw: string | null): string {
  if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.includes('\\') || /[\u0000-\u001f]/.test(raw)) return '/';
  return raw;
}

const params = new URLSearchParams(location.search);
const next = safeNext(params.get('next'));

const input = (id: string, type: string, autocomplete: string, placeholder: string) =>
  h('input', { class: 'input', id, name: id, type, autocomplete, placeholder, spellcheck: false, required: true });
const errorBox = (id: string) => h('div', { class: 'login-error', id, role: 'alert' });

function showError(box: HTMLElement, msg: string) {
  render(box, icon('error'), h('span', null, msg));
}

/** Runs a sign-in; on success goes to `next`, else shows `explain(err)` in `box`. */
async function attempt(submit: HTMLButtonElement, box: HTMLElement, run: () => Promise<unknown>, explain: (e: ApiError) => string) {
  submit.disabled = true;
  render(box);
  try {
    await run();
    location.replace(next);
  } catch (err) {
    showError(box, err instanceof ApiError ? explain(err) : (err as Error).message);
    submit.disabled = false;
  }
}

const rateLimited = (e: ApiError) => (e.status === 429 ? e.message || 'Too many attempts: wait a moment and try again.' : e.message);

// Email and password.
const email = input('email', 'email', 'username', 'you@example.com');
const password = input('password', 'password', 'current-password', 'Password');
const pwError = errorBox('password-error');
const pwSubmit = h('button', { class: 'btn', type: 'submit', id: 'password-submit' }, 'Sign in');
const pwForm = h(
  'form',
  {
    class: 'login-form',
    id: 'password-form',
    on: {
      submit: (e: Event) => {
        e.preventDefault();
        void attempt(pwSubmit, pwError, () => api.password(email.value.trim(), password.value), (err) =>
          err.status === 401 ? 'Wrong email or password.' : rateLimited(err),
        ).then(() => pwSubmit.disabled || password.select());
      },
    },
  },
  h('label', { for: 'email' }, 'Email'),
  email,
  h('label', { for: 'password' }, 'Password'),
  password,
  pwError,
  pwSubmit,
);

// A pasted token.
const token = input('token', 'password', 'off', 'Server token or mfy_… API token');
const tokenError = errorBox('token-error');
const tokenSubmit = h('button', { class: 'btn secondary', type: 'submit', id: 'token-submit' }, 'Sign in with token');
const tokenForm = h(
  'form',
  {
    class: 'login-form',
    id: 'token-form',
    on: {
      submit: (e: Event) => {
        e.preventDefault();
        const value = token.value.trim();
        if (!value) return;
        void attempt(tokenSubmit, tokenError, () => api.login(value), (err) =>
          err.status === 401 ? 'That token is not valid for this server.' : rateLimited(err),
        ).then(() => tokenSubmit.disabled || token.select());
      },
    },
  },
  h('label', { for: 'token' }, 'Token'),
  token,
  tokenError,
  tokenSubmit,
  h(
    'p',
    { class: 'login-hint' },
    icon('info'),
    h(
      'span',
      null,
      'The server token is printed by ',
      h('code', null, 'mayfly serve'),
      ' when it first starts and kept in ',
      h('code', null, '<data dir>/token'),
      '. API tokens are made on the Tokens page.',
    ),
  ),
);
const tokenDetails = h('details', { class: 'login-token', id: 'token-details' }, h('summary', null, 'Sign in with a token instead'), tokenForm);
tokenDetails.addEventListener('toggle', () => tokenDetails.open && token.focus());

/** An error the OpenID Connect callback sent back (`/login?error=…`). */
const providerError = errorBox('provider-error');
if (params.get('error')) showError(providerError, params.get('error')!);

const oidcSlot = h('div', { class: 'login-oidc' });
function drawProviders(p: AuthProviders) {
  if (p.oidc) {
    const href = `/auth/oidc/start?next=${encodeURIComponent(next)}`;
    render(oidcSlot, h('a', { class: 'btn oidc', id: 'oidc', href }, icon('shield'), `Sign in with ${p.oidc}`), h('div', { class: 'login-or' }, h('span', null, 'or')));
  }
  pwForm.hidden = !p.password;
  if (!p.password) tokenDetails.open = true;
}

render(
  document.getElementById('app')!,
  h(
    'main',
    { class: 'login' },
    h(
      'div',
      { class: 'login-card' },
      h('div', { class: 'login-brand' }, logo(40), h('div', null, h('h1', null, 'Mayfly'), h('p', null, 'A fresh VM for every session'))),
      providerError,
      oidcSlot,
      pwForm,
      tokenDetails,
    ),
  ),
);
email.focus();
api.providers().then(drawProviders, (e) => console.warn('providers', e));
