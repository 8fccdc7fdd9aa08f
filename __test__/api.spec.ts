/**
 * The programmatic API (`new Supervisor(...)`, `start`/`reload`/`stop`/`status`, typed
 * events, errors) and the Workerman-style one-script mode (`group(name, opts, hooks)` +
 * `runAll()`), with real worker processes and real sockets on 127.0.0.1.
 *
 * The fixtures import `baton`, i.e. dist/: run `npm run build:ts` after changing src/.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  OptionsError,
  ReloadError,
  StartError,
  Supervisor,
  type GroupOptions,
  type SupervisorEvents,
  type SupervisorOptions,
} from '../src/index.js'
import { fixture, runCli } from './helpers/fleet.js'
import { httpGet, portIsFree, runtimeFiles } from './helpers/http.js'
import {
  freePort,
  isAlive,
  OutputBuffer,
  ProcessTracker,
  startTime,
  tmpDir,
  waitFor,
  waitForExit,
  withTimeout,
  type TmpDir,
} from './helpers/processes.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

type EventName = keyof SupervisorEvents
type Recorded = { [K in EventName]: { name: K; event: SupervisorEvents[K][0] } }[EventName]

const ALL_EVENTS: EventName[] = [
  'worker:spawn',
  'worker:ready',
  'worker:exit',
  'worker:ready-timeout',
  'worker:stop-timeout',
  'fleet:ready',
  'fleet:start-failed',
  'fleet:stopped',
  'reload:start',
  'reload:progress',
  'reload:done',
  'reload:failed',
]

interface Harness {
  sup: Supervisor
  dir: TmpDir
  /** Every event the supervisor emitted, in order. */
  events: Recorded[]
  /** Events of one type. */
  of<K extends EventName>(name: K): Array<SupervisorEvents[K][0]>
  /** Pids of every worker ever spawned. */
  spawned(): number[]
}

/**
 * A Supervisor in this process, in its own runtime dir, with every event recorded. The
 * teardown force-stops it and SIGKILLs any worker still alive, even when the test failed.
 */
async function harness(
  t: ExecutionContext,
  name: string,
  groups: Record<string, GroupOptions>,
  extra: Partial<SupervisorOptions> = {},
): Promise<Harness> {
  const dir = await tmpDir('baton-api-')
  const sup = new Supervisor({ name, runtimeDir: dir.path, log: false, handleSignals: false, groups, ...extra })
  const events: Recorded[] = []
  for (const name of ALL_EVENTS) {
    ;(sup.on as (n: string, l: (e: unknown) => void) => void)(name, (event) => events.push({ name, event } as Recorded))
  }
  const spawned = () => events.flatMap((e) => (e.name === 'worker:spawn' ? [e.event.pid] : []))
  // Start times read when each worker is spawned: the teardown never kills a recycled pid.
  const started = new Map<number, string | undefined>()
  sup.on('worker:spawn', (e) => started.set(e.pid, startTime(e.pid)))
  t.teardown(async () => {
    await withTimeout(sup.stop({ force: true }), 10_000, 'supervisor force stop').catch(() => undefined)
    const tracker = new ProcessTracker()
    for (const [pid, startedAt] of started) tracker.trackPid(pid, startedAt)
    await tracker.killAll()
    await dir.cleanup()
  })
  return {
    sup,
    dir,
    events,
    of: <K extends EventName>(name: K) =>
      events.flatMap((e) => (e.name === name ? [e.event as SupervisorEvents[K][0]] : [])),
    spawned,
  }
}

async function getJson<T>(port: number, path = '/'): Promise<T> {
  const r = await httpGet({ port, path })
  if (r.status !== 200) throw new Error(`GET ${path} on ${port}: status ${r.status}`)
  return JSON.parse(r.body) as T
}

interface Info {
  pid: number
  group: string
  id: number
  generation: number
  reloads: number
}

