/**
 * How a worker becomes ready (`readiness`): `listen` (the default), `message` (an explicit
 * ready only; `waitReady: true` and PM2's `wait_ready`), `uptime` (up for `minUptime`, for
 * processes that never listen), and the worker id in `NODE_APP_INSTANCE` (PM2's
 * `instance_var`). Unmodified apps: fixtures/pm2-app.mjs knows nothing of baton.
 */
import test, { type ExecutionContext } from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { readConfig } from '../src/master/config-file.js'
import { Supervisor, type GroupOptions } from '../src/index.js'
import { resolveGroup } from '../src/master/options.js'
import { freePort, ProcessTracker, startTime, tmpDir, waitFor, withTimeout } from './helpers/processes.js'

const READY_DELAY_MS = 2000

/** `pm2-app listening <pid> at <ms>` lines of `file`: when each worker was listening. */
function listenedAt(file: string): Map<number, number> {
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    // not written yet
  }
  return new Map([...text.matchAll(/pm2-app listening (\d+) at (\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]))
}

/**
 * Start 2 workers (in this process, so the times are the master's own, not those of a
 * status command that may take seconds to boot on a loaded machine) that listen at once and
 * send `ready` 2 s later: each is `starting` until its ready, and a reload takes at least
 * 2 s per worker. `group`: the group's options from the test (stdout is set here).
 */
async function waitsForTheMessage(t: ExecutionContext, group: GroupOptions): Promise<void> {
  const dir = await tmpDir('baton-ready-')
  const out = join(dir.path, 'out.log')
  const sup = new Supervisor({
    name: 'ready',
    runtimeDir: join(dir.path, 'rt'),
    log: false,
    handleSignals: false,
    groups: { web: { ...group, stdout: out } },
  })
  const readyAt = new Map<number, number>()
  const started = new Map<number, string | undefined>()
  sup.on('worker:ready', (e) => readyAt.set(e.pid, Date.now()))
  sup.on('worker:spawn', (e) => started.set(e.pid, startTime(e.pid)))
  t.teardown(async () => {
    await withTimeout(sup.stop({ force: true }), 10_000, 'supervisor force stop').catch(() => undefined)
    const tracker = new ProcessTracker()
    for (const [pid, at] of started) tracker.trackPid(pid, at)
    await tracker.killAll()
    await dir.cleanup()
  })
  const starting = sup.start()
  // Both listening, and neither ready yet where the check is early enough to tell.
  const listened = await waitFor(
    () => {
      const l = listenedAt(out)
      return l.size >= 2 ? l : undefined
    },
    { timeoutMs: 30_000, message: 'both workers listening', intervalMs: 20 },
  )
  const status = sup.status()
  t.is(status.groups[0]?.readiness, 'message')
  for (const w of status.workers) {
    const at = listened.get(w.pid ?? -1)
    if (at !== undefined && Date.now() - at < READY_DELAY_MS - 500)
      t.is(w.state, 'starting', `pid ${w.pid} listening for ${Date.now() - at} ms: starting until its message`)
  }
  await starting
  for (const [pid, at] of listened) {
    const after = (readyAt.get(pid) ?? 0) - at
    t.true(after >= READY_DELAY_MS - 50, `pid ${pid} ready ${after} ms after listening (it sends ready after 2000 ms)`)
  }
  const reloadStarted = Date.now()
  const report = await sup.reload()
  const took = Date.now() - reloadStarted
  t.is(report.replaced.length, 2)
  t.true(took >= 2 * READY_DELAY_MS, `a reload of 2 workers took ${took} ms, at least 2 s per worker`)
  t.log(
    `ready ${[...listened].map(([pid, at]) => (readyAt.get(pid) ?? 0) - at).join(', ')} ms after listening; reload of 2 workers: ${took} ms`,
  )
}

test('waitReady: true: a worker that listens at once and sends ready 2 s later is starting until then; a reload takes >= 2 s per worker', async (t) => {
  const port = await freePort()
  await waitsForTheMessage(t, {
    script: fixture('pm2-app.mjs'),
    count: 2,
    waitReady: true,
    env: { PORT: String(port), LISTEN_HOST: '127.0.0.1', READY_DELAY_MS: String(READY_DELAY_MS) },
  })
})

