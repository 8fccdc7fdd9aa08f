/**
 * systemd socket activation of the master (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`),
 * driven by Debian's real `systemd-socket-activate` (package `systemd`): it binds the
 * sockets, waits for the first connection, then execs the command with the sockets at
 * fds 3.. . The master takes them instead of binding, so a master restarted under a
 * parent that keeps the sockets open refuses no connection.
 */
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import * as dgram from 'node:dgram'
import { existsSync, writeFileSync } from 'node:fs'
import * as http from 'node:http'
import { join } from 'node:path'
import type { Status } from '../src/types.js'
import { BATON, fixture, runCli, type CliResult } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { startLoad } from '../harness/load.mjs'
import {
  freePort,
  OutputBuffer,
  ProcessTracker,
  tmpDir,
  waitFor,
  waitForExit,
  type ExitStatus,
} from './helpers/processes.js'

const ACTIVATE = 'systemd-socket-activate'
const haveActivate = spawnSync('sh', ['-c', `command -v ${ACTIVATE}`]).status === 0

/** A command run by `systemd-socket-activate` in its own process group, with its log. */
interface Activated {
  runtimeDir: string
  /** The test's temp dir; `<dir>/stop` ends the restart loop. */
  dir: string
  log: OutputBuffer
  exited: Promise<ExitStatus>
  /** `baton <args>` against the runtime dir. */
  cli(args: string[]): Promise<CliResult>
  /** `baton status NAME --json` (throws while no master answers). */
  status(name: string): Promise<Status>
}

/**
 * Run `command` under `systemd-socket-activate` with `activateArgs` (`-l ADDR`,
 * `--fdname=...`, `-d`...). The teardown creates `<dir>/stop` (the restart loop's exit
 * condition), SIGKILLs the process group, and every master and worker pid seen in a status.
 */
