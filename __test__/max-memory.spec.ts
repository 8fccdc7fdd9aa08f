/**
 * `maxMemory` (`--max-memory SIZE`, PM2's `max_memory_restart`): a worker whose RSS stays
 * above the limit for 3 s is replaced gracefully (its successor ready first, then it
 * drains: crates/baton-core/src/fleet.rs, **Memory**), one at a time, under keep-alive
 * load with zero failed requests; the log and the status say why. A worker of a
 * non-reloadable group is only logged. A bad size is refused at start naming the field.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { fixture, startFleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

const REPLACING =
  /worker (\w+)#(\d+) \(pid (\d+)\) RSS [\d.]+ MiB above maxMemory (\d+) MiB for \d+ s: replacing it gracefully/g

test.serial(
  'a worker leaking under keep-alive load is replaced gracefully twice by --max-memory, 0 failed requests',
  async (t) => {
    const port = await freePort()
    const fleet = await startFleet(t, {
      script: fixture('leak.mjs'),
      count: 2,
      env: { PORT: String(port), LEAK_KIB: '256' },
      flags: ['--max-memory', '80M'],
    })
    // About 200 requests a second over 4 keep-alive connections: 50 MiB a second leaked
    // across the two workers.
    const load = startLoad({ port, connections: 4, pauseMs: 10 })
    try {
      await waitFor(
        async () => {
          const s = await fleet.status()
          // Two replacements done: counted, every old worker gone, every slot ready.
          return (
            (s.counters.memoryReplacements.fleet ?? 0) >= 2 &&
            s.workers.length === 2 &&
            s.workers.every((w) => w.state === 'ready')
          )
        },
        { timeoutMs: 60_000, intervalMs: 250, message: 'two memory replacements done' },
      )
    } finally {
      const result = await load.stop()
      if (result.errors) t.log(fleet.log.text)
      assertNoFailedRequests(t, result)
    }
    const log = fleet.log.text
    const replacements = [...log.matchAll(REPLACING)]
    t.true(replacements.length >= 2, `the log says why, each time:\n${log}`)
    t.true(
      replacements.every((m) => m[1] === 'fleet' && m[4] === '80'),
      log,
    )
    // Graceful: the successor in the same slot is ready before the old worker exits, and
    // no worker is killed.
    const [, , slot, oldPid] = replacements[0] ?? []
    const after = log.slice((replacements[0]?.index ?? 0) + (replacements[0]?.[0].length ?? 0))
    const ready = after.search(new RegExp(`fleet#${slot} ready \\(pid (?!${oldPid}\\b)\\d+`))
    const exited = after.search(new RegExp(`fleet#${slot} \\(pid ${oldPid}\\) `))
    t.true(ready >= 0 && exited > ready, `successor ready, then the old worker leaves:\n${after}`)
    t.notRegex(log, /sending SIGKILL/)
    // The status says why: the counter, and the slot's row.
    const status = await fleet.status()
    t.true((status.counters.memoryReplacements.fleet ?? 0) >= 2)
    t.is(status.counters.restarts.fleet, 0, 'a memory replacement is no crash restart')
    t.true(
      status.workers.some((w) =>
        /^RSS [\d.]+ MiB above maxMemory 80 MiB for \d+ s \(pid \d+\)$/.test(w.lastReplaced ?? ''),
      ),
      JSON.stringify(status.workers),
    )
    t.is(status.groups[0]?.options?.maxMemory, '80M')
    // `baton status` shows it too.
    const human = await fleet.cli(['status', fleet.name])
    t.regex(human.stdout, /replaced: RSS [\d.]+ MiB above maxMemory 80 MiB/)
    await fleet.cli(['stop', fleet.name])
  },
)

test.serial('a worker of a non-reloadable group over maxMemory is logged once, never replaced', async (t) => {
  const dir = await tmpDir('baton-maxmem-')
  t.teardown(() => dir.cleanup())
  const [webPort, gwPort] = [await freePort(), await freePort()]
  // 20M is below what an idle Node worker uses: both groups are over the limit at once.
  // `web` is the clock: its replacements show that time passed for `gw` too.
  writeFileSync(
    join(dir.path, 'baton.config.mjs'),
    `export default {
  name: 'mm',
  groups: {
    web: { script: ${JSON.stringify(fixture('leak.mjs'))}, count: 1, maxMemory: '20M', env: { PORT: '${webPort}' } },
    gw: { script: ${JSON.stringify(fixture('leak.mjs'))}, count: 1, maxMemory: '20M', reloadable: false, env: { PORT: '${gwPort}' } },
  },
}
`,
  )
  const fleet = await startFleet(t, { cwd: dir.path, name: 'mm', expectWorkers: 2 })
  const before = await fleet.status()
  const gwPid = before.workers.find((w) => w.group === 'gw')?.pid
  await fleet.log.waitFor(
    /worker gw#0 \(pid \d+\) RSS [\d.]+ MiB above maxMemory 20 MiB for 3 s: not replaced: group gw is not reloadable/,
    20_000,
  )
  // web is replaced over and over meanwhile (each successor is over 20M too).
  const status = await waitFor(
    async () => {
      const s = await fleet.status()
      return (s.counters.memoryReplacements.web ?? 0) >= 3 ? s : undefined
    },
    { timeoutMs: 60_000, intervalMs: 250, message: 'three web replacements' },
  )
  t.is(status.workers.find((w) => w.group === 'gw')?.pid, gwPid, 'gw kept its worker')
  t.is(status.counters.memoryReplacements.gw, 0)
  t.is(status.workers.find((w) => w.group === 'gw')?.lastReplaced, null)
  const logged = [...fleet.log.text.matchAll(/worker gw#0 .*not replaced/g)]
  t.is(logged.length, 1, `logged once per crossing, not every second:\n${fleet.log.text}`)
  await fleet.cli(['stop', fleet.name])
})

test('a bad --max-memory is refused at start (exit 2), naming the field and what a size is', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('leak.mjs'),
    count: 1,
    env: { PORT: String(port) },
    flags: ['--max-memory', '12X'],
    noWait: true,
  })
  const exit = await fleet.exited
  t.is(exit.code, 2)
  t.regex(
    fleet.log.text,
    /groups\.fleet\.maxMemory: expected a size such as 512M, 1\.5G or a number of bytes, got "12X"/,
  )
  t.notRegex(fleet.log.text, /fleet#0 ready/)
})
