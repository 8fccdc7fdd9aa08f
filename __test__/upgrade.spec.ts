/**
 * `baton upgrade`: the master itself is replaced with zero failed requests. The new master
 * takes the listening sockets (the very same sockets: their inodes are checked), starts its
 * own workers, and only once they are ready do the old workers drain and the old master
 * exit; status, reload and stop then reach the new master. A new master whose workers
 * cannot start leaves nothing behind and the old one keeps serving; an address the new
 * options add serves too; systemd hears MAINPID= of the new master.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, runCli, startFleet, versionedFleet, type Fleet } from './helpers/fleet.js'
import { httpGet, portIsFree } from './helpers/http.js'
import { startLoad } from '../harness/load.mjs'
import { notifications, startNotifyListener } from './helpers/notify.js'
import { fdCount, processesWithEnv, zombieChildren } from '../harness/proc.mjs'
import {
  type TmpDir,
  freePort,
  isAlive,
  OutputBuffer,
  ProcessTracker,
  tmpDir,
  waitFor,
  waitForExit,
  withTimeout,
} from './helpers/processes.js'
import type { Status } from '../src/types.js'
import { assertNoFailedRequests } from './helpers/reload.js'

const APP = fixture('app.mjs')

/** The socket inode behind each worker's fd 3 (its first listening socket). */
function listeningSockets(pids: number[]): Set<string> {
  return new Set(pids.map((pid) => readlinkSync(`/proc/${pid}/fd/3`)))
}

/**
 * A process tracker and a temp runtime dir, both cleaned up after the test; the teardown
 * also kills the master the pid file of `name` names (one started by an upgrade is not our
 * child).
 */
async function ownRuntime(t: ExecutionContext, name: string): Promise<{ tracker: ProcessTracker; dir: TmpDir }> {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-upgrade-own-')
  t.teardown(async () => {
    const pidFile = join(dir.path, `${name}.pid`)
    if (existsSync(pidFile)) tracker.trackPid(Number(readFileSync(pidFile, 'utf8').trim()))
    await tracker.killAll()
    await dir.cleanup()
  })
  return { tracker, dir }
}

