/**
 * Faults under HTTP load (issue 9): workers killed with -9 in a storm, the master killed
 * with -9, and a worker frozen with SIGSTOP during a reload (a new one: the reload aborts;
 * an old one: it is killed after the stop timeout and the reload completes).
 *
 * Requests lost to a fault are bounded, not counted exactly: a worker killed with -9 takes
 * with it the requests in flight on the connections it holds, at most one per connection.
 * The load generator knows which process answered each connection last (`x-pid`), so the
 * bound of one kill is the victim's connections plus the connections that have not been
 * answered yet (they may be on the victim). The observed figures go to the test log.
 */
import test from 'ava'
import { setTimeout as sleep } from 'node:timers/promises'
import { fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { portIsFree } from './helpers/http.js'
import { startLoad, type Load } from '../harness/load.mjs'
import { childrenOf, describeResources, resources } from '../harness/proc.mjs'
import { assertNoFailedRequests } from './helpers/reload.js'
import { freePort, isAlive, waitFor } from './helpers/processes.js'

const FAULTY = fixture('faulty.mjs')

/** The most requests a kill -9 of `pid` can fail now: its connections + unanswered ones. */
function killBound(load: Load, connections: number, pid: number): number {
  const byPid = load.snapshot().connectionsByPid
  const known = Object.values(byPid).reduce((a, b) => a + b, 0)
  return (byPid[String(pid)] ?? 0) + Math.max(0, connections - known)
}

/** The pid of the first child of the master not in `known` (polls /proc every 5 ms). */
function newChild(fleet: Fleet, known: number[]): Promise<number> {
  return waitFor(() => childrenOf(fleet.pid).find((c) => c.state !== 'Z' && !known.includes(c.pid))?.pid, {
    intervalMs: 5,
    message: 'a new worker',
  })
}

/** Every slot has a ready worker again (count of them), and the master's fds are back. */
async function restored(fleet: Fleet, count: number, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      const s = await fleet.status()
      return s.workers.length === count && s.workers.every((w) => w.state === 'ready')
    },
    { timeoutMs, message: `${count} workers ready again; master log:\n${fleet.log.text.slice(-3000)}` },
  )
}

test.serial(
  'kill -9 of a random worker every 500 ms for 10 s under keep-alive load: every slot is restored, failures stay within the in-flight bound',
  async (t) => {
    const port = await freePort()
    const count = 4
    const connections = 16
    const fleet = await startFleet(t, { script: FAULTY, count, listen: [`127.0.0.1:${port}`] })
    const before = resources(fleet.pid)
    const load = startLoad({ port, connections })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 200, { message: 'load running' })

    let kills = 0
    let bound = 0
    const killed: number[] = []
    const end = Date.now() + 10_000
    // A kill storm is timed by nature: one kill every 500 ms, of whichever worker is there.
    while (Date.now() < end) {
      await sleep(500)
      const workers = childrenOf(fleet.pid).filter((c) => c.state !== 'Z' && c.state !== 'X')
      const victim = workers[Math.floor(Math.random() * workers.length)]
      if (victim === undefined) continue
      bound += killBound(load, connections, victim.pid)
      process.kill(victim.pid, 'SIGKILL')
      killed.push(victim.pid)
      kills += 1
    }
    // Backoff: a slot killed k times in a row waits 0.1 × 2^(k-1) s before its next worker.
    await restored(fleet, count, 60_000)
    const result = await load.stop()
    const status = await fleet.status()
    const restarts = status.workers.reduce((a, w) => a + w.restarts, 0)
    t.log(
      `${kills} kills, ${result.requests} requests, ${result.errors} failed (bound ${bound}: ` +
        `${JSON.stringify(result.errorCodes)}), restarts ${restarts}`,
    )
    t.true(kills >= 15, `kills: ${kills}`)
    t.true(result.ok > 1000, `load ran: ${result.ok} ok`)
    t.true(result.errors <= bound, `failed ${result.errors} > bound ${bound}`)
    t.is(result.non2xx, 0)
    t.is(restarts, kills, 'every kill was seen as a crash and its slot restarted')
    t.true(
      status.workers.every((w) => !killed.includes(w.pid ?? -1)),
      'no killed pid is listed',
    )
    // The master keeps nothing of the dead workers: fds back, no zombie.
    await waitFor(() => resources(fleet.pid).fds === before.fds, {
      timeoutMs: 5000,
      message: `fds back to ${before.fds}`,
    })
    const after = resources(fleet.pid)
    t.log(`master before: ${describeResources(before)}; after: ${describeResources(after)}`)
    t.is(after.zombies, 0)
    t.is(after.children, count)
  },
)