test('reload() resolves with a done report and emits the typed reload and worker events', async (t) => {
  const port = await freePort()
  const h = await harness(t, 'api-reload', {
    web: { script: fixture('app.mjs'), count: 3, listen: `127.0.0.1:${port}` },
  })
  await h.sup.start()
  t.is(h.of('fleet:ready').length, 1)
  const before = h.sup.status()
  t.is(before.generation, 1)
  const oldPids = before.workers.map((w) => w.pid as number)
  t.is(new Set(oldPids).size, 3)
  // Generation 1: one spawn and one ready per slot.
  t.deepEqual(
    h
      .of('worker:spawn')
      .map((e) => e.pid)
      .sort(),
    [...oldPids].sort(),
  )
  t.deepEqual(
    h
      .of('worker:ready')
      .map((e) => e.id)
      .sort(),
    [0, 1, 2],
  )
  const mark = h.events.length

  const report = await h.sup.reload()

  t.is(report.outcome, 'done')
  t.is(report.generation, 2)
  t.is(report.due, 3)
  t.is(report.replaced.length, 3)
  t.is(report.failure, null)
  t.true(report.durationMs > 0, `durationMs ${report.durationMs}`)
  t.regex(report.message, /3 of 3 workers replaced/)
  t.deepEqual(report.replaced.map((r) => r.oldPid).sort(), [...oldPids].sort())
  t.deepEqual(report.replaced.map((r) => r.id).sort(), [0, 1, 2])
  const newPids = report.replaced.map((r) => r.newPid)
  t.true(
    newPids.every((pid) => !oldPids.includes(pid)),
    'new pids differ from the old ones',
  )
  t.true(report.replaced.every((r) => r.group === 'web'))

  const during = h.events.slice(mark)
  const starts = during.flatMap((e) => (e.name === 'reload:start' ? [e.event] : []))
  t.is(starts.length, 1)
  t.like(starts[0], { generation: 2, due: 3 })
  const progress = during.flatMap((e) => (e.name === 'reload:progress' ? [e.event] : []))
  t.is(progress.length, 3)
  t.deepEqual(
    progress.map((p) => p.replaced),
    [1, 2, 3],
  )
  for (const p of progress) t.like(p, { group: 'web', due: 3, generation: 2 })
  t.deepEqual(progress.map((p) => p.id).sort(), [0, 1, 2])
  const done = during.flatMap((e) => (e.name === 'reload:done' ? [e.event] : []))
  t.is(done.length, 1)
  t.like(done[0], { outcome: 'done', generation: 2 })
  t.is(during.filter((e) => e.name === 'reload:failed').length, 0)
  // start -> progress x3 -> done, in that order.
  const order = during.filter((e) => e.name.startsWith('reload:')).map((e) => e.name)
  t.deepEqual(order, ['reload:start', 'reload:progress', 'reload:progress', 'reload:progress', 'reload:done'])

  const spawns = during.flatMap((e) => (e.name === 'worker:spawn' ? [e.event] : []))
  t.deepEqual(spawns.map((e) => e.pid).sort(), [...newPids].sort())
  for (const e of spawns) t.like(e, { group: 'web', generation: 2 })
  const readies = during.flatMap((e) => (e.name === 'worker:ready' ? [e.event] : []))
  t.deepEqual(readies.map((e) => e.pid).sort(), [...newPids].sort())
  for (const e of readies) t.like(e, { group: 'web', generation: 2 })

  // Every replaced worker exits, and baton says it asked for it.
  await waitFor(() => oldPids.every((pid) => h.of('worker:exit').some((e) => e.pid === pid)), {
    timeoutMs: 10_000,
    message: 'worker:exit for every replaced worker',
  })
  for (const pid of oldPids) {
    const exit = h.of('worker:exit').find((e) => e.pid === pid)!
    t.like(exit, { group: 'web', generation: 1, expected: true, exitCode: 0, signal: null, restartInMs: null })
    t.false(isAlive(pid), `old worker ${pid} is gone`)
  }
  t.false(
    h.of('worker:exit').some((e) => newPids.includes(e.pid ?? -1)),
    'no new worker exited',
  )

  const after = h.sup.status()
  t.is(after.generation, 2)
  t.is(after.lastReload?.outcome, 'done')
  t.deepEqual(after.workers.map((w) => w.pid).sort(), [...newPids].sort())
  t.true(after.workers.every((w) => w.state === 'ready' && w.generation === 2))
  const info = await getJson<Info>(port, '/info')
  t.true(newPids.includes(info.pid), 'a new worker answers')
})

