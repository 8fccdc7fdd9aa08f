#!/usr/bin/env node
/**
 * The hot path: what a request costs under baton's default balance next to node:cluster,
 * as alternating pairs in one run, so that the drift of a shared machine cancels.
 *
 * - app: a trivial node:http app (`x-pid` header, a 3-byte body), the same handler
 *   everywhere: under baton `await worker.listen(server)` (the default balance,
 *   `reuseport`: one socket per slot, steered by the master's kernel program); under
 *   node:cluster a plain `server.listen(PORT, '127.0.0.1')` with no baton import.
 * - (a) connection per request: `wrk -t1 -c64 -H "Connection: close"`, 2 workers each:
 *   baton default, node:cluster SCHED_NONE (every worker accepts from one shared socket:
 *   direct accept), node:cluster SCHED_RR (the primary accepts and passes each connection
 *   to a worker: PM2's cluster mode). The three fleets stay up for the whole part (each
 *   warmed up once); each round runs the three once, in an order rotated every round.
 * - (b) keep-alive on a fresh fleet: `wrk -t1 -c64`, 2 workers: baton default against
 *   node:cluster SCHED_RR, each fleet started just before its run (wrk starts as soon as
 *   both workers are up) and stopped after it; which one runs first alternates.
 *
 * Per run: req/s, the wrk connections per worker (`ss`, halfway through; keep-alive
 * only), the CPU time of each worker and of the master/primary (from /proc) per request,
 * the machine's busy share before the run and other processes' CPU-seconds during it.
 * Ratios are per pair (baton ÷ the other target of the same round); medians over rounds.
 *
 * Needs wrk and ss (Linux). Usage:
 *   node bench/hot-path.mjs [--pairs 10] [--duration 5] [--parts close,keepalive]
 *                           [--connections 64] [--quick] [--out FILE]
 * Writes bench/results/hot-path.json (or --out) and prints a markdown summary.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { BATON_URL, writeResult } from './lib/paths.mjs'
import { exited, freePort, installCleanup, runMain, sleep, spawnTracked, tempDir } from './lib/processes.mjs'
import { args, listOption } from './lib/args.mjs'
import { connectionsPerPid } from './lib/connections.mjs'
import { parseWrk, wrkVersion } from './lib/wrk.mjs'
import { fmt, median } from './lib/stats.mjs'
import { cpuSnapshot, foreignCpuSeconds, machine, waitQuiet } from './lib/machine.mjs'
import { startCliFleet, startNodeCluster } from './lib/fleet.mjs'

const opt = args()
const quick = opt.quick === true
const PAIRS = Number(opt.pairs ?? (quick ? 2 : 10))
const DURATION = Number(opt.duration ?? (quick ? 3 : 5))
const CONNECTIONS = Number(opt.connections ?? 64)
const PARTS = listOption(opt.parts, 'close,keepalive')
const WORKERS = 2
const log = (s) => process.stderr.write(`${s}\n`)

// ---------------------------------------------------------------------------------------
// The apps

const HANDLER = `const server = http.createServer((req, res) => {
  res.setHeader('x-pid', String(process.pid));
  res.end('ok\\n');
});`

function writeApps(dir) {
  const plain = path.join(dir, 'plain.mjs')
  writeFileSync(
    plain,
    `// node:cluster's app: no baton import.
import http from 'node:http';
${HANDLER}
server.listen(Number(process.env.PORT), '127.0.0.1');
`,
  )
  const baton = path.join(dir, 'baton.mjs')
  writeFileSync(
    baton,
    `// baton's app: the same handler, textbook under baton.
import http from 'node:http';
import { worker } from ${JSON.stringify(BATON_URL)};
${HANDLER}
await worker.listen(server);
`,
  )
  return { plain, baton }
}

// ---------------------------------------------------------------------------------------
// Fleets: { port, master, workers: [pid], dispose() }

/** node:cluster with `WORKERS` workers: `rr` (SCHED_RR, PM2's cluster mode) or `none` (SCHED_NONE, direct accept). */
async function startCluster(script, workDir, policy) {
  const fleet = await startNodeCluster({ script, workDir, workers: WORKERS, policy })
  return { port: fleet.port, master: fleet.pid, workers: fleet.workers, dispose: fleet.dispose }
}

async function startBaton(script) {
  const port = await freePort()
  const fleet = await startCliFleet({ script, count: WORKERS, port, name: 'hot' })
  const status = await fleet.status()
  return {
    port,
    master: fleet.master.pid,
    workers: status.workers.map((w) => w.pid),
    balance: status.groups?.[0]?.balance ?? '?',
    dispose: () => fleet.dispose(),
  }
}

// ---------------------------------------------------------------------------------------
// One measured run

