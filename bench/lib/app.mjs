/**
 * The benchmark app: the anchors' app (node:http, sha256 of 1 KiB per request, boot delay,
 * version read at start), textbook under baton: no drain code, only `worker.listen(server)`.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { BATON_URL } from './paths.mjs'

// version read at start), textbook under baton: no drain code, only `worker.listen(server)`.

const APP_HANDLER = `const payload = randomBytes(1024);
const server = http.createServer((req, res) => {
  const digest = createHash('sha256').update(payload).update(req.url ?? '').digest('hex');
  res.setHeader('content-type', 'text/plain');
  res.setHeader('x-pid', String(process.pid));
  res.end(version + ' ' + digest);
});`

/**
 * Write the benchmark app into `dir` + `version.txt`; returns the script's path. Response
 * body: `<version> <sha256 hex>`, header `x-pid: <worker pid>` (the timeline counts
 * responses per worker with it). A version starting with `throw` makes the app throw at
 * boot (after reading the version, before the boot delay), i.e. a bad deploy.
 * env: BOOT_DELAY_MS (default 300).
 *
 * flavor `baton` (default): `app.mjs`, textbook under baton: no drain code, only
 * `worker.listen(server)` (outside baton it listens on PORT and still drains).
 * flavor `close`: `app.cjs`, the anchors' app.js with SHUTDOWN_MODE=close, as PM2 ran it:
 * listens on 127.0.0.1:PORT, `process.send('ready')` in the listen callback (wait_ready),
 * SIGINT/SIGTERM → `server.close(() => exit(0))`, hard exit after 5 s. No baton import.
 */
export function writeBenchApp(dir, version = 'v1', { flavor = 'baton' } = {}) {
  mkdirSync(dir, { recursive: true })
  let file
  let app
  if (flavor === 'close') {
    file = 'app.cjs'
    app = `// Benchmark app, the anchors' app.js with its own 'close' shutdown (as PM2 ran it):
// node:http, sha256 of 1 KiB per request, boot delay, version read at start,
// process.send('ready') once listening, SIGINT/SIGTERM -> server.close(), 5 s hard stop.
'use strict';
const { createHash, randomBytes } = require('node:crypto');
const { readFileSync } = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const version = readFileSync(path.join(__dirname, 'version.txt'), 'utf8').trim();
if (version.startsWith('throw')) throw new Error('bad deploy: cannot start ' + version);
${APP_HANDLER}
const bootDelay = Number(process.env.BOOT_DELAY_MS ?? '300');
setTimeout(() => {
  server.listen(Number(process.env.PORT), '127.0.0.1', () => {
    if (process.send) process.send('ready');
  });
}, bootDelay);
const shutdown = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
`
  } else {
    file = 'app.mjs'
    app = `// Benchmark app (same as the anchors' app.js): node:http, sha256 of 1 KiB per request,
// boot delay, version read at start. Textbook under baton: no drain code, only worker.listen().
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { worker } from ${JSON.stringify(BATON_URL)};

const version = readFileSync(new URL('./version.txt', import.meta.url), 'utf8').trim();
if (version.startsWith('throw')) throw new Error('bad deploy: cannot start ' + version);
${APP_HANDLER}
const bootDelay = Number(process.env.BOOT_DELAY_MS ?? '300');
if (bootDelay > 0) await new Promise((r) => setTimeout(r, bootDelay));
await worker.listen(server);
`
  }
  writeFileSync(path.join(dir, file), app)
  setVersion(dir, version)
  return path.join(dir, file)
}

export function setVersion(dir, version) {
  writeFileSync(path.join(dir, 'version.txt'), `${version}\n`)
}