test('a failing reload rejects with ReloadError carrying exit code and stderr; the old workers keep serving', async (t) => {
  const port = await freePort()
  const app = await tmpDir('baton-api-app-')
  t.teardown(() => app.cleanup())
  const versionFile = join(app.path, 'version.txt')
  writeFileSync(versionFile, 'v1')
  const h = await harness(t, 'api-fail', {
    web: { script: fixture('app.mjs'), count: 2, listen: `127.0.0.1:${port}`, env: { APP_VERSION_FILE: versionFile } },
  })
  await h.sup.start()
  const oldPids = h.sup
    .status()
    .workers.map((w) => w.pid)
    .sort()
  writeFileSync(versionFile, 'throw')

  const error = await t.throwsAsync(h.sup.reload(), { instanceOf: ReloadError })
  const report = error!.report
  t.is(report.outcome, 'failed')
  t.is(report.generation, 2)
  t.deepEqual(report.replaced, [])
  t.truthy(report.failure)
  const failure = report.failure!
  t.is(failure.group, 'web')
  t.is(failure.exitCode, 1)
  t.is(failure.signal, null)
  t.regex(failure.reason, /exited with code 1 before it was ready/)
  t.regex(failure.stderrTail, /Error: BOOT_FAIL: version file says throw/)
  t.is(error!.message, report.message)
  t.regex(error!.message, /aborted/)
  t.is(h.of('reload:failed').length, 1)
  t.is(h.of('reload:done').length, 0)

  const status = h.sup.status()
  t.is(status.lastReload?.outcome, 'failed')
  t.is(status.lastReload?.failure?.exitCode, 1)
  t.deepEqual(status.workers.map((w) => w.pid).sort(), oldPids, 'the old workers are still there')
  t.true(status.workers.every((w) => w.state === 'ready'))
  t.is((await httpGet({ port })).body, 'v1')
})

test('a non-reloadable group keeps its pid across reloads and runs its reload hook each time; the reloadable group is replaced', async (t) => {
  const gatewayPort = await freePort()
  const webPort = await freePort()
  const h = await harness(t, 'api-gateway', {
    gateway: { script: fixture('reload-hooks.mjs'), count: 1, reloadable: false, listen: `127.0.0.1:${gatewayPort}` },
    web: { script: fixture('reload-hooks.mjs'), count: 2, listen: `127.0.0.1:${webPort}` },
  })
  await h.sup.start()
  const status0 = h.sup.status()
  t.deepEqual(
    status0.groups.map((g) => [g.name, g.reloadable]),
    [
      ['gateway', false],
      ['web', true],
    ],
  )
  const gateway0 = await getJson<Info>(gatewayPort)
  t.like(gateway0, { group: 'gateway', reloads: 0 })
  t.is(status0.workers.find((w) => w.group === 'gateway')?.pid, gateway0.pid)
  let webPids = status0.workers.filter((w) => w.group === 'web').map((w) => w.pid as number)
  t.is(webPids.length, 2)
  const allWebPids = new Set(webPids)

  for (const round of [1, 2]) {
    const report = await h.sup.reload()
    t.is(report.outcome, 'done')
    t.is(report.notified, 1, 'the gateway worker was sent a reload message')
    t.is(report.due, 2)
    t.deepEqual(
      report.replaced.map((r) => r.group),
      ['web', 'web'],
      'only web workers are replaced',
    )
    const gateway = await waitFor(
      async () => {
        const info = await getJson<Info>(gatewayPort)
        return info.reloads >= round ? info : undefined
      },
      { timeoutMs: 10_000, message: `gateway reload hook ran ${round} time(s)` },
    )
    t.is(gateway.reloads, round)
    t.is(gateway.pid, gateway0.pid, `gateway pid unchanged after reload ${round}`)
    const status = h.sup.status()
    const newWeb = status.workers.filter((w) => w.group === 'web').map((w) => w.pid as number)
    t.is(newWeb.length, 2)
    t.true(
      newWeb.every((pid) => !allWebPids.has(pid)),
      `every web pid changed in reload ${round}`,
    )
    for (const pid of newWeb) allWebPids.add(pid)
    webPids = newWeb
    t.true(status.workers.filter((w) => w.group === 'web').every((w) => w.generation === round + 1))
  }
  const final = h.sup.status()
  const gw = final.workers.find((w) => w.group === 'gateway')!
  t.is(gw.pid, gateway0.pid)
  t.is(gw.generation, 1)
  t.is(gw.restarts, 0)
  t.true(isAlive(gateway0.pid))
  t.is(h.of('worker:exit').filter((e) => e.group === 'gateway').length, 0, 'the gateway never exited')
  const web = await getJson<Info>(webPort)
  t.true(webPids.includes(web.pid))
  t.is(web.generation, 3)
  t.is(web.reloads, 0, 'reloadable workers are replaced, not notified')
})

