#!/usr/bin/env node
/**
 * Reload with `parallel` (workers a reload replaces at once) next to PM2, under load.
 *
 * - app: the benchmark app (lib/app.mjs): textbook under baton; under PM2 the anchors'
 *   variant with its own 'close' shutdown (lib/pm2.mjs: cluster mode `-i N`, wait_ready,
 *   kill_timeout 1600 ms; PM2 replaces 2 instances at a time when there are more than 2);
 * - cases, interleaved rep-major: baton `--count N --parallel P` for N = 4, 8 and P = 1, 2, 4
 *   (`--parallel` is passed only when P != 1), and `pm2 start -i N` for the same N;
 * - per run: `wrk -t1 -c64 -d15s --timeout 2s --latency` plus a fresh-connection probe every
 *   ~10 ms; 3 s in, version.txt changes and `baton reload` / `pm2 reload` runs. Recorded:
 *   reload wall time (CLI), the core's time (`baton status --json` → lastReload.durationMs),
 *   failed requests (wrk socket errors, non-2xx, failed probes), all pids replaced, new
 *   version served (20 fresh GETs), wrk's connections per worker slot before / just after /
 *   late (`ss`), foreign CPU (a run with > 1 CPU-s of it is re-run once).
 *
 * Usage: node bench/parallel.mjs [--reps 3] [--duration 15] [--counts 4,8] [--parallel 1,2,4]
 *          [--orders start-first] [--balance default] [--no-pm2] [--quick]
 *        node bench/parallel.mjs --render bench/results/parallel.json  (re-print a saved run)
 * Writes bench/results/parallel.json and prints a markdown table.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'

import { ensurePm2, PM2_VERSION, startPm2Fleet } from './lib/pm2.mjs'
import { errorSplit, loadDescription, runUnderLoad, runsFooter, withRetries } from './lib/reload-run.mjs'
import { writeResult } from './lib/paths.mjs'
import { freePort, installCleanup, runMain, tempDir } from './lib/processes.mjs'
import { args, listOption } from './lib/args.mjs'
import { setVersion, writeBenchApp } from './lib/app.mjs'
import { versionsServed } from './lib/probe.mjs'
import { splitText } from './lib/connections.mjs'
import { fmt, mmm, stats } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'
import { balanceFlags, cliSupports, parallelFlags, startCliFleet } from './lib/fleet.mjs'

const opt = args()
const quick = opt.quick === true
const REPS = Number(opt.reps ?? (quick ? 1 : 3))
const DURATION = Number(opt.duration ?? (quick ? 9 : 15))
const TRIGGER_S = 3
const COUNTS = listOption(opt.counts, quick ? '4' : '4,8').map(Number)
const PARALLELS = listOption(opt.parallel, quick ? '1' : '1,2,4').map(Number)
const ORDERS = listOption(opt.orders, 'start-first')
// `default`: no --balance flag (baton's default); `shared` / `reuseport`: passed as --balance.
const BALANCES = listOption(opt.balance, 'default')
const PM2 = opt['no-pm2'] !== true
const CONTAMINATED_S = Number(opt['contaminated-cpu-s'] ?? 1)
const RETRIES = Number(opt.retries ?? 1)
const log = (s) => process.stderr.write(`${s}\n`)

function caseLabel(c) {
  if (c.target === 'pm2') return `pm2 cluster -i ${c.count} (${c.count > 2 ? 2 : 1} at a time, its default)`
  const balance = c.effectiveBalance && c.balance === 'default' ? `default (${c.effectiveBalance})` : c.balance
  return `baton ${c.count} workers, parallel ${c.parallel}, ${c.order}, balance ${balance}`
}

function sameCase(r, c) {
  return (
    r.target === c.target &&
    r.count === c.count &&
    (r.target === 'pm2' || (r.parallel === c.parallel && r.order === c.order && r.balance === c.balance))
  )
}

async function runOnce(workDir, pm2, c, rep) {
  const appDir = path.join(
    workDir,
    `app-${c.target}-${c.count}-${c.parallel ?? 'pm2'}-${c.order ?? ''}-${c.balance ?? ''}-${rep}`,
  )
  const oldVersion = `v${rep}-old`
  const newVersion = `v${rep}-new`
  const script = writeBenchApp(appDir, oldVersion, { flavor: c.target === 'pm2' ? 'close' : 'baton' })
  const port = await freePort()
  const target =
    c.target === 'pm2'
      ? await startPm2Fleet({ pm2, script, count: c.count, port })
      : await startCliFleet({
          script,
          count: c.count,
          port,
          order: c.order,
          name: 'bench',
          flags: [...balanceFlags(c.balance), ...parallelFlags(c.parallel)],
          readyTimeoutMs: 30_000,
        })
  try {
    const m = await runUnderLoad(target, {
      durationS: DURATION,
      triggerS: TRIGGER_S,
      action: async () => {
        setVersion(appDir, newVersion)
        return target.reload()
      },
    })
    const served = await versionsServed(port, 20)
    const report = await target.lastReport()
    // What the master says it runs with (a check that --parallel / --balance took effect).
    const group = c.target === 'baton' ? ((await target.status()).groups?.[0] ?? null) : null
    const oldPids = m.workers.before.map((w) => w.pid)
    const newPids = m.workers.after.map((w) => w.pid)
    const reload = m.action.result
    return {
      target: c.target,
      count: c.count,
      parallel: c.parallel ?? null,
      order: c.order ?? 'start-first',
      balance: c.balance ?? null,
      effective: group ? { balance: group.balance ?? null, parallel: group.parallel ?? null } : null,
      rep,
      spread: m.spread,
      busyBeforePct: m.busyBeforePct,
      foreignCpuS: m.foreignCpuS,
      reload: {
        cliExit: reload.code,
        wallMs: Math.round(reload.ms),
        coreMs: report?.coreMs ?? null,
        outcome: report?.outcome ?? (reload.code === 0 ? 'done' : 'failed'),
        failureReason: report?.failureReason ?? null,
        cliOutput: reload.stdout.trim().split('\n').slice(-3).join(' | '),
        cliStderr: reload.stderr.trim().split('\n').slice(-3).join(' | '),
        startS: m.action.startS,
        finishedAtS: m.action.endS,
      },
      load: m.load,
      probe: m.probe,
      pids: {
        before: oldPids,
        after: newPids,
        replacedAll: newPids.length === c.count && newPids.every((p) => p && !oldPids.includes(p)),
      },
      served: {
        versions: served.versions,
        failed: served.failed,
        expected: newVersion,
        expectedCount: served.versions[newVersion] ?? 0,
      },
      logTail: target.log().trim().split('\n').slice(-8),
    }
  } finally {
    await target.dispose()
  }
}

function row(c, runs) {
  const s = (f) => stats(runs.map(f))
  const wrk = runs[0].load.tool === 'wrk'
  const med = (f) => s(f).median
  const errSplitMed = wrk
    ? `${fmt(med((r) => r.load.errors.connect))} / ${fmt(med((r) => r.load.errors.read))} / ${fmt(med((r) => r.load.errors.write))} / ${fmt(med((r) => r.load.errors.timeout))}`
    : runs.map((r) => errorSplit(r.load.errors)).join('; ')
  const replaced = runs.every((r) => r.pids.replacedAll)
    ? 'yes'
    : runs.map((r) => (r.pids.replacedAll ? 'yes' : 'NO')).join(', ')
  const served = runs.map((r) => `${r.served.expectedCount}/20`).join(', ')
  const outcome = runs
    .map((r) => `${r.reload.outcome}${r.reload.cliExit === 0 ? '' : ` (exit ${r.reload.cliExit})`}`)
    .join(', ')
  const eff = runs[0].effective
  const label = caseLabel({ ...c, effectiveBalance: eff?.balance })
  const effParallel = c.target === 'baton' ? (eff?.parallel ?? 'not reported') : '–'
  return `| ${label} | ${mmm(s((r) => r.reload.wallMs))} | ${mmm(s((r) => r.reload.coreMs))} | ${mmm(s((r) => r.load.socketErrors))} | ${errSplitMed} | ${mmm(s((r) => r.load.non2xx))} | ${mmm(s((r) => r.probe.failed))} | ${mmm(s((r) => r.load.requests))} | ${mmm(
    s((r) => r.load.p99),
    1,
  )} | ${outcome} | ${replaced} | ${served} | ${runs.map((r) => `${splitText(r.spread.before)} → ${splitText(r.spread.justAfter)}`).join(', ')} | ${effParallel} | ${mmm(
    s((r) => r.foreignCpuS),
    2,
  )} |`
}

function render(runs, { loadDesc, cases }) {
  const reps = Math.max(...runs.map((r) => r.rep))
  const out = []
  out.push(`## Reload with parallel N vs PM2 (${loadDesc}; reload ${TRIGGER_S} s in; ${reps} reps per case)`)
  out.push('')
  out.push(
    "Values are min / median / max over the reps. reload ms = wall time of `baton reload` / `pm2 reload` (CLI); core ms = baton's own figure (`lastReload.durationMs`). Socket errors = wrk connect + read + write + timeout; probe = a fresh-connection GET every ~10 ms. " +
      "Conns per worker slot (`ss`): 0.5 s before the reload → 0.5 s after it returned. parallel (status) = what `baton status --json` reports for the group. PM2: the anchors' app with `server.close()` on SIGINT.",
  )
  out.push('')
  out.push(
    '| case | reload ms (CLI) | core ms | socket errors | connect / read / write / timeout (median) | non-2xx | probe fails | requests | p99 ms | outcome | all pids replaced | new version (fresh GETs) | wrk conns per worker slot, before → just after (each rep) | parallel (status) | foreign CPU-s |',
  )
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const c of cases) {
    const rs = runs.filter((r) => sameCase(r, c))
    if (rs.length) out.push(row(c, rs))
  }
  out.push('')
  out.push(runsFooter(runs, CONTAMINATED_S))
  return out.join('\n')
}

async function main() {
  installCleanup()
  if (typeof opt.render === 'string') {
    const saved = JSON.parse(readFileSync(opt.render, 'utf8'))
    process.stdout.write(`${render(saved.runs, { loadDesc: saved.settings.load, cases: saved.cases })}\n`)
    return 0
  }
  const info = machine()
  const skipped = []
  let parallels = PARALLELS
  if (parallels.some((p) => p !== 1) && !cliSupports('--parallel')) {
    skipped.push(
      `parallel ${parallels.filter((p) => p !== 1).join(', ')}: this build's baton CLI has no --parallel flag`,
    )
    log(`this build's \`baton start\` has no --parallel flag: measuring parallel 1 only`)
    parallels = parallels.filter((p) => p === 1)
  }
  const cases = []
  for (const count of COUNTS) {
    for (const balance of BALANCES) {
      for (const order of ORDERS) {
        for (const parallel of parallels) {
          if (parallel > count) skipped.push(`parallel ${parallel} with ${count} workers (more than the workers)`)
          else cases.push({ target: 'baton', count, parallel, order, balance })
        }
      }
    }
    if (PM2) cases.push({ target: 'pm2', count })
  }
  const pm2 = PM2 ? await ensurePm2({ log }) : null
  const workDir = tempDir('baton-parallel-')
  const loadDesc = loadDescription(DURATION)
  log(
    `parallel: ${cases.length} cases × ${REPS} reps; load: ${loadDesc}; reload ${TRIGGER_S} s in${PM2 ? `; pm2 ${PM2_VERSION}` : ''}`,
  )

  const runs = []
  for (let rep = 1; rep <= REPS; rep++) {
    for (const c of cases) {
      const r = await withRetries(() => runOnce(workDir, pm2, c, rep), {
        retries: RETRIES,
        limitS: CONTAMINATED_S,
        log,
        label: `${caseLabel(c)} rep ${rep}`,
      })
      runs.push(r)
      const errs = r.load.socketErrors + r.load.non2xx + r.probe.failed
      log(
        `  ${caseLabel({ ...c, effectiveBalance: r.effective?.balance })} rep ${rep}: ${r.reload.outcome} in ${fmt(r.reload.wallMs)} ms (core ${fmt(r.reload.coreMs)}), ` +
          `${fmt(r.load.requests)} req, socket errors ${r.load.socketErrors} (${errorSplit(r.load.errors)}), non-2xx ${r.load.non2xx}, probe fails ${r.probe.failed}, ` +
          `${r.pids.replacedAll ? 'all pids replaced' : 'NOT ALL PIDS REPLACED'}, served ${JSON.stringify(r.served.versions)}, conns ${splitText(r.spread.before)} → ${splitText(r.spread.justAfter)} → ${splitText(r.spread.late)}` +
          `${r.effective ? `, status says parallel ${r.effective.parallel ?? '?'} balance ${r.effective.balance ?? '?'}` : ''}; busy before ${r.busyBeforePct}%, foreign CPU ${r.foreignCpuS} s${errs ? '  <-- ERRORS' : ''}`,
      )
    }
  }
  const text = render(runs, { loadDesc, cases })
  process.stdout.write(`${text}\n`)
  if (skipped.length) process.stdout.write(`\nNot measured: ${skipped.join('; ')}.\n`)
  const file = writeResult(typeof opt.out === 'string' ? opt.out : quick ? 'parallel.quick.json' : 'parallel.json', {
    benchmark: 'parallel',
    machine: info,
    settings: {
      reps: REPS,
      durationS: DURATION,
      triggerS: TRIGGER_S,
      counts: COUNTS,
      parallels: PARALLELS,
      orders: ORDERS,
      balances: BALANCES,
      pm2: PM2 ? PM2_VERSION : null,
      load: loadDesc,
      bootDelayMs: 300,
      skipped,
    },
    cases,
    runs,
    markdown: text,
  })
  log(`wrote ${path.relative(process.cwd(), file)}`)
  return 0
}

await runMain('parallel', main)
