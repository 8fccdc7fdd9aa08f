/**
 * `baton` CLI behaviours end to end: master signals, `--daemon` and `restart`, commands
 * against masters that are not running or ambiguous, runtime dir permissions, unix and
 * IPv6 listen addresses. Real masters, real workers, real sockets.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import * as net from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Status } from '../src/types.js'
import { BATON, fixture, startFleet, type CliResult } from './helpers/fleet.js'
import { httpGet, runtimeFiles } from './helpers/http.js'
import {
  freePort,
  isAlive,
  OutputBuffer,
  ProcessTracker,
  tmpDir,
  waitFor,
  waitForExit,
  withTimeout,
  type ExitStatus,
} from './helpers/processes.js'

/** A master started by {@link Runtime.master}. */
interface Master {
  pid: number
  log: OutputBuffer
  exited: Promise<ExitStatus>
}

/** One runtime dir shared by several masters and CLI calls; everything is killed in teardown. */
interface Runtime {
  dir: string
  tracker: ProcessTracker
  env: NodeJS.ProcessEnv
  /** `baton <args>` in this runtime dir (tracked). */
  cli(args: string[]): Promise<CliResult>
  /** `baton status <name> --json`, parsed; its worker pids are tracked for the teardown. */
  status(name: string): Promise<Status>
  /** Start a foreground master (default: app.mjs, 1 worker, on 127.0.0.1:0) and wait until its workers are ready. */
  master(
    name: string,
    options: { script?: string; count?: number; listen?: string[]; flags?: string[] },
  ): Promise<Master>
}

