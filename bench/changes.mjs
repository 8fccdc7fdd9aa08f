#!/usr/bin/env node
/**
 * What each way of changing a running fleet costs its clients: `baton reload`, `baton
 * scale` up and down, `baton restart` and (when this build has it) `baton upgrade`, each
 * under the same load.
 *
 * - app: the benchmark app (lib/app.mjs: node:http, sha256 of 1 KiB per request, 300 ms
 *   boot delay, version read from version.txt at start, `x-pid` header), textbook under
 *   baton (only `worker.listen(server)`);
 * - fleet: `baton start app.mjs --name bench --count 4 --listen 127.0.0.1:PORT --daemon`
 *   (the CLI, in its own BATON_RUNTIME_DIR; in the background, because `baton restart`
 *   starts the fleet again in the background anyway);
 * - load: the keep-alive load generator (harness/load.mjs, in a child process) with 64
 *   connections for `--duration` s, and a fresh-connection GET every ~10 ms (the probe);
 * - `--trigger` s in: version.txt changes to v2, then the operation's CLI runs; its wall
 *   time and exit code are recorded;
 * - recorded per run: failed requests of the keep-alive load by error code, non-2xx,
 *   total requests, when the failures happened (100 ms buckets, relative to the CLI's
 *   start), the probe's failures and longest outage, the master pid and worker pids before
 *   and after (kept / gone / new), the versions the load saw and 20 fresh GETs served
 *   after the run, and how the load's connections are spread over the workers 1.5 s
 *   before the end (`ss`).
 *
 * Operations (`--ops`, comma-separated): `reload`, `scale` (= `scale-up,scale-down`),
 * `scale-up` (4 → `--scale-up` workers, default 8), `scale-down` (4 → `--scale-down`,
 * default 2), `restart`, `upgrade` (only when `baton --help` lists `baton upgrade`; else
 * recorded as not measured).
 *
 * Usage: node bench/changes.mjs [--quick] [--reps 3] [--ops reload,scale,restart,upgrade]
 *          [--duration 10] [--trigger 3] [--count 4] [--connections 64] [--scale-up 8]
 *          [--scale-down 2] [--json] [--out changes.json]
 *        node bench/changes.mjs --render bench/results/changes.json  (re-print a saved run)
 * Writes bench/results/changes.json (`--quick`: changes.quick.json, 1 rep, 7 s runs) and
 * prints a markdown table (`--json`: the result as JSON on stdout instead). Linux only (ss,
 * /proc for the machine's load).
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'

import { BATON_CLI, ROOT, writeResult } from './lib/paths.mjs'
import { alive, freePort, installCleanup, onCleanup, run, runMain, sleep, tempDir, trackPid } from './lib/processes.mjs'
import { args, listOption } from './lib/args.mjs'
import { setVersion, writeBenchApp } from './lib/app.mjs'
import { startProbe, versionsServed } from './lib/probe.mjs'
import { connectionSplit, splitText } from './lib/connections.mjs'
import { startNodeLoad } from './lib/wrk.mjs'
import { fmt, mmm, stats } from './lib/stats.mjs'
import { machine, waitQuiet } from './lib/machine.mjs'
import { cliSupports } from './lib/fleet.mjs'

const opt = args()
const quick = opt.quick === true
const REPS = Number(opt.reps ?? (quick ? 1 : 3))
const DURATION_S = Number(opt.duration ?? (quick ? 7 : 10))
const TRIGGER_S = Number(opt.trigger ?? 3)
const COUNT = Number(opt.count ?? 4)
const CONNECTIONS = Number(opt.connections ?? 64)
const SCALE_UP = Number(opt['scale-up'] ?? 8)
const SCALE_DOWN = Number(opt['scale-down'] ?? 2)
const BUCKET_MS = 100
const PROBE_INTERVAL_MS = 10
const QUIET_LIMIT = Number(opt['quiet-limit'] ?? 20)
const QUIET_WAIT_MS = Number(opt['quiet-wait'] ?? (quick ? 3 : 8)) * 1000
const OUT = String(opt.out ?? (quick ? 'changes.quick.json' : 'changes.json'))
const JSON_OUT = opt.json === true
const NAME = 'bench'
const log = (s) => process.stderr.write(`${s}\n`)

/** The operations, in the order they run and are reported. */
const OPERATIONS = {
  reload: { cli: ['reload', NAME], label: 'baton reload', countAfter: COUNT },
  'scale-up': { cli: ['scale', NAME, String(SCALE_UP)], label: `baton scale ${SCALE_UP}`, countAfter: SCALE_UP },
  'scale-down': {
    cli: ['scale', NAME, String(SCALE_DOWN)],
    label: `baton scale ${SCALE_DOWN}`,
    countAfter: SCALE_DOWN,
  },
  restart: { cli: ['restart', NAME], label: 'baton restart', countAfter: COUNT },
  upgrade: { cli: ['upgrade', NAME], label: 'baton upgrade', countAfter: COUNT },
}

