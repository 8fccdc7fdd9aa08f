/**
 * The reload's own quality: keep-alive clients stay spread over the workers after every
 * reload (default options). `parallel` is timed in parallel-speed.spec.ts.
 */
import test, { type ExecutionContext } from 'ava'
import { fixture, startVersioned, versionedFleet } from './helpers/fleet.js'
import { startLoad, type Load } from '../harness/load.mjs'
import { waitFor } from './helpers/processes.js'
import { assertNoFailedRequests, reloadAll } from './helpers/reload.js'

/** Connections per live worker pid, as the clients see them (0 for a worker with none). */
function spread(load: Load, pids: number[]): number[] {
  const by = load.snapshot().connectionsByPid
  return pids.map((p) => by[String(p)] ?? 0)
}

async function balancedAfterReloads(
  t: ExecutionContext,
  order: 'start-first' | 'stop-first',
  count = 2,
  app: 'runtime' | 'drop-in' = 'runtime',
): Promise<void> {
  const clients = 64
  // Default options: only the order is chosen. The drop-in app calls plain
  // listen(PORT) with no baton import; the master hands it the per-slot socket.
  const vf =
    app === 'runtime'
      ? await versionedFleet(t, { count, flags: ['--order', order] })
      : await startVersioned(t, (port) => ({
          script: fixture('plain-versioned.mjs'),
          count,
          env: { PORT: String(port) },
          flags: ['--order', order],
        }))
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
        {
          timeoutMs: 10_000,
          message: `${order} ${version}: every worker holds >= ${fair / 2} of ${clients} connections`,
        },
      ).catch((e: unknown) => {
        t.log(`connections per worker after the ${version} reload: ${last.join('+')}`)
        throw e
      })
      t.log(`${order}, after the ${version} reload: ${last.join('+')} connections`)
    }
  } finally {
    assertNoFailedRequests(t, await load.stop())
  }
  await vf.fleet.cli(['stop', vf.fleet.name])
}

test.serial(
  'default options, 2 workers, 64 keep-alive clients: balanced after each of 3 stop-first reloads',
  async (t) => {
    await balancedAfterReloads(t, 'stop-first')
  },
)

test.serial(
  'default options, 2 workers, 64 keep-alive clients: balanced after each of 3 start-first reloads',
  async (t) => {
    await balancedAfterReloads(t, 'start-first')
  },
)

test.serial(
  'default options, 4 workers, 64 keep-alive clients: balanced after each of 3 stop-first reloads',
  async (t) => {
    await balancedAfterReloads(t, 'stop-first', 4)
  },
)

test.serial(
  'drop-in app (plain listen(PORT)), 2 workers, 64 keep-alive clients: balanced after each of 3 stop-first reloads',
  async (t) => {
    await balancedAfterReloads(t, 'stop-first', 2, 'drop-in')
  },
)
