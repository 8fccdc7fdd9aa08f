#!/usr/bin/env node
/**
 * Requests per 100 ms and per worker across a reload, baton next to PM2, as SVG charts.
 *
 * - app: the benchmark app (lib/app.mjs; it answers with an `x-pid` header); under PM2 the
 *   anchors' variant with its own 'close' shutdown (lib/pm2.mjs: cluster mode `-i N`,
 *   wait_ready, kill_timeout 1600 ms);
 * - fleet: `baton start --count N --order O [--balance B]` (`default`: no --balance flag)
 *   and `pm2 start -i N`, same N;
 * - load: the keep-alive node load generator (harness/load.mjs, in this process), `--connections`
 *   lanes; each response is counted per 100 ms bucket and per worker pid (`x-pid`);
 * - `--before` s in, version.txt changes and `baton reload` / `pm2 reload` runs (CLI wall
 *   time marked on the chart); the load goes on `--after` s after the CLI returned.
 *
 * Writes bench/results/timeline-baton.svg, bench/results/timeline-pm2.svg (one line per
 * worker pid: dashed = old version, solid = new; red = failed requests per bucket; the
 * shaded span = the reload CLI) and the raw buckets in bench/results/timeline.json.
 *
 * Usage: node bench/timeline.mjs [--count 4] [--balance default] [--order start-first]
 *          [--connections 64] [--before 3] [--after 3] [--bucket 100] [--targets baton,pm2] [--quick]
 *        node bench/timeline.mjs --render bench/results/timeline.json  (redraw the SVGs of a saved run)
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { startLoad } from '../harness/load.mjs'
import { ensurePm2, PM2_VERSION, startPm2Fleet } from './lib/pm2.mjs'
import { PALETTE, lineChartSvg } from './lib/svg.mjs'
import { RESULTS_DIR, writeResult } from './lib/paths.mjs'
import { freePort, installCleanup, runMain, sleep, tempDir } from './lib/processes.mjs'
import { args } from './lib/args.mjs'
import { setVersion, writeBenchApp } from './lib/app.mjs'
import { fmt, median } from './lib/stats.mjs'
import { machine, waitQuiet } from './lib/machine.mjs'
import { balanceFlags, startCliFleet } from './lib/fleet.mjs'

const opt = args()
const quick = opt.quick === true
const COUNT = Number(opt.count ?? (quick ? 2 : 4))
const BALANCE = String(opt.balance ?? 'default')
const ORDER = String(opt.order ?? 'start-first')
const CONNECTIONS = Number(opt.connections ?? 64)
const BEFORE_S = Number(opt.before ?? (quick ? 1.5 : 3))
const AFTER_S = Number(opt.after ?? (quick ? 2 : 3))
const BUCKET_MS = Number(opt.bucket ?? 100)
const TARGETS = String(opt.targets ?? 'baton,pm2')
  .split(',')
  .filter(Boolean)
const SUFFIX = quick ? '.quick' : ''
const log = (s) => process.stderr.write(`${s}\n`)

async function startTarget(kind, workDir) {
  const appDir = path.join(workDir, kind)
  const script = writeBenchApp(appDir, 'v1', { flavor: kind === 'pm2' ? 'close' : 'baton' })
  const port = await freePort()
  if (kind === 'pm2') {
    const pm2 = await ensurePm2({ log })
    const t = await startPm2Fleet({ pm2, script, count: COUNT, port })
    return {
      target: t,
      appDir,
      desc: `pm2 ${PM2_VERSION} cluster -i ${COUNT} (wait_ready, kill_timeout 1600 ms, app with server.close() on SIGINT)`,
    }
  }
  const t = await startCliFleet({
    script,
    count: COUNT,
    port,
    order: ORDER,
    name: 'timeline',
    flags: balanceFlags(BALANCE),
  })
  const effective = (await t.status()).groups?.[0]?.balance ?? '?'
  const balanceDesc = BALANCE === 'default' ? `balance default (${effective})` : `balance ${BALANCE}`
  return { target: t, appDir, desc: `baton ${COUNT} workers, ${ORDER}, ${balanceDesc}`, balance: effective }
}

async function measure(kind, workDir) {
  const { target, appDir, desc, balance } = await startTarget(kind, workDir)
  try {
    const before = await target.workers()
    await sleep(300)
    const busyBeforePct = await waitQuiet(20, 8000)
    const load = startLoad({ port: target.port, connections: CONNECTIONS, bucketMs: BUCKET_MS, requestTimeoutMs: 5000 })
    const since = () => (performance.now() - load.startedAt) / 1000
    await sleep(BEFORE_S * 1000)
    setVersion(appDir, 'v2')
    const reloadStartS = since()
    const reload = await target.reload()
    const reloadEndS = since()
    const after = await target.workers()
    await sleep(AFTER_S * 1000)
    const res = await load.stop()
    const report = await target.lastReport()
    return {
      kind,
      desc,
      balance: balance ?? null,
      count: COUNT,
      busyBeforePct,
      reload: {
        startS: reloadStartS,
        endS: reloadEndS,
        wallMs: Math.round(reload.ms),
        cliExit: reload.code,
        coreMs: report?.coreMs ?? null,
        outcome: report?.outcome ?? null,
      },
      workers: { before, after },
      load: {
        connections: CONNECTIONS,
        requests: res.requests,
        ok: res.ok,
        non2xx: res.non2xx,
        errors: res.errors,
        errorCodes: res.errorCodes,
        bodies: res.bodies,
        elapsedMs: res.elapsedMs,
        latency: res.latency,
        perWorker: res.workers,
      },
      timeline: res.timeline,
    }
  } finally {
    await target.dispose()
  }
}

/** Median / min of the total requests per bucket before, during and after the reload. */
function totals(run) {
  const b = run.timeline.bucketMs / 1000
  const tot = run.timeline.requests.map((x) => Object.values(x).reduce((a, n) => a + n, 0))
  const full = tot.slice(0, -1) // the last bucket is cut short by the end of the load
  const phase = (from, to) => full.filter((_, i) => (i + 0.5) * b >= from && (i + 0.5) * b < to)
  const pre = phase(0.5, run.reload.startS)
  const mid = phase(run.reload.startS, run.reload.endS)
  const post = phase(run.reload.endS, Infinity)
  return {
    medianBefore: median(pre),
    minDuring: mid.length ? Math.min(...mid) : null,
    medianDuring: median(mid),
    medianAfter: median(post),
    failed: run.timeline.failed.reduce((a, n) => a + n, 0),
  }
}