test('PM2 wait_ready: true: the same, from an ecosystem file (the import maps it to readiness message and says so)', async (t) => {
  const dir = await tmpDir('baton-ready-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  const file = join(dir.path, 'ecosystem.config.js')
  writeFileSync(
    file,
    `module.exports = { apps: [{ name: 'web', script: ${JSON.stringify(fixture('pm2-app.mjs'))}, instances: 2,
      exec_mode: 'cluster', wait_ready: true, listen_timeout: 10000,
      env: { PORT: '${port}', LISTEN_HOST: '127.0.0.1', READY_DELAY_MS: '${READY_DELAY_MS}' } }] }\n`,
  )
  const notes: string[] = []
  const options = await readConfig(file, {}, notes)
  t.true(
    notes.some((n) => n.startsWith('web: readiness message')),
    notes.join('\n'),
  )
  const web = options.groups?.web
  if (web === undefined) return t.fail('no group web')
  await waitsForTheMessage(t, web)
})

test('--readiness uptime: an unmodified queue consumer (no listen) runs as 2 ready workers; baton reload replaces them one at a time', async (t) => {
  const fleet = await startFleet(t, {
    script: fixture('pm2-app.mjs'),
    count: 2,
    env: { NO_LISTEN: '1' },
    flags: ['--readiness', 'uptime', '--min-uptime', '800', '--ready-timeout', '5000'],
  })
  const before = await fleet.status()
  t.is(before.groups[0]?.readiness, 'uptime')
  t.is(before.groups[0]?.minUptimeMs, 800)
  t.true(before.workers.every((w) => w.state === 'ready'))
  t.regex(
    (await fleet.cli(['status', fleet.name])).stdout,
    /group fleet: 2 workers \(no listen address\) {2}ready: once up 800 ms/,
  )
  const oldPids = before.workers.map((w) => w.pid)

  const started = Date.now()
  const reload = await fleet.cli(['reload', fleet.name])
  const took = Date.now() - started
  t.is(reload.code, 0, reload.stderr)
  t.regex(reload.stdout, /1\/2 replaced[\s\S]*2\/2 replaced/)
  t.regex(reload.stdout, /2 of 2 workers replaced/)
  const after = await fleet.status()
  t.true(
    after.workers.every((w) => w.state === 'ready' && !oldPids.includes(w.pid)),
    JSON.stringify(after.workers),
  )
  // One at a time: the second replacement started only once the first had been up 800 ms.
  const [a, b] = after.workers.map((w) => Date.parse(w.startedAt ?? ''))
  t.true(Math.abs((b ?? 0) - (a ?? 0)) >= 700, `replacements started ${Math.abs((b ?? 0) - (a ?? 0))} ms apart`)
  t.true(took >= 1600, `reload took ${took} ms (2 x 800 ms uptime)`)
  t.log(`reload of 2 uptime workers: ${took} ms; replacements started ${Math.abs((b ?? 0) - (a ?? 0))} ms apart`)
})

test('uptime: a replacement that exits before minUptime fails the reload, the old workers keep running', async (t) => {
  const dir = await tmpDir('baton-ready-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'consumer.mjs')
  writeFileSync(script, `setInterval(() => undefined, 200)\n`)
  const fleet = await startFleet(t, {
    script,
    count: 2,
    flags: ['--readiness', 'uptime', '--min-uptime', '3000'],
  })
  const oldPids = (await fleet.workerPids()).sort()
  // The new code exits at once: it ran, but not for minUptime (3 s leave room for a slow
  // boot on a loaded machine).
  writeFileSync(script, `process.exit(3)\n`)
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 1, `${reload.stdout}\n${fleet.log.text}`)
  t.regex(reload.stderr + reload.stdout, /aborted/)
  t.deepEqual((await fleet.workerPids()).sort(), oldPids)
})

test('every worker has NODE_APP_INSTANCE = its id; the readiness option is refused with the field named', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('pm2-app.mjs'),
    count: 2,
    env: { PORT: String(port), LISTEN_HOST: '127.0.0.1', NODE_APP_INSTANCE: 'from-the-master' },
  })
  t.regex(fleet.log.text, /instance=0 instance_id=unset id=0/)
  t.regex(fleet.log.text, /instance=1 instance_id=unset id=1/)
  t.is((await fleet.status()).groups[0]?.instanceVar, 'NODE_APP_INSTANCE')
  const bad = await fleet.cli(['start', fixture('pm2-app.mjs'), '--readiness', 'sometimes'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--readiness expects listen, message or uptime, got "sometimes"/)
})

test('options: readiness, minUptime, waitReady and instanceVar are checked, naming the field and the rule', (t) => {
  const script = fixture('pm2-app.mjs')
  t.is(resolveGroup('w', { script }).readiness, 'listen')
  t.is(resolveGroup('w', { script, waitReady: true }).readiness, 'message')
  t.is(resolveGroup('w', { script, readiness: 'uptime' }).minUptime, 1000)
  t.is(resolveGroup('w', { script }).instanceVar, 'NODE_APP_INSTANCE')
  t.throws(() => resolveGroup('w', { script, readiness: 'soon' }), {
    message: /^groups\.w\.readiness: expected 'listen', 'message' or 'uptime', got "soon"/,
  })
  t.throws(() => resolveGroup('w', { script, waitReady: true, readiness: 'uptime' }), {
    message: /^groups\.w\.waitReady: waitReady: true means readiness 'message', but readiness is 'uptime'/,
  })
  t.throws(() => resolveGroup('w', { script, readiness: 'uptime', minUptime: 5000, readyTimeout: 3000 }), {
    message: /^groups\.w\.minUptime: 5000 ms is not less than readyTimeout \(3000 ms\)/,
  })
  t.throws(() => resolveGroup('w', { script, instanceVar: 'BATON_ID' }), { message: /^groups\.w\.instanceVar:/ })
})
