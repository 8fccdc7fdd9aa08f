/**
 * `balance: 'reuseport'` (the default on Linux): a slot without a ready worker receives no new connections, and
 * the ones already queued on its socket are handed to a ready worker by the master. Every
 * connection here is a fresh TCP connection with a 1.5 s budget: a connection left in the
 * queue of a dead slot would time out.
 */
import test, { type ExecutionContext } from 'ava'
import * as http from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet, versionedFleet, type Fleet } from './helpers/fleet.js'
import { freePort, isAlive, tmpDir, waitFor } from './helpers/processes.js'

const FRESH_TIMEOUT_MS = 1500

/** Outcome of a batch of fresh connections. */
interface Fresh {
  answered: number
  failed: string[]
  pids: Set<number>
}

/** One GET `/info` on a new connection; resolves with the answering pid, rejects after 1.5 s. */
function freshGet(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/info', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`))
        try {
          resolve((JSON.parse(body) as { pid: number }).pid)
        } catch (err) {
          reject(err as Error)
        }
      })
      res.on('error', reject)
    })
    req.setTimeout(FRESH_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${FRESH_TIMEOUT_MS} ms`)))
    req.on('error', reject)
  })
}

/** `total` fresh connections, `lanes` at a time, each lane sequential. */
async function freshConnections(port: number, total: number, lanes = 4): Promise<Fresh> {
  const result: Fresh = { answered: 0, failed: [], pids: new Set() }
  let started = 0
  const lane = async (): Promise<void> => {
    while (started < total) {
      started += 1
      try {
        result.pids.add(await freshGet(port))
        result.answered += 1
      } catch (err) {
        result.failed.push((err as Error).message)
      }
    }
  }
  await Promise.all(Array.from({ length: lanes }, () => lane()))
  return result
}

/** 3 workers of the test app; `flags` are added to `baton start` (no `--balance`: the default). */
function reuseportFleet(t: ExecutionContext, flags: string[] = ['--balance', 'reuseport']) {
  return versionedFleet(t, { count: 3, flags })
}

function report(t: ExecutionContext, fleet: Fleet, fresh: Fresh, total: number): void {
  if (fresh.failed.length > 0) t.log(fleet.log.text.slice(-4000))
  t.is(
    fresh.answered,
    total,
    `${fresh.failed.length} of ${total} fresh connections failed: ${JSON.stringify(fresh.failed.slice(0, 5))}`,
  )
}

const linuxOnly = process.platform === 'linux' ? test.serial : test.serial.skip

linuxOnly('a worker killed with -9 whose slot then crash-loops: every fresh connection is answered', async (t) => {
  const { fleet, port, deploy } = await reuseportFleet(t)
  const before = await fleet.status()
  const victim = before.workers.find((w) => w.id === 1)
  t.truthy(victim?.pid)
  const survivors = before.workers.filter((w) => w.id !== 1).map((w) => w.pid)
  deploy('throw') // every restart of slot 1 now throws at boot
  process.kill(victim?.pid as number, 'SIGKILL')
  const fresh = await freshConnections(port, 200)
  report(t, fleet, fresh, 200)
  t.deepEqual([...fresh.pids].sort(), [...survivors].sort(), 'answered by the two survivors only')
  const after = await fleet.status()
  const slot1 = after.workers.find((w) => w.id === 1)
  t.true((slot1?.restarts ?? 0) >= 1, 'slot 1 was restarted (and failed) meanwhile')
  t.not(slot1?.state, 'ready')
  await fleet.cli(['stop', fleet.name])
})

linuxOnly(
  'drop-in (the app listens on PORT, no --listen): a worker killed with -9 whose slot then crash-loops: every fresh connection is answered',
  async (t) => {
    const dir = await tmpDir('baton-steer-')
    t.teardown(() => dir.cleanup())
    const versionFile = join(dir.path, 'version.txt')
    writeFileSync(versionFile, 'v1')
    const port = await freePort()
    const fleet = await startFleet(t, {
      script: fixture('plain-versioned.mjs'),
      count: 3,
      env: { PORT: String(port), APP_VERSION_FILE: versionFile },
    })
    const before = await fleet.status()
    t.deepEqual(
      before.groups[0]?.sockets?.map((s) => s.from),
      ['drop-in'],
    )
    const victim = before.workers.find((w) => w.id === 1)
    t.truthy(victim?.pid)
    const survivors = before.workers.filter((w) => w.id !== 1).map((w) => w.pid)
    writeFileSync(versionFile, 'throw') // every restart of slot 1 now throws at boot
    process.kill(victim?.pid as number, 'SIGKILL')
    const fresh = await freshConnections(port, 200)
    report(t, fleet, fresh, 200)
    t.deepEqual([...fresh.pids].sort(), [...survivors].sort(), 'answered by the two survivors only')
    const slot1 = (await fleet.status()).workers.find((w) => w.id === 1)
    t.not(slot1?.state, 'ready')
    await fleet.cli(['stop', fleet.name])
  },
)

linuxOnly('a stop-first reload whose new version throws: aborted, every fresh connection is answered', async (t) => {
  const { fleet, port, deploy } = await reuseportFleet(t, ['--balance', 'reuseport', '--order', 'stop-first'])
  const before = await fleet.status()
  deploy('throw')
  const reload = fleet.cli(['reload', fleet.name])
  const fresh = await freshConnections(port, 200)
  const r = await reload
  t.is(r.code, 1, r.stdout + r.stderr)
  t.regex(r.stderr, /BOOT_FAIL: version file says throw/)
  const after = await fleet.status()
  t.is(after.lastReload?.outcome, 'failed')
  const ready = after.workers.filter((w) => w.state === 'ready').map((w) => w.pid)
  t.is(ready.length, 2, 'one slot lost, crash-looping')
  t.true(
    ready.every((pid) => before.workers.some((w) => w.pid === pid)),
    'the old workers keep serving',
  )
  report(t, fleet, fresh, 200)
  // And after the failed reload, with the slot still down.
  const later = await freshConnections(port, 100)
  report(t, fleet, later, 100)
  await fleet.cli(['stop', fleet.name])
})

linuxOnly('connections queued on a dead worker’s socket are handed to the ready workers', async (t) => {
  const { fleet, port, deploy } = await reuseportFleet(t)
  const before = await fleet.status()
  const victim = before.workers.find((w) => w.id === 1)?.pid as number
  // A frozen worker still counts as ready: new connections keep reaching its socket's queue.
  process.kill(victim, 'SIGSTOP')
  const gets = Array.from({ length: 30 }, () =>
    freshGet(port).then(
      (pid) => ({ pid }),
      (err: Error) => ({ error: err.message }),
    ),
  )
  // Wait until some of them sit in slot 1's queue (answered ones show up at once).
  const answered = new Set<number>()
  gets.forEach((g, i) => void g.then((r) => 'pid' in r && answered.add(i)))
  await waitFor(() => answered.size >= 10, { timeoutMs: 1000, message: 'the connections to live slots answered' })
  deploy('throw')
  const answeredBeforeKill = answered.size
  process.kill(victim, 'SIGKILL')
  await waitFor(() => !isAlive(victim), { message: 'the frozen worker to die' })
  const results = await Promise.all(gets)
  const failed = results.filter((r) => 'error' in r)
  t.deepEqual(failed, [], 'every queued connection answered')
  t.true(results.every((r) => 'pid' in r && r.pid !== victim))
  t.true(answeredBeforeKill < 30, `some connections waited in slot 1's queue (${30 - answeredBeforeKill})`)
  const stop = await fleet.cli(['stop', fleet.name])
  t.is(stop.code, 0, stop.stderr)
  await fleet.exited
  t.regex(fleet.log.text, /handed \d+ connections? queued on slot 1's socket 127\.0\.0\.1:\d+ to ready workers/)
})