function chart(run, info = machine()) {
  const { bucketMs, requests, failed } = run.timeline
  const n = requests.length - 1 // drop the last, partial bucket
  const t = (i) => ((i + 0.5) * bucketMs) / 1000
  const slotOf = new Map()
  for (const w of run.workers.before) if (w.pid) slotOf.set(String(w.pid), { slot: w.slot, age: 'old' })
  for (const w of run.workers.after)
    if (w.pid && !slotOf.has(String(w.pid))) slotOf.set(String(w.pid), { slot: w.slot, age: 'new' })
  const pids = Object.keys(run.load.perWorker).filter((p) => p !== '?')
  // Old pids first (by slot), then new ones (by slot), then any others in order of first response.
  const rank = (p) => {
    const s = slotOf.get(p)
    return s ? (s.age === 'old' ? 0 : 1000) + s.slot : 2000 + run.load.perWorker[p].firstMs
  }
  pids.sort((a, b) => rank(a) - rank(b))
  // One colour per slot (old worker dashed, its replacement solid); pids of no known slot after.
  let spare = run.count
  const series = pids.map((pid) => {
    const idx = []
    for (let i = 0; i < n; i++) if (requests[i][pid]) idx.push(i)
    const first = Math.max(0, idx[0] - 1)
    const last = Math.min(n - 1, idx[idx.length - 1] + 1)
    const points = []
    for (let i = first; i <= last; i++) points.push([t(i), requests[i][pid] ?? 0])
    const s = slotOf.get(pid)
    const versions = Object.keys(run.load.perWorker[pid].versions).join('+')
    return {
      label: `pid ${pid}${s ? ` · slot ${s.slot}` : ''} · ${versions} · ${fmt(run.load.perWorker[pid].requests)} req`,
      color: PALETTE[(s ? s.slot : spare++) % PALETTE.length],
      dash: versions === 'v1' ? true : undefined,
      points,
    }
  })
  const totalFailed = failed.reduce((a, x) => a + x, 0)
  if (totalFailed > 0) {
    series.push({
      label: `failed requests (${fmt(totalFailed)})`,
      color: '#d62728',
      width: 2.4,
      points: failed.slice(0, n).map((x, i) => [t(i), x]),
    })
  }
  const tt = totals(run)
  const core = run.reload.coreMs !== null ? ` (core ${fmt(run.reload.coreMs)} ms)` : ''
  return lineChartSvg({
    title: `Requests per ${bucketMs} ms per worker across a reload: ${run.kind === 'pm2' ? 'PM2' : 'baton'}`,
    subtitle: [
      run.desc,
      `${run.load.connections} keep-alive connections (harness/load.mjs); reload ${fmt(run.reload.wallMs)} ms${core}; ${fmt(run.load.requests)} requests, ${fmt(run.load.errors)} failed, ${fmt(run.load.non2xx)} non-2xx`,
    ],
    xLabel: 'seconds since the start of the load',
    yLabel: `requests per ${bucketMs} ms (per worker)`,
    xMin: 0,
    xMax: Math.ceil(t(n - 1)),
    series,
    spans: [{ from: run.reload.startS, to: run.reload.endS, label: 'reload (CLI running)', color: '#888' }],
    markers: [
      { x: run.reload.startS, label: 'reload start' },
      { x: run.reload.endS, label: 'reload end' },
    ],
    notes: [
      `All workers together, requests per ${bucketMs} ms: median ${fmt(tt.medianBefore)} before the reload, ${fmt(tt.medianDuring)} (min ${fmt(tt.minDuring)}) during it, ${fmt(tt.medianAfter)} after.`,
      `One colour per slot: dashed = its worker of the old version (v1), solid = the new one (v2). ${info.date.slice(0, 10)}, ${info.cpus} CPUs, node ${info.node}.`,
    ],
  })
}