async function runtime(t: ExecutionContext, dirPath?: string): Promise<Runtime> {
  const tracker = new ProcessTracker()
  const tmp = await tmpDir('baton-cli-')
  const dir = dirPath ?? tmp.path
  t.teardown(async () => {
    // A master this test did not learn the pid of (e.g. a daemon) is found by its pid file.
    for (const f of existsSync(dir) ? readdirSync(dir) : []) {
      const pid = f.endsWith('.pid') ? Number(readFileSync(join(dir, f), 'utf8').trim()) : NaN
      if (Number.isInteger(pid) && pid > 0) tracker.trackPid(pid)
    }
    await tracker.killAll()
    await tmp.cleanup()
  })
  const env = { ...process.env, BATON_RUNTIME_DIR: dir }
  const cli = (args: string[]): Promise<CliResult> =>
    new Promise((resolve) => {
      const child = tracker.spawn(process.execPath, [BATON, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      const out = new OutputBuffer().follow(child.stdout)
      const err = new OutputBuffer().follow(child.stderr)
      child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
    })
  const status = async (name: string): Promise<Status> => {
    const r = await cli(['status', name, '--json'])
    if (r.code !== 0) throw new Error(`baton status ${name} failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout) as Status
    tracker.trackPid(s.pid)
    for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
    return s
  }
  const master: Runtime['master'] = async (name, options) => {
    const count = options.count ?? 1
    const child = tracker.spawn(
      process.execPath,
      [
        BATON,
        'start',
        options.script ?? fixture('app.mjs'),
        '--name',
        name,
        '--count',
        String(count),
        ...(options.listen ?? ['127.0.0.1:0']).flatMap((a) => ['--listen', a]),
        ...(options.flags ?? []),
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const log = new OutputBuffer().follow(child.stdout)
    log.follow(child.stderr)
    const exited = waitForExit(child)
    const ready = waitFor(
      async () => {
        const s = await status(name)
        return s.pid === child.pid && s.workers.length === count && s.workers.every((w) => w.state === 'ready')
      },
      { timeoutMs: 20_000, message: `master "${name}" ready` },
    )
    const died = exited.then((e) => {
      throw new Error(`master "${name}" exited (${JSON.stringify(e)}) before it was ready`)
    })
    await Promise.race([ready, died]).catch((e: Error) => {
      t.log(log.text)
      throw e
    })
    return { pid: child.pid ?? -1, log, exited }
  }
  return { dir, tracker, env, cli, status, master }
}

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(new RegExp(pattern.source, 'g'))].length
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} to the master: graceful stop, every worker exits, master exits 0`, async (t) => {
    const port = await freePort()
    const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 2, listen: [`127.0.0.1:${port}`] })
    const pids = await fleet.workerPids()
    t.is(pids.length, 2)
    process.kill(fleet.pid, signal)
    t.deepEqual(await withTimeout(fleet.exited, 15_000, 'master exit'), { code: 0, signal: null })
    for (const pid of pids) t.false(isAlive(pid), `worker ${pid} gone`)
    // Graceful: each worker ran its stop hook (the fixture prints it) and exited with 0.
    await fleet.log.waitFor(/app: stop hook ran[\s\S]*app: stop hook ran/)
    t.is(count(fleet.log.text, /fleet#\d \(pid \d+\) exited with code 0/), 2, fleet.log.text)
    t.false(/SIGKILL/.test(fleet.log.text), 'nobody was killed')
    t.regex(fleet.log.text, /all workers stopped/)
    t.deepEqual(runtimeFiles(fleet.runtimeDir), [])
  })
}

test('a second SIGINT forces an immediate stop while a worker ignores SIGTERM', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('ignore-sigterm.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
    flags: ['--stop-timeout', '20000'],
  })
  const pids = await fleet.workerPids()
  process.kill(fleet.pid, 'SIGINT')
  // Both workers got the graceful stop and ignored it: the master waits (up to 20 s).
  await fleet.log.waitFor(/ignoring SIGTERM[\s\S]*ignoring SIGTERM/)
  t.true(isAlive(fleet.pid), 'the first SIGINT did not end the master')
  t.true(
    pids.every((pid) => isAlive(pid)),
    'the workers ignore the graceful stop',
  )
  const started = Date.now()
  process.kill(fleet.pid, 'SIGINT')
  // Far below the 20 s stop timeout: the second SIGINT kills at once.
  const exit = await withTimeout(fleet.exited, 8000, 'master exit after the second SIGINT')
  t.log(`master exited ${Date.now() - started} ms after the second SIGINT`)
  t.deepEqual(exit, { code: 0, signal: null })
  for (const pid of pids) t.false(isAlive(pid), `worker ${pid} gone`)
  for (const pid of pids) t.regex(fleet.log.text, new RegExp(`\\(pid ${pid}\\) killed by SIGKILL`))
})

test('start --daemon returns once ready; the detached master shows in status, restarts with new pids, and stops', async (t) => {
  const rt = await runtime(t)
  const port = await freePort()
  const started = await rt.cli([
    'start',
    fixture('app.mjs'),
    '--name',
    'dmn',
    '--count',
    '2',
    '--listen',
    `127.0.0.1:${port}`,
    '--daemon',
  ])
  const pid = Number(/master pid (\d+)/.exec(started.stdout)?.[1] ?? NaN)
  if (Number.isInteger(pid)) rt.tracker.trackPid(pid)
  t.is(started.code, 0, started.stderr)
  t.true(Number.isInteger(pid), started.stdout)
  t.true(isAlive(pid), 'the master outlives the CLI that started it')
  // Ready when `start --daemon` returns: no polling needed here.
  const s1 = await rt.status('dmn')
  t.is(s1.pid, pid)
  t.is(s1.workers.length, 2)
  t.true(s1.workers.every((w) => w.state === 'ready'))
  t.is((await httpGet({ host: '127.0.0.1', port })).status, 200)
  if (process.platform === 'linux') {
    // Own session (setsid): field 6 of /proc/<pid>/stat is the session id.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    t.is(Number(fields[3]), pid, 'the daemon leads its own session')
    const own = readFileSync(`/proc/${process.pid}/stat`, 'utf8')
    t.not(Number(own.slice(own.lastIndexOf(')') + 2).split(' ')[3]), pid)
  }
  const logFile = join(rt.dir, 'dmn.log')
  t.true(existsSync(logFile), 'log file in the runtime dir')
  await waitFor(() => /all workers ready/.test(readFileSync(logFile, 'utf8')), {
    message: 'the log file has the master log',
  })

  const table = await rt.cli(['status'])
  t.is(table.code, 0, table.stderr)
  t.regex(table.stdout, new RegExp(`baton "dmn"\\s+master pid ${pid}`))

  const restarted = await rt.cli(['restart', 'dmn'])
  const pid2 = Number(/master pid (\d+)/.exec(restarted.stdout)?.[1] ?? NaN)
  if (Number.isInteger(pid2)) rt.tracker.trackPid(pid2)
  t.is(restarted.code, 0, restarted.stderr)
  t.true(Number.isInteger(pid2), restarted.stdout)
  t.not(pid2, pid)
  t.false(isAlive(pid), 'the old master is gone')
  const s2 = await rt.status('dmn')
  t.is(s2.pid, pid2)
  t.is(s2.workers.length, 2)
  t.true(s2.workers.every((w) => w.state === 'ready'))
  const oldWorkers = s1.workers.map((w) => w.pid)
  t.true(
    s2.workers.every((w) => !oldWorkers.includes(w.pid)),
    'new worker pids',
  )
  for (const w of oldWorkers) t.false(isAlive(w as number), `old worker ${w} gone`)
  t.is((await httpGet({ host: '127.0.0.1', port })).status, 200, 'serves again on the same address')

  const stopped = await rt.cli(['stop', 'dmn'])
  t.is(stopped.code, 0, stopped.stderr)
  t.false(isAlive(pid2), 'the master exited')
  for (const w of s2.workers) t.false(isAlive(w.pid as number), `worker ${w.pid} gone`)
  t.deepEqual(runtimeFiles(rt.dir), [])
  t.true(existsSync(logFile))
  t.regex(readFileSync(logFile, 'utf8'), /all workers stopped/)
})

test('reload, stop and status of a name that is not running fail with a clear message, said once', async (t) => {
  const rt = await runtime(t)
  // Another master runs meanwhile: the message is about the name asked for.
  await rt.master('alive', { count: 1 })
  for (const args of [
    ['reload', 'ghost'],
    ['stop', 'ghost'],
    ['stop', 'ghost', '--force'],
    ['status', 'ghost'],
    ['status', 'ghost', '--json'],
  ]) {
    const r = await rt.cli(args)
    t.is(r.code, 1, args.join(' '))
    // Said once, on a line of its own (issue 21: it was printed twice, run together).
    t.regex(
      r.stderr,
      /^baton: no baton master named "ghost" is running \(no control socket in [^\n]*\)\n$/,
      args.join(' '),
    )
    t.is(r.stdout, '', args.join(' '))
  }
  const restart = await rt.cli(['restart', 'ghost'])
  t.is(restart.code, 1)
  t.regex(restart.stderr, /no baton master named "ghost" is running/)
  t.is((await rt.status('alive')).workers.length, 1, 'the other master is untouched')

  const empty = await tmpDir('baton-cli-empty-')
  t.teardown(() => empty.cleanup())
  const none = await runtime(t, empty.path)
  for (const args of [['reload'], ['stop'], ['status']]) {
    const r = await none.cli(args)
    t.is(r.code, 1, args.join(' '))
    t.regex(r.stderr, /no baton master is running/, args.join(' '))
  }
})

test('with two masters running, reload/stop without a name ask to name one and status lists both', async (t) => {
  const rt = await runtime(t)
  const alpha = await rt.master('alpha', { count: 1 })
  const beta = await rt.master('beta', { count: 1 })
  for (const args of [['reload'], ['stop'], ['restart']]) {
    const r = await rt.cli(args)
    t.is(r.code, 1, args.join(' '))
    t.regex(r.stderr, /several baton masters are running \(alpha, beta\): name one/, args.join(' '))
  }
  t.true(isAlive(alpha.pid) && isAlive(beta.pid), 'neither was stopped')
  t.is((await rt.status('alpha')).generation, 1, 'alpha was not reloaded')
  t.is((await rt.status('beta')).generation, 1, 'beta was not reloaded')

  const table = await rt.cli(['status'])
  t.is(table.code, 0, table.stderr)
  t.regex(table.stdout, new RegExp(`baton "alpha"\\s+master pid ${alpha.pid}`))
  t.regex(table.stdout, new RegExp(`baton "beta"\\s+master pid ${beta.pid}`))
  const json = await rt.cli(['status', '--json'])
  t.is(json.code, 0, json.stderr)
  const all = JSON.parse(json.stdout) as Status[]
  t.true(Array.isArray(all))
  t.deepEqual(
    all.map((s) => [s.name, s.pid]),
    [
      ['alpha', alpha.pid],
      ['beta', beta.pid],
    ],
  )

  const named = await rt.cli(['reload', 'beta'])
  t.is(named.code, 0, named.stderr)
  t.is((await rt.status('beta')).generation, 2)
  t.is((await rt.status('alpha')).generation, 1)
})

test('runtime dir 0700 when baton creates it, control socket 0600, pid file only while running', async (t) => {
  const parent = await tmpDir('baton-cli-perm-')
  t.teardown(() => parent.cleanup())
  const dir = join(parent.path, 'nested', 'run')
  t.false(existsSync(dir))
  const rt = await runtime(t, dir)
  const master = await rt.master('perm', { count: 1, listen: ['127.0.0.1:0'] })
  t.is(statSync(dir).mode & 0o777, 0o700, 'runtime dir mode')
  const sock = statSync(join(dir, 'perm.sock'))
  t.true(sock.isSocket())
  t.is(sock.mode & 0o777, 0o600, 'control socket mode')
  const pidFile = join(dir, 'perm.pid')
  t.true(existsSync(pidFile), 'pid file while running')
  t.is(Number(readFileSync(pidFile, 'utf8').trim()), master.pid)
  const stop = await rt.cli(['stop', 'perm'])
  t.is(stop.code, 0, stop.stderr)
  t.deepEqual(await withTimeout(master.exited, 10_000, 'master exit'), { code: 0, signal: null })
  t.false(existsSync(pidFile), 'pid file removed after stop')
  t.false(existsSync(join(dir, 'perm.sock')), 'control socket removed after stop')
})

test('--listen unix:/path serves HTTP over the unix socket; a stale socket left by a SIGKILLed master is replaced', async (t) => {
  const rt = await runtime(t)
  const sockDir = await tmpDir('baton-cli-unix-')
  t.teardown(() => sockDir.cleanup())
  const path = join(sockDir.path, 'web.sock')
  const first = await rt.master('unixy', { count: 2, listen: [`unix:${path}`] })
  t.true(statSync(path).isSocket())
  const r1 = await httpGet({ socketPath: path, path: '/' })
  t.like(r1, { status: 200, body: 'v1' })
  const s1 = await rt.status('unixy')
  t.is(s1.groups[0].listen[0], `unix:${path}`)

  process.kill(first.pid, 'SIGKILL')
  await withTimeout(first.exited, 5000, 'master dies')
  const workers = s1.workers.map((w) => w.pid as number)
  await waitFor(() => workers.every((pid) => !isAlive(pid)), { timeoutMs: 5000, message: 'orphaned workers exit' })
  t.true(existsSync(path), 'the SIGKILLed master left its socket file behind')
  await t.throwsAsync(httpGet({ socketPath: path, path: '/' }), { code: 'ECONNREFUSED' }, 'the file is stale')

  const second = await rt.master('unixy', { count: 1, listen: [`unix:${path}`] })
  t.not(second.pid, first.pid)
  t.like(await httpGet({ socketPath: path, path: '/' }), { status: 200, body: 'v1' })
  const stop = await rt.cli(['stop', 'unixy'])
  t.is(stop.code, 0, stop.stderr)
  t.deepEqual(await withTimeout(second.exited, 10_000, 'master exit'), { code: 0, signal: null })
})

test('--listen 127.0.0.1:0 binds a real port, reported by status and served', async (t) => {
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 1, listen: ['127.0.0.1:0'] })
  const status = await fleet.status()
  const bound = status.groups[0].listen[0]
  const port = Number(/^127\.0\.0\.1:(\d+)$/.exec(bound)?.[1] ?? NaN)
  t.true(Number.isInteger(port) && port > 0, `bound ${bound}`)
  t.regex(fleet.log.text, new RegExp(`listening on 127\\.0\\.0\\.1:${port}`))
  t.like(await httpGet({ host: '127.0.0.1', port }), { status: 200, body: 'v1' })
})

