/**
 * Shared helpers of the benchmarks: process bookkeeping with guaranteed cleanup, the
 * benchmark app, wrk, fresh-connection probes, statistics and machine facts.
 * Node standard library only.
 */
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Repository root (this file is bench/lib/util.mjs). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The baton CLI. */
export const BATON_CLI = path.join(ROOT, 'bin', 'baton.js')
/** file:// URL of the built package entry, importable from any directory. */
export const BATON_URL = pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href
export const RESULTS_DIR = path.join(ROOT, 'bench', 'results')

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ---------------------------------------------------------------------------------------
// Cleanup: every process and temp dir a benchmark creates is registered here and removed
// on normal exit, on error, on SIGINT/SIGTERM/SIGHUP, and (synchronously, SIGKILL) on exit.

const pids = new Set()
const dirs = new Set()
const asyncCleanups = new Set()
let cleaning

/** Remember a pid to kill at exit (workers, wrk, masters...). */
export function trackPid(pid) {
  if (Number.isInteger(pid) && pid > 0) pids.add(pid)
}
export function untrackPid(pid) {
  pids.delete(pid)
}
/** A temp dir removed at exit. */
export function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix))
  dirs.add(dir)
  return dir
}
/** An async cleanup step (e.g. a graceful `sup.stop()`), run before the hard kills. */
export function onCleanup(fn) {
  asyncCleanups.add(fn)
  return () => asyncCleanups.delete(fn)
}

/** Whether process `pid` exists. */
export function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function killAllSync() {
  for (const pid of pids) {
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  }
  pids.clear()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs.clear()
}

/** Run the async cleanups (bounded by `timeoutMs`), then kill what is left and remove temp dirs. */
export function cleanup(timeoutMs = 5000) {
  if (!cleaning) {
    cleaning = (async () => {
      const steps = [...asyncCleanups]
      asyncCleanups.clear()
      await Promise.race([Promise.allSettled(steps.map(async (fn) => fn())), sleep(timeoutMs)])
      killAllSync()
    })()
  }
  return cleaning
}

/**
 * Run a benchmark's `main()` (which resolves with its exit code), clean up everything it
 * started, also when it throws, and exit with that code.
 */
export async function runMain(name, main) {
  let code = 1
  try {
    code = await main()
  } catch (e) {
    process.stderr.write(`${name} failed: ${e?.stack ?? e}\n`)
    code = 1
  } finally {
    await cleanup()
  }
  process.exit(code)
}

/** A comma-separated option (`--counts 2,4`) as a list of strings; `def` when absent. */
export function listOption(value, def) {
  return String(value ?? def)
    .split(',')
    .filter(Boolean)
}

let installed = false
/** Install signal handlers and an exit hook that clean up. Call once at the top of a script. */
export function installCleanup() {
  if (installed) return
  installed = true
  let signals = 0
  const onSignal = (signal) => {
    signals += 1
    if (signals > 1) {
      killAllSync()
      process.exit(130)
    }
    process.stderr.write(`\n${signal}: cleaning up...\n`)
    cleanup(3000).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, onSignal)
  process.on('exit', killAllSync)
}

/** Spawn a tracked child process. */
export function spawnTracked(cmd, args, options = {}) {
  const child = spawn(cmd, args, options)
  trackPid(child.pid)
  child.once('exit', () => untrackPid(child.pid))
  return child
}

/** Resolves with { code, signal } when the child exits (at once if it already has). */
export function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
}

