/**
 * PM2 as the anchors ran it (their figures: docs/benchmarks.md, "Reload under load"): PM2 7.0.4,
 * cluster mode `-i N`, `wait_ready` (the app sends 'ready' once listening), default
 * `listen_timeout` 3000 ms and `kill_timeout` 1600 ms, the same app with its own 'close'
 * shutdown (`writeBenchApp(dir, v, { flavor: 'close' })`), reloads through `pm2 reload`.
 *
 * PM2 is never a dependency of the repository: {@link ensurePm2} installs it once into
 * `<os tmpdir>/baton-bench-pm2` (npm --prefix, --no-save) and reuses it from there. Each
 * fleet runs its own daemon in its own PM2_HOME (a temp dir), which is killed (`pm2 kill`,
 * then SIGKILL of whatever is left) and removed when the fleet is disposed or the script
 * exits.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { alive, onCleanup, run, sleep, tempDir, trackPid } from './processes.mjs'

export const PM2_VERSION = '7.0.4'
export const PM2_PREFIX = path.join(os.tmpdir(), 'baton-bench-pm2')
const PM2_PKG = path.join(PM2_PREFIX, 'node_modules', 'pm2')

function installedVersion() {
  try {
    return JSON.parse(readFileSync(path.join(PM2_PKG, 'package.json'), 'utf8')).version
  } catch {
    return null
  }
}

/**
 * The pm2 CLI script (run it with `process.execPath`), installed into PM2_PREFIX on first
 * use. Never run it without a PM2_HOME of ours: any pm2 command, `--version` included,
 * starts a daemon in PM2_HOME (default ~/.pm2).
 */
export async function ensurePm2({ log = () => {} } = {}) {
  const cli = path.join(PM2_PKG, 'bin', 'pm2')
  if (installedVersion() === PM2_VERSION && existsSync(cli)) return cli
  log(`installing pm2@${PM2_VERSION} into ${PM2_PREFIX} (once; outside the repository)...`)
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const r = await run(
    npm,
    [
      'install',
      '--no-save',
      '--no-package-lock',
      '--no-audit',
      '--no-fund',
      '--prefix',
      PM2_PREFIX,
      `pm2@${PM2_VERSION}`,
    ],
    {
      cwd: os.tmpdir(),
    },
  )
  if (r.code !== 0 || installedVersion() !== PM2_VERSION) {
    throw new Error(
      `npm install pm2@${PM2_VERSION} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`,
    )
  }
  return cli
}

/**
 * Start `pm2 start <script> -i <count> --wait-ready` in a PM2_HOME of its own, env PORT,
 * and wait until `count` instances are online and the port answers. The result has the
 * same shape as a baton target (see lib/reload-run.mjs): port, roots, workers(), reload(),
 * lastReport(), log(), dispose(). `extraArgs`: more `pm2 start` flags (e.g.
 * `--max-memory-restart 80M`).
 */
export async function startPm2Fleet({
  pm2,
  script,
  count,
  port,
  name = 'bench',
  env = {},
  readyTimeoutMs = 30_000,
  extraArgs = [],
}) {
  const home = tempDir('baton-bench-pm2home-')
  const fullEnv = { ...process.env, ...env, PM2_HOME: home, PORT: String(port) }
  const cli = (a) => run(process.execPath, [pm2, ...a], { env: fullEnv, cwd: path.dirname(script) })
  let daemonPid = null
  const trackDaemon = () => {
    try {
      const pid = Number(readFileSync(path.join(home, 'pm2.pid'), 'utf8').trim())
      if (pid > 0) {
        daemonPid = pid
        trackPid(pid)
      }
    } catch {
      // not written yet
    }
  }
  const list = async () => {
    const r = await cli(['jlist'])
    trackDaemon()
    const line = r.stdout.split('\n').find((l) => l.trim().startsWith('['))
    if (r.code !== 0 || !line) throw new Error(`pm2 jlist failed (${r.code}): ${r.stderr.trim().slice(-300)}`)
    const procs = JSON.parse(line)
    for (const p of procs) if (p.pid) trackPid(p.pid)
    return procs
  }
  const workers = async () =>
    (await list())
      .filter((p) => p.name === name && typeof p.pm_id === 'number')
      .map((p) => ({
        slot: p.pm_id,
        pid: p.pid || null,
        state: p.pm2_env?.status ?? '?',
        restarts: p.pm2_env?.restart_time ?? 0,
      }))
      .sort((a, b) => a.slot - b.slot)
  const knownPids = new Set()
  let disposed = false
  const target = {
    kind: 'pm2',
    port,
    home,
    cli,
    workers,
    get roots() {
      return daemonPid ? [daemonPid] : []
    },
    async reload() {
      return cli(['reload', name])
    },
    async lastReport() {
      return null
    },
    log() {
      try {
        return readFileSync(path.join(home, 'pm2.log'), 'utf8')
      } catch {
        return ''
      }
    },
    async stop() {
      if (disposed) return
      disposed = true
      try {
        for (const w of await workers()) if (w.pid) knownPids.add(w.pid)
      } catch {
        // daemon gone
      }
      // `pm2 kill` stops the instances (SIGINT, SIGKILL after kill_timeout) and the daemon;
      // bounded: whatever is left is SIGKILLed below (and by the exit hook).
      await Promise.race([cli(['kill']), sleep(10_000)])
      for (const pid of [daemonPid, ...knownPids]) {
        if (pid && alive(pid)) {
          await sleep(200)
          if (alive(pid)) process.kill(pid, 'SIGKILL')
        }
      }
    },
  }
  const remove = onCleanup(() => target.stop())
  target.dispose = async () => {
    await target.stop()
    remove()
    rmSync(home, { recursive: true, force: true })
  }

  const started = await cli([
    'start',
    script,
    '--name',
    name,
    '-i',
    String(count),
    '--wait-ready',
    '--listen-timeout',
    '3000',
    '--kill-timeout',
    '1600',
    '--merge-logs',
    ...extraArgs,
  ])
  trackDaemon()
  if (started.code !== 0) {
    await target.dispose()
    throw new Error(`pm2 start failed (${started.code}): ${started.stderr.trim().slice(-500)}`)
  }
  const t0 = Date.now()
  for (;;) {
    const ws = await workers().catch(() => [])
    for (const w of ws) if (w.pid) knownPids.add(w.pid)
    if (ws.length === count && ws.every((w) => w.state === 'online' && w.pid)) break
    if (Date.now() - t0 > readyTimeoutMs) {
      const tail = target.log().trim().split('\n').slice(-10).join('\n')
      await target.dispose()
      throw new Error(`pm2: ${count} instances not online within ${readyTimeoutMs} ms:\n${tail}`)
    }
    await sleep(200)
  }
  return target
}