async function main() {
  installCleanup()
  if (typeof opt.render === 'string') {
    const saved = JSON.parse(readFileSync(opt.render, 'utf8'))
    const suffix = path.basename(opt.render).includes('.quick.') ? '.quick' : ''
    for (const run of saved.runs) {
      const file = path.join(RESULTS_DIR, `timeline-${run.kind}${suffix}.svg`)
      writeFileSync(file, chart(run, saved.machine))
      log(`wrote ${path.relative(process.cwd(), file)}`)
    }
    return 0
  }
  const workDir = tempDir('baton-timeline-')
  const info = machine()
  log(
    `timeline: ${TARGETS.join(', ')} with ${COUNT} workers; ${CONNECTIONS} keep-alive connections; reload ${BEFORE_S} s in, load until ${AFTER_S} s after it; ${BUCKET_MS} ms buckets`,
  )
  const runs = []
  for (const kind of TARGETS) {
    const run = await measure(kind, workDir)
    run.summary = totals(run)
    runs.push(run)
    const file = path.join(RESULTS_DIR, `timeline-${kind}${SUFFIX}.svg`)
    writeFileSync(file, chart(run, info))
    const per = Object.entries(run.load.perWorker)
      .map(([pid, w]) => `${pid}:${w.requests}`)
      .join(' ')
    log(
      `  ${run.desc}: reload ${fmt(run.reload.wallMs)} ms (exit ${run.reload.cliExit}${run.reload.coreMs !== null ? `, core ${fmt(run.reload.coreMs)} ms` : ''}), ${fmt(run.load.requests)} requests, ${run.load.errors} failed ${JSON.stringify(run.load.errorCodes)}, non-2xx ${run.load.non2xx}; ` +
        `per ${BUCKET_MS} ms: ${fmt(run.summary.medianBefore)} before, min ${fmt(run.summary.minDuring)} during, ${fmt(run.summary.medianAfter)} after; per pid ${per}; busy before ${run.busyBeforePct}%`,
    )
    log(`  wrote ${path.relative(process.cwd(), file)}`)
  }
  const file = writeResult(typeof opt.out === 'string' ? opt.out : `timeline${SUFFIX}.json`, {
    benchmark: 'timeline',
    machine: info,
    settings: {
      count: COUNT,
      balance: BALANCE,
      order: ORDER,
      connections: CONNECTIONS,
      beforeS: BEFORE_S,
      afterS: AFTER_S,
      bucketMs: BUCKET_MS,
      targets: TARGETS,
      pm2: TARGETS.includes('pm2') ? PM2_VERSION : null,
      bootDelayMs: 300,
    },
    runs,
  })
  log(`wrote ${path.relative(process.cwd(), file)}`)
  return runs.every((r) => r.reload.cliExit === 0) ? 0 : 1
}

await runMain('timeline', main)