/** `fixtures/upgrade-master.mjs` (an API master named "api") running, its 2 workers tracked. */
async function startApiMaster(t: ExecutionContext, extraEnv: Record<string, string> = {}) {
  const { tracker, dir } = await ownRuntime(t, 'api')
  const port = await freePort()
  const env = {
    ...process.env,
    BATON_RUNTIME_DIR: dir.path,
    FLEET_NAME: 'api',
    FLEET_LISTEN: `127.0.0.1:${port}`,
    ...extraEnv,
  }
  const master = tracker.spawn(process.execPath, [fixture('upgrade-master.mjs')], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const out = new OutputBuffer().follow(master.stdout)
  out.follow(master.stderr)
  await out.waitFor(/^started \d+$/m, 20_000)
  const workers = (JSON.parse((await runCli(['status', 'api', '--json'], env)).stdout) as Status).workers
  for (const w of workers) if (w.pid !== null) tracker.trackPid(w.pid)
  /** Ask for the upgrade; the line the master printed about its outcome. */
  const upgrade = async (): Promise<string> => {
    master.stdin?.write('upgrade\n')
    return (await out.waitFor(/^(upgraded .*|upgrade failed .*)$/m, 30_000))[0]
  }
  return { tracker, master, out, env, port, workers, upgrade }
}

/** `baton upgrade` and the checks every successful one must pass; returns the new master's pid. */
async function upgradeAndCheck(t: ExecutionContext, fleet: Fleet, count: number): Promise<number> {
  const before = await fleet.status()
  const oldWorkers = before.workers.map((w) => w.pid as number)
  const sockets = process.platform === 'linux' ? listeningSockets(oldWorkers) : new Set<string>()
  const r = await fleet.cli(['upgrade', fleet.name])
  t.is(r.code, 0, `baton upgrade: ${r.stdout}${r.stderr}\nmaster log:\n${fleet.log.text}`)
  t.regex(r.stdout, new RegExp(`master ${before.pid} -> \\d+; the old workers drained`))
  // The old master exits by itself, with 0, once its workers drained.
  const exit = await withTimeout(fleet.exited, 15_000, 'the old master exits')
  t.is(exit.code, 0)
  const after = await fleet.status()
  t.not(after.pid, before.pid, 'a new master pid')
  t.true(isAlive(after.pid))
  t.is(readFileSync(join(fleet.runtimeDir, `${fleet.name}.pid`), 'utf8').trim(), String(after.pid))
  t.is(after.workers.length, count)
  t.true(
    after.workers.every((w) => w.state === 'ready' && !oldWorkers.includes(w.pid as number)),
    `every worker replaced: ${JSON.stringify(after.workers)} (old ${oldWorkers.join(', ')})`,
  )
  t.false(
    oldWorkers.some((pid) => isAlive(pid)),
    'the old workers are gone',
  )
  if (process.platform === 'linux') {
    const now = listeningSockets(after.workers.map((w) => w.pid as number))
    t.deepEqual([...now].sort(), [...sockets].sort(), 'the new workers accept on the very sockets the old ones did')
  }
  return after.pid
}

async function upgradeUnderLoad(t: ExecutionContext, balance: 'reuseport' | 'shared'): Promise<void> {
  const { fleet, port, deploy } = await versionedFleet(t, { count: 2, flags: ['--balance', balance] })
  const load = startLoad({ port, connections: 16 })
  let newPid = 0
  try {
    await waitFor(() => load.snapshot().ok > 200, { message: 'load warmed up' })
    deploy('v2')
    newPid = await upgradeAndCheck(t, fleet, 2)
    const seen = load.snapshot().ok
    await waitFor(() => (load.snapshot().bodies.v2 ?? 0) > 100 && load.snapshot().ok > seen + 300, {
      message: 'the new master serves v2',
    })
    // The control socket follows the new master: a reload through it works.
    deploy('v3')
    const reload = await fleet.cli(['reload', fleet.name])
    t.is(reload.code, 0, reload.stderr)
    await waitFor(() => (load.snapshot().bodies.v3 ?? 0) > 100, { message: 'v3 serves after the reload' })
  } finally {
    const result = await load.stop()
    if (result.errors) t.log(fleet.log.text)
    assertNoFailedRequests(t, result)
  }
  const stop = await fleet.cli(['stop', fleet.name])
  t.is(stop.code, 0, stop.stderr)
  await waitFor(() => !isAlive(newPid), { message: 'the new master exits on baton stop' })
  t.false(existsSync(join(fleet.runtimeDir, `${fleet.name}.sock`)), 'control socket removed')
  t.false(existsSync(join(fleet.runtimeDir, `${fleet.name}.pid`)), 'pid file removed')
  t.true(await portIsFree(port), 'port released')
}

test.serial(
  'balance reuseport: baton upgrade under keep-alive load fails 0 requests; the new master serves and answers reload and stop',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('SO_REUSEPORT balancing is Linux only')
    await upgradeUnderLoad(t, 'reuseport')
  },
)

test.serial(
  'balance shared: baton upgrade under keep-alive load fails 0 requests; the new master serves and answers reload and stop',
  async (t) => {
    await upgradeUnderLoad(t, 'shared')
  },
)

/** A `baton.config.mjs` of one `web` group. */
function config(o: { script: string; listen: string[]; count?: number }): string {
  return `export default ${JSON.stringify({ name: 'fleet', groups: { web: { script: o.script, count: o.count ?? 2, listen: o.listen } } })}\n`
}

