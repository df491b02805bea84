// Builds the four pages (sessions, login, account, IDE) into dist/, which the mayfly binary embeds.
// `npm run dev` serves them with the API proxied to a running server (MAYFLY_URL).
import { defineConfig, Plugin } from 'vite';
import { fileURLToPath } from 'node:url';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const server = process.env.MAYFLY_URL ?? 'http://127.0.0.1:7070';

/** In `npm run dev`, the server's page routes: `/login`, `/account` and `/s/{id}`. */
const pages: Plugin = {
  name: 'mayfly-pages',
  configureServer(server) {
    server.middlewares.use((req, _res, next) => {
      if (req.url?.startsWith('/login')) req.url = '/login.html' + req.url.slice('/login'.length);
      else if (/^\/account\/?(\?|#|$)/.test(req.url ?? '')) req.url = '/account.html';
      else if (/^\/s\/[a-z0-9-]+\/?(\?|$)/.test(req.url ?? '')) req.url = '/ide.html';
      next();
    });
  },
};

export default defineConfig({
  plugins: [pages],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Monaco is one large chunk by nature; it is loaded only by the IDE page.
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: { index: here('index.html'), login: here('login.html'), account: here('account.html'), ide: here('ide.html') },
    },
  },
  worker: { format: 'es' },
  server: { proxy: { '/api': { target: server, ws: true } } },
});
