/**
 * The graceful sequential reload under real keep-alive HTTP load: zero failed requests,
 * every worker replaced, bad deploys aborted with the old workers serving.
 */
import test, { type ExecutionContext } from 'ava'
import { fixture, startFleet, versionedFleet, type Fleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

/** 4 workers of the test app, reload order `order`. */
function appFleet(
  t: ExecutionContext,
  order: 'start-first' | 'stop-first',
  extra: string[] = [],
  env: Record<string, string> = {},
) {
  return versionedFleet(t, { count: 4, flags: ['--order', order, ...extra], env })
}

async function reloadThreeTimes(t: ExecutionContext, order: 'start-first' | 'stop-first', flags: string[] = []) {
  const { fleet, port, deploy } = await appFleet(t, order, flags)
  const load = startLoad({ port, connections: 32 })
  try {
    await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
    for (const version of ['v2', 'v3', 'v4']) {
      const before = await fleet.status()
      deploy(version)
      const reload = await fleet.cli(['reload', fleet.name])
      t.is(reload.code, 0, reload.stderr)
      t.regex(reload.stdout, /fleet 4\/4 replaced/)
      const after = await fleet.status()
      const oldPids = new Set(before.workers.map((w) => w.pid))
      t.is(after.workers.length, 4)
      t.true(
        after.workers.every((w) => w.state === 'ready' && !oldPids.has(w.pid)),
        'every worker replaced',
      )
      t.deepEqual(after.workers.map((w) => w.id).sort(), [0, 1, 2, 3], 'slot ids kept')
      t.true(after.workers.every((w) => w.generation === before.generation + 1))
      t.is(after.lastReload?.outcome, 'done')
      t.is(after.lastReload?.replaced.length, 4)
      const seen = load.snapshot().bodies[version] ?? 0
      await waitFor(() => (load.snapshot().bodies[version] ?? 0) > seen + 100, { message: `${version} served` })
    }
  } finally {
    const result = await load.stop()
    if (result.errors) t.log(fleet.log.text)
    assertNoFailedRequests(t, result)
    t.true((result.bodies.v4 ?? 0) > 0)
  }
  await fleet.cli(['stop', fleet.name])
}

test.serial('start-first: 3 reloads under keep-alive load, zero failed requests, every worker replaced', async (t) => {
  await reloadThreeTimes(t, 'start-first')
})

test.serial('stop-first: 3 reloads under keep-alive load, zero failed requests, every worker replaced', async (t) => {
  await reloadThreeTimes(t, 'stop-first')
})

test.serial(
  'balance reuseport (one socket per slot): start-first and stop-first reloads under load, zero failed requests',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('SO_REUSEPORT balancing is Linux only')
    await reloadThreeTimes(t, 'start-first', ['--balance', 'reuseport'])
    await reloadThreeTimes(t, 'stop-first', ['--balance', 'reuseport'])
  },
)

async function badDeploy(
  t: ExecutionContext,
  fleet: Fleet,
  port: number,
  deploy: (c: string) => void,
  bad: string,
  cause: RegExp,
) {
  const load = startLoad({ port, connections: 32 })
  try {
    await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
    const before = await fleet.status()
    deploy(bad)
    const reload = await fleet.cli(['reload', fleet.name])
    t.is(reload.code, 1)
    t.regex(reload.stderr, cause)
    const after = await fleet.status()
    t.is(after.lastReload?.outcome, 'failed')
    t.deepEqual(
      after.workers
        .filter((w) => w.state === 'ready')
        .map((w) => w.pid)
        .sort(),
      before.workers.map((w) => w.pid).sort(),
      'the old workers keep serving',
    )
    const seen = load.snapshot().bodies.v1 ?? 0
    await waitFor(() => (load.snapshot().bodies.v1 ?? 0) > seen + 100, { message: 'v1 still served' })
  } finally {
    const result = await load.stop()
    assertNoFailedRequests(t, result)
    t.deepEqual(Object.keys(result.bodies), ['v1'])
  }
}

test.serial(
  'bad deploy that throws at start: reload exits 1 with the cause, v1 keeps serving, zero failed requests',
  async (t) => {
    const { fleet, port, deploy } = await appFleet(t, 'start-first')
    await badDeploy(
      t,
      fleet,
      port,
      deploy,
      'throw',
      /exited with code 1 before it was ready[\s\S]*BOOT_FAIL: version file says throw/,
    )
  },
)