test('Workerman one-script mode: `node script start|reload|status|stop` with group hooks and runAll()', async (t) => {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-api-one-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const gatewayPort = await freePort()
  const webPort = await freePort()
  const script = fixture('one-script.mjs')
  const env = {
    ...process.env,
    BATON_RUNTIME_DIR: dir.path,
    ONE_NAME: 'one',
    GATEWAY_PORT: String(gatewayPort),
    WEB_PORT: String(webPort),
  }
  const run = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const child = tracker.spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      const out = new OutputBuffer().follow(child.stdout)
      const err = new OutputBuffer().follow(child.stderr)
      child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
    })
  const trackWorkers = async () => {
    const r = await run(['status', '--json'])
    if (r.code !== 0) throw new Error(`status --json failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout) as {
      pid: number
      workers: Array<{ group: string; pid: number | null; state: string }>
    }
    for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
    return s
  }

  const master = tracker.spawn(process.execPath, [script, 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const log = new OutputBuffer().follow(master.stdout)
  log.follow(master.stderr)
  const exited = waitForExit(master)

  const status0 = await waitFor(
    async () => {
      const s = await trackWorkers()
      return s.workers.length === 3 && s.workers.every((w) => w.state === 'ready') ? s : undefined
    },
    { timeoutMs: 20_000, message: '3 workers ready' },
  ).catch((e: Error) => {
    t.log(log.text)
    throw e
  })
  t.is(status0.pid, master.pid ?? -1)
  const gateway0 = await getJson<{
    pid: number
    group: string
    starts: number
    onWorkerReload: number
    onReload: number
  }>(gatewayPort)
  t.like(gateway0, { group: 'gateway', starts: 1, onWorkerReload: 0, onReload: 0 })
  const web0 = await getJson<{ group: string; pid: number }>(webPort)
  t.is(web0.group, 'web')
  const oldWeb = status0.workers.filter((w) => w.group === 'web').map((w) => w.pid)

  const reload = await run(['reload'])
  t.is(reload.code, 0, reload.stderr)
  t.regex(reload.stdout, /web 2\/2 replaced/)
  const gateway1 = await waitFor(
    async () => {
      const g = await getJson<typeof gateway0>(gatewayPort)
      return g.onWorkerReload >= 1 ? g : undefined
    },
    { timeoutMs: 10_000, message: 'onWorkerReload ran in the gateway' },
  ).catch((e: Error) => {
    t.log(log.text)
    throw e
  })
  t.like(gateway1, { pid: gateway0.pid, starts: 1, onWorkerReload: 1, onReload: 1 })
  await log.waitFor(/one-script: gateway#0 onWorkerReload ran \(1\)/)
  const status1 = await trackWorkers()
  const newWeb = status1.workers.filter((w) => w.group === 'web').map((w) => w.pid)
  t.is(newWeb.length, 2)
  t.true(
    newWeb.every((pid) => !oldWeb.includes(pid)),
    'the web workers were replaced',
  )
  t.is(status1.workers.find((w) => w.group === 'gateway')?.pid, gateway0.pid)

  const table = await run(['status'])
  t.is(table.code, 0, table.stderr)
  t.regex(table.stdout, /baton "one"/)
  for (const col of ['GROUP', 'ID', 'PID', 'GEN', 'STATE']) t.regex(table.stdout, new RegExp(col))
  t.regex(table.stdout, /group gateway: .*not reloadable/)
  t.regex(table.stdout, new RegExp(`gateway\\s+0\\s+${gateway0.pid}\\s`))

  const allPids = [...status0.workers, ...status1.workers].map((w) => w.pid as number)
  const stop = await run(['stop'])
  t.is(stop.code, 0, stop.stderr)
  t.deepEqual(await withTimeout(exited, 10_000, 'master exit'), { code: 0, signal: null })
  for (const pid of allPids) t.false(isAlive(pid), `worker ${pid} gone`)
  await log.waitFor(/one-script: gateway#0 onWorkerStop ran/)
  t.deepEqual(runtimeFiles(dir.path), [])
})

test('start() rejects with StartError carrying the stderr of a worker that throws, and leaves nothing running', async (t) => {
  const port = await freePort()
  const h = await harness(t, 'api-startfail', {
    web: { script: fixture('app.mjs'), count: 2, listen: `127.0.0.1:${port}`, env: { BOOT_FAIL: '1' } },
  })
  const error = await t.throwsAsync(h.sup.start(), { instanceOf: StartError })
  t.regex(error!.message, /exited with code 1 before it was ready/)
  t.regex(error!.message, /app: BOOT_FAIL=1, failing at start/)
  t.is(h.of('fleet:start-failed').length, 1)
  t.regex(h.of('fleet:start-failed')[0].reason, /app: BOOT_FAIL=1, failing at start/)
  t.is(h.of('fleet:ready').length, 0)
  // When start() has rejected, the fleet is down: no worker, no socket, no pid file.
  const pids = h.spawned()
  t.true(pids.length >= 1)
  for (const pid of pids) t.false(isAlive(pid), `worker ${pid} gone`)
  t.deepEqual(runtimeFiles(h.dir.path), [])
  t.true(await portIsFree(port), 'the listening socket is closed')
  await withTimeout(h.sup.stopped, 1000, 'stopped resolves')
})

test('invalid options throw an OptionsError naming the field, before anything starts', async (t) => {
  const dir = await tmpDir('baton-api-opts-')
  t.teardown(() => dir.cleanup())
  const script = fixture('app.mjs')
  const base = { name: 'opts', runtimeDir: dir.path, log: false as const, handleSignals: false }
  const cases: Array<[string, GroupOptions | Record<string, unknown>, string, RegExp]> = [
    ['count 0', { script, count: 0 }, 'groups.web.count', /integer from 1/],
    ['count not an integer', { script, count: 1.5 }, 'groups.web.count', /integer/],
    ['unknown group option', { script, bogus: true }, 'groups.web.bogus', /unknown option/],
    ['bad listen address', { script, listen: 'http://x:1' }, 'groups.web.listen', /http:\/\/x:1/],
    [
      'bad listen address in a list',
      { script, listen: ['127.0.0.1:0', 'nonsense'] },
      'groups.web.listen[1]',
      /nonsense/,
    ],
    [
      'missing script',
      { script: '/nonexistent/app.mjs' },
      'groups.web.script',
      /\/nonexistent\/app\.mjs does not exist/,
    ],
    ['no script', { count: 1 }, 'groups.web.script', /worker script/],
    ['bad order', { script, order: 'random' }, 'groups.web.order', /start-first.*stop-first/],
    ['bad reloadable', { script, reloadable: 'no' }, 'groups.web.reloadable', /true or false/],
  ]
  for (const [what, group, field, message] of cases) {
    const viaConstructor = t.throws(
      () => new Supervisor({ ...base, groups: { web: group as GroupOptions } }),
      { instanceOf: OptionsError },
      what,
    )
    t.is(viaConstructor?.field, field, what)
    t.true(viaConstructor?.message.startsWith(`${field}: `), `${what}: ${viaConstructor?.message}`)
    t.regex(viaConstructor?.message ?? '', message, what)
    const viaGroup = t.throws(
      () => new Supervisor(base).group('web', group as GroupOptions),
      { instanceOf: OptionsError },
      what,
    )
    t.is(viaGroup?.field, field, `${what} (group())`)
  }
  const unknownTop = t.throws(() => new Supervisor({ ...base, bogus: 1 } as SupervisorOptions), {
    instanceOf: OptionsError,
  })
  t.is(unknownTop?.field, 'bogus')
  const badName = t.throws(() => new Supervisor({ ...base, groups: { 'no spaces': { script } } }), {
    instanceOf: OptionsError,
  })
  t.is(badName?.field, 'groups.no spaces')
  const badBackoff = t.throws(() => new Supervisor({ ...base, backoff: { initial: 0 } }), { instanceOf: OptionsError })
  t.is(badBackoff?.field, 'backoff.initial')
  const duplicate = new Supervisor({ ...base, groups: { web: { script } } })
  t.is(t.throws(() => duplicate.group('web', { script }), { instanceOf: OptionsError })?.field, 'groups.web')
  const empty = new Supervisor(base)
  const noGroups = await t.throwsAsync(empty.start(), { instanceOf: OptionsError })
  t.is(noGroups?.field, 'groups')
  t.regex(noGroups?.message ?? '', /no groups/)
  t.deepEqual(readdirSync(dir.path), [], 'nothing was created in the runtime dir')
})

test('a bad fleet option gets the one Rust error naming the field, through the API and the CLI', async (t) => {
  const dir = await tmpDir('baton-api-fleet-opts-')
  t.teardown(() => dir.cleanup())
  const base = { runtimeDir: dir.path, log: false as const, handleSignals: false }
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ name: 'a b' }, 'name', /"a b" is not a valid name \(1-64 characters/],
    [{ runtimeDir: '' }, 'runtimeDir', /expected a path, got ""/],
    [{ logFile: 5 }, 'logFile', /expected a path, got 5/],
    [
      { upgradeCommand: 'node app.mjs' },
      'upgradeCommand',
      /expected a command line as an array of strings, program first/,
    ],
    [{ upgradeCommand: [] }, 'upgradeCommand', /the command line is empty: give the program first/],
    [{ upgradeCommand: ['', 'app.mjs'] }, 'upgradeCommand[0]', /the program is empty: give its path first/],
    [{ upgradeCommand: ['node', 5] }, 'upgradeCommand[1]', /expected a string, got 5/],
    [{ handleSignals: 'no' }, 'handleSignals', /expected true or false, got "no"/],
    [{ logFormat: 'xml' }, 'logFormat', /expected 'text' or 'json', got "xml"/],
    [{ logTime: 1 }, 'logTime', /expected true or false, got 1/],
    [{ groups: [] }, 'groups', /expected an object of groups by name/],
    [{ health: 'nonsense' }, 'health', /invalid listen address "nonsense".*expected host:port/],
    [{ healthDetail: true }, 'healthDetail', /set health to an address, or remove healthDetail/],
    [{ log: 'stderr' }, 'log', /expected a function/],
    [{ bogus: 1 }, 'bogus', /unknown option \(known: name, runtimeDir, .*, log, beforeReload\)/],
  ]
  for (const [options, field, message] of cases) {
    const what = JSON.stringify(options)
    const e = t.throws(
      () => new Supervisor({ ...base, ...options } as SupervisorOptions),
      { instanceOf: OptionsError },
      what,
    )
    t.is(e?.field, field, what)
    t.true(e?.message.startsWith(`${field}: `), `${what}: ${e?.message}`)
    t.regex(e?.message ?? '', message, what)
  }
  // The CLI's --name reaches the same check, and its message is the API's.
  const api = t.throws(() => new Supervisor({ ...base, name: 'a b' }), { instanceOf: OptionsError })
  const cli = await runCli(['start', fixture('app.mjs'), '--name', 'a b', '--count', '1'], {
    BATON_RUNTIME_DIR: dir.path,
  })
  t.is(cli.code, 2, cli.stderr)
  t.true(cli.stderr.includes(api?.message ?? '?'), cli.stderr)
  t.notRegex(cli.stderr, /app#0/, 'no worker was spawned')
  t.deepEqual(readdirSync(dir.path), [], 'nothing was created in the runtime dir')
})

test('stop() during a reload: the reload rejects with a cancelled report, every worker exits, stopped resolves', async (t) => {
  const port = await freePort()
  // A 400 ms boot keeps the reload running long enough to stop it half-way.
  const h = await harness(t, 'api-cancel', {
    web: { script: fixture('app.mjs'), count: 3, listen: `127.0.0.1:${port}`, env: { BOOT_DELAY_MS: '400' } },
  })
  await h.sup.start()
  const firstProgress = new Promise<void>((resolve) => h.sup.once('reload:progress', () => resolve()))
  const outcome = h.sup.reload().then(
    (report) => ({ report, error: undefined }),
    (error: unknown) => ({ report: undefined, error }),
  )
  await withTimeout(firstProgress, 15_000, 'first reload:progress')
  t.true(h.sup.status().reloading)
  const stopping = h.sup.stop()

  const result = await withTimeout(outcome, 15_000, 'reload promise settles')
  t.is(result.report, undefined, 'the reload did not complete')
  t.true(result.error instanceof ReloadError, `rejected with ${String(result.error)}`)
  const report = (result.error as ReloadError).report
  t.is(report.outcome, 'cancelled')
  t.is(report.generation, 2)
  t.is(report.due, 3)
  t.true(
    report.replaced.length >= 1 && report.replaced.length < 3,
    `${report.replaced.length} replaced before the stop`,
  )
  t.regex(report.message, /cancelled/)
  t.is(h.of('reload:done').length, 0)

  await withTimeout(stopping, 15_000, 'stop() resolves')
  await withTimeout(h.sup.stopped, 1000, 'stopped resolves')
  t.is(h.of('fleet:stopped').length, 1)
  const pids = h.spawned()
  t.true(pids.length >= 4, `${pids.length} workers spawned`)
  for (const pid of pids) t.false(isAlive(pid), `worker ${pid} gone`)
  t.deepEqual(runtimeFiles(h.dir.path), [])
  t.true(await portIsFree(port))
})

test('on Windows, baton throws a clear "not supported" error', async (t) => {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const run = async (code: string) => {
    const child = tracker.spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = new OutputBuffer().follow(child.stdout)
    const err = new OutputBuffer().follow(child.stderr)
    const exit = await withTimeout(waitForExit(child), 20_000, 'win32 probe exits')
    return { ...exit, stdout: out.text, stderr: err.text }
  }
  const fake = "Object.defineProperty(process, 'platform', { value: 'win32' });"
  // The plainest use: the constructor with default name and runtime dir.
  const ctor = await run(
    `${fake} const { Supervisor } = await import('batonjs');
     try { new Supervisor({ groups: {} }); console.log('NO ERROR') } catch (e) { console.log(e.name + ': ' + e.message) }`,
  )
  t.is(ctor.code, 0, ctor.stderr)
  t.notRegex(ctor.stdout, /NO ERROR/)
  t.regex(ctor.stdout, /^UnsupportedPlatformError: baton does not support win32/)
  t.regex(ctor.stdout, /Linux or macOS/)
  // With every option given (no runtime dir to resolve), the constructor still refuses.
  const start = await run(
    `${fake} const { Supervisor } = await import('batonjs');
     try {
       const s = new Supervisor({ name: 'win', runtimeDir: '/nonexistent/baton-win', log: false, handleSignals: false,
         groups: { web: { script: ${JSON.stringify(fixture('app.mjs'))} } } });
       await s.start(); console.log('STARTED'); await s.stop({ force: true })
     } catch (e) { console.log(e.name + ': ' + e.message) }`,
  )
  t.is(start.code, 0, start.stderr)
  t.notRegex(start.stdout, /STARTED/)
  t.regex(start.stdout, /^UnsupportedPlatformError: baton does not support win32/)
  t.false(existsSync('/nonexistent/baton-win'))
})

test('on an architecture without a prebuilt binary, the error names it and the supported targets', async (t) => {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  // Linux on riscv64: no native/baton.linux-riscv64-gnu.node and no batonjs-linux-riscv64-gnu.
  const fake = "Object.defineProperty(process, 'arch', { value: 'riscv64' });"
  const child = tracker.spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `${fake} const { Supervisor } = await import('batonjs');
       try { new Supervisor({ groups: {} }); console.log('NO ERROR') } catch (e) { console.log(e.name + ': ' + e.message) }`,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const out = new OutputBuffer().follow(child.stdout)
  const err = new OutputBuffer().follow(child.stderr)
  const exit = await withTimeout(waitForExit(child), 20_000, 'riscv64 probe exits')
  t.is(exit.code, 0, err.text)
  t.notRegex(out.text, /NO ERROR/)
  t.regex(out.text, /^UnsupportedPlatformError: baton has no prebuilt binary for linux-riscv64-gnu/)
  t.regex(out.text, /linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl, darwin-x64, darwin-arm64/)
  t.regex(out.text, /build from source/)
})

test('batonjs/worker is the worker runtime alone: the same worker as batonjs, without the addon, TLS or the master API', async (t) => {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  // What a worker that imports only `batonjs/worker` holds: no native addon mapped, no TLS
  // or crypto, no child_process beyond what an HTTP app loads anyway (Node 24's own
  // node:http loads crypto and tls; Node 20's does not); and `batonjs` (loaded afterwards)
  // hands out the same worker.
  const child = tracker.spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { readFileSync } = await import('node:fs');
       await import('node:http');
       const watched = () => process.moduleLoadList.filter((m) => /^NativeModule (tls|crypto|https|child_process)$/.test(m));
       const before = watched();
       const { worker } = await import('batonjs/worker');
       const addon = readFileSync('/proc/self/maps', 'utf8').includes('baton.');
       const builtins = watched().filter((m) => !before.includes(m));
       const same = (await import('batonjs')).worker === worker;
       console.log(JSON.stringify({ isWorker: worker.isWorker, addon, builtins, same }))`,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const out = new OutputBuffer().follow(child.stdout)
  const err = new OutputBuffer().follow(child.stderr)
  const exit = await withTimeout(waitForExit(child), 20_000, 'batonjs/worker probe exits')
  t.is(exit.code, 0, err.text)
  t.deepEqual(JSON.parse(out.text), { isWorker: false, addon: false, builtins: [], same: true })
})

