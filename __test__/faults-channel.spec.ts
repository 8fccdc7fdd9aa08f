/**
 * Workers that misbehave towards the master, and commands that collide (issue 9): a worker
 * that exits while draining, one that closes its control channel, one that writes garbage
 * or 10 MB lines on it; a stop during a reload, a reload during a stop, 20 SIGHUPs in one
 * second; a crash loop. After each, the master still supervises: status answers, every
 * slot has a worker, and the reload outcome is the one the rules give.
 */
import test from 'ava'
import { setTimeout as sleep } from 'node:timers/promises'
import { fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { startLoad } from '../harness/load.mjs'
import { childrenOf, describeResources, resources } from '../harness/proc.mjs'
import { assertNoFailedRequests } from './helpers/reload.js'
import { freePort, isAlive, waitFor } from './helpers/processes.js'

const FAULTY = fixture('faulty.mjs')

/** GET `path` on fresh connections until every pid in `pids` has answered one; the answers. */
async function hitEvery(port: number, path: string, pids: number[]): Promise<Map<number, string>> {
  const answered = new Map<number, string>()
  await waitFor(
    async () => {
      const r = await httpGet({ port, path })
      answered.set(Number(r.headers['x-pid']), r.body)
      return pids.every((p) => answered.has(p))
    },
    { timeoutMs: 20_000, intervalMs: 1, message: `every worker answered ${path}` },
  )
  return answered
}

/** Record every child the master has (polling /proc) until `stop()`. */
function watchChildren(fleet: Fleet): { seen: Set<number>; stop: () => void } {
  const seen = new Set<number>()
  const timer = setInterval(() => {
    for (const c of childrenOf(fleet.pid)) seen.add(c.pid)
  }, 5)
  return { seen, stop: () => clearInterval(timer) }
}

test.serial(
  'a worker that exits while draining: the reload completes, the exit is not taken for a crash',
  async (t) => {
    const port = await freePort()
    const count = 2
    const connections = 8
    const fleet = await startFleet(t, {
      script: FAULTY,
      count,
      listen: [`127.0.0.1:${port}`],
      env: { EXIT_ON_DRAIN: '7' },
    })
    const old = await fleet.workerPids()
    const res0 = resources(fleet.pid)
    const load = startLoad({ port, connections, path: '/slow' })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 20, { message: 'load running' })
    const r = await fleet.cli(['reload', fleet.name])
    t.is(r.code, 0, r.stderr)
    const result = await load.stop()
    const s = await fleet.status()
    t.is(s.lastReload?.outcome, 'done')
    t.true(
      s.workers.every((w) => w.state === 'ready' && !old.includes(w.pid ?? -1)),
      'every worker replaced',
    )
    t.is(
      s.workers.reduce((a, w) => a + w.restarts, 0),
      0,
      'no restart: it had been asked to stop',
    )
    for (const pid of old) t.regex(fleet.log.text, new RegExp(`\\(pid ${pid}\\) exited with code 7`))
    // Each exit cuts the requests in flight on its connections: at most all of them, once.
    t.log(
      `${result.requests} requests, ${result.errors} failed (bound ${count * connections}: ${JSON.stringify(result.errorCodes)})`,
    )
    t.true(result.errors <= count * connections)
    await waitFor(() => resources(fleet.pid).fds === res0.fds, { timeoutMs: 5000, message: `fds back to ${res0.fds}` })
    t.log(`master before: ${describeResources(res0)}; after: ${describeResources(resources(fleet.pid))}`)
  },
)

test("a worker that closes its control channel: baton's runtime takes it as the master's loss and exits, and the slot is restored", async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: FAULTY, count: 2, listen: [`127.0.0.1:${port}`] })
  const before = resources(fleet.pid)
  const r = await httpGet({ port, path: '/disconnect' })
  const pid = Number(r.headers['x-pid'])
  await waitFor(() => !isAlive(pid), { message: 'the disconnected worker exits' })
  await waitFor(
    async () => {
      const s = await fleet.status()
      return s.workers.length === 2 && s.workers.every((w) => w.state === 'ready' && w.pid !== pid)
    },
    { message: 'its slot restored' },
  )
  await waitFor(() => resources(fleet.pid).fds === before.fds, {
    timeoutMs: 5000,
    message: `fds back to ${before.fds}`,
  })
  t.log(`master before: ${describeResources(before)}; after: ${describeResources(resources(fleet.pid))}`)
  t.is((await fleet.cli(['reload', fleet.name])).code, 0)
})

