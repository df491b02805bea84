// A real OpenID Connect provider for Mayfly's sign-in tests: the certified `oidc-provider`
// package (a devDependency in web/package.json, so run `npm ci` in web/ first).
//
//   node crates/server/tests/oidc/provider.mjs [PORT]
//
// PORT 0 (or none) picks a free port. Once listening it prints one JSON line on stdout:
//   {"issuer":"http://127.0.0.1:<port>"}
// and serves until killed (or until stdin closes, so a dying parent does not leave it behind).
//
// Environment:
//   OIDC_CLIENTS          JSON array of clients: [{"client_id", "client_secret" (optional: none =
//                         a public client), "redirect_uris": [..]}]. Required.
//   OIDC_ID_TOKEN_TTL     ID token lifetime in seconds (default 3600); small for expiry tests.
//
// Sign-in uses oidc-provider's built-in development form ("devInteractions"): any login and any
// password are accepted, and the login is the account id (the ID token's `sub`). Claims of an
// account, derived from its login:
//   * email: the login itself if it contains an "@", else "<login>@example.com". A "+tag" part
//     before the "@" is dropped: "bob+admins+ops@corp.example" -> "bob@corp.example".
//   * groups: the "+tag" parts of the login: "bob+admins+ops@corp.example" -> ["admins", "ops"];
//     "alice" -> [].
//   * email_verified: true, unless the login starts with "unverified." .
//   * name: the part before any "+" / "@", capitalised: "bob+admins@x" -> "Bob".
// Scopes: openid (sub), email (email, email_verified), profile (name), groups (groups). As the
// spec asks when an access token is issued, those claims are served by the userinfo endpoint,
// not put in the ID token. PKCE is required for every client.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// oidc-provider lives in web/node_modules (installed by `npm ci` in web/).
const here = dirname(fileURLToPath(import.meta.url));
const webDir = resolve(here, '../../../../web');
const require = createRequire(join(webDir, 'package.json'));
let providerPath;
try {
  providerPath = require.resolve('oidc-provider');
} catch {
  console.error(`oidc-provider is not installed in ${webDir}/node_modules: run \`npm ci\` in web/`);
  process.exit(3);
}
const { default: Provider } = await import(providerPath);
// stdout carries only the issuer line: oidc-provider's notices (console.log/info) go to stderr.
const ready = process.stdout.write.bind(process.stdout);
console.log = console.info = (...args) => console.error(...args);

const port = Number(process.argv[2] ?? 0);
const clients = JSON.parse(process.env.OIDC_CLIENTS ?? 'null');
if (!Array.isArray(clients) || clients.length === 0) {
  console.error('OIDC_CLIENTS must be a JSON array of {client_id, client_secret?, redirect_uris}');
  process.exit(2);
}
const idTokenTtl = Number(process.env.OIDC_ID_TOKEN_TTL ?? 3600);

function claimsOf(login) {
  const [local, domain] = login.includes('@') ? login.split('@', 2) : [login, 'example.com'];
  const [user, ...groups] = local.split('+');
  const base = user.replace(/^unverified\./, '');
  return {
    email: `${user}@${domain}`,
    email_verified: !user.startsWith('unverified.'),
    name: base.charAt(0).toUpperCase() + base.slice(1),
    groups,
  };
}

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.client_id,
      ...(c.client_secret
        ? { client_secret: c.client_secret }
        : { token_endpoint_auth_method: 'none' }),
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    })),
    async findAccount(_ctx, accountId) {
      return {
        accountId,
        async claims() {
          return { sub: accountId, ...claimsOf(accountId) };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    ttl: { IdToken: idTokenTtl },
    cookies: { keys: ['mayfly-test-cookie-key'] },
    features: { devInteractions: { enabled: true } },
  });
  // Errors are the tests' business (they see the responses); keep stderr for real failures.
  provider.on('server_error', (_ctx, err) => console.error('provider server_error:', err));
  server.on('request', provider.callback());
  ready(`${JSON.stringify({ issuer })}\n`);
});
server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