test.serial('kill -9 of the master under load: every worker exits within 3 s and the port is released', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: FAULTY, count: 4, listen: [`127.0.0.1:${port}`] })
  const pids = await fleet.workerPids()
  const load = startLoad({ port, connections: 16 })
  t.teardown(() => load.stop())
  await waitFor(() => load.snapshot().ok > 200, { message: 'load running' })
  process.kill(fleet.pid, 'SIGKILL')
  await fleet.exited
  const killedAt = Date.now()
  await waitFor(() => pids.every((p) => !isAlive(p)), {
    timeoutMs: 3000,
    intervalMs: 10,
    message: 'every worker gone within 3 s',
  })
  const workersGoneMs = Date.now() - killedAt
  // Keep-alive clients hold no listening socket: the port is free once the workers are gone.
  await waitFor(() => portIsFree(port), {
    timeoutMs: Math.max(100, 3000 - workersGoneMs),
    message: 'port released within 3 s',
  })
  const result = await load.stop()
  t.log(
    `workers gone ${workersGoneMs} ms after the master; port free ${Date.now() - killedAt} ms; load: ${result.ok} ok, ${result.errors} failed after the master died`,
  )
  t.pass()
})

test.serial(
  'SIGSTOP on a new worker during a reload: the reload aborts after readyTimeout, the old workers keep serving, no request fails',
  async (t) => {
    const port = await freePort()
    // Workers take 800 ms to listen, so the new one is frozen before it can be ready.
    const fleet = await startFleet(t, {
      script: FAULTY,
      count: 2,
      listen: [`127.0.0.1:${port}`],
      env: { BOOT_DELAY_MS: '800' },
      flags: ['--ready-timeout', '2000'],
    })
    const old = (await fleet.workerPids()).sort()
    const before = resources(fleet.pid)
    t.log(`master before: ${describeResources(before)}`)
    const load = startLoad({ port, connections: 16 })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 200, { message: 'load running' })
    const reload = fleet.cli(['reload', fleet.name])
    const frozen = await newChild(fleet, old)
    process.kill(frozen, 'SIGSTOP')
    const r = await reload
    t.is(r.code, 1, r.stdout)
    t.regex(r.stderr, /not ready within 2000 ms/)
    const result = await load.stop()
    assertNoFailedRequests(t, result)
    const status = await fleet.status()
    t.deepEqual(status.workers.map((w) => w.pid).sort(), old, 'the old workers still serve')
    t.true(status.workers.every((w) => w.state === 'ready'))
    t.is(status.lastReload?.outcome, 'failed')
    await waitFor(() => !isAlive(frozen), { message: 'the frozen worker was killed' })
    await waitFor(() => resources(fleet.pid).fds === before.fds, {
      timeoutMs: 5000,
      message: `fds back to ${before.fds}`,
    })
    t.is(resources(fleet.pid).zombies, 0)
    t.log(`${result.requests} requests, 0 failed; master after: ${describeResources(resources(fleet.pid))}`)
  },
)

test.serial(
  'SIGSTOP on an old worker during a reload: it is SIGKILLed after stopTimeout, then the reload completes',
  async (t) => {
    const port = await freePort()
    const connections = 16
    const fleet = await startFleet(t, {
      script: FAULTY,
      count: 2,
      listen: [`127.0.0.1:${port}`],
      flags: ['--stop-timeout', '1000'],
    })
    const before = await fleet.status()
    const oldPids = before.workers.map((w) => w.pid ?? -1)
    const victim = before.workers.find((w) => w.id === 0)?.pid ?? -1
    const res0 = resources(fleet.pid)
    const load = startLoad({ port, connections })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 200, { message: 'load running' })
    const reload = fleet.cli(['reload', fleet.name])
    // Freeze slot 0's old worker as soon as the first replacement is spawned.
    await newChild(fleet, oldPids)
    const bound = killBound(load, connections, victim)
    process.kill(victim, 'SIGSTOP')
    const r = await reload
    t.is(r.code, 0, r.stderr)
    t.regex(
      fleet.log.text,
      new RegExp(`${fleet.name}#0 \\(pid ${victim}\\) still running 1000 ms after stop: sending SIGKILL`),
    )
    await waitFor(() => !isAlive(victim), { message: 'the frozen worker is gone' })
    const result = await load.stop()
    const after = await fleet.status()
    t.is(after.lastReload?.outcome, 'done')
    t.true(
      after.workers.every((w) => w.state === 'ready' && !oldPids.includes(w.pid ?? -1)),
      'every worker replaced',
    )
    // Only the frozen worker's connections can fail (it never answers them, then is killed).
    t.log(`${result.requests} requests, ${result.errors} failed (bound ${bound}: ${JSON.stringify(result.errorCodes)})`)
    t.true(result.errors <= bound, `failed ${result.errors} > bound ${bound}`)
    t.is(result.non2xx, 0)
    await waitFor(() => resources(fleet.pid).fds === res0.fds, { timeoutMs: 5000, message: `fds back to ${res0.fds}` })
    t.log(`master before: ${describeResources(res0)}; after: ${describeResources(resources(fleet.pid))}`)
  },
)
