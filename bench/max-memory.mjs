#!/usr/bin/env node
/**
 * Memory limits under load: baton's `--max-memory` against PM2's `--max-memory-restart`
 * (`max_memory_restart`), in one run, on the same leaking app and the same load.
 *
 * - the app (written into a temp dir): node:http, no baton import, as a PM2 user writes it:
 *   every request keeps `--leak-kib` KiB (256) in a global array, filled so it counts in
 *   RSS; listens on 127.0.0.1:PORT, `process.send('ready')` once listening (PM2's
 *   wait_ready), SIGINT/SIGTERM -> `server.close()` (5 s hard stop);
 * - baton: `baton start app.cjs --count N --listen 127.0.0.1:PORT --max-memory SIZE`
 *   (samples every second, replaces a worker above the limit for 3 s gracefully: its
 *   successor ready first, then it drains);
 * - PM2 7.0.4 (installed outside the repository, lib/pm2.mjs): `pm2 start app.cjs -i N
 *   --wait-ready --max-memory-restart SIZE` in its own PM2_HOME, with
 *   `PM2_WORKER_INTERVAL=1000` so its memory check runs every second too (its default is
 *   every 30 s); over the limit, PM2 reloads that process;
 * - load: the harness's keep-alive generator (harness/load.mjs), `--connections` (8) lanes
 *   each pausing `--pause-ms` (5) after each answer, for `--duration` s (30) per fleet;
 * - counted per fleet: requests, failed requests (errors + non-2xx), memory restarts (baton:
 *   `counters.memoryReplacements` in its status; PM2: the "exceeds --max-memory-restart"
 *   lines of its daemon log), and failed requests per memory restart.
 *
 * Usage: node bench/max-memory.mjs [--duration 30] [--count 2] [--max-memory 150M]
 *        [--leak-kib 256] [--connections 8] [--pause-ms 5] [--rounds 1]
 * Writes bench/results/max-memory.json and prints a markdown table.
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'

import { startLoad } from '../harness/load.mjs'
import { args } from './lib/args.mjs'
import { startCliFleet } from './lib/fleet.mjs'
import { machine } from './lib/machine.mjs'
import { writeResult } from './lib/paths.mjs'
import { ensurePm2, PM2_VERSION, startPm2Fleet } from './lib/pm2.mjs'
import { freePort, installCleanup, removeTempDir, runMain, sleep, tempDir } from './lib/processes.mjs'

const opt = args()
const DURATION_S = Number(opt.duration ?? 30)
const COUNT = Number(opt.count ?? 2)
const LIMIT = String(opt['max-memory'] ?? '150M')
const LEAK_KIB = Number(opt['leak-kib'] ?? 256)
const CONNECTIONS = Number(opt.connections ?? 8)
const PAUSE_MS = Number(opt['pause-ms'] ?? 5)
const ROUNDS = Number(opt.rounds ?? 1)

const log = (line) => process.stderr.write(`${line}\n`)

/** The leaking app, as a PM2 user writes it (no baton import). */
function writeLeakApp(dir) {
  const file = path.join(dir, 'app.cjs')
  writeFileSync(
    file,
    `// Leaks LEAK_KIB KiB per request (kept in a global array, filled so it counts in RSS).
'use strict';
const http = require('node:http');
const kib = Number(process.env.LEAK_KIB ?? '256');
const kept = [];
const server = http.createServer((req, res) => {
  kept.push(Buffer.alloc(kib * 1024).fill(1));
  res.setHeader('x-pid', String(process.pid));
  res.end('leak ' + kept.length + '\\n');
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  if (process.send) process.send('ready');
});
const shutdown = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
`,
  )
  return file
}

