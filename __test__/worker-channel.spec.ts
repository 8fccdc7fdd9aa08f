/**
 * The master's side of a worker's control channel when the worker does not play along
 * (crates/baton-core/src/outbox.rs, event_loop/workers.rs): what the master sends waits in
 * a bounded queue, whole and in order, flushed when the channel is writable; the loop
 * never blocks or sleeps on a worker, and a worker that never reads loses its channel and
 * is stopped, with a logged reason, while the master and the other workers go on.
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

/** How long `baton status` takes, in ms. */
async function statusMs(fleet: Awaited<ReturnType<typeof startFleet>>): Promise<number> {
  const start = performance.now()
  await fleet.status()
  return performance.now() - start
}

test.serial(
  'a worker that stops reading its channel gets every answer whole once it reads again (1000 refusals, ~330 KB)',
  async (t) => {
    const dir = await tmpDir('baton-channel-')
    t.teardown(() => dir.cleanup())
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name: 'fleet',
        groups: {
          hog: {
            script: fixture('channel-hog.mjs'),
            count: 1,
            dropIn: false,
            env: { REQUESTS: '1000', BLOCK_MS: '1500' },
          },
        },
      }),
    )
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
    const line = await waitFor(() => /^answers (\d+) of 1000, (\d+) messages$/m.exec(fleet.log.text), {
      timeoutMs: 15_000,
      message: `the worker's count of answers; log:\n${fleet.log.text.slice(-3000)}`,
    })
    t.is(Number(line[1]), 1000, line[0])
    t.is(Number(line[2]), 1000, 'no other message: nothing torn')
    t.notRegex(fleet.log.text, /does not read its channel/)
  },
)

test.serial(
  'a worker that never reads its channel while the master answers it: its channel is dropped and it is stopped, logged; the master and the other group go on',
  async (t) => {
    const dir = await tmpDir('baton-channel-')
    t.teardown(() => dir.cleanup())
    const port = await freePort()
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name: 'fleet',
        groups: {
          web: { script: fixture('plain-server.mjs'), count: 1, listen: `127.0.0.1:${port}` },
          hog: { script: fixture('channel-hog.mjs'), count: 1, dropIn: false, env: { REQUESTS: '20000' } },
        },
      }),
    )
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2, noWait: true })
    await waitFor(
      () => /hog#0 \(pid \d+\): .* does not read its channel; closing its channel and stopping it/.test(fleet.log.text),
      {
        timeoutMs: 20_000,
        message: `the master gives up on the hog; log:\n${fleet.log.text.slice(-3000)}`,
      },
    )
    for (let i = 0; i < 5; i++) {
      const ms = await statusMs(fleet)
      t.true(ms < 1000, `baton status took ${ms.toFixed(0)} ms`)
      t.is((await httpGet({ port, path: '/' })).status, 200)
    }
  },
)