test.serial(
  'an upgrade whose new config names a script that throws at boot exits 1 with the cause; the old master keeps serving and nothing of the new one is left',
  async (t) => {
    const dir = await tmpDir('baton-upgrade-')
    t.teardown(() => dir.cleanup())
    const port = await freePort()
    const file = join(dir.path, 'baton.config.mjs')
    writeFileSync(file, config({ script: APP, listen: [`127.0.0.1:${port}`] }))
    const mark = `upgrade-${process.pid}-${port}` // workers inherit the master's env: it marks both
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2, env: { UPGRADE_TEST_MARK: mark } })
    const before = await fleet.status()
    const ours = processesWithEnv('UPGRADE_TEST_MARK', mark)
    const fdsBefore = fdCount(fleet.pid)
    t.is(ours.length, 3, `the master and its 2 workers: ${ours.join(', ')}`)

    writeFileSync(join(dir.path, 'boom.mjs'), "throw new Error('boom: the new code cannot start')\n")
    writeFileSync(file, config({ script: './boom.mjs', listen: [`127.0.0.1:${port}`] }))
    const load = startLoad({ port, connections: 8 })
    try {
      await waitFor(() => load.snapshot().ok > 100, { message: 'load warmed up' })
      const r = await fleet.cli(['upgrade', fleet.name])
      t.is(r.code, 1, r.stdout + r.stderr)
      t.regex(r.stderr, /baton upgrade: upgrade failed, the old master \(pid \d+\) keeps serving/)
      t.regex(r.stderr, /exited with code 1 before it was ready/)
      t.regex(r.stderr, /boom: the new code cannot start/)
      // Answered only once the new master was gone: only the old master and its workers remain.
      t.deepEqual(processesWithEnv('UPGRADE_TEST_MARK', mark), ours)
      t.is(fdCount(fleet.pid), fdsBefore, 'the old master holds no fd of the failed upgrade')
      t.is(zombieChildren(fleet.pid), 0, 'and no zombie')
      const after = await fleet.status()
      t.is(after.pid, before.pid)
      t.deepEqual(
        after.workers.map((w) => w.pid),
        before.workers.map((w) => w.pid),
      )
      const seen = load.snapshot().ok
      await waitFor(() => load.snapshot().ok > seen + 100, { message: 'the old master keeps serving' })
    } finally {
      assertNoFailedRequests(t, await load.stop())
    }
    t.is(readFileSync(join(fleet.runtimeDir, 'fleet.pid'), 'utf8').trim(), String(before.pid))
    // And it can still be upgraded once the config is good again.
    writeFileSync(file, config({ script: APP, listen: [`127.0.0.1:${port}`] }))
    const again = await fleet.cli(['upgrade', fleet.name])
    t.is(again.code, 0, again.stderr)
  },
)

test.serial('an upgrade that adds a listen address serves on both afterwards', async (t) => {
  const dir = await tmpDir('baton-upgrade-')
  t.teardown(() => dir.cleanup())
  const [first, second] = [await freePort(), await freePort()]
  const file = join(dir.path, 'baton.config.mjs')
  const script = fixture('every-listener.mjs')
  writeFileSync(file, config({ script, listen: [`127.0.0.1:${first}`] }))
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
  writeFileSync(file, config({ script, listen: [`127.0.0.1:${first}`, `127.0.0.1:${second}`], count: 3 }))
  const r = await fleet.cli(['upgrade', fleet.name])
  t.is(r.code, 0, r.stderr)
  const s = await fleet.status()
  t.deepEqual(s.groups[0].listen, [`127.0.0.1:${first}`, `127.0.0.1:${second}`])
  t.is(s.workers.length, 3, 'the new count from the config')
  for (const [port, body] of [
    [first, 'fd 3'],
    [second, 'fd 4'],
  ] as const) {
    const res = await httpGet({ port, path: '/' })
    t.is(res.status, 200, `port ${port}`)
    t.is(res.body, body)
  }
  t.regex(fleet.log.text, new RegExp(`127\\.0\\.0\\.1:${second} is new, binding it`))
})

test.serial(
  'under systemd the new master is announced with MAINPID=, and the old master sends no STOPPING=1',
  async (t) => {
    const { socketPath, out } = await startNotifyListener(t)
    const port = await freePort()
    const fleet = await startFleet(t, {
      script: APP,
      count: 2,
      listen: [`127.0.0.1:${port}`],
      env: { NOTIFY_SOCKET: socketPath },
    })
    await waitFor(() => notifications(out).some((n) => n.READY === '1'), { message: 'READY=1' })
    const r = await fleet.cli(['upgrade', fleet.name])
    t.is(r.code, 0, r.stderr)
    await withTimeout(fleet.exited, 15_000, 'the old master exits')
    const newPid = (await fleet.status()).pid
    const received = notifications(out)
    const handover = received.findIndex((n) => n.MAINPID === String(newPid))
    t.true(handover > 0, `MAINPID=${newPid} among ${JSON.stringify(received)}`)
    t.false(
      received.slice(handover).some((n) => n.STOPPING === '1'),
      `no STOPPING=1 after the handover: ${JSON.stringify(received)}`,
    )
    // The new master is now the unit's: its own stop is announced.
    const stop = await fleet.cli(['stop', fleet.name])
    t.is(stop.code, 0)
    await waitFor(
      () =>
        notifications(out)
          .slice(handover)
          .some((n) => n.STOPPING === '1'),
      {
        message: 'STOPPING=1 from the new master',
      },
    )
  },
)