function opsOption(value) {
  const out = []
  for (const op of listOption(value, 'reload,scale,restart,upgrade')) {
    const names = op === 'scale' ? ['scale-up', 'scale-down'] : [op]
    for (const n of names) {
      if (!(n in OPERATIONS)) throw new Error(`--ops: unknown operation "${n}" (${Object.keys(OPERATIONS).join(', ')})`)
      if (!out.includes(n)) out.push(n)
    }
  }
  return Object.keys(OPERATIONS).filter((n) => out.includes(n))
}

/** How this build's CLI answers `baton upgrade` when it has no such command (exit code, first line). */
async function upgradeAbsence() {
  const dir = tempDir('baton-changes-probe-')
  const r = await run(process.execPath, [BATON_CLI, 'upgrade', NAME], {
    env: { ...process.env, BATON_RUNTIME_DIR: dir },
  })
  return `exit ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`
}

function tail(file, lines = 30) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/**
 * `baton start ... --daemon` in its own runtime dir. Every master and worker pid seen in
 * `baton status` is tracked (killed at exit); `dispose()` (also run on Ctrl-C / errors)
 * stops the fleet with `baton stop` and kills what is left, whichever master runs by then
 * (a restart or upgrade replaces it).
 */
async function startDaemonFleet({ script, port, count }) {
  const runtimeDir = tempDir('baton-changes-rt-')
  const env = { ...process.env, BATON_RUNTIME_DIR: runtimeDir }
  const cli = (a) => run(process.execPath, [BATON_CLI, ...a], { env })
  const seen = new Set()
  const see = (pid) => {
    if (Number.isInteger(pid) && pid > 0) {
      seen.add(pid)
      trackPid(pid)
    }
  }
  /** `baton status --json`, or null while no master answers. */
  const status = async () => {
    const r = await cli(['status', NAME, '--json'])
    if (r.code !== 0) return null
    let s
    try {
      s = JSON.parse(r.stdout)
    } catch {
      return null
    }
    see(s.pid)
    for (const w of s.workers) see(w.pid)
    return s
  }
  /** The status once `n` workers are ready (and none is stopping), or null after `timeoutMs`. */
  const waitReady = async (n, timeoutMs = 20_000) => {
    const t0 = performance.now()
    for (;;) {
      const s = await status()
      if (s && s.workers.length === n && s.workers.every((w) => w.state === 'ready')) return s
      if (performance.now() - t0 > timeoutMs) return null
      await sleep(100)
    }
  }
  let disposed
  const dispose = () => {
    disposed ??= (async () => {
      const s = await status()
      if (s) await cli(['stop', NAME])
      const deadline = performance.now() + 5000
      while ([...seen].some(alive) && performance.now() < deadline) await sleep(50)
      for (const pid of seen) {
        if (alive(pid)) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // gone
          }
        }
      }
    })()
    return disposed
  }
  const remove = onCleanup(dispose)
  const fleet = {
    runtimeDir,
    port,
    cli,
    status,
    waitReady,
    log: () => tail(path.join(runtimeDir, `${NAME}.log`)),
    dispose: async () => {
      await dispose()
      remove()
    },
  }
  const started = await cli([
    'start',
    script,
    '--name',
    NAME,
    '--count',
    String(count),
    '--listen',
    `127.0.0.1:${port}`,
    '--daemon',
  ])
  const ready = started.code === 0 ? await waitReady(count) : null
  if (!ready) {
    const why = `baton start --daemon exited ${started.code}: ${started.stderr.trim()}\n${fleet.log()}`
    await fleet.dispose()
    throw new Error(why)
  }
  return fleet
}