test('a plain worker that closes its control channel and keeps serving: the master still reloads and stops it', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('plain-disconnect.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
  })
  const old = await fleet.workerPids()
  const res0 = resources(fleet.pid)
  const answers = await hitEvery(port, '/disconnect', old)
  t.is(answers.size, 2)
  await hitEvery(port, '/', old) // both still serve without a channel
  const s = await fleet.status()
  t.true(
    s.workers.every((w) => w.state === 'ready'),
    'still listed as ready: they run',
  )
  const r = await fleet.cli(['reload', fleet.name])
  t.is(r.code, 0, r.stderr)
  const after = await fleet.status()
  t.true(
    after.workers.every((w) => w.state === 'ready' && !old.includes(w.pid ?? -1)),
    'replaced (SIGTERM reached them)',
  )
  await waitFor(() => old.every((p) => !isAlive(p)), { message: 'the old ones are gone' })
  await waitFor(() => resources(fleet.pid).fds === res0.fds, { timeoutMs: 5000, message: `fds back to ${res0.fds}` })
  t.log(`master before: ${describeResources(res0)}; after the reload: ${describeResources(resources(fleet.pid))}`)
  t.is((await fleet.cli(['stop', fleet.name])).code, 0)
  t.deepEqual(await fleet.exited, { code: 0, signal: null })
})

test.serial(
  'garbage and 10 MB lines on the control channel: the master keeps supervising, memory stays flat',
  async (t) => {
    const port = await freePort()
    const fleet = await startFleet(t, { script: FAULTY, count: 2, listen: [`127.0.0.1:${port}`] })
    const pids = await fleet.workerPids()
    const before = await fleet.status()
    const res0 = resources(fleet.pid)
    for (let i = 0; i < 3; i++) await hitEvery(port, '/garbage', pids)
    const huge = await hitEvery(port, '/huge?mb=10&n=3', pids)
    t.true([...huge.values()].every((b) => b === 'sent 3 x 10 MB'))
    // The loop is not wedged: status answers, nothing moved, reloads still work.
    const s = await fleet.status()
    t.deepEqual(s.workers.map((w) => w.pid).sort(), [...pids].sort())
    t.is(s.generation, before.generation)
    t.true(s.workers.every((w) => w.state === 'ready' && w.restarts === 0))
    t.regex(fleet.log.text, /dropped a control-channel message longer than 64 KiB/)
    const res1 = resources(fleet.pid)
    t.log(
      `master before: ${describeResources(res0)}; after 60 MB of 10 MB lines and garbage: ${describeResources(res1)}`,
    )
    t.true(res1.rssBytes - res0.rssBytes < 20 * 1048576, 'master RSS grew by less than 20 MiB')
    t.is(res1.fds, res0.fds)
    const r = await fleet.cli(['reload', fleet.name])
    t.is(r.code, 0, r.stderr)
  },
)

test('the tail of an oversized control line is not taken for a message: no false ready', async (t) => {
  const fleet = await startFleet(t, {
    script: fixture('oversized-line.mjs'),
    count: 1,
    noWait: true,
    flags: ['--ready-timeout', '20000'],
  })
  await fleet.log.waitFor(/oversized-line: fake ready sent/)
  const s = await fleet.status()
  t.is(s.workers[0]?.state, 'starting', '100 KB of junk ending in {"type":"ready"} is one dropped line')
  t.regex(fleet.log.text, /dropped a control-channel message longer than 64 KiB/)
  process.kill(s.workers[0]?.pid ?? -1, 'SIGUSR2')
  await fleet.log.waitFor(/fleet#0 ready/)
  t.pass('a real ready line after it is read')
})

test('stop during a reload: the reload is cancelled, every worker (old and booting) ends, the master exits 0', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: FAULTY,
    count: 2,
    listen: [`127.0.0.1:${port}`],
    env: { BOOT_DELAY_MS: '1500' },
  })
  const watch = watchChildren(fleet)
  t.teardown(watch.stop)
  const old = await fleet.workerPids()
  const reload = fleet.cli(['reload', fleet.name])
  await waitFor(() => childrenOf(fleet.pid).some((c) => !old.includes(c.pid)), {
    intervalMs: 5,
    message: 'a replacement booting',
  })
  const stop = await fleet.cli(['stop', fleet.name])
  t.is(stop.code, 0, stop.stderr)
  const r = await reload
  t.is(r.code, 1)
  t.regex(r.stderr, /reload cancelled: the fleet is stopping/)
  t.deepEqual(await fleet.exited, { code: 0, signal: null })
  watch.stop()
  t.true(
    [...watch.seen].every((p) => !isAlive(p)),
    'no worker outlives the master',
  )
  t.is(watch.seen.size, 3, 'two old workers and one replacement, nothing spawned after the stop')
})

