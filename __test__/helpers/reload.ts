/**
 * Assertions shared by the reload tests: a load that ran with no failed request, and a
 * reload that replaced every worker.
 */
import type { ExecutionContext } from 'ava'
import type { VersionedFleet } from './fleet.js'
import type { LoadCounts } from '../../harness/load.mjs'

/** The load ran (more than 500 requests) and no request failed or got a non-2xx answer. */
export function assertNoFailedRequests(t: ExecutionContext, result: LoadCounts): void {
  t.true(result.requests > 500, `load ran: ${result.requests} requests`)
  t.is(result.errors, 0, `errors: ${JSON.stringify(result.errorCodes)}`)
  t.is(result.non2xx, 0)
}

/** Deploy `version`, `baton reload`, check every worker was replaced; the core's reload ms. */
export async function reloadAll(
  t: ExecutionContext,
  vf: VersionedFleet,
  version: string,
  count: number,
): Promise<number> {
  const before = await vf.fleet.status()
  vf.deploy(version)
  const reload = await vf.fleet.cli(['reload', vf.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  const after = await vf.fleet.status()
  const old = new Set(before.workers.map((w) => w.pid))
  t.is(after.workers.length, count)
  t.true(
    after.workers.every((w) => w.state === 'ready' && !old.has(w.pid)),
    'every worker replaced',
  )
  t.is(after.lastReload?.outcome, 'done')
  return after.lastReload?.durationMs ?? Number.NaN
}