function ipv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(0, '::1', () => s.close(() => resolve(true)))
  })
}

test('--listen [::1]:port serves over IPv6', async (t) => {
  if (!(await ipv6Loopback())) {
    t.log('no IPv6 loopback on this machine: skipped')
    t.pass()
    return
  }
  const port = await freePort('::1')
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 2, listen: [`[::1]:${port}`] })
  const status = await fleet.status()
  t.is(status.groups[0].listen[0], `[::1]:${port}`)
  t.like(await httpGet({ host: '::1', family: 6, port }), { status: 200, body: 'v1' })
  const info = JSON.parse((await httpGet({ host: '::1', family: 6, port, path: '/info' })).body) as { pid: number }
  t.true(status.workers.some((w) => w.pid === info.pid))
})

test('examples/http and examples/express-style serve, reload and stop under the CLI', async (t) => {
  const rt = await runtime(t)
  const root = fileURLToPath(new URL('..', import.meta.url))
  const httpPort = await freePort()
  const apiPort = await freePort()
  const plain = await rt.master('app', {
    script: join(root, 'examples/http/app.mjs'),
    count: 2,
    listen: [`127.0.0.1:${httpPort}`],
  })
  const users = await rt.master('users', {
    script: join(root, 'examples/express-style/app.mjs'),
    count: 2,
    listen: [`127.0.0.1:${apiPort}`],
  })
  t.regex(
    (await httpGet({ host: '127.0.0.1', port: httpPort })).body,
    /^hello from worker [01] \(pid \d+, generation 1, started /,
  )
  t.deepEqual(JSON.parse((await httpGet({ host: '127.0.0.1', port: apiPort, path: '/users/1' })).body), {
    id: 1,
    name: 'Ada',
  })
  t.is((await httpGet({ host: '127.0.0.1', port: apiPort, path: '/nope' })).status, 404)
  for (const name of ['app', 'users']) {
    const r = await rt.cli(['reload', name])
    t.is(r.code, 0, r.stderr)
    t.regex(r.stdout, new RegExp(`${name} 2/2 replaced`))
  }
  t.regex((await httpGet({ host: '127.0.0.1', port: httpPort })).body, /generation 2/)
  t.like(JSON.parse((await httpGet({ host: '127.0.0.1', port: apiPort })).body), { service: 'users', generation: 2 })
  // The old express-style workers closed their pool after draining.
  await users.log.waitFor(
    /\[worker 0\] pool closed[\s\S]*\[worker 1\] pool closed|\[worker 1\] pool closed[\s\S]*\[worker 0\] pool closed/,
  )
  for (const [name, master] of [
    ['app', plain],
    ['users', users],
  ] as const) {
    const r = await rt.cli(['stop', name])
    t.is(r.code, 0, r.stderr)
    t.deepEqual(await withTimeout(master.exited, 10_000, `${name} exit`), { code: 0, signal: null })
  }
})
