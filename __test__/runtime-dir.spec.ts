/**
 * Where the runtime dir is (crates/baton-core/src/runtime_dir.rs: `BATON_RUNTIME_DIR`,
 * else /run/baton for root, else ~/.baton), the old places the CLI still searches, and
 * what the CLI trusts there (src/runtime-dir.ts): a runtime dir, control
 * socket, pid file or start record that another user planted (owned by nobody, a link,
 * writable by others) is refused before the CLI connects to it or runs anything from it.
 * The planted socket is a real server, run as nobody, that would answer `status`; the
 * start record's args would create a marker file if `baton restart` ran them.
 */
import test, { type ExecutionContext } from 'ava'
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { resolveFleet } from '../src/master/options.js'
import { defaultRuntimeDir } from '../src/runtime-dir.js'
import { BATON, fixture, runCli } from './helpers/fleet.js'
import { nobody } from '../harness/proc.mjs'
import { freePort, OutputBuffer, ProcessTracker, tmpDir, waitFor, type TmpDir } from './helpers/processes.js'
import type { Status } from '../src/types.js'

/** Run `fn` with some environment variables set (undefined: unset), then restore them. */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, val] of Object.entries(v)) {
      if (val === undefined) delete process.env[k]
      else process.env[k] = val
    }
  }
  apply(vars)
  try {
    return fn()
  } finally {
    apply(saved)
  }
}

test('the runtime dir: BATON_RUNTIME_DIR, else /run/baton for root, never XDG_RUNTIME_DIR or the shared tmpdir', (t) => {
  t.is(
    withEnv({ BATON_RUNTIME_DIR: '/srv/rt', XDG_RUNTIME_DIR: '/run/user/0' }, () => resolveFleet({}).runtimeDir),
    '/srv/rt',
  )
  const dflt = withEnv({ BATON_RUNTIME_DIR: undefined, XDG_RUNTIME_DIR: '/run/user/0' }, () => defaultRuntimeDir())
  if (process.getuid?.() === 0) t.is(dflt, '/run/baton')
  else t.true(dflt === join(process.env.HOME ?? '', '.baton') || dflt === join(tmpdir(), `baton-${process.getuid?.()}`))
  t.false(dflt.startsWith('/run/user/'), 'not under XDG_RUNTIME_DIR, which logind deletes at logout')
  t.is(
    withEnv({ BATON_RUNTIME_DIR: '' }, () => resolveFleet({ runtimeDir: '/given' }).runtimeDir),
    '/given',
    'runtimeDir option first',
  )
})

const asRoot = process.getuid?.() === 0 ? test : test.skip
if (process.getuid?.() !== 0)
  test('planted runtime dir (needs root): skipped', (t) => t.log('not root: these tests chown files to nobody'))

/** A Unix socket server running as `who` that answers any line with a status and counts connections on stdout. */
async function plantServer(
  t: ExecutionContext,
  path: string,
  who: { uid: number; gid: number },
): Promise<{ connections: () => number }> {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const script = `
    const net = require('node:net');
    const server = net.createServer((c) => {
      console.log('connection');
      c.on('data', () => c.write(JSON.stringify({ ok: true, status: { name: 'plant', pid: process.pid, generation: 1, workers: [], groups: [] } }) + '\\n'));
      c.on('error', () => {});
    });
    server.listen(process.argv[1], () => console.log('listening'));
  `
  const child = tracker.spawn(process.execPath, ['-e', script, path], { ...who, stdio: ['ignore', 'pipe', 'pipe'] })
  const out = new OutputBuffer().follow(child.stdout)
  new OutputBuffer().follow(child.stderr)
  await waitFor(() => out.text.includes('listening'), { message: 'the planted server to listen' })
  return { connections: () => out.text.split('\n').filter((l) => l === 'connection').length }
}

/** A runtime dir with a planted fleet "plant": socket (a live server as nobody), pid file, start record. */
async function plantedDir(
  t: ExecutionContext,
  dirOwner: 'nobody' | 'root',
): Promise<{ base: TmpDir; rt: string; marker: string; server: { connections: () => number } }> {
  const who = nobody()
  const base = await tmpDir('baton-plant-')
  t.teardown(() => base.cleanup())
  chmodSync(base.path, 0o755) // nobody must reach its own dir inside
  const rt = join(base.path, 'rt')
  const marker = join(base.path, 'marker')
  mkdirSync(rt, { mode: 0o700 })
  let server: { connections: () => number }
  if (dirOwner === 'nobody') {
    chownSync(rt, who.uid, who.gid)
    server = await plantServer(t, join(rt, 'plant.sock'), who)
  } else {
    // A root-owned dir holding files of nobody: the socket is bound in nobody's dir, then moved in.
    const own = join(base.path, 'own')
    mkdirSync(own, { mode: 0o700 })
    chownSync(own, who.uid, who.gid)
    server = await plantServer(t, join(own, 'plant.sock'), who)
    renameSync(join(own, 'plant.sock'), join(rt, 'plant.sock'))
  }
  const record = {
    args: ['-e', `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran as ' + process.getuid())`],
    cwd: base.path,
    groups: [{ name: 'plant', sockets: [], stopTimeoutMs: 2000, readyTimeoutMs: 30000, balance: 'shared' }],
  }
  for (const [file, text] of [
    ['plant.pid', '1\n'],
    ['plant.start.json', JSON.stringify(record)],
  ] as const) {
    writeFileSync(join(rt, file), text, { mode: 0o600 })
    chownSync(join(rt, file), who.uid, who.gid)
  }
  return { base, rt, marker, server }
}