/** Run a command to its end; resolves with { code, stdout, stderr, ms }. */
export function run(cmd, args, options = {}) {
  const t0 = performance.now()
  const child = spawnTracked(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  return exited(child).then(({ code, signal }) => ({ code, signal, stdout, stderr, ms: performance.now() - t0 }))
}

// ---------------------------------------------------------------------------------------
// The benchmark app: the anchors' app (node:http, sha256 of 1 KiB per request, boot delay,
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

// ---------------------------------------------------------------------------------------
// HTTP probes (fresh connection each).

/**
 * One GET on a fresh connection; resolves { ok, status, body, error, ms }. `timeoutMs` is
 * a deadline for the whole exchange (connect + response): error `TIMEOUT` after it.
 */
export function probeOnce(port, { timeoutMs = 2000, path: p = '/' } = {}) {
  const t0 = performance.now()
  return new Promise((resolve) => {
    let done = false
    let timer
    const finish = (r) => {
      if (!done) {
        done = true
        clearTimeout(timer)
        resolve({ ...r, ms: performance.now() - t0 })
      }
    }
    const req = http.get(
      { host: '127.0.0.1', port, path: p, agent: false, headers: { connection: 'close' } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () =>
          finish({ ok: res.statusCode === 200, status: res.statusCode, body, pid: res.headers['x-pid'] ?? null }),
        )
        res.on('error', (e) => finish({ ok: false, error: e.code ?? e.message }))
      },
    )
    timer = setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })), timeoutMs)
    req.on('error', (e) => finish({ ok: false, error: e.code ?? e.message }))
  })
}

/** `n` sequential fresh-connection GETs; counts responses per version (first body token). */
export async function versionsServed(port, n = 20) {
  const versions = {}
  let failed = 0
  for (let i = 0; i < n; i++) {
    const r = await probeOnce(port)
    if (r.ok) {
      const v = r.body.split(' ')[0]
      versions[v] = (versions[v] ?? 0) + 1
    } else failed += 1
  }
  return { versions, failed }
}

/**
 * A fresh-connection GET every `intervalMs` until stopped: failures by code and the
 * longest run of consecutive failures (outage, ms).
 */
export function startProbe(port, intervalMs = 10) {
  let stopping = false
  const r = { sent: 0, failed: 0, codes: {}, outageMs: 0 }
  let failStart = null
  const loop = (async () => {
    while (!stopping) {
      const t = performance.now()
      const res = await probeOnce(port)
      r.sent += 1
      if (res.ok) {
        if (failStart !== null) r.outageMs = Math.max(r.outageMs, t - failStart)
        failStart = null
      } else {
        r.failed += 1
        const code = res.error ?? `HTTP ${res.status}`
        r.codes[code] = (r.codes[code] ?? 0) + 1
        if (failStart === null) failStart = t
      }
      const wait = intervalMs - (performance.now() - t)
      if (wait > 0) await sleep(wait)
    }
    if (failStart !== null) r.outageMs = Math.max(r.outageMs, performance.now() - failStart)
  })()
  return {
    stop: async () => {
      stopping = true
      await loop
      r.outageMs = Math.round(r.outageMs)
      return r
    },
  }
}

/**
 * A stream of `count` fresh-connection GETs started at even intervals over `spreadMs`
 * (each its own TCP connection, not waiting for the previous one), each with a `timeoutMs`
 * deadline. Resolves when all have ended: answered (200) / timed out / other errors by
 * code, versions and worker pids answering, the latency of the answered ones, and when
 * (ms from the stream's start) the first and last failures were sent.
 */
export async function freshStream(port, { count = 200, spreadMs = 3000, timeoutMs = 1500 } = {}) {
  const t0 = performance.now()
  const r = {
    sent: 0,
    answered: 0,
    timedOut: 0,
    errors: 0,
    codes: {},
    versions: {},
    pids: {},
    firstFailAtMs: null,
    lastFailAtMs: null,
  }
  const lat = []
  const one = async (i) => {
    const due = t0 + (i * spreadMs) / count
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    const at = Math.round(performance.now() - t0)
    r.sent += 1
    const res = await probeOnce(port, { timeoutMs })
    if (res.ok) {
      r.answered += 1
      lat.push(res.ms)
      const v = res.body.split(' ')[0]
      r.versions[v] = (r.versions[v] ?? 0) + 1
      if (res.pid) r.pids[res.pid] = (r.pids[res.pid] ?? 0) + 1
      return
    }
    const code = res.error ?? `HTTP ${res.status}`
    if (code === 'TIMEOUT') r.timedOut += 1
    else r.errors += 1
    r.codes[code] = (r.codes[code] ?? 0) + 1
    if (r.firstFailAtMs === null || at < r.firstFailAtMs) r.firstFailAtMs = at
    if (r.lastFailAtMs === null || at > r.lastFailAtMs) r.lastFailAtMs = at
  }
  await Promise.all(Array.from({ length: count }, (_, i) => one(i)))
  lat.sort((a, b) => a - b)
  const pct = (q) =>
    lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.ceil(q * lat.length) - 1)] * 10) / 10 : null
  return {
    ...r,
    ms: Math.round(performance.now() - t0),
    latencyMs: { p50: pct(0.5), p99: pct(0.99), max: pct(1) },
    settings: { count, spreadMs, timeoutMs },
  }
}

