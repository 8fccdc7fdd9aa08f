/**
 * `baton scale` / `supervisor.scale()`: a running group's worker count changes without a
 * restart, under keep-alive HTTP load with zero failed requests, for both balance modes;
 * bad counts and unknown groups are refused naming them; reloads follow the new count.
 */
import { readlinkSync } from 'node:fs'
import test, { type ExecutionContext } from 'ava'
import { fixture, versionedFleet, type Fleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

/** `baton scale NAME GROUP n`, then check status: n ready workers in slots 0..n-1, groups[0].count n. */
async function scaleTo(t: ExecutionContext, fleet: Fleet, n: number): Promise<void> {
  const r = await fleet.cli(['scale', fleet.name, 'fleet', String(n)])
  t.is(r.code, 0, `scale to ${n}: ${r.stderr}`)
  t.regex(r.stdout, new RegExp(`to ${n} workers, all ready`))
  const s = await fleet.status()
  t.is(s.groups[0].count, n)
  t.is(s.workers.length, n, JSON.stringify(s.workers))
  t.true(
    s.workers.every((w) => w.state === 'ready'),
    JSON.stringify(s.workers),
  )
  t.deepEqual(
    s.workers.map((w) => w.id).sort((a, b) => a - b),
    [...Array(n).keys()],
  )
}

async function scaleUnderLoad(t: ExecutionContext, balance: 'reuseport' | 'shared'): Promise<void> {
  const { fleet, port } = await versionedFleet(t, { count: 2, flags: ['--balance', balance] })
  const load = startLoad({ port, connections: 16 })
  try {
    await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
    for (const n of [4, 1]) {
      await scaleTo(t, fleet, n)
      const s = await fleet.status()
      // Every worker serves (new connections reach the new slots too).
      const pids = new Set(s.workers.map((w) => String(w.pid)))
      const seen = load.snapshot().ok
      await waitFor(() => load.snapshot().ok > seen + 300, { message: `served after scale to ${n}` })
      if (balance === 'reuseport' && process.platform === 'linux') {
        const sockets = new Set(s.workers.map((w) => readlinkSync(`/proc/${w.pid}/fd/3`)))
        t.is(sockets.size, n, 'one socket per slot')
      }
      t.true(Object.keys(load.snapshot().connectionsByPid).length > 0)
      t.true(pids.size === n)
    }
  } finally {
    const result = await load.stop()
    if (result.errors) t.log(fleet.log.text)
    assertNoFailedRequests(t, result)
  }
  await fleet.cli(['stop', fleet.name])
}

test.serial('balance reuseport: baton scale 2 -> 4 -> 1 under keep-alive load, zero failed requests', async (t) => {
  if (process.platform !== 'linux') return t.pass('SO_REUSEPORT balancing is Linux only')
  await scaleUnderLoad(t, 'reuseport')
})

test.serial('balance shared: baton scale 2 -> 4 -> 1 under keep-alive load, zero failed requests', async (t) => {
  await scaleUnderLoad(t, 'shared')
})

test('baton scale refuses bad counts and unknown groups naming them (exit 2); a reload after a scale replaces the new count', async (t) => {
  const { fleet } = await versionedFleet(t, { count: 2 })
  for (const bad of ['0', '-1', '1.5', 'many', '1025']) {
    const r = await fleet.cli(['scale', fleet.name, 'fleet', bad])
    t.is(r.code, 2, `count ${bad}: ${r.stdout}${r.stderr}`)
    t.regex(r.stderr, /count: expected a whole number of workers from 1 to 1024/)
    t.true(r.stderr.includes(`"${bad}"`), r.stderr)
  }
  const missing = await fleet.cli(['scale'])
  t.is(missing.code, 2)
  t.regex(missing.stderr, /missing N/)
  const unknown = await fleet.cli(['scale', fleet.name, 'nope', '3'])
  t.is(unknown.code, 2, unknown.stderr)
  t.regex(unknown.stderr, /group: no group "nope" in this fleet \(groups: fleet\)/)
  t.is((await fleet.status()).groups[0].count, 2, 'nothing changed')

  // GROUP left out (one group), NAME left out (one master).
  const grow = await fleet.cli(['scale', '3'])
  t.is(grow.code, 0, grow.stderr)
  const before = await fleet.status()
  t.is(before.workers.length, 3)
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 0, reload.stderr)
  t.regex(reload.stdout, /fleet 3\/3 replaced/)
  const after = await fleet.status()
  t.is(after.lastReload?.replaced.length, 3)
  const old = new Set(before.workers.map((w) => w.pid))
  t.true(after.workers.length === 3 && after.workers.every((w) => w.state === 'ready' && !old.has(w.pid)))
  // `baton scale GROUP N` with the only master.
  const shrink = await fleet.cli(['scale', 'fleet', '1'])
  t.is(shrink.code, 0, shrink.stderr)
  t.is((await fleet.status()).workers.length, 1)
  await fleet.cli(['stop', fleet.name])
})