test('reload during a stop: refused as cancelled (CLI and SIGHUP), logged once each, nothing spawned', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('ignore-sigterm.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
    // The stop lasts these 5 s (the workers ignore it, then are killed): time for the reloads.
    flags: ['--stop-timeout', '5000'],
  })
  const old = await fleet.workerPids()
  const watch = watchChildren(fleet)
  t.teardown(watch.stop)
  const stop = fleet.cli(['stop', fleet.name])
  await waitFor(async () => (await fleet.status()).workers.every((w) => w.state === 'stopping'), {
    message: 'stopping',
  })
  const r = await fleet.cli(['reload', fleet.name])
  t.is(r.code, 1)
  t.regex(r.stderr, /reload cancelled: the fleet is stopping/)
  const cancelledLines = () =>
    fleet.log.text.split('\n').filter((l) => l.includes('reload cancelled: the fleet is stopping'))
  for (let i = 0; i < 3; i++) {
    // One at a time: signals sent together are delivered once.
    const seen = cancelledLines().length
    process.kill(fleet.pid, 'SIGHUP')
    await waitFor(() => cancelledLines().length > seen, { message: `SIGHUP ${i + 1} answered` })
  }
  t.is((await stop).code, 0)
  t.deepEqual(await fleet.exited, { code: 0, signal: null })
  watch.stop()
  t.deepEqual([...watch.seen].sort(), [...old].sort(), 'no worker spawned during the stop')
  const cancelled = cancelledLines()
  t.is(cancelled.length, 4, `one line per refused reload:\n${cancelled.join('\n')}`)
})

test.serial(
  '20 SIGHUPs in one second under load: passes run one after another, no slot replaced twice in a pass, every worker newer than the last signal, 0 failed requests',
  async (t) => {
    const port = await freePort()
    const count = 2
    const fleet = await startFleet(t, {
      script: FAULTY,
      count,
      listen: [`127.0.0.1:${port}`],
      env: { BOOT_DELAY_MS: '300' },
    })
    const load = startLoad({ port, connections: 8 })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 100, { message: 'load running' })
    let lastSignal = 0
    for (let i = 0; i < 20; i++) {
      process.kill(fleet.pid, 'SIGHUP')
      lastSignal = Date.now()
      await sleep(50) // "in one second" is the scenario
    }
    const settled = await waitFor(
      async () => {
        const s = await fleet.status()
        return !s.reloading &&
          s.workers.length === count &&
          s.workers.every((w) => w.state === 'ready') &&
          s.lastReload?.outcome === 'done'
          ? s
          : null
      },
      { timeoutMs: 30_000, message: 'the reloads settle' },
    )
    const result = await load.stop()
    assertNoFailedRequests(t, result)
    t.true(
      settled.workers.every((w) => Date.parse(w.startedAt ?? '') >= lastSignal - 1000),
      'every worker started after the signals',
    )
    // Read the passes from the log: each "reload N started" is followed by its end before the next.
    const lines = fleet.log.text.split('\n')
    const passes: Array<{ generation: number; slots: string[]; ended: boolean }> = []
    for (const line of lines) {
      const start = line.match(/reload (\d+) started/)
      if (start) {
        t.true(
          passes.length === 0 || passes[passes.length - 1]?.ended === true,
          `pass ${start[1]} began before the previous ended`,
        )
        passes.push({ generation: Number(start[1]), slots: [], ended: false })
      }
      const ready = line.match(/#(\d+) ready \(pid \d+, generation (\d+)\)/)
      const pass = passes[passes.length - 1]
      if (ready && pass && Number(ready[2]) === pass.generation) pass.slots.push(ready[1] ?? '')
      if (pass && /reload \d+ (done|aborted|failed)/.test(line)) pass.ended = true
    }
    t.log(
      `${passes.length} passes for 20 SIGHUPs: ${passes.map((p) => `gen ${p.generation} replaced slots [${p.slots.join(',')}]`).join('; ')}; ${result.requests} requests, 0 failed`,
    )
    t.true(passes.length >= 1 && passes.length <= 20)
    for (const p of passes) t.is(new Set(p.slots).size, p.slots.length, `a slot replaced twice in pass ${p.generation}`)
    t.deepEqual(
      passes.map((p) => p.generation),
      passes.map((_, i) => (passes[0]?.generation ?? 0) + i),
      'generations one by one',
    )
    t.is(settled.generation, passes[passes.length - 1]?.generation)
  },
)

test('a crash loop: restarts follow the backoff and the log stays bounded', async (t) => {
  const count = 4
  const fleet = await startFleet(t, { script: fixture('crash-after-ready.mjs'), count, noWait: true })
  // Six crashes per slot take 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of backoff, about 4 s.
  await waitFor(() => (fleet.log.text.match(/restarting in 3200 ms/g) ?? []).length === count, {
    timeoutMs: 30_000,
    message: `every slot at its 6th crash; log:\n${fleet.log.text.slice(-2000)}`,
  })
  const lines = fleet.log.text.split('\n').filter((l) => l !== '')
  for (let slot = 0; slot < count; slot++) {
    const delays = lines.flatMap((l) => {
      const m = l.match(new RegExp(`#${slot} \\(pid \\d+\\) exited with code 1; restarting in (\\d+) ms`))
      return m ? [Number(m[1])] : []
    })
    t.deepEqual(delays, [100, 200, 400, 800, 1600, 3200], `slot ${slot}`)
  }
  // Per crash: its exit line and the next worker's ready line; plus the start's lines.
  t.log(`${lines.length} log lines for ${count * 6} crashes; master ${describeResources(resources(fleet.pid))}`)
  t.true(lines.length <= count * 6 * 2 + count + 4, `${lines.length} lines:\n${lines.join('\n')}`)
})