const NOBODY = () => new RegExp(`uid ${nobody().uid} \\(nobody\\)`)

asRoot(
  'a runtime dir owned by nobody: status, restart and startup refuse it, naming the owner, and run nothing from it',
  async (t) => {
    const { rt, marker, server } = await plantedDir(t, 'nobody')
    const env = { BATON_RUNTIME_DIR: rt }
    for (const args of [
      ['status', 'plant'],
      ['status'],
      ['restart', 'plant'],
      ['startup', 'plant'],
      ['stop', 'plant'],
    ]) {
      const r = await runCli(args, env)
      t.log(`baton ${args.join(' ')} -> ${r.code}: ${r.stderr.trim()}`)
      t.not(r.code, 0, `baton ${args.join(' ')} fails`)
      t.regex(r.stderr, NOBODY(), 'names the owner')
      t.true(r.stderr.includes(rt), 'names the dir')
      t.regex(r.stderr, /not to you \(uid 0 \(root\)\)/, 'says whose it should be')
      t.regex(r.stderr, /BATON_RUNTIME_DIR/, 'says what to do')
      t.false(r.stdout.includes('[Service]'), 'no unit written from the planted record')
    }
    t.false(existsSync(marker), 'the start record was not executed')
    t.is(server.connections(), 0, 'the planted socket saw no connection')
    t.true(existsSync(join(rt, 'plant.sock')) && existsSync(join(rt, 'plant.pid')), 'nothing there was touched')
  },
)

asRoot(
  "root's own runtime dir holding a socket, pid file and start record of nobody: each refused, nothing run",
  async (t) => {
    const { rt, marker, server } = await plantedDir(t, 'root')
    const env = { BATON_RUNTIME_DIR: rt }
    for (const args of [['status', 'plant'], ['status'], ['restart', 'plant'], ['startup', 'plant']]) {
      const r = await runCli(args, env)
      t.log(`baton ${args.join(' ')} -> ${r.code}: ${r.stderr.trim()}`)
      t.not(r.code, 0)
      t.regex(r.stderr, NOBODY())
      t.regex(r.stderr, /refusing (pid file|control socket|file) .*plant\.(pid|sock|start\.json)/)
    }
    t.false(existsSync(marker))
    t.is(server.connections(), 0)
  },
)

asRoot('a runtime dir that is a symbolic link, or writable by others, is refused', async (t) => {
  const base = await tmpDir('baton-plant-')
  t.teardown(() => base.cleanup())
  const real = join(base.path, 'real')
  mkdirSync(real, { mode: 0o700 })
  const link = join(base.path, 'link')
  symlinkSync(real, link)
  const viaLink = await runCli(['status'], { BATON_RUNTIME_DIR: link })
  t.not(viaLink.code, 0)
  t.regex(viaLink.stderr, /symbolic link/)
  chmodSync(real, 0o777)
  const open = await runCli(['status'], { BATON_RUNTIME_DIR: real })
  t.not(open.code, 0)
  t.regex(open.stderr, /mode 0777 lets group or others write it/)
})

asRoot(
  'baton start --daemon checks the runtime dir before it opens its log there, and never follows a link',
  async (t) => {
    const who = nobody()
    const base = await tmpDir('baton-plant-')
    t.teardown(() => base.cleanup())
    const target = join(base.path, 'root-only')
    writeFileSync(target, 'root only\n', { mode: 0o600 })
    const rt = join(base.path, 'rt')
    mkdirSync(rt, { mode: 0o700 })
    symlinkSync(target, join(rt, 'd.log'))
    chownSync(rt, who.uid, who.gid)
    const r = await runCli(['start', fixture('app.mjs'), '--name', 'd', '--count', '1', '--daemon'], {
      BATON_RUNTIME_DIR: rt,
    })
    t.log(r.stderr)
    t.not(r.code, 0)
    t.regex(r.stderr, NOBODY())
    t.is(readFileSync(target, 'utf8'), 'root only\n', 'nothing written through the link')
    // Our own dir, with a link planted as the log (as if the dir had been swapped): refused too.
    chownSync(rt, 0, 0)
    const again = await runCli(['start', fixture('app.mjs'), '--name', 'd', '--count', '1', '--daemon'], {
      BATON_RUNTIME_DIR: rt,
    })
    t.log(again.stderr)
    t.not(again.code, 0)
    t.regex(again.stderr, /symbolic link/)
    t.is(readFileSync(target, 'utf8'), 'root only\n')
  },
)