// ---------------------------------------------------------------------------------------
// The examples that use the API, run as a user would.
// ---------------------------------------------------------------------------------------

/** Run `node <script> <args>` tracked, with `env`; resolves with its output once closed. */
function runNode(
  tracker: ProcessTracker,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = tracker.spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    const out = new OutputBuffer().follow(child.stdout)
    const err = new OutputBuffer().follow(child.stderr)
    child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
  })
}

test('examples/gateway: a reload replaces the business workers while a gateway client stays connected and gets every answer', async (t) => {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-api-gw-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const gatewayPort = await freePort()
  const businessPort = await freePort()
  const script = join(ROOT, 'examples/gateway/start.mjs')
  const env = {
    ...process.env,
    BATON_RUNTIME_DIR: dir.path,
    GATEWAY_PORT: String(gatewayPort),
    BUSINESS_PORT: String(businessPort),
  }
  const master = tracker.spawn(process.execPath, [script, 'start'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = new OutputBuffer().follow(master.stdout)
  log.follow(master.stderr)
  const exited = waitForExit(master)
  const status = async () => {
    const r = await runNode(tracker, [script, 'status', '--json'], env)
    if (r.code !== 0) throw new Error(`status failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout) as {
      workers: Array<{ group: string; pid: number | null; state: string; generation: number }>
    }
    for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
    return s
  }
  await log.waitFor(/all workers ready/, 20_000)
  const before = await status()

  // One long-lived client connection to the gateway.
  const client = net.connect(gatewayPort, '127.0.0.1')
  t.teardown(() => client.destroy())
  const lines = new OutputBuffer()
  client.setEncoding('utf8')
  client.on('data', (chunk: string) => lines.push(chunk))
  let closed = false
  client.on('close', () => (closed = true))
  const welcome = await lines.waitFor(/welcome, gateway pid (\d+)\n/)
  const gatewayPid = Number(welcome[1])
  t.is(before.workers.find((w) => w.group === 'gateway')?.pid, gatewayPid)
  let sent = 0
  const ask = async (text: string): Promise<string> => {
    sent += 1
    client.write(`${text}\n`)
    const all = await lines.waitFor(new RegExp(`^(?:.*\\n){${sent + 1}}`), 10_000)
    return all[0].split('\n')[sent]
  }
  t.regex(await ask('hello'), /^\[business #\d gen 1 pid \d+\] HELLO$/)

  // Keep talking over the same connection while the business workers are replaced.
  const reload = runNode(tracker, [script, 'reload'], env)
  let reloaded = false
  void reload.then(() => (reloaded = true))
  const answers: string[] = []
  while (!reloaded) answers.push(await ask(`line ${sent}`))
  const r = await reload
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /business 2\/2 replaced/)
  answers.push(await ask('after'))
  t.true(answers.length >= 2, `${answers.length} answers during the reload`)
  const bad = answers.filter((a) => !/^\[business #\d gen [12] pid \d+\] (LINE \d+|AFTER)$/.test(a))
  t.deepEqual(bad, [], 'every line got an answer from a business worker, none an error')
  t.regex(answers[answers.length - 1], /^\[business #\d gen 2 pid \d+\] AFTER$/)
  t.false(closed, 'the client connection survived the reload')
  await log.waitFor(/\[gateway\] reload: business workers are being replaced; 1 client\(s\) stay connected/)

  const after = await status()
  t.is(after.workers.find((w) => w.group === 'gateway')?.pid, gatewayPid, 'the gateway was not restarted')
  const oldBusiness = before.workers.filter((w) => w.group === 'business').map((w) => w.pid)
  const newBusiness = after.workers.filter((w) => w.group === 'business')
  t.is(newBusiness.length, 2)
  t.true(newBusiness.every((w) => w.generation === 2 && !oldBusiness.includes(w.pid)))

  const stop = await runNode(tracker, [script, 'stop'], env)
  t.is(stop.code, 0, stop.stderr)
  t.deepEqual(await withTimeout(exited, 10_000, 'master exit'), { code: 0, signal: null })
  await lines.waitFor(/gateway shutting down\n/)
  await withTimeout(
    new Promise<void>((resolve) => (closed ? resolve() : client.once('close', () => resolve()))),
    5000,
    'client closed by the stop',
  )
})

test('examples/programmatic: starts, reloads on its timer with a printed report, stops on SIGINT', async (t) => {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-api-prog-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const port = await freePort()
  const env = { ...process.env, BATON_RUNTIME_DIR: dir.path, PORT: String(port), RELOAD_EVERY_MS: '500' }
  const master = tracker.spawn(process.execPath, [join(ROOT, 'examples/programmatic/master.mjs')], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = new OutputBuffer().follow(master.stdout)
  out.follow(master.stderr)
  const exited = waitForExit(master)
  await out.waitFor(new RegExp(`listening on http://127\\.0\\.0\\.1:${port}/`), 20_000)
  const hello = await httpGet({ port })
  t.regex(hello.body, /^hello from worker [01] \(pid \d+, generation \d+,/)
  await out.waitFor(/report +done: reload 2 done: 2 of 2 workers replaced/, 20_000)
  await out.waitFor(/web#0: pid \d+ -> \d+/)
  t.regex((await httpGet({ port })).body, /generation [2-9]/)
  const pids = [...out.text.matchAll(/spawn +web#\d pid (\d+)/g)].map((m) => Number(m[1]))
  for (const pid of pids) tracker.trackPid(pid)
  master.kill('SIGINT')
  t.deepEqual(await withTimeout(exited, 15_000, 'master exit'), { code: 0, signal: null })
  t.regex(out.text, /SIGINT: stopping gracefully/)
  t.regex(out.text, /stopped +all workers stopped/)
  t.regex(out.text, /bye/)
  const all = [...out.text.matchAll(/spawn +web#\d pid (\d+)/g)].map((m) => Number(m[1]))
  for (const pid of all) t.false(isAlive(pid), `worker ${pid} gone`)
})
