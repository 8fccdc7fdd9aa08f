#!/usr/bin/env node
/**
 * Reload under load, head to head with the anchors (their figures are in
 * docs/benchmarks.md, "Reload under load"): same app, same load, same trigger.
 *
 * - app: node:http, sha256 of 1 KiB per request, 300 ms boot delay, version read at start;
 *   textbook under baton (no drain code: it only calls `worker.listen(server)`);
 * - fleet: `baton start app.mjs --count N --listen 127.0.0.1:PORT --order O [--balance B]`
 *   (the CLI, in the foreground, in its own BATON_RUNTIME_DIR), N = 2 and 4, start-first
 *   and stop-first, balance shared and reuseport (`default`: no --balance flag, whatever
 *   baton's default is);
 * - load: `wrk -t1 -c64 -d12s --timeout 2s --latency` (or the node load generator, with a
 *   note, when wrk is missing) plus a probe: a fresh-connection GET every ~10 ms;
 * - 3 s in: version.txt is changed and `baton reload bench` runs (its wall time is the
 *   reload time, like `pm2 reload` in the anchors; the core's own figure is kept too);
 * - wrk's connections per worker slot (`ss`): 0.5 s before the reload, 0.5 s after it
 *   returned and 1.5 s before the end of the run, in every case;
 * - after: all pids replaced? 20 fresh GETs: new version served?
 * - bad deploy: the new version throws at boot; 4 workers; errors during the aborted
 *   reload and whether the service stayed up (same pids, old version served);
 * - crash backoff: 4 workers, the on-disk code is made bad, then slot 0's worker gets
 *   `kill -9`: its slot crash-loops with backoff while the other 3 serve;
 * - bad deploy and crash cases: fresh connections during and after (200 GETs, each its own
 *   TCP connection, spread over 3 s, 1.5 s deadline each; a second stream once the first
 *   has ended): answered / timed out / errors.
 *
 * Usage: node bench/reload-under-load.mjs [--reps 3] [--duration 12] [--counts 2,4]
 *          [--orders start-first,stop-first] [--balance shared,reuseport[,default]]
 *          [--bad-balance shared,reuseport] [--bad-orders start-first,stop-first] [--no-bad]
 *          [--crash-balance <as --bad-balance>] [--no-crash] [--fresh-all] [--quick]
 *        node bench/reload-under-load.mjs --render bench/results/reload-under-load.json  (re-print a saved run)
 * Writes bench/results/reload-under-load.json and prints a markdown table.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'

import { errorSplit, loadDescription, runUnderLoad, runsFooter, withRetries } from './lib/reload-run.mjs'
import { writeResult } from './lib/paths.mjs'
import { freePort, installCleanup, runMain, tempDir } from './lib/processes.mjs'
import { args, listOption } from './lib/args.mjs'
import { setVersion, writeBenchApp } from './lib/app.mjs'
import { freshText, versionsServed } from './lib/probe.mjs'
import { splitText } from './lib/connections.mjs'
import { fmt, mmm, stats } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'
import { balanceFlags, startCliFleet } from './lib/fleet.mjs'

const opt = args()
const quick = opt.quick === true
const REPS = Number(opt.reps ?? (quick ? 1 : 3))
const DURATION = Number(opt.duration ?? (quick ? 8 : 12))
const TRIGGER_S = 3
const COUNTS = listOption(opt.counts, quick ? '2' : '2,4').map(Number)
const ORDERS = listOption(opt.orders, 'start-first,stop-first')
// Balance modes: `shared`, `reuseport` (each passed as --balance), `default` (no flag).
const BALANCES = listOption(opt.balance, quick ? 'shared' : 'shared,reuseport')
const BAD = opt['no-bad'] !== true
const BAD_BALANCES = listOption(opt['bad-balance'], quick ? 'reuseport' : 'shared,reuseport')
const BAD_ORDERS = listOption(opt['bad-orders'], quick ? 'stop-first' : 'start-first,stop-first')
const CRASH = opt['no-crash'] !== true
const CRASH_BALANCES = listOption(opt['crash-balance'], BAD_BALANCES.join(','))
const BAD_COUNT = 4
// Fresh-connection streams during and after the action (bad deploys, crashes; all cases with --fresh-all).
const FRESH = { count: 200, spreadMs: 3000, timeoutMs: 1500 }
const FRESH_ALL = opt['fresh-all'] === true
const QUIET_LIMIT = Number(opt['quiet-limit'] ?? 20)
const QUIET_WAIT_MS = Number(opt['quiet-wait'] ?? 8) * 1000
// A run during which other processes used more than this many CPU-seconds is re-run
// (up to RETRIES times; the least contaminated run is kept), as in the anchors.
const CONTAMINATED_S = Number(opt['contaminated-cpu-s'] ?? 1)
const RETRIES = Number(opt.retries ?? 1)
const log = (s) => process.stderr.write(`${s}\n`)

/** A saved run's kind: `good` / `bad` / `crash` (runs saved before the field: from `bad`). */
const kindOf = (r) => r.kind ?? (r.bad ? 'bad' : 'good')