async function activate(
  t: ExecutionContext,
  activateArgs: string[],
  command: string[],
  cwd?: string,
): Promise<Activated> {
  if (!haveActivate) throw new Error(`${ACTIVATE} not found: install it (Debian: apt-get install systemd)`)
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-sockact-')
  const runtimeDir = join(dir.path, 'run')
  const seen = new Set<number>()
  const child = tracker.spawn(ACTIVATE, [...activateArgs, '-E', `BATON_RUNTIME_DIR=${runtimeDir}`, ...command], {
    cwd: cwd ?? dir.path,
    detached: true, // its own process group: the loop, and the masters it execs, die with it
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(async () => {
    writeFileSync(join(dir.path, 'stop'), '')
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
    } catch {
      // already gone
    }
    for (const pid of seen) tracker.trackPid(pid)
    await tracker.killAll()
    await dir.cleanup()
  })
  const log = new OutputBuffer().follow(child.stderr)
  log.follow(child.stdout)
  const env = { BATON_RUNTIME_DIR: runtimeDir }
  const cli = (args: string[]) => runCli(args, env)
  return {
    runtimeDir,
    dir: dir.path,
    log,
    exited: waitForExit(child),
    cli,
    status: async (name) => {
      const r = await cli(['status', name, '--json'])
      if (r.code !== 0) throw new Error(`baton status: ${r.stderr}`)
      const s = JSON.parse(r.stdout) as Status
      seen.add(s.pid)
      for (const w of s.workers) if (w.pid !== null) seen.add(w.pid)
      return s
    },
  }
}

const allReady = (s: Status, n: number) => s.workers.length === n && s.workers.every((w) => w.state === 'ready')

/** GET on a fresh connection, lanes in parallel until `stop()`; records when each started and who answered. */
function freshConnections(port: number, lanes: number) {
  const done: Array<{ at: number; pid: string }> = []
  const failed: Array<{ at: number; error: string }> = []
  let stopping = false
  const lane = async () => {
    while (!stopping) {
      const at = Date.now()
      try {
        const r = await httpGet({ port, path: '/' })
        if (r.status !== 200) failed.push({ at, error: `status ${r.status}` })
        else done.push({ at, pid: String(r.headers['x-pid']) })
      } catch (e) {
        failed.push({ at, error: (e as Error).message })
      }
    }
  }
  const running = Array.from({ length: lanes }, () => lane())
  return {
    done,
    failed,
    stop: async () => {
      stopping = true
      await Promise.all(running)
    },
  }
}

// systemd exists on Linux only; there a missing systemd-socket-activate fails the tests (.ci/run installs it).
const skipUnlessActivate = process.platform === 'linux' ? test.serial : test.serial.skip

skipUnlessActivate(
  'a socket-activated master serves the first connection, and a master restarted 3 times under load refuses no connection',
  async (t) => {
    t.timeout(110_000)
    const port = await freePort()
    const addr = `127.0.0.1:${port}`
    // The loop holds the sockets (systemd-socket-activate execs into it) and starts a new
    // master each time one exits; the inner sh execs into the master, so LISTEN_PID is its pid.
    const loop =
      'while [ ! -e stop ]; do sh -c \'exec env LISTEN_PID=$$ "$0" "$@"\' "$0" "$1" start "$2" --name web --count 2 --listen "$3"; echo "master exited: $?"; done'
    const a = await activate(
      t,
      ['-l', addr, '--fdname=web'],
      ['sh', '-c', loop, process.execPath, BATON, fixture('app.mjs'), addr],
    )
    await a.log.waitFor(/Listening on 127\.0\.0\.1:\d+ as 3/)

    // systemd-socket-activate starts the command on the first connection, which waits in the queue.
    const first = await httpGet({ port, path: '/' })
    t.is(first.status, 200)
    t.is(first.body, 'v1')
    let status = await waitFor(async () => {
      const s = await a.status('web')
      return allReady(s, 2) ? s : undefined
    })
    t.deepEqual(status.groups[0]?.sockets, [
      { address: addr, configured: addr, from: 'inherited', fd: 3, fdName: 'web' },
    ])
    t.regex(
      a.log.text,
      /group "web": 127\.0\.0\.1:\d+ is the socket systemd passed as fd 3 \(name "web", 127\.0\.0\.1:\d+\) \(matched by name\)/,
    )
    const table = await a.cli(['status', 'web'])
    t.regex(table.stdout, /on 127\.0\.0\.1:\d+ \(from systemd, fd 3 "web"\)/)

    const load = startLoad({ port, connections: 8 })
    const fresh = freshConnections(port, 4)
    const windows: Array<[number, number]> = []
    const masters = [status.pid]
    const workersOf = (s: Status) => s.workers.map((w) => String(w.pid))
    const workers = [workersOf(status)]
    // Each master serves for a moment before it is restarted (and the last one after).
    const serveSome = async () => {
      const served = fresh.done.length
      await waitFor(() => fresh.done.length >= served + 20, { message: 'requests served by the current master' })
    }
    for (let i = 0; i < 3; i++) {
      await serveSome()
      const before = status
      const from = Date.now()
      process.kill(before.pid, 'SIGTERM')
      status = await waitFor(
        async () => {
          const s = await a.status('web')
          return s.pid !== before.pid && allReady(s, 2) ? s : undefined
        },
        { timeoutMs: 30_000, message: `a new master after restart ${i + 1}; log:\n${a.log.text.slice(-3000)}` },
      )
      windows.push([from, Date.now()])
      masters.push(status.pid)
      workers.push(workersOf(status))
    }
    await serveSome()
    const result = await load.stop()
    await fresh.stop()

    const perWindow = windows.map(([from, to]) => fresh.done.filter((r) => r.at >= from && r.at <= to).length)
    t.log(
      `keep-alive: ${result.ok} ok; fresh connections: ${fresh.done.length} ok, ${fresh.failed.length} failed; made during the 3 restarts: ${perWindow.join(', ')}; restart windows ${windows.map(([a, b]) => b - a).join(', ')} ms`,
    )
    t.is(new Set(masters).size, 4, 'four masters in turn')
    t.deepEqual(result.errorCodes, {}, 'keep-alive load: no error')
    t.is(result.errors, 0)
    t.true(result.ok > 0)
    t.deepEqual(fresh.failed, [], 'fresh connections: none refused, reset or failed')
    for (const [from, to] of windows) {
      const during = fresh.done.filter((r) => r.at >= from && r.at <= to).length
      t.true(during > 0, `connections were made while the master restarted (${from}..${to})`)
    }
    const answered = new Set(fresh.done.map((r) => r.pid))
    for (const [i, pids] of workers.entries())
      t.true(
        pids.some((p) => answered.has(p)),
        `master ${i + 1}'s workers answered`,
      )
    t.notRegex(a.log.text, /EADDRINUSE|address already in use/)
  },
)

skipUnlessActivate(
  'unnamed sockets are matched by address, in any order; an address without one is bound; a Unix socket file stays',
  async (t) => {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()]
    const a0 = await tmpDir('baton-sockact-unix-')
    t.teardown(() => a0.cleanup())
    const unixPath = join(a0.path, 'app.sock')
    const config = join(a0.path, 'baton.config.json')
    const app = fixture('app.mjs')
    writeFileSync(
      config,
      JSON.stringify({
        name: 'shop',
        groups: {
          web: { script: app, listen: `127.0.0.1:${p2}` },
          admin: { script: app, listen: `127.0.0.1:${p1}` },
          extra: { script: app, listen: `127.0.0.1:${p3}` },
          local: { script: app, listen: `unix:${unixPath}` },
        },
      }),
    )
    const a = await activate(
      t,
      ['-l', `127.0.0.1:${p1}`, '-l', `127.0.0.1:${p2}`, '-l', unixPath],
      [process.execPath, BATON, 'start', '--config', config],
    )
    await a.log.waitFor(/Listening on .*app\.sock as 5/)
    t.is((await httpGet({ port: p1, path: '/' })).body, 'v1')
    const status = await waitFor(async () => {
      const s = await a.status('shop')
      return allReady(s, 4) ? s : undefined
    })
    const sockets = Object.fromEntries(status.groups.map((g) => [g.name, g.sockets]))
    t.deepEqual(sockets.admin, [
      { address: `127.0.0.1:${p1}`, configured: `127.0.0.1:${p1}`, from: 'inherited', fd: 3, fdName: null },
    ])
    t.deepEqual(sockets.web, [
      { address: `127.0.0.1:${p2}`, configured: `127.0.0.1:${p2}`, from: 'inherited', fd: 4, fdName: null },
    ])
    t.deepEqual(sockets.local, [
      { address: `unix:${unixPath}`, configured: `unix:${unixPath}`, from: 'inherited', fd: 5, fdName: null },
    ])
    t.deepEqual(sockets.extra, [
      { address: `127.0.0.1:${p3}`, configured: `127.0.0.1:${p3}`, from: 'bound', fd: null, fdName: null },
    ])
    t.regex(
      a.log.text,
      /group "web": 127\.0\.0\.1:\d+ is the socket systemd passed as fd 4 \(127\.0\.0\.1:\d+\) \(matched by address\)/,
    )
    for (const port of [p1, p2, p3]) t.is((await httpGet({ port, path: '/' })).status, 200)
    t.is((await httpGet({ socketPath: unixPath, path: '/' })).body, 'v1')

    const stop = await a.cli(['stop', 'shop'])
    t.is(stop.code, 0, stop.stderr)
    t.deepEqual(await a.exited, { code: 0, signal: null })
    t.true(existsSync(unixPath), "the inherited Unix socket file is systemd's: baton leaves it")
  },
)