linuxOnly(
  'default options: a stop-first bad deploy is aborted, a worker killed with -9 crash-loops; 200 fresh connections during and after are all answered',
  async (t) => {
    const { fleet, port, deploy } = await reuseportFleet(t, ['--order', 'stop-first'])
    const before = await fleet.status()
    t.is(before.groups[0]?.balance, 'reuseport', 'the default on Linux')
    deploy('throw') // the new code throws at boot: the reload fails, and so does every restart
    const reload = fleet.cli(['reload', fleet.name])
    const during = freshConnections(port, 200)
    const r = await reload
    t.is(r.code, 1, r.stdout + r.stderr)
    const aborted = await fleet.status()
    t.is(aborted.lastReload?.outcome, 'failed')
    // Kill a serving old worker: its slot restarts the bad code and enters crash backoff.
    const victim = aborted.workers.find((w) => w.state === 'ready' && w.id !== aborted.lastReload?.failure?.id)
    t.truthy(victim?.pid)
    process.kill(victim?.pid as number, 'SIGKILL')
    await waitFor(
      async () => {
        const s = await fleet.status()
        const slot = s.workers.find((w) => w.id === victim?.id)
        return slot !== undefined && slot.restarts >= 1 && slot.state !== 'ready'
      },
      { message: "the killed worker's slot is in crash backoff" },
    )
    report(t, fleet, await during, 200)
    const after = await freshConnections(port, 200)
    report(t, fleet, after, 200)
    const last = await fleet.status()
    const ready = last.workers.filter((w) => w.state === 'ready')
    t.is(ready.length, 1, 'two of three slots are down')
    t.deepEqual(
      [...after.pids],
      ready.map((w) => w.pid),
      'the one ready worker answered them all',
    )
    await fleet.cli(['stop', fleet.name])
  },
)