async function runOnce(workDir, { kind, count, order, rep, balance }) {
  const appDir = path.join(workDir, `app-${count}-${order}-${balance}-${kind}-${rep}`)
  const oldVersion = `v${rep}-old`
  const newVersion = kind === 'good' ? `v${rep}-new` : `throw-v${rep}`
  const script = writeBenchApp(appDir, oldVersion)
  const port = await freePort()
  const fleet = await startCliFleet({ script, count, port, order, name: 'bench', flags: balanceFlags(balance) })
  try {
    const action =
      kind === 'crash'
        ? async () => {
            // The code on disk is bad now: slot 0's restarts throw at boot, so it stays in backoff.
            setVersion(appDir, newVersion)
            const w0 = (await fleet.workers()).find((w) => w.slot === 0)
            process.kill(w0.pid, 'SIGKILL')
            return { slot: 0, killedPid: w0.pid }
          }
        : async () => {
            setVersion(appDir, newVersion)
            return fleet.reload()
          }
    const m = await runUnderLoad(fleet, {
      durationS: DURATION,
      triggerS: TRIGGER_S,
      action,
      fresh: kind !== 'good' || FRESH_ALL ? FRESH : null,
      quietLimit: QUIET_LIMIT,
      quietWaitMs: QUIET_WAIT_MS,
    })
    const served = await versionsServed(port, 20)
    const status = await fleet.status()
    const oldPids = m.workers.before.map((w) => w.pid)
    const newPids = m.workers.after.map((w) => w.pid)
    const replacedAll = newPids.length === count && newPids.every((p) => p && !oldPids.includes(p))
    const keptAll = newPids.length === count && newPids.every((p) => oldPids.includes(p))
    const readyAfter = m.workers.after.filter((x) => x.state === 'ready').length
    const expected = kind === 'good' ? newVersion : oldVersion
    const r = {
      kind,
      count,
      order,
      balance,
      // What the master runs with (for `default`: baton's default at the time of the run).
      effectiveBalance: status.groups?.[0]?.balance ?? null,
      bad: kind === 'bad',
      rep,
      spread: m.spread,
      busyBeforePct: m.busyBeforePct,
      foreignCpuS: m.foreignCpuS,
      reload: null,
      crash: null,
      load: m.load,
      probe: m.probe,
      fresh: m.fresh,
      pids: { before: oldPids, after: newPids, replacedAll, keptAll, readyAfter },
      slotsAfter: m.workers.after,
      served: {
        versions: served.versions,
        failed: served.failed,
        expected,
        expectedCount: served.versions[expected] ?? 0,
      },
      // The temp dir is one run's name: the saved results say `<work dir>` instead.
      masterLogTail: fleet
        .log()
        .trim()
        .split('\n')
        .slice(-8)
        .map((l) => l.replaceAll(workDir, '<work dir>')),
    }
    if (kind === 'crash') {
      const slot0 = status.workers.find((w) => w.id === 0)
      r.crash = {
        ...m.action.result,
        atS: m.action.startS,
        othersKept: m.workers.after.filter((w) => w.slot !== 0).every((w) => oldPids.includes(w.pid)),
        slot0AtEnd: slot0
          ? {
              pid: slot0.pid ?? null,
              state: slot0.state,
              restarts: slot0.restarts,
              restartInMs: slot0.restartInMs ?? null,
              lastExit: slot0.lastExit ?? null,
            }
          : null,
      }
    } else {
      const reload = m.action.result
      const lastReload = status.lastReload
      r.reload = {
        cliExit: reload.code,
        wallMs: Math.round(reload.ms),
        coreMs: lastReload?.durationMs ?? null,
        outcome: lastReload?.outcome ?? null,
        failureReason: lastReload?.failure?.reason ?? null,
        cliOutput: reload.stdout.trim().split('\n').slice(-3).join(' | '),
        cliStderr: reload.stderr.trim().split('\n').slice(-3).join(' | '),
        startS: m.action.startS,
        finishedAtS: m.action.endS,
      }
    }
    return r
  } finally {
    await fleet.dispose()
  }
}