/** utime + stime of `pid` in clock ticks (10 ms), null when gone. */
function ticks(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return Number(f[11]) + Number(f[12])
  } catch {
    return null
  }
}

function runWrk(port, { close, durationS }) {
  const a = [`-t1`, `-c${CONNECTIONS}`, `-d${durationS}s`, '--timeout', '2s']
  if (close) a.push('-H', 'Connection: close')
  a.push(`http://127.0.0.1:${port}/`)
  const child = spawnTracked('wrk', a, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  return exited(child).then(() => ({ ...parseWrk(out), raw: out }))
}

async function measure(fleet, { close, quiet = true }) {
  const busyBeforePct = quiet ? await waitQuiet(30, 2000) : null
  const procs = [fleet.master, ...fleet.workers]
  const t0 = procs.map(ticks)
  const snapA = cpuSnapshot([process.pid, fleet.master], fleet.workers)
  const wrk = runWrk(fleet.port, { close, durationS: DURATION })
  let spread = null
  if (!close) {
    await sleep((DURATION * 1000) / 2)
    const per = connectionsPerPid(fleet.port)
    spread = per ? fleet.workers.map((p) => per[p] ?? 0) : null
  }
  const r = await wrk
  const t1 = procs.map(ticks)
  const snapB = cpuSnapshot([process.pid, fleet.master], fleet.workers)
  const cpu = t1.map((b, i) => (b === null || t0[i] === null ? null : (b - t0[i]) / 100))
  const us = (s) => (s === null || !r.requests ? null : Math.round((s * 1e6 * 10) / r.requests) / 10)
  return {
    rps: r.rps,
    requests: r.requests,
    socketErrors: r.socketErrors,
    non2xx: r.non2xx,
    connsPerWorker: spread,
    masterCpuS: cpu[0],
    workerCpuS: cpu.slice(1),
    workerUsPerReq: us(cpu.slice(1).reduce((a, b) => a + (b ?? 0), 0)),
    masterUsPerReq: us(cpu[0]),
    busyBeforePct,
    foreignCpuS: foreignCpuSeconds(snapA, snapB),
  }
}

function line(key, r) {
  const spread = r.connsPerWorker ? `, conns ${r.connsPerWorker.join('+')}` : ''
  return `${key}: ${fmt(r.rps)} req/s${spread}, worker CPU ${r.workerCpuS.join('+')} s (${r.workerUsPerReq} µs/req), master ${r.masterCpuS} s, errors ${r.socketErrors}, busy before ${r.busyBeforePct}%, foreign ${r.foreignCpuS} s`
}

// ---------------------------------------------------------------------------------------
// The two parts

async function partClose(apps, workDir) {
  const targets = [
    { key: 'baton', label: 'baton, balance default', start: () => startBaton(apps.baton) },
    {
      key: 'direct',
      label: 'node:cluster SCHED_NONE (direct accept)',
      start: () => startCluster(apps.plain, workDir, 'none'),
    },
    {
      key: 'rr',
      label: 'node:cluster SCHED_RR (PM2 cluster mode)',
      start: () => startCluster(apps.plain, workDir, 'rr'),
    },
  ]
  const fleets = {}
  try {
    for (const t of targets) {
      fleets[t.key] = await t.start()
      if (fleets[t.key].balance) t.label = `baton, balance default (${fleets[t.key].balance})`
      // Warm-up: the JIT and the kernel's socket caches, once per fleet.
      await runWrk(fleets[t.key].port, { close: true, durationS: 2 })
    }
    const rounds = []
    for (let i = 0; i < PAIRS; i++) {
      const order = targets.map((_, j) => targets[(i + j) % targets.length])
      const round = { round: i + 1, order: order.map((t) => t.key) }
      for (const t of order) {
        round[t.key] = await measure(fleets[t.key], { close: true })
        log(`  (a) round ${i + 1} ${line(t.key, round[t.key])}`)
      }
      round.vsDirect = round.baton.rps / round.direct.rps
      round.vsRr = round.baton.rps / round.rr.rps
      log(`  (a) round ${i + 1}: baton/direct ${fmt(round.vsDirect, 3)}, baton/rr ${fmt(round.vsRr, 3)}`)
      rounds.push(round)
    }
    return { targets: targets.map(({ key, label }) => ({ key, label })), rounds }
  } finally {
    for (const f of Object.values(fleets)) await f.dispose()
  }
}

async function partKeepAlive(apps, workDir) {
  const targets = [
    { key: 'baton', label: 'baton, balance default, fresh fleet', start: () => startBaton(apps.baton) },
    { key: 'rr', label: 'node:cluster SCHED_RR, fresh fleet', start: () => startCluster(apps.plain, workDir, 'rr') },
  ]
  const rounds = []
  for (let i = 0; i < PAIRS; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse()
    const round = { round: i + 1, order: order.map((t) => t.key) }
    for (const t of order) {
      // Quiet first, then start the fleet and run at once: the run starts on a fresh fleet.
      round[`${t.key}BusyBeforePct`] = await waitQuiet(30, 2000)
      const fleet = await t.start()
      try {
        round[t.key] = await measure(fleet, { close: false, quiet: false })
      } finally {
        await fleet.dispose()
      }
      log(`  (b) round ${i + 1} ${line(t.key, round[t.key])}`)
    }
    round.vsRr = round.baton.rps / round.rr.rps
    log(`  (b) round ${i + 1}: baton/rr ${fmt(round.vsRr, 3)}`)
    rounds.push(round)
  }
  return { targets: targets.map(({ key, label }) => ({ key, label })), rounds }
}

// ---------------------------------------------------------------------------------------

function summary(parts) {
  const out = []
  const med = (xs) => median(xs)
  if (parts.close) {
    const { rounds, targets } = parts.close
    out.push(
      `### (a) One connection per request: \`wrk -t1 -c${CONNECTIONS} -d${DURATION}s -H "Connection: close"\`, ${WORKERS} workers, ${rounds.length} rounds`,
    )
    out.push('')
    out.push(
      '| target | req/s (median) | min – max | worker CPU µs per request (median) | ratio baton ÷ this (median of rounds) |',
    )
    out.push('|---|---|---|---|---|')
    for (const t of targets) {
      const rs = rounds.map((r) => r[t.key])
      const ratio = t.key === 'baton' ? '1' : fmt(med(rounds.map((r) => r.baton.rps / r[t.key].rps)), 3)
      out.push(
        `| ${t.label} | ${fmt(med(rs.map((r) => r.rps)))} | ${fmt(Math.min(...rs.map((r) => r.rps)))} – ${fmt(Math.max(...rs.map((r) => r.rps)))} | ${fmt(med(rs.map((r) => r.workerUsPerReq)), 1)} | ${ratio} |`,
      )
    }
    out.push('')
  }
  if (parts.keepalive) {
    const { rounds, targets } = parts.keepalive
    out.push(
      `### (b) Keep-alive on a fresh fleet: \`wrk -t1 -c${CONNECTIONS} -d${DURATION}s\`, ${WORKERS} workers started just before each run, ${rounds.length} pairs`,
    )
    out.push('')
    out.push(
      '| target | req/s (median) | min – max | worker CPU µs per request (median) | wrk conns per worker (each run) | ratio baton ÷ this (median of pairs) |',
    )
    out.push('|---|---|---|---|---|---|')
    for (const t of targets) {
      const rs = rounds.map((r) => r[t.key])
      const ratio = t.key === 'baton' ? '1' : fmt(med(rounds.map((r) => r.baton.rps / r[t.key].rps)), 3)
      out.push(
        `| ${t.label} | ${fmt(med(rs.map((r) => r.rps)))} | ${fmt(Math.min(...rs.map((r) => r.rps)))} – ${fmt(Math.max(...rs.map((r) => r.rps)))} | ${fmt(med(rs.map((r) => r.workerUsPerReq)), 1)} | ${rs.map((r) => (r.connsPerWorker ? r.connsPerWorker.join('+') : '?')).join(', ')} | ${ratio} |`,
      )
    }
    out.push('')
  }
  return out.join('\n')
}

async function main() {
  installCleanup()
  if (wrkVersion() === null) {
    log('hot-path.mjs needs wrk (apt-get install -y wrk); skipping.')
    return 0
  }
  const workDir = tempDir('baton-hot-path-')
  const apps = writeApps(workDir)
  const info = machine()
  log(`hot-path: parts ${PARTS.join(', ')}; ${PAIRS} rounds each; wrk -t1 -c${CONNECTIONS} -d${DURATION}s`)
  const parts = {}
  if (PARTS.includes('close')) parts.close = await partClose(apps, workDir)
  if (PARTS.includes('keepalive')) parts.keepalive = await partKeepAlive(apps, workDir)
  const text = summary(parts)
  process.stdout.write(`${text}\n`)
  const file = writeResult(typeof opt.out === 'string' ? opt.out : quick ? 'hot-path.quick.json' : 'hot-path.json', {
    benchmark: 'hot-path',
    machine: info,
    settings: { pairs: PAIRS, durationS: DURATION, connections: CONNECTIONS, workers: WORKERS },
    parts,
    markdown: text,
  })
  log(`wrote ${path.relative(process.cwd(), file)}`)
  return 0
}

await runMain('hot-path', main)