test('supervisor.scale(): resolves once the new workers are ready / the removed ones exited; rejects with the cause', async (t) => {
  const { Supervisor, OptionsError } = await import('../src/index.js')
  const dir = await tmpDir('baton-test-')
  const port = await freePort()
  const sup = new Supervisor({
    name: 'scale-api',
    runtimeDir: dir.path,
    log: false,
    handleSignals: false,
    groups: { web: { script: fixture('app.mjs'), count: 1, listen: `127.0.0.1:${port}` } },
  })
  t.teardown(async () => {
    await sup.stop({ force: true })
    await dir.cleanup()
  })
  await sup.start()
  const events: string[] = []
  sup.on('scale:start', (e) => events.push(`start ${e.from}->${e.count}`))
  sup.on('scale:done', (e) => events.push(`done ${e.count}`))
  await sup.scale('web', 3)
  let s = sup.status()
  t.is(s.groups[0].count, 3)
  t.is(s.workers.length, 3)
  t.true(s.workers.every((w) => w.state === 'ready'))
  const removed = s.workers.filter((w) => w.id > 0).map((w) => w.pid!)
  await sup.scale('web', 1)
  s = sup.status()
  t.is(s.workers.length, 1)
  t.is(s.groups[0].count, 1)
  for (const pid of removed) {
    t.throws(() => process.kill(pid, 0), undefined, `removed worker ${pid} exited`)
  }
  t.deepEqual(events, ['start 1->3', 'done 3', 'start 3->1', 'done 1'])
  await t.throwsAsync(sup.scale('web', 0), { instanceOf: OptionsError, message: /count/ })
  await t.throwsAsync(sup.scale('web', 2.5), { instanceOf: OptionsError, message: /count/ })
  await t.throwsAsync(sup.scale('nope', 2), { instanceOf: OptionsError, message: /group: .*"nope"/ })
  // A scale during a reload is refused with a clear error.
  const reload = sup.reload()
  await t.throwsAsync(sup.scale('web', 2), { message: /a reload is running/ })
  await reload
  t.is(sup.status().workers.length, 1)
})

test('baton scale waits past the CLI silence timeout for slow workers (heartbeats), and exits 1 with the cause when a new worker fails', async (t) => {
  // Workers take 4 s to listen: longer than the client's 3 s silence timeout.
  const { fleet, deploy } = await versionedFleet(t, { count: 1, env: { BOOT_DELAY_MS: '4000' } })
  const slow = await fleet.cli(['scale', fleet.name, 'fleet', '2'])
  t.is(slow.code, 0, slow.stderr)
  t.is((await fleet.status()).workers.filter((w) => w.state === 'ready').length, 2)
  // Bad code on disk: the new slot's worker throws at start.
  deploy('throw')
  const failed = await fleet.cli(['scale', fleet.name, 'fleet', '3'])
  t.is(failed.code, 1, failed.stdout)
  t.regex(failed.stderr, /fleet#2 .*before it was ready; group "fleet" keeps 3 workers/)
  await fleet.cli(['stop', fleet.name, '--force'])
})
