/**
 * The fleets the benchmarks compare: a baton master run through the CLI (`baton start`),
 * as a user runs it, and node:cluster (`startNodeCluster`).
 */
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'

import { BATON_CLI } from './paths.mjs'
import {
  alive,
  exited,
  freePort,
  onCleanup,
  removeTempDir,
  run,
  sleep,
  spawnTracked,
  tempDir,
  trackPid,
} from './processes.mjs'

/** `baton start` flags of a balance mode; `default` (or none): no flag, baton's own default. */
export function balanceFlags(balance) {
  return !balance || balance === 'default' ? [] : ['--balance', balance]
}

/** `baton start` flags of a `parallel` value: none for 1 (the default), `--parallel N` else. */
export function parallelFlags(parallel) {
  return parallel === undefined || Number(parallel) === 1 ? [] : ['--parallel', String(parallel)]
}

/** Whether this build's `baton --help` mentions `flag` (e.g. `--parallel`). */
export function cliSupports(flag) {
  try {
    const out = execFileSync(process.execPath, [BATON_CLI, '--help'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    return out.includes(flag)
  } catch (e) {
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.includes(flag)
  }
}

/**
 * Start `baton start <script>` in the foreground as a child, in its own runtime dir, and
 * wait until `count` workers are ready. Returns helpers for reload/status/stop;
 * `workers()` = [{ slot, pid, state }] by slot (pid null for an empty slot).
 */
export async function startCliFleet({
  script,
  count,
  port,
  order = 'start-first',
  name = 'bench',
  env = {},
  flags = [],
  readyTimeoutMs = 20_000,
}) {
  const runtimeDir = tempDir('baton-bench-rt-')
  const fullEnv = { ...process.env, ...env, BATON_RUNTIME_DIR: runtimeDir }
  const master = spawnTracked(
    process.execPath,
    [
      BATON_CLI,
      'start',
      script,
      '--name',
      name,
      '--count',
      String(count),
      '--listen',
      `127.0.0.1:${port}`,
      '--order',
      order,
      ...flags,
    ],
    { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let log = ''
  master.stdout.on('data', (d) => (log += d))
  master.stderr.on('data', (d) => (log += d))
  const cli = (a) => run(process.execPath, [BATON_CLI, ...a], { env: fullEnv })
  const status = async () => {
    const r = await cli(['status', name, '--json'])
    if (r.code !== 0) throw new Error(`baton status failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout)
    for (const w of s.workers) if (w.pid) trackPid(w.pid)
    return s
  }
  const fleet = {
    kind: 'baton',
    master,
    runtimeDir,
    port,
    /** Pids whose own + reaped children's CPU time is the fleet's (see cpuSnapshot). */
    get roots() {
      return [master.pid]
    },
    log: () => log,
    cli,
    status,
    /** `baton reload <name>`: { code, stdout, stderr, ms }. */
    reload: () => cli(['reload', name]),
    /** The core's report of the last reload: { coreMs, outcome, failureReason } or null. */
    async lastReport() {
      const r = (await status()).lastReload
      return r
        ? { coreMs: r.durationMs ?? null, outcome: r.outcome ?? null, failureReason: r.failure?.reason ?? null }
        : null
    },
    async workers() {
      const s = await status()
      return s.workers
        .map((w) => ({
          slot: w.id,
          pid: w.pid ?? null,
          state: w.state,
          restarts: w.restarts,
          restartInMs: w.restartInMs ?? null,
        }))
        .sort((a, b) => a.slot - b.slot)
    },
    async stop() {
      if (master.exitCode !== null || master.signalCode !== null) return
      let s
      try {
        s = await status()
      } catch {
        // ignore
      }
      master.kill('SIGTERM')
      const t = await Promise.race([exited(master), sleep(8000).then(() => null)])
      if (t === null) master.kill('SIGKILL')
      for (const w of s?.workers ?? []) {
        if (w.pid && alive(w.pid)) {
          await sleep(200)
          if (alive(w.pid)) process.kill(w.pid, 'SIGKILL')
        }
      }
    },
  }
  const remove = onCleanup(() => fleet.stop())
  fleet.dispose = async () => {
    await fleet.stop()
    remove()
    removeTempDir(runtimeDir)
  }
  const t0 = Date.now()
  for (;;) {
    let failure = null
    if (master.exitCode !== null) failure = `baton start exited with ${master.exitCode}:\n${log}`
    else if (Date.now() - t0 > readyTimeoutMs) failure = `fleet not ready within ${readyTimeoutMs} ms:\n${log}`
    if (failure) {
      await fleet.dispose()
      throw new Error(failure)
    }
    await sleep(100)
    try {
      const s = await status()
      if (s.workers.length === count && s.workers.every((w) => w.state === 'ready')) break
    } catch {
      // control socket not up yet
    }
  }
  return fleet
}

/**
 * node:cluster serving `script` (which listens on `process.env.PORT`) with `workers`
 * workers under `policy`: `rr` (SCHED_RR: the primary accepts and hands connections out,
 * PM2's cluster mode) or `none` (SCHED_NONE: the workers accept from one shared socket).
 * Its primary is written into `workDir`. Resolves once every worker listens.
 * @param {{ script: string, workDir: string, workers: number, policy: 'rr' | 'none' }} o
 * @returns {Promise<{ port: number, pid: number, workers: number[], dispose: () => Promise<void> }>}
 */
export async function startNodeCluster({ script, workDir, workers, policy }) {
  const port = await freePort()
  const primary = path.join(workDir, `cluster-${policy}.mjs`)
  writeFileSync(
    primary,
    [
      "import cluster from 'node:cluster';",
      `cluster.schedulingPolicy = cluster.${policy === 'rr' ? 'SCHED_RR' : 'SCHED_NONE'};`,
      `cluster.setupPrimary({ exec: ${JSON.stringify(script)} });`,
      `for (let i = 0; i < ${workers}; i++) cluster.fork({ PORT: '${port}' });`,
      "process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL'); process.exit(0); });",
      `let up = 0; cluster.on('listening', () => { if (++up === ${workers}) console.log(JSON.stringify(Object.values(cluster.workers).map((w) => w.process.pid))); });`,
    ].join('\n'),
  )
  const child = spawnTracked(process.execPath, [primary], { stdio: ['ignore', 'pipe', 'inherit'] })
  const remove = onCleanup(() => child.kill('SIGKILL'))
  const pids = await new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error('node:cluster did not come up')), 15_000)
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('\n')) {
        clearTimeout(timer)
        resolve(JSON.parse(out.split('\n')[0]))
      }
    })
  })
  return {
    port,
    pid: child.pid,
    workers: pids,
    dispose: async () => {
      child.kill('SIGTERM')
      await Promise.race([exited(child), sleep(3000)])
      child.kill('SIGKILL')
      remove()
    },
  }
}
