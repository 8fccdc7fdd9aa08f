#!/usr/bin/env node
/**
 * Reload overhead: the time a reload of N workers takes, divided by N × (one worker's
 * spawn-to-ready time). 1.00 would mean the sequential reload costs nothing beyond starting
 * the new workers one after the other.
 *
 * - one worker's spawn-to-ready: `worker:spawn` → `worker:ready` events of every worker a
 *   reload spawns (median), per condition (idle / under load); plus, for reference, a plain
 *   `node app.mjs` (no baton) from spawn to its first 200 response;
 * - reload time: the core's `report.durationMs` (reload request → last old worker gone),
 *   for N = 1, 2, 4, 8, `--reps` reloads each, start-first and stop-first, idle and under
 *   wrk -t1 -c64 (node load generator in a child process when wrk is missing).
 *
 * Supervisor API in this process (the load runs in another process, so event timestamps
 * are not delayed by it). App: the anchors' app (node:http, sha256 per request,
 * BOOT_DELAY_MS, default 300).
 *
 * Usage: node bench/reload-overhead.mjs [--reps 3] [--counts 1,2,4,8] [--boot 300]
 *          [--orders start-first,stop-first] [--conditions idle,load] [--quick]
 * Writes bench/results/reload-overhead.json and prints a markdown table.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'

import { BATON_URL, writeResult } from './lib/paths.mjs'
import {
  exited,
  freePort,
  installCleanup,
  onCleanup,
  runMain,
  sleep,
  spawnTracked,
  tempDir,
  trackPid,
} from './lib/processes.mjs'
import { args } from './lib/args.mjs'
import { writeBenchApp } from './lib/app.mjs'
import { probeOnce } from './lib/probe.mjs'
import { loadToWrkShape, startNodeLoad, startWrk, wrkVersion } from './lib/wrk.mjs'
import { fmt, median, mmm, stats } from './lib/stats.mjs'
import { cpuBusy, cpuSnapshot, foreignCpuSeconds, machine, waitQuiet } from './lib/machine.mjs'

const opt = args()
const quick = opt.quick === true
const REPS = Number(opt.reps ?? (quick ? 2 : 3))
const COUNTS = String(opt.counts ?? (quick ? '1,2,4' : '1,2,4,8'))
  .split(',')
  .map(Number)
const BOOT = Number(opt.boot ?? 300)
const ORDERS = String(opt.orders ?? 'start-first,stop-first').split(',')
const CONDITIONS = String(opt.conditions ?? 'idle,load').split(',')
const PLAIN_RUNS = quick ? 5 : 10
const log = (s) => process.stderr.write(`${s}\n`)

/** Plain node (no baton): spawn the app with PORT set until its first 200 response. */
async function plainSpawnToFirstResponse(script) {
  const port = await freePort()
  const t0 = performance.now()
  const child = spawnTracked(process.execPath, [script], {
    env: { ...process.env, PORT: String(port), BOOT_DELAY_MS: String(BOOT) },
    stdio: 'ignore',
  })
  let ms = null
  while (performance.now() - t0 < 10_000) {
    const r = await probeOnce(port, { timeoutMs: 500 })
    if (r.ok) {
      ms = performance.now() - t0
      break
    }
    await sleep(1)
  }
  child.kill('SIGKILL')
  await exited(child)
  return ms
}