function sameCase(r, c) {
  return (
    r.count === c.count &&
    r.order === c.order &&
    kindOf(r) === c.kind &&
    (r.balance ?? 'shared') === (c.balance ?? 'shared')
  )
}

function caseLabel(c) {
  const b = c.balance ?? 'shared'
  const balance = `balance ${b}${b === 'default' && c.effectiveBalance ? ` (${c.effectiveBalance})` : ''}`
  if (c.kind === 'crash')
    return `baton ${c.count} workers, ${balance}, CRASH: kill -9 slot 0 while the code is bad (backoff)`
  if (c.kind === 'bad') return `baton ${c.count} workers, ${c.order}, ${balance}, BAD deploy (throws at boot)`
  return `baton ${c.count} workers, ${c.order}, ${balance}`
}

/** A spread as saved: a connectionSplit object, or (runs saved before) an array of counts. */
function spreadCell(x) {
  if (x === null || x === undefined) return '?'
  return Array.isArray(x) ? x.join('+') : splitText(x)
}

/** Conns per worker slot, before → just after → late (saved runs: before → after). */
function spreadText(r) {
  const sp = r.spread ?? {}
  if ('justAfter' in sp) return `${spreadCell(sp.before)} → ${spreadCell(sp.justAfter)} → ${spreadCell(sp.late)}`
  return `${spreadCell(sp.before)} → ${spreadCell(sp.after)}`
}

function outcomeText(r) {
  if (kindOf(r) === 'crash') {
    const s0 = r.crash?.slot0AtEnd
    return s0
      ? `slot 0 ${s0.state}${s0.pid ? '' : ' (no worker)'}, ${s0.restarts} restarts${s0.restartInMs !== null ? `, next in ${fmt(s0.restartInMs)} ms` : ''}`
      : '?'
  }
  const bad = kindOf(r) === 'bad'
  return `${r.reload.outcome ?? '?'}${r.reload.cliExit === (bad ? 1 : 0) ? '' : ` (exit ${r.reload.cliExit})`}`
}

function pidsText(runs) {
  const kind = kindOf(runs[0])
  if (kind === 'crash') return runs.map((r) => (r.crash?.othersKept ? 'others kept' : 'OTHERS CHANGED')).join(', ')
  if (kind === 'bad')
    return runs.map((r) => (r.pids.keptAll ? 'kept' : `changed (${r.pids.readyAfter}/${r.count} ready)`)).join(', ')
  return runs.every((r) => r.pids.replacedAll) ? 'yes' : runs.map((r) => (r.pids.replacedAll ? 'yes' : 'NO')).join(', ')
}

function row(label, runs) {
  const wrk = runs[0].load.tool === 'wrk'
  const s = (f) => stats(runs.map(f))
  const med = (f) => s(f).median
  const errSplitMed = wrk
    ? `${fmt(med((r) => r.load.errors.connect))} / ${fmt(med((r) => r.load.errors.read))} / ${fmt(med((r) => r.load.errors.write))} / ${fmt(med((r) => r.load.errors.timeout))}`
    : runs.map((r) => errorSplit(r.load.errors)).join('; ')
  const probe = `${mmm(s((r) => r.probe.failed))}${
    runs.some((r) => r.probe.failed)
      ? ` (${runs
          .map((r) =>
            Object.entries(r.probe.codes)
              .map(([k, v]) => `${k}×${v}`)
              .join(','),
          )
          .filter(Boolean)
          .join('; ')})`
      : ''
  }`
  const kind = kindOf(runs[0])
  const served = `${kind === 'good' ? '' : 'old version: '}${runs.map((r) => `${r.served.expectedCount}/20`).join(', ')}`
  const outcome = runs.map(outcomeText).join(', ')
  return `| ${label} | ${mmm(s((r) => r.reload?.wallMs))} | ${mmm(s((r) => r.reload?.coreMs))} | ${mmm(s((r) => r.load.socketErrors))} | ${errSplitMed} | ${mmm(s((r) => r.load.non2xx))} | ${mmm(s((r) => r.load.requests))} | ${mmm(
    s((r) => r.load.p99),
    1,
  )} | ${probe} | ${mmm(s((r) => r.probe.outageMs))} | ${runs.map(spreadText).join(', ')} | ${outcome} | ${pidsText(runs)} | ${served} | ${mmm(
    s((r) => r.foreignCpuS),
    2,
  )} |`
}