const pidsOf = (s) => (s?.workers ?? []).map((w) => w.pid).filter(Boolean)

/** First and last 100 ms bucket with a failed request, in ms from the CLI's start (approximate: ± one bucket). */
function failureWindow(timeline, actionStartMs) {
  if (!timeline) return null
  let first = -1
  let last = -1
  timeline.failed.forEach((n, i) => {
    if (n > 0) {
      if (first < 0) first = i
      last = i
    }
  })
  if (first < 0) return null
  return {
    fromMs: Math.round(first * timeline.bucketMs - actionStartMs),
    toMs: Math.round((last + 1) * timeline.bucketMs - actionStartMs),
  }
}

async function runOnce(workDir, op, rep) {
  const spec = OPERATIONS[op]
  const appDir = path.join(workDir, `app-${op}-${rep}`)
  const script = writeBenchApp(appDir, 'v1')
  const port = await freePort()
  const fleet = await startDaemonFleet({ script, port, count: COUNT })
  try {
    const before = await fleet.status()
    const busyBeforePct = await waitQuiet(QUIET_LIMIT, QUIET_WAIT_MS)
    const load = startNodeLoad(port, { connections: CONNECTIONS, durationS: DURATION_S, bucketMs: BUCKET_MS })
    const probe = startProbe(port, PROBE_INTERVAL_MS)
    const t0 = performance.now()
    await sleep(TRIGGER_S * 1000)
    // The new code is on disk before the operation, as in a deploy: it shows which
    // workers each operation starts from the new code.
    setVersion(appDir, 'v2')
    const startMs = performance.now() - t0
    const r = await fleet.cli(spec.cli)
    const endMs = performance.now() - t0
    const after = await fleet.waitReady(spec.countAfter, 15_000)
    const settledMs = performance.now() - t0
    // The load's connections per worker: 1.5 s before the end, or 0.5 s after the fleet
    // settled when that is later (skipped when it is too close to the end).
    let spreadLate = null
    const lateAtMs = Math.max((DURATION_S - 1.5) * 1000, settledMs + 500)
    if (lateAtMs < DURATION_S * 1000 - 300) {
      await sleep(Math.max(0, lateAtMs - (performance.now() - t0)))
      const s = await fleet.status()
      const workers = (s?.workers ?? [])
        .map((w) => ({ slot: w.id, pid: w.pid ?? null }))
        .sort((a, b) => a.slot - b.slot)
      spreadLate = connectionSplit(port, workers, { clientPid: load.child.pid })
    }
    const l = await load.done
    const p = await probe.stop()
    const served = await versionsServed(port, 20)
    const oldPids = pidsOf(before)
    const newPids = pidsOf(after)
    return {
      op,
      rep,
      port,
      busyBeforePct,
      cli: {
        args: spec.cli,
        code: r.code,
        wallMs: Math.round(r.ms),
        startS: Math.round(startMs / 100) / 10,
        endS: Math.round(endMs / 100) / 10,
        stdout: r.stdout.trim().split('\n').slice(-3).join('\n'),
        stderr: r.stderr.trim().split('\n').slice(-5).join('\n'),
      },
      settledAfterCliMs: after ? Math.max(0, Math.round(settledMs - endMs)) : null,
      master: { before: before?.pid ?? null, after: after?.pid ?? null, replaced: before?.pid !== after?.pid },
      workers: {
        before: oldPids,
        after: newPids,
        kept: newPids.filter((x) => oldPids.includes(x)).length,
        gone: oldPids.filter((x) => !newPids.includes(x)).length,
        new: newPids.filter((x) => !oldPids.includes(x)).length,
      },
      load: {
        tool: 'node harness/load.mjs',
        connections: CONNECTIONS,
        requests: l.requests ?? null,
        ok: l.ok ?? null,
        non2xx: l.non2xx ?? null,
        errors: l.errors ?? null,
        errorCodes: l.errorCodes ?? {},
        firstErrors: l.firstErrors ?? [],
        bodies: l.bodies ?? {},
        p99Ms: l.latency?.p99 === null || l.latency?.p99 === undefined ? null : Math.round(l.latency.p99 * 10) / 10,
        maxMs: l.latency?.max === null || l.latency?.max === undefined ? null : Math.round(l.latency.max),
        failureWindowMs: failureWindow(l.timeline, startMs),
        ...(l.error ? { error: l.error } : {}),
      },
      probe: { intervalMs: PROBE_INTERVAL_MS, ...p },
      servedAfter: served,
      spreadLate,
      ...(after
        ? {}
        : { note: `the fleet did not settle at ${spec.countAfter} ready workers within 15 s`, log: fleet.log() }),
    }
  } finally {
    await fleet.dispose()
  }
}