async function runCase(Supervisor, script, { n, order, condition, useWrk }) {
  const sup = new Supervisor({
    name: `ovh-${process.pid}-${order}-${n}`,
    runtimeDir: path.join(workDir, 'run'),
    log: false,
    handleSignals: false,
    groups: { web: { script, count: n, listen: '127.0.0.1:0', order, env: { BOOT_DELAY_MS: String(BOOT) } } },
  })
  const remove = onCleanup(() => sup.stop({ force: true }))
  const spawnAt = new Map()
  let current = null // the rep being measured
  sup.on('worker:spawn', (e) => {
    trackPid(e.pid)
    spawnAt.set(e.pid, performance.now())
    if (current && current.firstSpawnMs === null) current.firstSpawnMs = performance.now() - current.t0
  })
  sup.on('worker:ready', (e) => {
    const t = spawnAt.get(e.pid)
    if (current && t !== undefined) current.spawnToReady.push(performance.now() - t)
  })
  sup.on('reload:start', () => {
    if (current) current.startEventMs = performance.now() - current.t0
  })
  const busyBeforePct = await waitQuiet(20, 5000)
  await sup.start()
  const port = Number(sup.addresses()[0].bound.split(':').pop())
  let load = null
  if (condition === 'load') {
    load = useWrk
      ? startWrk(port, { connections: 64, durationS: 300 })
      : startNodeLoad(port, { connections: 64, durationS: 300 })
    await sleep(1000)
  } else {
    await sleep(300)
  }
  const loadT0 = performance.now()
  // wrk / the load generator stay alive across both snapshots: count their time as ours.
  const livePids = () => [
    ...sup
      .status()
      .workers.map((w) => w.pid)
      .filter(Boolean),
    ...(load ? [load.child.pid] : []),
  ]
  const snapA = cpuSnapshot([process.pid], livePids())
  const reps = []
  for (let r = 0; r < REPS; r++) {
    current = { t0: performance.now(), spawnToReady: [], firstSpawnMs: null, startEventMs: null }
    let report
    try {
      report = await sup.reload()
    } catch (e) {
      report = e.report ?? { outcome: 'error', message: e.message }
    }
    const wallMs = performance.now() - current.t0
    reps.push({
      outcome: report.outcome,
      durationMs: report.durationMs,
      wallMs: Math.round(wallMs),
      replaced: report.replaced?.length ?? 0,
      firstSpawnMs: current.firstSpawnMs === null ? null : Math.round(current.firstSpawnMs),
      spawnToReadyMs: current.spawnToReady.map((x) => Math.round(x)),
    })
    current = null
    await sleep(condition === 'load' ? 500 : 300)
  }
  const foreignCpuS = foreignCpuSeconds(snapA, cpuSnapshot([process.pid], livePids()))
  const windowS = (performance.now() - loadT0) / 1000
  let loadResult = null
  if (load) {
    const seconds = (performance.now() - loadT0) / 1000 + 1
    if (useWrk) {
      load.child.kill('SIGINT') // wrk prints its summary on SIGINT
      loadResult = await load.done
    } else {
      loadResult = loadToWrkShape(await load.stop(), seconds)
    }
    loadResult = {
      requests: loadResult.requests,
      socketErrors: loadResult.socketErrors,
      errors: loadResult.errors,
      non2xx: loadResult.non2xx,
      p99: loadResult.p99,
    }
  }
  await sup.stop()
  remove()
  return {
    n,
    order,
    condition,
    busyBeforePct,
    foreignCpuS,
    windowS: Math.round(windowS * 10) / 10,
    reps,
    load: loadResult,
  }
}

/**
 * The report: one worker's spawn-to-ready per condition, and per case the overhead in two
 * ways: the issue's definition (median reload ÷ (N × median spawn-to-ready of the same
 * condition)), and per reload against its own workers (reload ÷ Σ spawn-to-ready of the
 * workers it spawned; median over the reps), which is robust to the machine's drift.
 */
function render({ cases, plain, boot, loadTool }) {
  const conditions = [...new Set(cases.map((c) => c.condition))]
  const spawnToReady = {}
  for (const condition of conditions) {
    const all = cases.filter((c) => c.condition === condition).flatMap((c) => c.reps.flatMap((r) => r.spawnToReadyMs))
    spawnToReady[condition] = stats(all)
  }
  const rows = cases.map((c) => {
    const d = stats(c.reps.map((r) => r.durationMs))
    const t1 = spawnToReady[c.condition].median
    const own = c.reps.map((r) => r.durationMs / r.spawnToReadyMs.reduce((x, y) => x + y, 0))
    const ownExtra = c.reps.map((r) => (r.durationMs - r.spawnToReadyMs.reduce((x, y) => x + y, 0)) / c.n)
    return {
      condition: c.condition,
      order: c.order,
      n: c.n,
      reloadMs: d,
      oneWorkerSpawnToReadyMs: t1,
      ownSpawnToReadyMs: stats(c.reps.flatMap((r) => r.spawnToReadyMs)),
      ratio: d.median / (c.n * t1),
      overheadPerWorkerMs: (d.median - c.n * t1) / c.n,
      ratioOwn: stats(own),
      extraPerWorkerOwnMs: stats(ownExtra),
      firstSpawnMs: stats(c.reps.map((r) => r.firstSpawnMs)),
      allDone: c.reps.every((r) => r.outcome === 'done' && r.replaced === c.n),
      foreignCpuS: c.foreignCpuS,
      windowS: c.windowS,
      load: c.load,
    }
  })
  const reps = Math.max(...cases.map((c) => c.reps.length))
  const out = []
  out.push(`## Reload overhead (boot delay ${boot} ms, ${reps} reloads per row)`)
  out.push('')
  out.push(
    `One worker's spawn-to-ready (worker:spawn → worker:ready, every worker spawned by the reloads below), ms min / median / max:`,
  )
  for (const [cond, s] of Object.entries(spawnToReady)) out.push(`- ${cond}: ${mmm(s)} (${s.n} workers)`)
  if (plain?.length)
    out.push(
      `- for reference, a plain \`node app.mjs\` without baton, spawn → first 200 response: ${mmm(stats(plain))} (${plain.length} runs)`,
    )
  out.push('')
  out.push('- overhead (issue) = median reload ms / (N × median spawn-to-ready of the same condition, above);')
  out.push(
    '- overhead (own) = per reload, reload ms / Σ spawn-to-ready of the N workers that reload started (median over the reps); extra ms / worker = (reload ms − Σ spawn-to-ready) / N, median: the time per worker the reload spends outside starting workers (stop-first: waiting for the old worker to exit);',
  )
  out.push(
    "- first event = reload() call → first worker:spawn event (stop-first: includes the first old worker's graceful stop);",
  )
  out.push(
    '- foreign CPU = CPU-seconds used by processes outside the benchmark during the case (2 cores: at most 2 × window).',
  )
  out.push('')
  out.push(
    '| condition | order | N | reload ms (min / med / max) | N × spawn-to-ready ms | overhead (issue) | overhead (own), min / med / max | extra ms / worker (own, med) | first spawn ms (med) | load: socket errors / non-2xx | foreign CPU-s / window s |',
  )
  out.push('|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rows) {
    out.push(
      `| ${r.condition}${r.condition === 'load' ? (loadTool === 'wrk' ? ' (wrk -c64)' : ' (node -c64)') : ''} | ${r.order} | ${r.n} | ${mmm(r.reloadMs)} | ${fmt(r.n * r.oneWorkerSpawnToReadyMs)} | ${fmt(r.ratio, 2)} | ${mmm(r.ratioOwn, 2)} | ${fmt(r.extraPerWorkerOwnMs.median)} | ${fmt(r.firstSpawnMs.median)} | ${r.load ? `${fmt(r.load.socketErrors)} / ${fmt(r.load.non2xx)}` : '–'} | ${fmt(r.foreignCpuS, 1)} / ${fmt(r.windowS, 1)} |${r.allDone ? '' : ' NOT ALL DONE'}`,
    )
  }
  return { text: out.join('\n'), spawnToReady, rows }
}