test.serial('bad deploy that never becomes ready: reload exits 1 after readyTimeout, v1 keeps serving', async (t) => {
  const { fleet, port, deploy } = await appFleet(t, 'start-first', ['--ready-timeout', '1500'])
  await badDeploy(t, fleet, port, deploy, 'hang', /not ready within 1500 ms/)
})

test.serial('stop-first bad deploy: only one slot is lost, the others keep serving', async (t) => {
  const { fleet, port, deploy } = await appFleet(t, 'stop-first')
  const load = startLoad({ port, connections: 32 })
  try {
    await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
    const before = await fleet.status()
    deploy('throw')
    const reload = await fleet.cli(['reload', fleet.name])
    t.is(reload.code, 1)
    const after = await fleet.status()
    const survivors = after.workers.filter((w) => w.state === 'ready').map((w) => w.pid)
    t.is(survivors.length, 3)
    t.true(survivors.every((pid) => before.workers.some((w) => w.pid === pid)))
    const emptied = after.workers.find((w) => w.state !== 'ready')
    t.truthy(emptied, 'the emptied slot is refilled with backoff')
  } finally {
    assertNoFailedRequests(t, await load.stop())
  }
})

test.serial('two reloads at once both succeed and no slot is replaced twice in one pass', async (t) => {
  const { fleet, deploy } = await appFleet(t, 'start-first')
  deploy('v2')
  const [a, b] = await Promise.all([fleet.cli(['reload', fleet.name]), fleet.cli(['reload', fleet.name])])
  t.is(a.code, 0, a.stderr)
  t.is(b.code, 0, b.stderr)
  // Each pass spawns at most one worker per slot: "fleet#<id> ready (pid, generation <g>)".
  const perGeneration = new Map<string, string[]>()
  for (const m of fleet.log.text.matchAll(/fleet#(\d+) ready \(pid \d+, generation (\d+)\)/g)) {
    perGeneration.set(m[2], [...(perGeneration.get(m[2]) ?? []), m[1]])
  }
  for (const [generation, ids] of perGeneration) {
    t.is(new Set(ids).size, ids.length, `generation ${generation} replaced ${ids.join(',')}`)
  }
  const passes = [...fleet.log.text.matchAll(/reload (\d+) started/g)].length
  t.true(passes >= 1 && passes <= 2, `${passes} passes for 2 coalesced requests`)
  const status = await fleet.status()
  t.true(status.workers.every((w) => w.state === 'ready'))
})

test.serial('SIGHUP and SIGUSR2 to the master reload; status shows the reload and its outcome', async (t) => {
  // A 300 ms boot makes the reload long enough for status to be caught mid-way.
  const { fleet, port, deploy } = await appFleet(t, 'start-first', [], { BOOT_DELAY_MS: '300' })
  deploy('v2')
  process.kill(fleet.pid, 'SIGHUP')
  await fleet.log.waitFor(/reload 2 done: 4 of 4 workers replaced/)
  deploy('v3')
  process.kill(fleet.pid, 'SIGUSR2')
  const reloading = await waitFor(async () => (await fleet.status()).reloading || undefined, {
    intervalMs: 5,
    message: 'status shows the reload in progress',
  })
  t.true(reloading)
  await fleet.log.waitFor(/reload 3 done: 4 of 4 workers replaced/)
  const status = await fleet.status()
  t.false(status.reloading)
  t.is(status.generation, 3)
  t.is(status.lastReload?.outcome, 'done')
  const { body } = await httpGet({ port })
  t.is(body, 'v3')
})

test.serial('old workers that ignore SIGTERM are killed after stopTimeout and the reload goes on', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('ignore-sigterm.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
    flags: ['--stop-timeout', '300'],
  })
  const before = await fleet.workerPids()
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 0, reload.stderr)
  for (const pid of before) {
    await fleet.log.waitFor(new RegExp(`\\(pid ${pid}\\) still running 300 ms after stop: sending SIGKILL`))
  }
  const after = await fleet.status()
  t.is(after.lastReload?.replaced.length, 2)
  t.true(after.workers.every((w) => w.state === 'ready' && !before.includes(w.pid!)))
})