test.serial(
  'supervisor.upgrade() resolves with the old and new master pids; the old supervisor then stops with successor set',
  async (t) => {
    const { tracker, master, out, env, port, upgrade } = await startApiMaster(t)
    const line = await upgrade()
    t.regex(line, /^upgraded /, out.text)
    const { from, to } = JSON.parse(line.slice('upgraded '.length)) as { from: number; to: number }
    t.is(from, master.pid ?? -1)
    t.not(to, from)
    tracker.trackPid(to) // not our child: killed by the teardown if the test fails from here
    await out.waitFor(new RegExp(`^stopped successor=${to}$`, 'm'), 15_000)
    const status = await runCli(['status', 'api', '--json'], env)
    t.is(status.code, 0, status.stderr)
    t.is((JSON.parse(status.stdout) as { pid: number }).pid, to)
    t.is((await httpGet({ port, path: '/' })).status, 200)
    const stop = await runCli(['stop', 'api'], env)
    t.is(stop.code, 0, stop.stderr)
  },
)

test.serial(
  'an upgrade that removes a listen address closes it once the old master has exited, and keeps serving the other',
  async (t) => {
    const dir = await tmpDir('baton-upgrade-')
    t.teardown(() => dir.cleanup())
    const [kept, removed] = [await freePort(), await freePort()]
    const file = join(dir.path, 'baton.config.mjs')
    const script = fixture('every-listener.mjs')
    writeFileSync(file, config({ script, listen: [`127.0.0.1:${kept}`, `127.0.0.1:${removed}`] }))
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
    t.is((await httpGet({ port: removed, path: '/' })).body, 'fd 4')
    writeFileSync(file, config({ script, listen: [`127.0.0.1:${kept}`] }))
    const r = await fleet.cli(['upgrade', fleet.name])
    t.is(r.code, 0, r.stderr)
    await withTimeout(fleet.exited, 15_000, 'the old master exits')
    t.true(await portIsFree(removed), `port ${removed} is closed`)
    t.is((await httpGet({ port: kept, path: '/' })).body, 'fd 3')
    t.regex(fleet.log.text, new RegExp(`no longer listens on 127\\.0\\.0\\.1:${removed}`))
  },
)