/** The markdown report of `runs` (also: `--render results.json` re-renders a saved run). */
function render(runs, { loadDesc, cases }) {
  const reps = Math.max(...runs.map((r) => r.rep))
  const out = []
  out.push(`## Reload under load (${loadDesc}; reload ${TRIGGER_S} s in; ${reps} reps per case)`)
  out.push('')
  out.push(
    "Values are min / median / max over the reps. reload ms = wall time of `baton reload` (CLI, like `pm2 reload` in the anchors); core ms = the reload's own duration (`lastReload.durationMs`). Socket errors = wrk connect + read + write + timeout. Probe = a fresh-connection GET every ~10 ms; outage = longest run of failed probes. " +
      'Conns per worker slot (`ss -tnp`, slot 0 first): 0.5 s before the reload (or kill) → 0.5 s after it returned → 1.5 s before the end of the run; – = a slot without a worker; "+n old" = connections still on replaced workers; "n queued" = connections accepted by the kernel that no worker has taken (a listen queue without a worker). ' +
      'Foreign CPU = CPU-seconds used by processes outside the benchmark during the run (2 cores = 2 CPU-s per s).',
  )
  out.push('')
  out.push(
    '| case | reload ms | core ms | socket errors | connect / read / write / timeout (median) | non-2xx | requests | p99 ms | probe fails | outage ms | wrk conns per worker slot, before → just after → late (each rep) | outcome | pids | version after (fresh GETs) | foreign CPU-s |',
  )
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const c of cases) {
    const rs = runs.filter((r) => sameCase(r, c))
    if (rs.length) out.push(row(caseLabel({ ...c, effectiveBalance: rs[0].effectiveBalance }), rs))
  }
  out.push('')
  const bad = runs.filter((r) => kindOf(r) === 'bad')
  if (bad.length) {
    const reasons = [...new Set(bad.map((r) => r.reload.failureReason))].join('; ')
    out.push(
      `Bad deploy: the reload was aborted (${reasons}); \`baton reload\` exit codes: ${bad.map((r) => r.reload.cliExit).join(', ')}.`,
    )
    out.push('')
  }
  const withFresh = runs.filter((r) => r.fresh)
  if (withFresh.length) {
    const f0 = withFresh[0].fresh.during.settings
    out.push(
      `### Fresh connections during and after (${f0.count} GETs, each its own TCP connection, spread over ${f0.spreadMs / 1000} s, ${f0.timeoutMs / 1000} s deadline each)`,
    )
    out.push('')
    out.push(
      '"during" starts with the reload (or the kill -9); "after" starts once every request of "during" has ended. answered / timed out / other errors, each rep; p99 = latency of the answered ones; failures sent between = first and last failing request, ms from the stream\'s start.',
    )
    out.push('')
    out.push(
      '| case | during: answered / timed out / errors | p99 ms | failures sent between (ms) | after: answered / timed out / errors | p99 ms | failures sent between (ms) | outcome |',
    )
    out.push('|---|---|---|---|---|---|---|---|')
    const between = (f) => (f.firstFailAtMs === null ? '–' : `${f.firstFailAtMs}–${f.lastFailAtMs}`)
    for (const c of cases) {
      const rs = withFresh.filter((r) => sameCase(r, c))
      if (!rs.length) continue
      const col = (k, f) => rs.map((r) => f(r.fresh[k])).join(', ')
      out.push(
        `| ${caseLabel({ ...c, effectiveBalance: rs[0].effectiveBalance })} | ${col('during', freshText)} | ${col('during', (f) => fmt(f.latencyMs.p99, 1))} | ${col('during', between)} | ${col('after', freshText)} | ${col('after', (f) => fmt(f.latencyMs.p99, 1))} | ${col('after', between)} | ${rs.map(outcomeText).join(', ')} |`,
      )
    }
    out.push('')
  }
  out.push(runsFooter(runs, CONTAMINATED_S))
  const clean = runs.filter((r) => r.foreignCpuS !== null && r.foreignCpuS <= CONTAMINATED_S && kindOf(r) !== 'crash')
  if (clean.length && clean.length < runs.filter((r) => kindOf(r) !== 'crash').length) {
    out.push('')
    out.push(`Reload time over the uncontaminated runs only (other processes used ≤ ${CONTAMINATED_S} CPU-s):`)
    out.push('')
    out.push('| case | runs | reload ms (CLI) | core ms | requests | p99 ms |')
    out.push('|---|---|---|---|---|---|')
    for (const c of cases) {
      const rs = clean.filter((r) => sameCase(r, c))
      if (!rs.length) continue
      const s2 = (f) => stats(rs.map(f))
      out.push(
        `| ${caseLabel({ ...c, effectiveBalance: rs[0].effectiveBalance })} | ${rs.length} | ${mmm(s2((r) => r.reload.wallMs))} | ${mmm(s2((r) => r.reload.coreMs))} | ${mmm(s2((r) => r.load.requests))} | ${mmm(
          s2((r) => r.load.p99),
          1,
        )} |`,
      )
    }
  }
  return out.join('\n')
}

