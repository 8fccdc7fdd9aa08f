/**
 * The reload's own quality: keep-alive clients stay spread over the workers after every
 * reload (default options), and `parallel` replaces several workers at once under load.
 */
import test, { type ExecutionContext } from 'ava'
import { versionedFleet, type VersionedFleet } from './helpers/fleet.js'
import { startLoad, type Load, type LoadResult } from './helpers/load.js'
import { waitFor } from './helpers/processes.js'

function assertNoFailures(t: ExecutionContext, result: LoadResult): void {
  t.true(result.requests > 500, `load ran: ${result.requests} requests`)
  t.is(result.errors, 0, `errors: ${JSON.stringify(result.errorCodes)}`)
  t.is(result.non2xx, 0)
}

/** Reload, check every worker was replaced, and return the core's reload duration. */
async function reloadAll(t: ExecutionContext, vf: VersionedFleet, version: string, count: number): Promise<number> {
  const before = await vf.fleet.status()
  vf.deploy(version)
  const reload = await vf.fleet.cli(['reload', vf.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  const after = await vf.fleet.status()
  const old = new Set(before.workers.map((w) => w.pid))
  t.is(after.workers.length, count)
  t.true(after.workers.every((w) => w.state === 'ready' && !old.has(w.pid)), 'every worker replaced')
  t.is(after.lastReload?.outcome, 'done')
  return after.lastReload?.durationMs ?? Number.NaN
}

/** Connections per live worker pid, as the clients see them (0 for a worker with none). */
function spread(load: Load, pids: number[]): number[] {
  const by = load.snapshot().connectionsByPid
  return pids.map((p) => by[String(p)] ?? 0)
}

async function balancedAfterReloads(t: ExecutionContext, order: 'start-first' | 'stop-first', count = 2): Promise<void> {
  const clients = 64
  // Default options: only the order is chosen.
  const vf = await versionedFleet(t, { count, flags: ['--order', order] })
  const load = startLoad({ port: vf.port, connections: clients })
  try {
    await waitFor(() => Object.values(load.snapshot().connectionsByPid).reduce((a, b) => a + b, 0) === clients, {
      message: 'every client connected',
    })
    const fair = clients / count
    for (const version of ['v2', 'v3', 'v4']) {
      await reloadAll(t, vf, version, count)
      const pids = await vf.fleet.workerPids()
      let last: number[] = []
      // The reload is over; the clients that reconnected must end up spread out.
      await waitFor(
        () => {
          last = spread(load, pids)
          return last.reduce((a, b) => a + b, 0) === clients && last.every((n) => n >= fair / 2)
        },
        { timeoutMs: 10_000, message: `${order} ${version}: every worker holds >= ${fair / 2} of ${clients} connections` },
      ).catch((e: unknown) => {
        t.log(`connections per worker after the ${version} reload: ${last.join('+')}`)
        throw e
      })
      t.log(`${order}, after the ${version} reload: ${last.join('+')} connections`)
    }
  } finally {
    assertNoFailures(t, await load.stop())
  }
  await vf.fleet.cli(['stop', vf.fleet.name])
}

test.serial('default options, 2 workers, 64 keep-alive clients: balanced after each of 3 stop-first reloads', async (t) => {
  await balancedAfterReloads(t, 'stop-first')
})

test.serial('default options, 2 workers, 64 keep-alive clients: balanced after each of 3 start-first reloads', async (t) => {
  await balancedAfterReloads(t, 'start-first')
})

test.serial('default options, 4 workers, 64 keep-alive clients: balanced after each of 3 stop-first reloads', async (t) => {
  await balancedAfterReloads(t, 'stop-first', 4)
})

test.serial('--parallel 2 reloads 4 workers with a 600 ms boot in at most 0.65x the time of --parallel 1, 0 failed requests', async (t) => {
  const count = 4
  const durations: Record<string, number[]> = {}
  for (const parallel of ['1', '2']) {
    const vf = await versionedFleet(t, {
      count,
      flags: ['--parallel', parallel, '--ready-timeout', '20000'],
      env: { BOOT_DELAY_MS: '600' },
    })
    const status = await vf.fleet.status()
    t.is(status.groups?.[0]?.parallel, Number(parallel))
    // A steady keep-alive load that leaves the CPU to the booting workers: this compares
    // how the reload schedules them, not how 2 cores share out under saturation.
    const load = startLoad({ port: vf.port, connections: 16, pauseMs: 5 })
    try {
      await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
      durations[parallel] = [await reloadAll(t, vf, 'v2', count), await reloadAll(t, vf, 'v3', count)]
    } finally {
      assertNoFailures(t, await load.stop())
    }
    await vf.fleet.cli(['stop', vf.fleet.name])
  }
  const sum = (xs: number[] | undefined): number => (xs ?? []).reduce((a, b) => a + b, 0)
  const [one, two] = [sum(durations['1']), sum(durations['2'])]
  t.log(`reload ms, parallel 1: ${durations['1']?.join(', ')}; parallel 2: ${durations['2']?.join(', ')}; ratio ${(two / one).toFixed(2)}`)
  t.true(two <= 0.65 * one, `parallel 2 took ${two} ms for 2 reloads, parallel 1 ${one} ms`)
})