test.serial(
  'Workerman one-script mode: `node script upgrade` replaces the master and every worker, the not-reloadable gateway too',
  async (t) => {
    const { tracker, dir } = await ownRuntime(t, 'one')
    const [gatewayPort, webPort] = [await freePort(), await freePort()]
    const script = fixture('one-script.mjs')
    const env = {
      ...process.env,
      BATON_RUNTIME_DIR: dir.path,
      ONE_NAME: 'one',
      GATEWAY_PORT: String(gatewayPort),
      WEB_PORT: String(webPort),
    }
    const run = (args: string[]) => runCli(args, env, script)
    const master = tracker.spawn(process.execPath, [script, 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    const log = new OutputBuffer().follow(master.stderr)
    const exited = waitForExit(master)
    const ready = async () => {
      const r = await run(['status', '--json'])
      const s = r.code === 0 ? (JSON.parse(r.stdout) as Status) : undefined
      for (const w of s?.workers ?? []) if (w.pid !== null) tracker.trackPid(w.pid)
      return s !== undefined && s.workers.length === 3 && s.workers.every((w) => w.state === 'ready') ? s : undefined
    }
    const before = await waitFor(ready, { timeoutMs: 20_000, message: `3 workers ready:\n${log.text}` })
    const up = await run(['upgrade'])
    t.is(up.code, 0, up.stdout + up.stderr)
    t.deepEqual(await withTimeout(exited, 15_000, 'the old master exits'), { code: 0, signal: null })
    const after = await waitFor(ready, { message: 'the new master lists 3 ready workers' })
    t.not(after.pid, before.pid)
    const old = before.workers.map((w) => w.pid)
    t.true(
      after.workers.every((w) => !old.includes(w.pid)),
      'every worker replaced, the gateway included',
    )
    t.is((await run(['stop'])).code, 0)
  },
)

test.serial(
  'with --health --health-detail, the new master takes the health endpoint over and answers 200 with its own status',
  async (t) => {
    const health = await freePort()
    const { fleet } = await versionedFleet(t, {
      count: 2,
      flags: ['--health', `127.0.0.1:${health}`, '--health-detail'],
    })
    const before = JSON.parse((await httpGet({ port: health, path: '/' })).body) as Status
    t.is(before.pid, fleet.pid)
    const r = await fleet.cli(['upgrade', fleet.name])
    t.is(r.code, 0, r.stdout + r.stderr)
    const newPid = (await fleet.status()).pid
    const after = await waitFor(
      async () => {
        const res = await httpGet({ port: health, path: '/' }).catch(() => undefined)
        const s = res?.status === 200 ? (JSON.parse(res.body) as Status) : undefined
        return s?.pid === newPid ? s : undefined
      },
      { message: `the health endpoint answers for the new master:\n${fleet.log.text}` },
    )
    t.true(after.ready)
  },
)

test.serial(
  'supervisor.upgrade() with an upgradeCommand that exits at once rejects naming its exit; the master keeps serving',
  async (t) => {
    const { master, env, port, workers, upgrade } = await startApiMaster(t, {
      UPGRADE_COMMAND: JSON.stringify(['/bin/sh', '-c', 'exit 3']),
    })
    const line = await upgrade()
    t.regex(
      line,
      /^upgrade failed upgrade failed, the old master \(pid \d+\) keeps serving: the new master \(pid \d+\) exited with code 3 before it was ready$/,
    )
    const after = JSON.parse((await runCli(['status', 'api', '--json'], env)).stdout) as Status
    t.is(after.pid, master.pid ?? -1)
    t.deepEqual(
      after.workers.map((w) => w.pid),
      workers.map((w) => w.pid),
    )
    t.is((await httpGet({ port, path: '/' })).status, 200)
    t.is(zombieChildren(master.pid ?? -1), 0)
  },
)

test.serial(
  "a process the new master's config file starts during an upgrade inherits none of the passed fds (sockets, pid-file lock)",
  async (t) => {
    const dir = await tmpDir('baton-upgrade-')
    t.teardown(() => dir.cleanup())
    const port = await freePort()
    const file = join(dir.path, 'baton.config.mjs')
    const pidOut = join(dir.path, 'sleep.pid')
    const spawning = [
      "import { spawn } from 'node:child_process'",
      "import { writeFileSync } from 'node:fs'",
      // Only in the master started by `baton upgrade`, while it loads its config.
      'if (process.env.BATON_UPGRADE) {',
      "  const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' })",
      `  writeFileSync(${JSON.stringify(pidOut)}, String(child.pid))`,
      '  child.unref()',
      '}',
    ].join('\n')
    writeFileSync(file, `${spawning}\n${config({ script: APP, listen: [`127.0.0.1:${port}`] })}`)
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
    const r = await fleet.cli(['upgrade', fleet.name])
    t.is(r.code, 0, r.stderr)
    const sleepPid = Number(readFileSync(pidOut, 'utf8'))
    t.teardown(() => {
      try {
        process.kill(sleepPid, 'SIGKILL')
      } catch {
        // already gone
      }
    })
    // What the handover passes: listening sockets, the control socket, the upgrade
    // channel (sockets all) and the pid file. (An fd the test runner itself leaks into
    // every process, such as a pipe, is not the master's to close.)
    const held = readdirSync(`/proc/${sleepPid}/fd`)
      .map((fd) => `${fd} -> ${readlinkSync(`/proc/${sleepPid}/fd/${fd}`)}`)
      .filter((link) => link.includes('socket:') || link.endsWith('.pid'))
    t.deepEqual(held, [], 'the child holds no socket and not the pid file')
    // The new master took over (it holds the lock the child would otherwise share).
    t.not((await fleet.status()).pid, fleet.pid)
  },
)