/** "answered / timed out / errors" of a {@link freshStream} result. */
export function freshText(f) {
  if (!f) return '–'
  const codes = Object.entries(f.codes).filter(([k]) => k !== 'TIMEOUT')
  return `${f.answered} / ${f.timedOut} / ${f.errors}${codes.length ? ` (${codes.map(([k, v]) => `${k}×${v}`).join(', ')})` : ''}`
}

// ---------------------------------------------------------------------------------------
// Connection spread: established connections on 127.0.0.1:port per server-side pid (ss).

/**
 * Server-side established connections on 127.0.0.1:port, one entry per connection: the
 * owning pid as a string, or null for a connection no process holds yet (still in a
 * listen queue). With `clientPid`, only the connections whose client end that process
 * holds (e.g. wrk's, not a probe's). null without ss.
 */
function establishedOwners(port, clientPid = null) {
  let out
  try {
    out = execFileSync('ss', ['-tnpH', 'state', 'established', `( sport = :${port} or dport = :${port} )`], {
      encoding: 'utf8',
    })
  } catch {
    return null
  }
  const server = []
  const clientOf = new Map() // client's local port -> client pid
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4) continue
    const local = Number(f[2].slice(f[2].lastIndexOf(':') + 1))
    const peer = Number(f[3].slice(f[3].lastIndexOf(':') + 1))
    const pid = /pid=(\d+)/.exec(line)?.[1] ?? null
    if (local === port) server.push({ peer, pid })
    else if (peer === port) clientOf.set(local, pid)
  }
  const mine = clientPid === null ? server : server.filter((c) => clientOf.get(c.peer) === String(clientPid))
  return mine.map((c) => c.pid)
}

/** `{ pid: count }` of established connections on the port, from `ss -tnp`; null without ss. */
export function connectionsPerPid(port) {
  const owners = establishedOwners(port)
  if (!owners) return null
  const per = {}
  for (const pid of owners) if (pid) per[pid] = (per[pid] ?? 0) + 1
  return per
}

/** Connections per worker, in the order of `pids` ("41+23"); null without ss. */
export function spreadOf(port, pids) {
  const per = connectionsPerPid(port)
  return per ? pids.map((p) => per[p] ?? 0) : null
}

/**
 * How the established connections on the port are split over the worker slots:
 * `workers` = [{ slot, pid }] (pid null for an empty slot). Returns { slots: [{ slot, pid,
 * conns }] (conns null for an empty slot), other: connections held by pids that are not
 * current workers (old workers still draining), queued: connections no process holds
 * (accepted by the kernel, waiting in a listen queue) }; null without ss. `clientPid`:
 * count only the connections of that client process (the load generator).
 */
export function connectionSplit(port, workers, { clientPid = null } = {}) {
  const owners = establishedOwners(port, clientPid)
  if (!owners) return null
  const per = {}
  let queued = 0
  for (const pid of owners) {
    if (pid) per[pid] = (per[pid] ?? 0) + 1
    else queued += 1
  }
  const mine = new Set(workers.filter((w) => w.pid).map((w) => String(w.pid)))
  let other = 0
  for (const [pid, n] of Object.entries(per)) if (!mine.has(pid)) other += n
  const slots = workers.map((w) => ({
    slot: w.slot,
    pid: w.pid ?? null,
    conns: w.pid ? (per[String(w.pid)] ?? 0) : null,
  }))
  return { slots, other, queued }
}

