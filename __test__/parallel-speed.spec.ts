/**
 * `parallel` replaces several workers at once: a timed comparison of two reload speeds in
 * the same test. It runs on its own after the rest of the suite (`ava --config
 * ava.timing.config.mjs`, see package.json), so no other test file competes for the 2
 * cores while the workers boot; the suite itself asserts no timings.
 */
import test from 'ava'
import { versionedFleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { waitFor } from './helpers/processes.js'
import { assertNoFailedRequests, reloadAll } from './helpers/reload.js'

test.serial(
  '--parallel 2 reloads 4 workers with a 600 ms boot in at most 0.65x the time of --parallel 1, 0 failed requests',
  async (t) => {
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
        assertNoFailedRequests(t, await load.stop())
      }
      await vf.fleet.cli(['stop', vf.fleet.name])
    }
    const sum = (xs: number[] | undefined): number => (xs ?? []).reduce((a, b) => a + b, 0)
    const [one, two] = [sum(durations['1']), sum(durations['2'])]
    t.log(
      `reload ms, parallel 1: ${durations['1']?.join(', ')}; parallel 2: ${durations['2']?.join(', ')}; ratio ${(two / one).toFixed(2)}`,
    )
    t.true(two <= 0.65 * one, `parallel 2 took ${two} ms for 2 reloads, parallel 1 ${one} ms`)
  },
)
