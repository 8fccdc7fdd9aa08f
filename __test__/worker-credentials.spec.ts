/**
 * What a worker whose uid changes keeps of the master (`crates/baton-core/src/spawn.rs`,
 * `identity.rs`): no capability in any set and `NoNewPrivs: 1`, also under a non-root
 * master given ambient capabilities (systemd `AmbientCapabilities=`, here `setpriv`);
 * its user's HOME, USER, LOGNAME and SHELL instead of root's, and no SUDO_* variables.
 * Needs root (CI runs as root).
 */
import test from 'ava'
import { chmodSync, chownSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BATON, fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { OutputBuffer, ProcessTracker, freePort, tmpDir, waitFor } from './helpers/processes.js'
import { nobody, processesWithEnv } from '../harness/proc.mjs'

const asRoot = process.getuid?.() === 0 ? test : test.skip

/** The `Key:` lines of /proc/<pid>/status. */
function procStatus(pid: number): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1).trim())
  }
  return out
}

/** The environment a process was started with. */
function environ(pid: number): Map<string, string> {
  const out = new Map<string, string>()
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const i = entry.indexOf('=')
    if (i > 0) out.set(entry.slice(0, i), entry.slice(i + 1))
  }
  return out
}

const NO_CAPS = '0000000000000000'

/** nobody's passwd entry. */
function nobodyEntry(): { home: string; shell: string } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nobody:'))
  const parts = (line ?? '').split(':')
  return { home: parts[5] ?? '', shell: parts[6] ?? '' }
}

asRoot(
  'uid "nobody" under a root master: no capabilities, NoNewPrivs, nobody\'s HOME/USER/LOGNAME/SHELL, no SUDO_*',
  async (t) => {
    const dir = await tmpDir('baton-cred-')
    t.teardown(() => dir.cleanup())
    const port = await freePort()
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name: 'fleet',
        groups: {
          web: {
            script: fixture('plain-server.mjs'),
            count: 1,
            uid: 'nobody',
            listen: `127.0.0.1:${port}`,
            env: { LOGNAME: 'set-by-the-group' },
          },
        },
      }),
    )
    const fleet = await startFleet(t, {
      cwd: dir.path,
      expectWorkers: 1,
      env: {
        HOME: '/root',
        USER: 'root',
        LOGNAME: 'root',
        SHELL: '/bin/bash',
        SUDO_USER: 'admin',
        SUDO_UID: '1000',
        SUDO_GID: '1000',
        SUDO_COMMAND: '/usr/bin/baton start',
      },
    })
    const [pid] = await fleet.workerPids()
    const status = procStatus(pid)
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) t.is(status.get(set), NO_CAPS, set)
    t.is(status.get('NoNewPrivs'), '1')
    const env = environ(pid)
    const entry = nobodyEntry()
    t.is(env.get('HOME'), entry.home)
    t.is(env.get('USER'), 'nobody')
    t.is(env.get('SHELL'), entry.shell)
    t.is(env.get('LOGNAME'), 'set-by-the-group', "the group's own env wins")
    t.deepEqual(
      [...env.keys()].filter((k) => k.startsWith('SUDO_')),
      [],
    )
    t.is((await httpGet({ port, path: '/' })).status, 200)
  },
)

asRoot(
  'a non-root master with ambient capabilities (setpriv) runs uid "nobody" workers without any capability',
  async (t) => {
    const who = nobody()
    const master = { uid: 1, gid: 1 } // "daemon" on Debian-like systems: any non-root user
    const tracker = new ProcessTracker()
    const dir = await tmpDir('baton-cred-')
    const runtime = await tmpDir('baton-cred-rt-')
    t.teardown(async () => {
      await tracker.killAll()
      await dir.cleanup()
      await runtime.cleanup()
    })
    chmodSync(dir.path, 0o755)
    chownSync(runtime.path, master.uid, master.gid)
    const port = await freePort()
    const name = `caps-${port}`
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name,
        groups: { web: { script: fixture('plain-server.mjs'), count: 1, uid: who.uid, listen: `127.0.0.1:${port}` } },
      }),
    )
    const caps = '+setuid,+setgid,+net_bind_service'
    const child = tracker.spawn(
      'setpriv',
      [
        `--reuid=${master.uid}`,
        `--regid=${master.gid}`,
        '--clear-groups',
        '--inh-caps',
        caps,
        '--ambient-caps',
        caps,
        process.execPath,
        BATON,
        'start',
      ],
      { cwd: dir.path, env: { ...process.env, BATON_RUNTIME_DIR: runtime.path }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const log = new OutputBuffer().follow(child.stderr)
    log.follow(child.stdout)
    const workers = () =>
      processesWithEnv('BATON_NAME', name).filter((p) => procStatus(p).get('Uid')?.split(/\s+/)[0] === String(who.uid))
    const pid = await waitFor(() => workers()[0], {
      timeoutMs: 20_000,
      message: `a worker as nobody; log:\n${log.text}`,
    })
    tracker.trackPid(pid)
    // The master itself holds the capabilities it was given.
    const masterStatus = procStatus(child.pid ?? -1)
    t.not(masterStatus.get('CapAmb'), NO_CAPS, `the master has ambient capabilities; log:\n${log.text}`)
    await waitFor(async () => (await httpGet({ port, path: '/' }).catch(() => ({ status: 0 }))).status === 200, {
      message: `the worker serves; log:\n${log.text}`,
    })
    const status = procStatus(pid)
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) t.is(status.get(set), NO_CAPS, set)
    t.is(status.get('NoNewPrivs'), '1')
  },
)