const failedOf = (r) => (r.load.errors ?? 0) + (r.load.non2xx ?? 0)
const codesText = (codes) =>
  Object.entries(codes)
    .map(([k, v]) => `${k}×${fmt(v)}`)
    .join(', ')
const versionsText = (v) =>
  Object.entries(v)
    .map(([k, n]) => `${k}×${fmt(n)}`)
    .join(' ')

function render(result) {
  const lines = []
  lines.push(
    `${result.settings.load}; ${result.settings.fleet}; the operation ${result.settings.triggerS} s in, new code (v2) on disk first; ${result.settings.reps} rep(s).`,
    '',
    '| operation | rep | CLI exit | CLI wall ms | requests | failed (by code) | non-2xx | latency max ms | failures from … to (ms after the CLI started) | fresh probes failed / sent (longest outage ms) | master pid replaced | workers kept / gone / new | versions the load saw | served after (20 fresh GETs) | conns per worker late |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  )
  for (const op of Object.keys(OPERATIONS)) {
    const o = result.ops[op]
    if (!o) continue
    if (o.notMeasured) {
      lines.push(`| ${OPERATIONS[op].label} | – | not measured: ${o.notMeasured} (${o.cli}) ||||||||||||||`)
      continue
    }
    for (const r of o.runs) {
      const w = r.load.failureWindowMs
      lines.push(
        `| ${OPERATIONS[op].label} | ${r.rep} | ${r.cli.code} | ${fmt(r.cli.wallMs)} | ${fmt(r.load.requests)} | ` +
          `${fmt(r.load.errors)}${r.load.errors ? ` (${codesText(r.load.errorCodes)})` : ''} | ${fmt(r.load.non2xx)} | ${fmt(r.load.maxMs)} | ` +
          `${w ? `${fmt(w.fromMs)} … ${fmt(w.toMs)}` : '–'} | ${r.probe.failed} / ${r.probe.sent} (${fmt(r.probe.outageMs)}) | ` +
          `${r.master.replaced ? 'yes' : 'no'} | ${r.workers.kept} / ${r.workers.gone} / ${r.workers.new} | ` +
          `${versionsText(r.load.bodies)} | ${versionsText(r.servedAfter.versions)}${r.servedAfter.failed ? ` (${r.servedAfter.failed} failed)` : ''} | ${r.spreadLate ? splitText(r.spreadLate) : '–'} |`,
      )
    }
  }
  lines.push(
    '',
    '| operation | failed requests min / median / max | CLI wall ms min / median / max | fresh probes failed (max) |',
  )
  lines.push('|---|---|---|---|')
  for (const op of Object.keys(OPERATIONS)) {
    const o = result.ops[op]
    if (!o) continue
    if (o.notMeasured) {
      lines.push(`| ${OPERATIONS[op].label} | not measured: ${o.notMeasured} | | |`)
      continue
    }
    lines.push(
      `| ${OPERATIONS[op].label} | ${mmm(stats(o.runs.map(failedOf)))} | ${mmm(stats(o.runs.map((r) => r.cli.wallMs)))} | ${Math.max(...o.runs.map((r) => r.probe.failed))} |`,
    )
  }
  lines.push(
    '',
    `Machine: ${result.machine.cpus} × ${result.machine.cpuModel}, ${result.machine.os}, Node ${result.machine.node}.`,
  )
  lines.push(`Total time: ${result.totalS} s.`)
  return lines.join('\n')
}

function gitCommit() {
  try {
    return execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
  } catch {
    return null
  }
}

async function main() {
  if (typeof opt.render === 'string') {
    console.log(render(JSON.parse(readFileSync(opt.render, 'utf8'))))
    return 0
  }
  installCleanup()
  if (process.platform !== 'linux') throw new Error('bench/changes.mjs needs Linux (ss, /proc)')
  const ops = opsOption(opt.ops)
  const hasUpgrade = cliSupports('baton upgrade')
  const t0 = performance.now()
  const workDir = tempDir('baton-changes-')
  const result = {
    bench: 'changes',
    machine: machine(),
    commit: gitCommit(),
    settings: {
      load: `node harness/load.mjs, ${CONNECTIONS} keep-alive connections for ${DURATION_S} s, plus a fresh-connection GET every ~${PROBE_INTERVAL_MS} ms`,
      fleet: `baton start app.mjs --count ${COUNT} --listen 127.0.0.1:PORT --daemon (default balance and order)`,
      count: COUNT,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      triggerS: TRIGGER_S,
      reps: REPS,
      scaleUp: SCALE_UP,
      scaleDown: SCALE_DOWN,
      quick,
    },
    ops: {},
    totalS: null,
  }
  for (const op of ops) {
    if (op === 'upgrade' && !hasUpgrade) {
      result.ops.upgrade = { notMeasured: 'this build has no baton upgrade', cli: await upgradeAbsence() }
      log(`upgrade: not measured (this build has no baton upgrade: ${result.ops.upgrade.cli})`)
      continue
    }
    const runs = []
    for (let rep = 1; rep <= REPS; rep++) {
      log(`${op} rep ${rep}/${REPS}...`)
      const r = await runOnce(workDir, op, rep)
      runs.push(r)
      log(
        `  CLI exit ${r.cli.code} in ${r.cli.wallMs} ms; ${failedOf(r)} failed of ${r.load.requests}` +
          `${r.load.errors ? ` (${codesText(r.load.errorCodes)})` : ''}; probes ${r.probe.failed}/${r.probe.sent} failed` +
          `; master ${r.master.before} -> ${r.master.after}; workers kept/gone/new ${r.workers.kept}/${r.workers.gone}/${r.workers.new}`,
      )
    }
    result.ops[op] = { runs }
  }
  result.totalS = Math.round((performance.now() - t0) / 1000)
  const file = writeResult(OUT, result)
  if (JSON_OUT) console.log(JSON.stringify(result, null, 2))
  else console.log(render(result))
  log(`wrote ${path.relative(ROOT, file)}`)
  const cliFailed = Object.values(result.ops).some((o) => o.runs?.some((r) => r.cli.code !== 0))
  return cliFailed ? 1 : 0
}

runMain('changes', main)