/** `baton <args>` run as `who` with exactly `env` (plus PATH). */
function cliAs(
  tracker: ProcessTracker,
  who: { uid: number; gid: number },
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = tracker.spawn(process.execPath, [BATON, ...args], {
      ...who,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = new OutputBuffer().follow(child.stdout)
    const err = new OutputBuffer().follow(child.stderr)
    child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
  })
}

asRoot(
  'another user: the master makes ~/.baton (0700) and the CLI finds it there; with an unusable home, <tmpdir>/baton-<uid>',
  async (t) => {
    const who = nobody()
    const tracker = new ProcessTracker()
    const base = await tmpDir('baton-home-')
    t.teardown(async () => {
      await tracker.killAll()
      await base.cleanup()
    })
    chmodSync(base.path, 0o755)
    const home = join(base.path, 'home')
    mkdirSync(home, { mode: 0o755 })
    chownSync(home, who.uid, who.gid)
    const port = await freePort()
    const env = { HOME: home }
    const master = tracker.spawn(
      process.execPath,
      [BATON, 'start', fixture('app.mjs'), '--name', 'homefleet', '--count', '1', '--listen', `127.0.0.1:${port}`],
      { ...who, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const log = new OutputBuffer().follow(master.stderr)
    log.follow(master.stdout)
    const status = await waitFor(
      async () => {
        const r = await cliAs(tracker, who, ['status', 'homefleet', '--json'], env)
        if (r.code !== 0) return undefined
        const s = JSON.parse(r.stdout) as Status
        return s.workers.every((w) => w.state === 'ready') ? s : undefined
      },
      { timeoutMs: 20_000, message: `the fleet of nobody to be ready (${log.text})` },
    )
    for (const w of status.workers) if (w.pid !== null) tracker.trackPid(w.pid)
    const dir = join(home, '.baton')
    t.true(existsSync(join(dir, 'homefleet.sock')), 'the control socket is in ~/.baton')
    const st = statSync(dir)
    t.is(st.mode & 0o777, 0o700)
    t.is(st.uid, who.uid)
    const stop = await cliAs(tracker, who, ['stop', 'homefleet'], env)
    t.is(stop.code, 0, stop.stderr)
    // A home that nobody does not own: the fallback, not someone else's ~/.baton.
    const rootHome = await cliAs(tracker, who, ['status'], { HOME: base.path })
    t.regex(rootHome.stderr, new RegExp(`runtime dir ${join(tmpdir(), `baton-${who.uid}`)}|refusing`))
  },
)

asRoot(
  'a fleet an older version started in $XDG_RUNTIME_DIR/baton is found by status, reload and stop without BATON_RUNTIME_DIR',
  async (t) => {
    const tracker = new ProcessTracker()
    const xdg = await tmpDir('baton-xdg-')
    t.teardown(async () => {
      await tracker.killAll()
      await xdg.cleanup()
    })
    const old = join(xdg.path, 'baton')
    const port = await freePort()
    const name = `legacy${process.pid}`
    // Where versions before this one put a master when XDG_RUNTIME_DIR was set.
    const master = tracker.spawn(
      process.execPath,
      [BATON, 'start', fixture('app.mjs'), '--name', name, '--count', '1', '--listen', `127.0.0.1:${port}`],
      { env: { ...process.env, BATON_RUNTIME_DIR: old }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    new OutputBuffer().follow(master.stderr)
    const env = { BATON_RUNTIME_DIR: undefined, XDG_RUNTIME_DIR: xdg.path }
    await waitFor(
      async () => {
        const r = await runCli(['status', name, '--json'], env)
        if (r.code !== 0) return false
        const s = JSON.parse(r.stdout) as Status
        for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
        return s.workers.length === 1 && s.workers.every((w) => w.state === 'ready')
      },
      { timeoutMs: 20_000, message: 'the legacy fleet to be found and ready' },
    )
    const reload = await runCli(['reload', name], env)
    t.is(reload.code, 0, reload.stderr)
    const stop = await runCli(['stop', name], env)
    t.is(stop.code, 0, stop.stderr)
    t.regex(stop.stdout, new RegExp(`stopped "${name}"`))
  },
)

asRoot(
  'baton restart of a fleet an older version left in $XDG_RUNTIME_DIR/baton starts it again in ~/.baton',
  async (t) => {
    const who = nobody()
    const tracker = new ProcessTracker()
    const base = await tmpDir('baton-move-')
    t.teardown(async () => {
      // Masters that no status showed (a restart that went wrong), from their pid files.
      for (const dir of [join(base.path, 'home', '.baton'), join(base.path, 'xdg', 'baton')]) {
        try {
          tracker.trackPid(Number(readFileSync(join(dir, 'moving.pid'), 'utf8').trim()))
        } catch {
          // none there
        }
      }
      await tracker.killAll()
      await base.cleanup()
    })
    chmodSync(base.path, 0o755)
    const home = join(base.path, 'home')
    const xdg = join(base.path, 'xdg')
    for (const d of [home, xdg]) {
      mkdirSync(d, { mode: 0o700 })
      chownSync(d, who.uid, who.gid)
    }
    const port = await freePort()
    const name = 'moving'
    const track = (s: Status) => {
      tracker.trackPid(s.pid)
      for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
    }
    const started = await cliAs(
      tracker,
      who,
      ['start', fixture('app.mjs'), '--name', name, '--count', '1', '--listen', `127.0.0.1:${port}`, '--daemon'],
      { HOME: home, BATON_RUNTIME_DIR: join(xdg, 'baton') },
    )
    t.is(started.code, 0, started.stderr)
    const env = { HOME: home, XDG_RUNTIME_DIR: xdg }
    const old = await cliAs(tracker, who, ['status', name, '--json'], env)
    t.is(old.code, 0, old.stderr)
    const before = JSON.parse(old.stdout) as Status
    track(before)
    const restarted = await cliAs(tracker, who, ['restart', name], env)
    t.is(restarted.code, 0, restarted.stderr)
    t.true(existsSync(join(home, '.baton', `${name}.sock`)), 'the new master is in ~/.baton')
    t.false(existsSync(join(xdg, 'baton', `${name}.sock`)), 'nothing left in the old place')
    const now = await cliAs(tracker, who, ['status', name, '--json'], env)
    t.is(now.code, 0, now.stderr)
    const after = JSON.parse(now.stdout) as Status
    track(after)
    t.not(after.pid, before.pid)
    const stop = await cliAs(tracker, who, ['stop', name], env)
    t.is(stop.code, 0, stop.stderr)
  },
)

asRoot(
  'a fleet started by a non-root user whose XDG_RUNTIME_DIR is then removed (logind at logout) is still found by that user’s baton status',
  async (t) => {
    const who = nobody()
    const tracker = new ProcessTracker()
    const base = await tmpDir('baton-logout-')
    t.teardown(async () => {
      await tracker.killAll()
      await base.cleanup()
    })
    chmodSync(base.path, 0o755)
    const home = join(base.path, 'home')
    const xdg = join(base.path, 'run-user')
    for (const d of [home, xdg]) {
      mkdirSync(d, { mode: 0o700 })
      chownSync(d, who.uid, who.gid)
    }
    // An SSH session of nobody: HOME and XDG_RUNTIME_DIR set, no BATON_RUNTIME_DIR.
    const env = { HOME: home, XDG_RUNTIME_DIR: xdg }
    const port = await freePort()
    const master = tracker.spawn(
      process.execPath,
      [BATON, 'start', fixture('app.mjs'), '--name', 'kept', '--count', '1', '--listen', `127.0.0.1:${port}`],
      { ...who, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const log = new OutputBuffer().follow(master.stderr)
    log.follow(master.stdout)
    const ready = async (e: Record<string, string>): Promise<Status | undefined> => {
      const r = await cliAs(tracker, who, ['status', 'kept', '--json'], e)
      if (r.code !== 0) return undefined
      const s = JSON.parse(r.stdout) as Status
      for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid)
      return s.workers.length === 1 && s.workers.every((w) => w.state === 'ready') ? s : undefined
    }
    const before = await waitFor(() => ready(env), {
      timeoutMs: 20_000,
      message: `the fleet of nobody to be ready (${log.text})`,
    })
    // The session ends: logind removes XDG_RUNTIME_DIR with everything in it.
    rmSync(xdg, { recursive: true, force: true })
    // The next login: the same variables (a new, empty XDG_RUNTIME_DIR, or none at all).
    for (const e of [env, { HOME: home }]) {
      const r = await cliAs(tracker, who, ['status', 'kept', '--json'], e)
      t.is(r.code, 0, r.stderr)
      const after = JSON.parse(r.stdout) as Status
      t.is(after.pid, before.pid)
      t.deepEqual(
        after.workers.map((w) => w.pid),
        before.workers.map((w) => w.pid),
      )
    }
    const table = await cliAs(tracker, who, ['status'], env)
    t.is(table.code, 0, table.stderr)
    t.regex(table.stdout, /baton "kept"/)
    const stop = await cliAs(tracker, who, ['stop', 'kept'], { HOME: home })
    t.is(stop.code, 0, stop.stderr)
  },
)