/** "32+18+–+2 (+3 old, 2 queued)" of a {@link connectionSplit} result (– = empty slot). */
export function splitText(split) {
  if (!split) return '?'
  const base = split.slots.map((s) => (s.conns === null ? '–' : String(s.conns))).join('+')
  const extra = [split.other ? `+${split.other} old` : '', split.queued ? `${split.queued} queued` : '']
    .filter(Boolean)
    .join(', ')
  return extra ? `${base} (${extra})` : base
}

// ---------------------------------------------------------------------------------------
// wrk

export function wrkVersion() {
  try {
    const out = execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return out.split('\n')[0].trim()
  } catch (e) {
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`
    if (/wrk/.test(out)) return out.split('\n')[0].trim()
    return null
  }
}

/** Parse wrk's text output. */
export function parseWrk(text) {
  const num = (re) => {
    const m = re.exec(text)
    return m ? Number(m[1]) : null
  }
  const toMs = (v, unit) => {
    const n = Number(v)
    return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : unit === 'm' ? n * 60000 : n
  }
  const lat = (pct) => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
    return m ? toMs(m[1], m[2]) : null
  }
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const errors = se
    ? { connect: +se[1], read: +se[2], write: +se[3], timeout: +se[4] }
    : { connect: 0, read: 0, write: 0, timeout: 0 }
  return {
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    errors,
    socketErrors: errors.connect + errors.read + errors.write + errors.timeout,
    p50: lat(50),
    p99: lat(99),
  }
}

/** Start wrk; `.done` resolves with the parsed result and raw output. */
export function startWrk(port, { connections = 64, threads = 1, durationS = 12, timeout = '2s', path: p = '/' } = {}) {
  const args = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${durationS}s`,
    '--timeout',
    timeout,
    '--latency',
    `http://127.0.0.1:${port}${p}`,
  ]
  const child = spawnTracked('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const done = exited(child).then(({ code }) => ({ code, raw: out, ...parseWrk(out) }))
  return { child, done, args }
}

// ---------------------------------------------------------------------------------------
// Load through the Node load generator in a separate process (wrk fallback).

/**
 * Start `node bench/lib/load.mjs` as a child; `.stop()` resolves with its JSON result.
 * `bucketMs` > 0 adds its timeline (requests per pid and failures per bucket).
 */
export function startNodeLoad(port, { connections = 64, durationS = 12, bucketMs = 0 } = {}) {
  const script = path.join(ROOT, 'bench', 'lib', 'load.mjs')
  const child = spawnTracked(
    process.execPath,
    [
      script,
      '--port',
      String(port),
      '--connections',
      String(connections),
      '--duration',
      String(durationS),
      ...(bucketMs > 0 ? ['--bucket-ms', String(bucketMs)] : []),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const done = exited(child).then(() => {
    try {
      return JSON.parse(out)
    } catch {
      return { error: `load generator printed no result: ${out.slice(0, 200)}` }
    }
  })
  return {
    child,
    done,
    stop: () => {
      child.kill('SIGINT')
      return done
    },
  }
}

/** wrk-like summary of a load.mjs result. */
export function loadToWrkShape(r, durationS) {
  const codes = r.errorCodes ?? {}
  return {
    requests: r.requests,
    rps: r.requests / durationS,
    non2xx: r.non2xx,
    errors: codes,
    socketErrors: r.errors,
    p50: r.latency?.p50 ?? null,
    p99: r.latency?.p99 ?? null,
  }
}

// ---------------------------------------------------------------------------------------
// Statistics and machine facts

export function median(xs) {
  const a = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((x, y) => x - y)
  if (a.length === 0) return null
  const m = a.length >> 1
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2
}
export function stats(xs) {
  const a = xs.filter((x) => typeof x === 'number' && Number.isFinite(x))
  if (a.length === 0) return { min: null, median: null, max: null, n: 0 }
  return { min: Math.min(...a), median: median(a), max: Math.max(...a), n: a.length }
}
/** Format a number with thousands separators and `digits` decimals. */
export function fmt(x, digits = 0) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–'
  return Number(x).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}
/** "min / median / max". */
export function mmm(s, digits = 0) {
  return `${fmt(s.min, digits)} / ${fmt(s.median, digits)} / ${fmt(s.max, digits)}`
}

function cpuTimes() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + (f[4] ?? 0)
  const total = f.reduce((a, b) => a + b, 0)
  return { idle, total }
}
/** Machine CPU busy % over `ms` (Linux; null elsewhere). */
export async function cpuBusy(ms = 1000) {
  try {
    const a = cpuTimes()
    await sleep(ms)
    const b = cpuTimes()
    const total = b.total - a.total
    return total > 0 ? Math.round((100 * (total - (b.idle - a.idle))) / total) : null
  } catch {
    return null
  }
}
/** Wait (up to `maxWaitMs`) until the machine is quiet; returns the last busy %. */
export async function waitQuiet(limit = 25, maxWaitMs = 10_000) {
  const t0 = Date.now()
  let busy = await cpuBusy(500)
  while (busy !== null && busy > limit && Date.now() - t0 < maxWaitMs) busy = await cpuBusy(500)
  return busy
}

export function machine() {
  const cpus = os.cpus()
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    os: `${os.type()} ${os.release()}`,
    wrk: wrkVersion(),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  }
}

