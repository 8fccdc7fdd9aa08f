/**
 * How the master learns that a worker exited (issue 9): through each worker's pidfd on
 * Linux ≥ 5.3 (a source of the loop's poller, no thread), or, with `BATON_NO_PIDFD=1`, the
 * fallback of older kernels and macOS: one waiter thread per worker. The same real faults
 * go through both paths: a worker killed with -9 is seen and restarted, a reload stops the
 * old workers with SIGTERM and reaps them, a stop that a worker ignores ends in SIGKILL.
 * The log lines and exit codes are the same on both, and neither leaves a zombie, a
 * thread or an fd behind.
 */
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { fixture, startFleet, versionedFleet, type Fleet } from './helpers/fleet.js'
import { childrenOf, fdTargets, zombieChildren } from '../harness/proc.mjs'
import { freePort, waitFor } from './helpers/processes.js'

/** What watches the master's workers' exits: its pidfds and its waiter threads. */
interface Watchers {
  pidfds: number
  waiters: number
}

/** Count the master's open pidfds and its `baton-wait-<pid>` threads, from /proc. */
function watchers(pid: number): Watchers {
  const pidfds = [...fdTargets(pid).values()].filter((target) => target === 'anon_inode:[pidfd]').length
  let waiters = 0
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').startsWith('baton-wait-')) waiters++
    } catch {
      // the thread ended while we looked
    }
  }
  return { pidfds, waiters }
}

interface Mode {
  name: string
  env: Record<string, string>
  /** What watches `n` workers in this mode. */
  expected(n: number): Watchers
}

const MODES: Mode[] = [
  { name: 'pidfd', env: {}, expected: (n) => ({ pidfds: n, waiters: 0 }) },
  {
    name: 'BATON_NO_PIDFD=1 (waiter threads)',
    env: { BATON_NO_PIDFD: '1' },
    expected: (n) => ({ pidfds: 0, waiters: n }),
  },
]

/** Wait until the master's watchers are those of `n` workers (a reaped worker's go soon after). */
async function watchersSettle(fleet: Fleet, mode: Mode, n: number): Promise<void> {
  const want = mode.expected(n)
  await waitFor(
    () => {
      const got = watchers(fleet.pid)
      return got.pidfds === want.pidfds && got.waiters === want.waiters
    },
    { message: `${JSON.stringify(want)} for ${n} workers, have ${JSON.stringify(watchers(fleet.pid))}` },
  )
}

/** The master's live children are exactly `pids` (a reaped worker is no child of it). */
function childrenAre(fleet: Fleet, pids: number[]): boolean {
  const live = childrenOf(fleet.pid)
    .filter((c) => c.state !== 'Z')
    .map((c) => c.pid)
    .sort()
  return JSON.stringify(live) === JSON.stringify([...pids].sort())
}

for (const mode of MODES) {
  const linuxOnly = process.platform === 'linux' ? test : test.skip

  linuxOnly(
    `${mode.name}: a kill -9 is seen and restarted, a reload reaps the old workers, a stop reaps the last; nothing left behind`,
    async (t) => {
      const vf = await versionedFleet(t, { count: 2, env: mode.env })
      const { fleet } = vf
      t.deepEqual(watchers(fleet.pid), mode.expected(2))

      const [victim, other] = await fleet.workerPids()
      if (victim === undefined || other === undefined) throw new Error('two workers expected')
      process.kill(victim, 'SIGKILL')
      await fleet.log.waitFor(new RegExp(`\\(pid ${victim}\\) killed by SIGKILL; restarting in \\d+ ms`))
      const restarted = await waitFor(
        async () => {
          const s = await fleet.status()
          const pids = s.workers.flatMap((w) => (w.pid === null ? [] : [w.pid]))
          const ready = s.workers.every((w) => w.state === 'ready') && pids.length === 2 && !pids.includes(victim)
          return ready ? s : undefined
        },
        { message: `the killed slot restarted; master log:\n${fleet.log.text}` },
      )
      t.is(
        restarted.workers.reduce((sum, w) => sum + w.restarts, 0),
        1,
      )
      t.is(restarted.workers.find((w) => w.pid !== other)?.lastExit, 'killed by SIGKILL')
      await watchersSettle(fleet, mode, 2)
      t.is(zombieChildren(fleet.pid), 0)

      vf.deploy('v2')
      const before = await fleet.workerPids()
      const reload = await fleet.cli(['reload', fleet.name])
      t.is(reload.code, 0, reload.stderr)
      const after = await fleet.workerPids()
      t.is(after.length, 2)
      for (const pid of before) {
        t.false(after.includes(pid))
        t.regex(fleet.log.text, new RegExp(`\\(pid ${pid}\\) exited with code 0`))
      }
      await waitFor(() => childrenAre(fleet, after), { message: `only the new workers are children of the master` })
      await watchersSettle(fleet, mode, 2)
      t.is(zombieChildren(fleet.pid), 0)

      const stop = await fleet.cli(['stop', fleet.name])
      t.is(stop.code, 0, stop.stderr)
      t.deepEqual(await fleet.exited, { code: 0, signal: null })
      for (const pid of after) t.regex(fleet.log.text, new RegExp(`\\(pid ${pid}\\) exited with code 0`))
      t.regex(fleet.log.text, /all workers stopped/)
    },
  )

  linuxOnly(`${mode.name}: workers that ignore SIGTERM get it, then SIGKILL at the stop timeout`, async (t) => {
    const port = await freePort()
    const fleet = await startFleet(t, {
      script: fixture('ignore-sigterm.mjs'),
      count: 2,
      listen: [`127.0.0.1:${port}`],
      env: mode.env,
      flags: ['--stop-timeout', '1000'],
    })
    t.deepEqual(watchers(fleet.pid), mode.expected(2))
    const pids = await fleet.workerPids()
    const stop = await fleet.cli(['stop', fleet.name])
    t.is(stop.code, 0, stop.stderr)
    t.deepEqual(await fleet.exited, { code: 0, signal: null })
    // The SIGTERM reached both (they said so), then the SIGKILL did.
    t.is(fleet.log.text.split('\n').filter((l) => l.includes('ignoring SIGTERM')).length, 2, fleet.log.text)
    for (const pid of pids) t.regex(fleet.log.text, new RegExp(`\\(pid ${pid}\\) killed by SIGKILL`))
  })
}
