/**
 * One measured run of "something happens to a fleet under load", shared by
 * reload-under-load.mjs and parallel.mjs: a target (a baton fleet from `startCliFleet`, or
 * PM2 from lib/pm2.mjs: `{ port, roots, workers(), reload(), lastReport(), log(),
 * dispose() }`) is put under `wrk -t1 -c64` (node load generator when wrk is missing)
 * plus a fresh-connection probe every ~10 ms; `triggerS` in, `action()` runs (a reload, a
 * kill -9...). Recorded: the action's start/end, how the load's own connections are split
 * over the worker slots before / just after / late (`ss`), optional streams of fresh connections
 * during and after the action, load and probe results, foreign CPU use.
 */
import { sleep } from './processes.mjs'
import { freshStream, startProbe } from './probe.mjs'
import { connectionSplit } from './connections.mjs'
import { loadToWrkShape, startNodeLoad, startWrk, wrkVersion } from './wrk.mjs'
import { cpuSnapshot, foreignCpuSeconds, waitQuiet } from './machine.mjs'

export const HAVE_WRK = wrkVersion() !== null

/** Description of the load {@link runUnderLoad} puts on the target. */
export function loadDescription(durationS, connections = 64) {
  return HAVE_WRK
    ? `wrk -t1 -c${connections} -d${durationS}s --timeout 2s --latency`
    : `node harness/load.mjs -c${connections} -d${durationS}s (wrk not installed: figures are not comparable with the anchors' wrk figures)`
}

const pidsOf = (workers) => workers.map((w) => w.pid).filter(Boolean)

/**
 * Run `action()` `triggerS` into a `durationS` load on `target`.
 * `fresh` (optional, freshStream options, e.g. { count: 200, spreadMs: 3000, timeoutMs: 1500 }):
 * a stream of fresh connections starting with the action ("during"), then a second one
 * once the first has ended ("after").
 * Returns { busyBeforePct, foreignCpuS, action: { startS, endS, result }, spread: { before,
 * justAfter, late } (connectionSplit; justAfter 0.5 s after the action ended, late 1.5 s
 * before the end of the load), load, probe, fresh: { during, after } | null, workers: {
 * before, after } }.
 */
export async function runUnderLoad(
  target,
  { durationS, triggerS = 3, connections = 64, action, fresh = null, quietLimit = 20, quietWaitMs = 8000 },
) {
  const port = target.port
  const before = await target.workers()
  await sleep(300)
  const busyBeforePct = await waitQuiet(quietLimit, quietWaitMs)

  const snapA = cpuSnapshot([process.pid, ...target.roots], pidsOf(before))
  const load = HAVE_WRK ? startWrk(port, { connections, durationS }) : startNodeLoad(port, { connections, durationS })
  const probe = startProbe(port, 10)
  const t0 = performance.now()
  // Only the load's own connections (not the probes') count in the split.
  const split = (workers) => connectionSplit(port, workers, { clientPid: load.child.pid })
  const at = () => Math.round((performance.now() - t0) / 100) / 10
  await sleep(triggerS * 1000 - 500)
  const spreadBefore = split(before)
  await sleep(Math.max(0, triggerS * 1000 - (performance.now() - t0)))

  const startS = at()
  const during = fresh ? freshStream(port, fresh) : null
  const result = await action()
  const endS = at()
  // After a stream ends, the next one starts (fresh connections "after" the action).
  const freshDone = during
    ? during.then(async (d) => ({ during: d, after: await freshStream(port, fresh) }))
    : Promise.resolve(null)

  await sleep(500)
  const justAfter = split(await target.workers())
  const untilLate = (durationS - 1.5) * 1000 - (performance.now() - t0)
  let late = null
  if (untilLate > 0) {
    await sleep(untilLate)
    late = split(await target.workers())
  }

  const loadRaw = await load.done
  const freshResult = await freshDone
  const after = await target.workers()
  const snapB = cpuSnapshot([process.pid, ...target.roots], pidsOf(after))
  const probeResult = await probe.stop()
  const w = HAVE_WRK ? loadRaw : loadToWrkShape(loadRaw, durationS)
  return {
    busyBeforePct,
    foreignCpuS: foreignCpuSeconds(snapA, snapB),
    action: { startS, endS, result },
    spread: { before: spreadBefore, justAfter, late },
    load: {
      tool: HAVE_WRK ? 'wrk' : 'node',
      requests: w.requests,
      rps: w.rps,
      socketErrors: w.socketErrors,
      errors: w.errors,
      non2xx: w.non2xx,
      p99: w.p99,
      ...(HAVE_WRK ? {} : { firstErrors: loadRaw.firstErrors }),
    },
    probe: probeResult,
    fresh: freshResult,
    workers: { before, after },
  }
}

/**
 * `fn()` (a run with `foreignCpuS`, `load`, `probe`, `reload`), re-run up to `retries` times
 * while other processes used more than `limitS` CPU-seconds during it; keeps the least
 * contaminated run, with a summary of the dropped ones in `discarded`.
 */
export async function withRetries(fn, { retries = 1, limitS = 1, log = () => {}, label = '' } = {}) {
  let r = await fn()
  r.discarded = []
  for (let i = 0; i < retries && r.foreignCpuS !== null && r.foreignCpuS > limitS; i++) {
    log(`  (${label}: other processes used ${r.foreignCpuS} CPU-s during the run; re-running)`)
    const again = await fn()
    const [keep, drop] = again.foreignCpuS < r.foreignCpuS ? [again, r] : [r, again]
    keep.discarded = [
      ...r.discarded,
      {
        foreignCpuS: drop.foreignCpuS,
        socketErrors: drop.load.socketErrors,
        non2xx: drop.load.non2xx,
        probeFailed: drop.probe.failed,
        reloadWallMs: drop.reload?.wallMs ?? null,
        outcome: drop.reload?.outcome ?? null,
      },
    ]
    r = keep
  }
  return r
}

/** "c / r / w / t" of wrk's socket errors, or "code×n, ..." of the node load generator's. */
export function errorSplit(e) {
  if (!e) return '–'
  if ('connect' in e) return `${e.connect} / ${e.read} / ${e.write} / ${e.timeout}`
  return (
    Object.entries(e)
      .map(([k, v]) => `${k}×${v}`)
      .join(', ') || '0'
  )
}

/** The contamination / failed-requests footer of a report. */
export function runsFooter(runs, limitS) {
  const discarded = runs.flatMap((r) => r.discarded ?? [])
  const sum = (xs, f) => xs.reduce((n, x) => n + (f(x) ?? 0), 0)
  return (
    `Runs re-run because other processes used > ${limitS} CPU-s during the run: ${discarded.length}; kept runs still above the limit: ${runs.filter((r) => r.foreignCpuS > limitS).length}. ` +
    `Failed requests over all ${runs.length + discarded.length} runs, re-run ones included: ${sum(runs, (r) => r.load.socketErrors) + sum(discarded, (d) => d.socketErrors)} socket errors, ` +
    `${sum(runs, (r) => r.load.non2xx) + sum(discarded, (d) => d.non2xx)} non-2xx, ${sum(runs, (r) => r.probe.failed) + sum(discarded, (d) => d.probeFailed)} failed probes.`
  )
}