/** A free TCP port on 127.0.0.1 (bound and released; small race, fine on a bench box). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** Write `obj` as JSON into bench/results/<name>. */
export function writeResult(name, obj) {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, name)
  writeFileSync(file, `${JSON.stringify(obj, null, 2)}\n`)
  return file
}

/** Parse `--flag value` / `--flag` style arguments into an object. */
export function args(argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const key = a.slice(2)
    const next = argv[i + 1]
    if (next !== undefined && !next.startsWith('--')) {
      out[key] = next
      i += 1
    } else out[key] = true
  }
  return out
}

// ---------------------------------------------------------------------------------------
// A baton master run through the CLI (`baton start`), as a user runs it.

/** `baton start` flags of a balance mode; `default` (or none): no flag, baton's own default. */
export function balanceFlags(balance) {
  return !balance || balance === 'default' ? [] : ['--balance', balance]
}

/** `baton start` flags of a `parallel` value: none for 1 (the default), `--parallel N` else. */
export function parallelFlags(parallel) {
  return parallel === undefined || Number(parallel) === 1 ? [] : ['--parallel', String(parallel)]
}

/** Whether this build's `baton --help` mentions `flag` (e.g. `--parallel`). */
export function cliSupports(flag) {
  try {
    const out = execFileSync(process.execPath, [BATON_CLI, '--help'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    return out.includes(flag)
  } catch (e) {
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.includes(flag)
  }
}

/**
 * Start `baton start <script>` in the foreground as a child, in its own runtime dir, and
 * wait until `count` workers are ready. Returns helpers for reload/status/stop;
 * `workers()` = [{ slot, pid, state }] by slot (pid null for an empty slot).
 */
export async function startCliFleet({
  script,
  count,
  port,
  order = 'start-first',
  name = 'bench',
  env = {},
  flags = [],
  readyTimeoutMs = 20_000,
}) {
  const runtimeDir = tempDir('baton-bench-rt-')
  const fullEnv = { ...process.env, ...env, BATON_RUNTIME_DIR: runtimeDir }
  const master = spawnTracked(
    process.execPath,
    [
      BATON_CLI,
      'start',
      script,
      '--name',
      name,
      '--count',
      String(count),
      '--listen',
      `127.0.0.1:${port}`,
      '--order',
      order,
      ...flags,
    ],
    { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let log = ''
  master.stdout.on('data', (d) => (log += d))
  master.stderr.on('data', (d) => (log += d))
  const cli = (a) => run(process.execPath, [BATON_CLI, ...a], { env: fullEnv })
  const status = async () => {
    const r = await cli(['status', name, '--json'])
    if (r.code !== 0) throw new Error(`baton status failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout)
    for (const w of s.workers) if (w.pid) trackPid(w.pid)
    return s
  }
  const fleet = {
    kind: 'baton',
    master,
    runtimeDir,
    port,
    /** Pids whose own + reaped children's CPU time is the fleet's (see cpuSnapshot). */
    get roots() {
      return [master.pid]
    },
    log: () => log,
    cli,
    status,
    /** `baton reload <name>`: { code, stdout, stderr, ms }. */
    reload: () => cli(['reload', name]),
    /** The core's report of the last reload: { coreMs, outcome, failureReason } or null. */
    async lastReport() {
      const r = (await status()).lastReload
      return r
        ? { coreMs: r.durationMs ?? null, outcome: r.outcome ?? null, failureReason: r.failure?.reason ?? null }
        : null
    },
    async workers() {
      const s = await status()
      return s.workers
        .map((w) => ({
          slot: w.id,
          pid: w.pid ?? null,
          state: w.state,
          restarts: w.restarts,
          restartInMs: w.restartInMs ?? null,
        }))
        .sort((a, b) => a.slot - b.slot)
    },
    async stop() {
      if (master.exitCode !== null || master.signalCode !== null) return
      let s
      try {
        s = await status()
      } catch {
        // ignore
      }
      master.kill('SIGTERM')
      const t = await Promise.race([exited(master), sleep(8000).then(() => null)])
      if (t === null) master.kill('SIGKILL')
      for (const w of s?.workers ?? []) {
        if (w.pid && alive(w.pid)) {
          await sleep(200)
          if (alive(w.pid)) process.kill(w.pid, 'SIGKILL')
        }
      }
    },
  }
  const remove = onCleanup(() => fleet.stop())
  fleet.dispose = async () => {
    await fleet.stop()
    remove()
    rmSync(runtimeDir, { recursive: true, force: true })
    dirs.delete(runtimeDir)
  }
  const t0 = Date.now()
  for (;;) {
    let failure = null
    if (master.exitCode !== null) failure = `baton start exited with ${master.exitCode}:\n${log}`
    else if (Date.now() - t0 > readyTimeoutMs) failure = `fleet not ready within ${readyTimeoutMs} ms:\n${log}`
    if (failure) {
      await fleet.dispose()
      throw new Error(failure)
    }
    await sleep(100)
    try {
      const s = await status()
      if (s.workers.length === count && s.workers.every((w) => w.state === 'ready')) break
    } catch {
      // control socket not up yet
    }
  }
  return fleet
}

// ---------------------------------------------------------------------------------------
// Contamination check: CPU time used by processes outside the benchmark during a window.

const CLK_TCK = 100

function procTicks(pid, withChildren) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // fields after "(comm)": state=0, ..., utime=11, stime=12, cutime=13, cstime=14
    const own = Number(f[11]) + Number(f[12])
    return withChildren ? own + Number(f[13]) + Number(f[14]) : own
  } catch {
    return null
  }
}

function machineBusyTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal: user + nice + system only, since
  // (soft)irq time (loopback networking) is not charged to any process.
  return f[0] + f[1] + f[2]
}

/**
 * Snapshot for {@link foreignCpuSeconds}. `roots`: pids whose own + reaped children's time
 * is ours (this harness, a master); `leaves()`: live pids whose own time is ours (workers).
 */
export function cpuSnapshot(roots, leaves) {
  try {
    const ours = new Map()
    for (const pid of roots) ours.set(`r${pid}`, procTicks(pid, true) ?? 0)
    for (const pid of leaves) ours.set(`l${pid}`, procTicks(pid, false) ?? 0)
    return { busy: machineBusyTicks(), ours, t: performance.now() }
  } catch {
    return null
  }
}

/** CPU-seconds the rest of the machine used between two snapshots (null off Linux). */
export function foreignCpuSeconds(a, b) {
  if (!a || !b) return null
  let ours = 0
  for (const [k, v] of b.ours) ours += v - (a.ours.get(k) ?? 0)
  // a leaf that exited in between moved into its root's children time: its start value
  // is then counted in the root's delta already, so subtract it once.
  for (const [k, v] of a.ours) if (k.startsWith('l') && !b.ours.has(k)) ours -= v
  return Math.max(0, Math.round(((b.busy - a.busy - ours) / CLK_TCK) * 100) / 100)
}
