/**
 * systemd's notify protocol: with `NOTIFY_SOCKET` set, the master tells the unit when the
 * fleet is ready, when a reload starts and ends, and when it stops. The listener is a real
 * Unix datagram socket (Node has none, so a few lines of Python hold it).
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { notifications, startNotifyListener } from './helpers/notify.js'
import { freePort, waitFor } from './helpers/processes.js'

test.serial(
  'NOTIFY_SOCKET receives READY, RELOADING + MONOTONIC_USEC, READY and STOPPING, in that order',
  async (t) => {
    const { socketPath, out } = await startNotifyListener(t)

    const port = await freePort()
    const fleet = await startFleet(t, {
      script: fixture('app.mjs'),
      count: 2,
      listen: [`127.0.0.1:${port}`],
      env: { NOTIFY_SOCKET: socketPath },
    })
    await waitFor(() => notifications(out).some((n) => n.READY === '1'), { message: 'READY=1' })
    const reload = await fleet.cli(['reload', fleet.name])
    t.is(reload.code, 0, reload.stderr)
    await waitFor(() => notifications(out).filter((n) => n.READY === '1').length === 2, {
      message: 'READY=1 after the reload',
    })
    const stop = await fleet.cli(['stop', fleet.name])
    t.is(stop.code, 0, stop.stderr)
    await fleet.exited
    await waitFor(() => notifications(out).some((n) => n.STOPPING === '1'), { message: 'STOPPING=1' })

    const got = notifications(out)
    const kinds = got.map((n) => Object.keys(n).find((k) => ['READY', 'RELOADING', 'STOPPING'].includes(k)))
    t.deepEqual(kinds, ['READY', 'RELOADING', 'READY', 'STOPPING'], JSON.stringify(got))
    const [ready, reloading, readyAgain] = got as [
      Record<string, string>,
      Record<string, string>,
      Record<string, string>,
    ]
    t.is(ready.MAINPID, String(fleet.pid), 'MAINPID is the master')
    t.regex(ready.STATUS ?? '', /ready/)
    t.regex(reloading.MONOTONIC_USEC ?? '', /^\d+$/)
    t.true(Number(reloading.MONOTONIC_USEC) > 0)
    t.regex(readyAgain.STATUS ?? '', /2 of 2 workers replaced/)
  },
)

test.serial(
  'a reload whose config file cannot be re-read still answers systemd: RELOADING, then READY with the reason',
  async (t) => {
    const { dir, socketPath, out } = await startNotifyListener(t)

    const port = await freePort()
    const config = join(dir.path, 'baton.config.json')
    writeFileSync(
      config,
      JSON.stringify({ name: 'fleet', groups: { web: { script: fixture('app.mjs'), listen: `127.0.0.1:${port}` } } }),
    )
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1, env: { NOTIFY_SOCKET: socketPath } })
    await waitFor(() => notifications(out).some((n) => n.READY === '1'), { message: 'READY=1' })
    writeFileSync(config, '{ not json')
    process.kill(fleet.pid, 'SIGHUP') // what systemctl reload sends to a Type=notify-reload unit
    await waitFor(() => notifications(out).filter((n) => n.READY === '1').length === 2, {
      message: 'READY=1 after the failed reload',
    })
    const got = notifications(out)
    t.deepEqual(
      got.map((n) => Object.keys(n).find((k) => ['READY', 'RELOADING', 'STOPPING'].includes(k))),
      ['READY', 'RELOADING', 'READY'],
      JSON.stringify(got),
    )
    t.regex(got[2]?.STATUS ?? '', /reload not started: .*baton\.config\.json: is not valid JSON/)
    t.is((await fleet.status()).generation, 1, 'nothing was replaced')
  },
)