function progressLine(c, rep, r) {
  const errs = r.load.socketErrors + r.load.non2xx + r.probe.failed
  const head =
    c.kind === 'crash'
      ? `kill -9 of slot 0 (pid ${r.crash.killedPid}) at ${r.crash.atS} s; ${outcomeText(r)}; ${r.crash.othersKept ? 'other pids kept' : 'OTHER PIDS CHANGED'}`
      : `${r.reload.outcome} in ${fmt(r.reload.wallMs)} ms (core ${fmt(r.reload.coreMs)}); ` +
        (c.kind === 'bad'
          ? r.pids.keptAll
            ? 'pids kept'
            : 'PIDS CHANGED'
          : r.pids.replacedAll
            ? 'all pids replaced'
            : 'NOT ALL PIDS REPLACED')
  const fresh = r.fresh ? `, fresh during ${freshText(r.fresh.during)}, after ${freshText(r.fresh.after)}` : ''
  return (
    `  ${caseLabel({ ...c, effectiveBalance: r.effectiveBalance })} rep ${rep}: ${head}, ${fmt(r.load.requests)} req, socket errors ${r.load.socketErrors} (${errorSplit(r.load.errors)}), non-2xx ${r.load.non2xx}, probe fails ${r.probe.failed}${fresh}, ` +
    `served ${JSON.stringify(r.served.versions)}, conns per worker ${spreadText(r)}; busy before ${r.busyBeforePct}%, foreign CPU ${r.foreignCpuS} s${errs ? '  <-- ERRORS' : ''}`
  )
}

async function main() {
  installCleanup()
  if (typeof opt.render === 'string') {
    const saved = JSON.parse(readFileSync(opt.render, 'utf8'))
    const cases = []
    for (const r of saved.runs)
      if (!cases.some((c) => sameCase(r, c)))
        cases.push({ kind: kindOf(r), count: r.count, order: r.order, balance: r.balance ?? 'shared' })
    process.stdout.write(`${render(saved.runs, { loadDesc: saved.settings.load, cases })}\n`)
    return 0
  }
  const workDir = tempDir('baton-rul-')
  const info = machine()
  const cases = []
  for (const balance of BALANCES)
    for (const count of COUNTS) for (const order of ORDERS) cases.push({ kind: 'good', count, order, balance })
  if (BAD)
    for (const balance of BAD_BALANCES)
      for (const order of BAD_ORDERS) cases.push({ kind: 'bad', count: BAD_COUNT, order, balance })
  if (CRASH)
    for (const balance of CRASH_BALANCES) cases.push({ kind: 'crash', count: BAD_COUNT, order: 'start-first', balance })
  const loadDesc = loadDescription(DURATION)
  log(`reload under load: ${cases.length} cases × ${REPS} reps; load: ${loadDesc}; reload ${TRIGGER_S} s in`)

  const runs = []
  // Interleaved: rep-major, so slow drift of the machine spreads over every case.
  for (let rep = 1; rep <= REPS; rep++) {
    for (const c of cases) {
      const r = await withRetries(() => runOnce(workDir, { ...c, rep }), {
        retries: RETRIES,
        limitS: CONTAMINATED_S,
        log,
        label: `${caseLabel(c)} rep ${rep}`,
      })
      runs.push(r)
      log(progressLine(c, rep, r))
    }
  }

  const text = render(runs, { loadDesc, cases })
  process.stdout.write(`${text}\n`)
  const file = writeResult(
    typeof opt.out === 'string' ? opt.out : quick ? 'reload-under-load.quick.json' : 'reload-under-load.json',
    {
      benchmark: 'reload-under-load',
      machine: info,
      settings: {
        reps: REPS,
        durationS: DURATION,
        triggerS: TRIGGER_S,
        counts: COUNTS,
        orders: ORDERS,
        balances: BALANCES,
        badDeploy: BAD ? { count: BAD_COUNT, balances: BAD_BALANCES, orders: BAD_ORDERS } : false,
        crash: CRASH ? { count: BAD_COUNT, balances: CRASH_BALANCES, slot: 0 } : false,
        fresh: { ...FRESH, cases: FRESH_ALL ? 'all' : 'bad,crash' },
        balanceNote: "`default` = no --balance flag (baton's default at the time of the run)",
        load: loadDesc,
        bootDelayMs: 300,
      },
      runs,
      markdown: text,
    },
  )
  log(`wrote ${path.relative(process.cwd(), file)}`)
  return 0
}

await runMain('reload-under-load', main)
