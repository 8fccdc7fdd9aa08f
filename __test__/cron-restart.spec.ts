/**
 * `cronRestart` (`--cron-restart EXPR`): a rolling reload on a cron schedule, the same
 * reload as `baton reload` (crates/baton-core/src/event_loop/cron.rs), under keep-alive
 * load with zero failed requests; a bad expression is refused at start naming the field.
 */
import test from 'ava'
import { fixture, startFleet, versionedFleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

test.serial(
  '--cron-restart every 4 s: two scheduled rolling reloads under keep-alive load, 0 failed requests',
  async (t) => {
    const { fleet, port } = await versionedFleet(t, { count: 2, flags: ['--cron-restart', '*/4 * * * * *'] })
    const load = startLoad({ port, connections: 16 })
    let from: number
    try {
      await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
      // Count from the first pass that starts after the load is running.
      const start = await fleet.status()
      from = start.generation
      for (const generation of [from + 1, from + 2]) {
        await fleet.log.waitFor(new RegExp(`reload ${generation} done: 2 of 2 workers replaced`), 20_000)
      }
    } finally {
      const result = await load.stop()
      if (result.errors) t.log(fleet.log.text)
      assertNoFailedRequests(t, result)
    }
    const log = fleet.log.text
    t.true(
      [...log.matchAll(/scheduled reload \(cronRestart \*\/4 \* \* \* \* \*, group fleet\)/g)].length >= 2,
      `each reload is logged as scheduled:\n${log}`,
    )
    for (const generation of [from + 1, from + 2]) {
      // The pass of that generation, as `baton reload` logs it: both slots replaced, one at
      // a time (start-first, parallel 1: the second is replaced once the first is).
      const pass = log.match(
        new RegExp(`reload ${generation} started: 2 workers to replace\\n([\\s\\S]*?)reload ${generation} done`),
      )?.[1]
      t.truthy(pass, `reload ${generation} started and done:\n${log}`)
      const steps = [
        ...(pass ?? '').matchAll(/fleet#(\d+) ready \(pid \d+, generation (\d+)\)|fleet (\d)\/2 replaced/g),
      ].map((m) => (m[1] !== undefined ? `ready#${m[1]}@${m[2]}` : `replaced ${m[3]}/2`))
      t.deepEqual(
        steps.map((s) => s.replace(/#\d/, '#')),
        [`ready#@${generation}`, 'replaced 1/2', `ready#@${generation}`, 'replaced 2/2'],
        `generation ${generation}: ${steps.join(', ')}`,
      )
      t.notDeepEqual(steps[0], steps[2], 'two different slots')
    }
    const status = await fleet.status()
    t.true(status.generation >= from + 2)
    t.true(status.workers.every((w) => w.state === 'ready'))
    t.is(status.groups[0]?.options?.cronRestart, '*/4 * * * * *')
    await fleet.cli(['stop', fleet.name])
  },
)

test('an invalid --cron-restart is refused at start, naming the field and why', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 1,
    listen: [`127.0.0.1:${port}`],
    flags: ['--cron-restart', '61 * * * *'],
    noWait: true,
  })
  const exit = await fleet.exited
  t.not(exit.code, 0)
  t.regex(fleet.log.text, /groups\.fleet\.cronRestart: "61 \* \* \* \*" is not a cron expression: \S/)
  t.notRegex(fleet.log.text, /fleet#0 ready/)
})

test('the expression is read in the master time zone: TZ is honoured', async (t) => {
  // A time of day a few seconds from now in UTC+14 (Etc/GMT-14): it fires only if the
  // master reads its expression in TZ, not in UTC (a whole 14 hours away).
  const at = new Date(Date.now() + 14 * 3600_000 + 8000)
  const expression = `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} * * *`
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 1,
    listen: [`127.0.0.1:${port}`],
    env: { TZ: 'Etc/GMT-14' },
    flags: ['--cron-restart', expression],
  })
  await fleet.log.waitFor(
    new RegExp(`scheduled reload \\(cronRestart ${expression.replaceAll('*', '\\*')}, group fleet\\)`),
    20_000,
  )
  await fleet.log.waitFor(/reload 2 done: 1 of 1 workers replaced/)
  t.is((await fleet.status()).generation, 2)
})