/** Run the load against `port` for DURATION_S; `restarts()` read before and after. */
async function measure(port, restarts) {
  const before = await restarts()
  const load = startLoad({ port, connections: CONNECTIONS, pauseMs: PAUSE_MS })
  await sleep(DURATION_S * 1000)
  const result = await load.stop()
  // A replacement decided just before the end is counted once it is logged.
  await sleep(1500)
  const after = await restarts()
  const failed = result.errors + result.non2xx
  const n = after - before
  return {
    requests: result.requests,
    failed,
    errorCodes: result.errorCodes,
    restarts: n,
    failedPerRestart: n > 0 ? failed / n : null,
  }
}

async function runBaton(script) {
  const port = await freePort()
  const fleet = await startCliFleet({
    script,
    count: COUNT,
    port,
    name: 'leak',
    env: { LEAK_KIB: String(LEAK_KIB), PORT: String(port) },
    flags: ['--max-memory', LIMIT],
  })
  try {
    const restarts = async () => (await fleet.status()).counters.memoryReplacements.leak ?? 0
    const r = await measure(port, restarts)
    const replacing = (fleet.log().match(/above maxMemory .* replacing it gracefully/g) ?? []).length
    const crashes = (await fleet.status()).counters.restarts.leak ?? 0
    return { ...r, logLines: replacing, crashRestarts: crashes }
  } finally {
    await fleet.dispose()
  }
}

async function runPm2(pm2, script) {
  const port = await freePort()
  const fleet = await startPm2Fleet({
    pm2,
    script,
    count: COUNT,
    port,
    name: 'leak',
    env: { LEAK_KIB: String(LEAK_KIB), PM2_WORKER_INTERVAL: '1000' },
    extraArgs: ['--max-memory-restart', LIMIT],
  })
  try {
    const restarts = async () => (fleet.log().match(/exceeds --max-memory-restart/g) ?? []).length
    const r = await measure(port, restarts)
    const restartTimes = (await fleet.workers()).reduce((n, w) => n + w.restarts, 0)
    return { ...r, logLines: r.restarts, restartTime: restartTimes }
  } finally {
    await fleet.dispose()
  }
}

function table(rows) {
  const lines = [
    '| round | fleet | requests | failed requests | memory restarts | failed per memory restart | errors |',
    '|---:|---|---:|---:|---:|---:|---|',
  ]
  for (const r of rows) {
    const per = r.failedPerRestart === null ? 'n/a' : r.failedPerRestart.toFixed(1)
    const codes = Object.entries(r.errorCodes ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')
    lines.push(`| ${r.round} | ${r.fleet} | ${r.requests} | ${r.failed} | ${r.restarts} | ${per} | ${codes || '-'} |`)
  }
  return lines.join('\n')
}

async function main() {
  installCleanup()
  const pm2 = await ensurePm2({ log })
  const dir = tempDir('baton-bench-leak-')
  const script = writeLeakApp(dir)
  const rows = []
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate who goes first between rounds.
      const order = round % 2 === 1 ? ['baton', 'pm2'] : ['pm2', 'baton']
      for (const who of order) {
        log(`round ${round}: ${who} (${DURATION_S} s of load, limit ${LIMIT})...`)
        const r = who === 'baton' ? await runBaton(script) : await runPm2(pm2, script)
        const fleet = who === 'baton' ? `baton --max-memory ${LIMIT}` : `PM2 ${PM2_VERSION} max_memory_restart ${LIMIT}`
        rows.push({ round, fleet, ...r })
        log(`  ${JSON.stringify(r)}`)
      }
    }
  } finally {
    removeTempDir(dir)
  }
  const result = {
    machine: machine(),
    settings: {
      durationS: DURATION_S,
      count: COUNT,
      limit: LIMIT,
      leakKiB: LEAK_KIB,
      connections: CONNECTIONS,
      pauseMs: PAUSE_MS,
      pm2WorkerIntervalMs: 1000,
    },
    rows,
  }
  const file = writeResult('max-memory.json', result)
  process.stdout.write(`${table(rows)}\n\nwritten to ${path.relative(process.cwd(), file)}\n`)
  return 0
}

await runMain('max-memory', main)