let workDir
async function main() {
  installCleanup()
  if (typeof opt.render === 'string') {
    const saved = JSON.parse(readFileSync(opt.render, 'utf8'))
    const loadTool = String(saved.settings.load).startsWith('wrk') ? 'wrk' : 'node'
    process.stdout.write(
      `${render({ cases: saved.cases, plain: saved.plainNodeSpawnToFirst200Ms, boot: saved.settings.bootDelayMs, loadTool }).text}\n`,
    )
    return 0
  }
  const { Supervisor } = await import(BATON_URL)
  workDir = tempDir('baton-ovh-')
  const script = writeBenchApp(path.join(workDir, 'app'), 'v1')
  const useWrk = CONDITIONS.includes('load') && wrkVersion() !== null
  const info = machine()
  info.busyBeforePct = await cpuBusy(1000)
  log(
    `reload overhead: N=${COUNTS.join(',')}, ${REPS} reloads each, ${ORDERS.join(' + ')}, ${CONDITIONS.join(' + ')}, boot delay ${BOOT} ms; load: ${useWrk ? 'wrk -t1 -c64' : 'node load generator -c64 (wrk not installed)'}`,
  )

  const plain = []
  for (let i = 0; i < PLAIN_RUNS; i++) plain.push(await plainSpawnToFirstResponse(script))
  log(`plain node app, spawn → first 200: median ${fmt(median(plain))} ms`)

  const cases = []
  for (const condition of CONDITIONS) {
    for (const order of ORDERS) {
      for (const n of COUNTS) {
        const c = await runCase(Supervisor, script, { n, order, condition, useWrk })
        cases.push(c)
        const d = stats(c.reps.map((r) => r.durationMs))
        log(
          `  ${condition} ${order} N=${n}: reload ${mmm(d)} ms${c.load ? `, load errors ${c.load.socketErrors}, non-2xx ${c.load.non2xx}` : ''}${c.reps.some((r) => r.outcome !== 'done') ? ` OUTCOMES ${c.reps.map((r) => r.outcome).join(',')}` : ''}`,
        )
      }
    }
  }

  const { text, spawnToReady, rows } = render({ cases, plain, boot: BOOT, loadTool: useWrk ? 'wrk' : 'node' })
  process.stdout.write(`${text}\n`)
  const file = writeResult(
    typeof opt.out === 'string' ? opt.out : quick ? 'reload-overhead.quick.json' : 'reload-overhead.json',
    {
      benchmark: 'reload-overhead',
      machine: info,
      settings: {
        reps: REPS,
        counts: COUNTS,
        bootDelayMs: BOOT,
        orders: ORDERS,
        conditions: CONDITIONS,
        load: useWrk ? 'wrk -t1 -c64 --timeout 2s' : 'node harness/load.mjs -c64',
      },
      plainNodeSpawnToFirst200Ms: plain.map((x) => (x === null ? null : Math.round(x))),
      spawnToReadyMs: spawnToReady,
      rows,
      cases,
      markdown: text,
    },
  )
  log(`wrote ${path.relative(process.cwd(), file)}`)
  return 0
}

await runMain('reload-overhead', main)