skipUnlessActivate(
  'the master clears LISTEN_* and keeps the sockets from its own child_process children',
  async (t) => {
    const port = await freePort()
    const master = `
    import { execFileSync } from 'node:child_process'
    const { Supervisor } = await import('batonjs')
    const s = new Supervisor({ name: 'api', groups: { web: { script: ${JSON.stringify(fixture('app.mjs'))}, listen: '127.0.0.1:${port}' } } })
    await s.start()
    const seen = execFileSync('sh', ['-c', 'env | grep ^LISTEN_ ; readlink /proc/$$/fd/3 || echo no-fd-3'], { encoding: 'utf8' })
    console.log('CHILD ' + JSON.stringify(seen) + ' ' + JSON.stringify(s.addresses()))
    await s.stop()
  `
    // From the repo, where `import('batonjs')` resolves to this package.
    const repo = new URL('..', import.meta.url).pathname
    const a = await activate(
      t,
      ['-l', `127.0.0.1:${port}`],
      [process.execPath, '--input-type=module', '-e', master],
      repo,
    )
    await a.log.waitFor(/Listening on/)
    t.is((await httpGet({ port, path: '/' })).status, 200)
    const [, seen, addresses] = (await a.log.waitFor(/CHILD (".*") (\[.*\])/)) as unknown as [string, string, string]
    t.is(JSON.parse(seen), 'no-fd-3\n', 'no LISTEN_* variable and no fd 3 in a child of the master')
    t.like((JSON.parse(addresses) as unknown[])[0], { group: 'web', from: 'inherited', fd: 3 })
    t.deepEqual(await a.exited, { code: 0, signal: null })
  },
)

/**
 * Start `baton start <args>` under `systemd-socket-activate <activateArgs>`, trigger it,
 * and wait for the master's error line (`baton: ...`) and its exit status.
 */
async function failingStart(
  t: ExecutionContext,
  activateArgs: string[],
  args: string[],
  trigger: () => Promise<unknown>,
) {
  const a = await activate(t, activateArgs, [
    process.execPath,
    BATON,
    'start',
    fixture('app.mjs'),
    '--name',
    'web',
    '--count',
    '1',
    ...args,
  ])
  await a.log.waitFor(/Listening on/)
  await trigger().catch(() => undefined)
  await a.log.waitFor(/^baton: .*$/m)
  // With --accept systemd-socket-activate forks the master and keeps listening: it reports the child's exit.
  const code = activateArgs.includes('--accept')
    ? Number((await a.log.waitFor(/Child \d+ died with code (\d+)/))[1])
    : (await a.exited).code
  return { code, log: a.log.text }
}

const connect = (port: number) => httpGet({ port, path: '/' })

skipUnlessActivate('a passed socket that matches no group fails the start, naming the fd and what to do', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()]
  const { code, log } = await failingStart(
    t,
    ['-l', `127.0.0.1:${p1}`, '-l', `127.0.0.1:${p2}`, '--fdname=web:api'],
    ['--listen', `127.0.0.1:${p1}`],
    () => connect(p1),
  )
  t.is(code, 1, log)
  t.true(
    log.includes(
      `systemd socket activation: systemd passed the socket fd 4 (name "api", 127.0.0.1:${p2}), which matches no group (listen addresses: web on 127.0.0.1:${p1}): name it after the group that should serve it (FileDescriptorName=<group> in the .socket unit) or give that group the listen address 127.0.0.1:${p2}`,
    ),
    log,
  )
  t.notRegex(log, /ready \(pid/, 'no worker was started')
})

skipUnlessActivate(
  'a datagram socket, a connected socket (Accept=yes) and --daemon are refused with what to change',
  async (t) => {
    const port = await freePort()
    const udp = await failingStart(t, ['-d', '-l', `127.0.0.1:${port}`], ['--listen', `127.0.0.1:${port}`], () => {
      const s = dgram.createSocket('udp4')
      return new Promise<void>((resolve) => s.send('x', port, '127.0.0.1', () => (s.close(), resolve())))
    })
    t.is(udp.code, 1, udp.log)
    t.regex(
      udp.log,
      /systemd socket activation: fd 3 is a datagram socket \(ListenDatagram=\); baton takes listening stream sockets \(ListenStream= in the \.socket unit\)/,
    )

    const port2 = await freePort()
    const accepted = await failingStart(
      t,
      ['--accept', '-l', `127.0.0.1:${port2}`],
      ['--listen', `127.0.0.1:${port2}`],
      () => connect(port2),
    )
    t.is(accepted.code, 1, accepted.log)
    t.regex(accepted.log, /fd 3 is not a listening socket \(with Accept=yes .*\); baton needs Accept=no, the default/)

    const port3 = await freePort()
    const daemon = await failingStart(
      t,
      ['-l', `127.0.0.1:${port3}`],
      ['--listen', `127.0.0.1:${port3}`, '--daemon'],
      () => connect(port3),
    )
    t.is(daemon.code, 2, daemon.log)
    t.regex(
      daemon.log,
      /systemd passed this master its listening sockets \(LISTEN_FDS\), which a --daemon child could not take/,
    )
  },
)

test('LISTEN_FDS for another process is ignored: the master binds its address and says why', async (t) => {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const dir = await tmpDir('baton-sockact-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  const master = tracker.spawn(
    process.execPath,
    [BATON, 'start', fixture('app.mjs'), '--name', 'web', '--count', '1', '--listen', `127.0.0.1:${port}`],
    {
      env: { ...process.env, BATON_RUNTIME_DIR: dir.path, LISTEN_PID: '1', LISTEN_FDS: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const log = new OutputBuffer().follow(master.stderr)
  await log.waitFor(/listening on 127\.0\.0\.1:\d+\n/)
  t.regex(
    log.text,
    /LISTEN_FDS=1 is for process 1 \(LISTEN_PID\), not this master \(\d+\); binding the listen addresses instead/,
  )
  const r = await new Promise<number>((resolve, reject) =>
    http
      .get({ host: '127.0.0.1', port, agent: false }, (res) => (res.resume(), resolve(res.statusCode ?? 0)))
      .on('error', reject),
  )
  t.is(r, 200)
  master.kill('SIGTERM')
  t.deepEqual(await waitForExit(master), { code: 0, signal: null })
})
