/**
 * Runs a real baton master through the CLI (`node bin/baton.js start ...`) in its own
 * runtime dir, and drives it with the other CLI commands. Every process is tracked so a
 * failing test still leaves nothing behind.
 */
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ExecutionContext } from 'ava'
import type { Status } from '../../src/types.js'
import {
  freePort,
  OutputBuffer,
  ProcessTracker,
  startTime,
  tmpDir,
  waitFor,
  waitForExit,
  type ExitStatus,
} from './processes.js'

/** Absolute path of the `baton` CLI. */
export const BATON = fileURLToPath(new URL('../../bin/baton.js', import.meta.url))

/** Absolute path of a test fixture. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
}

/** What a CLI command printed and returned. */
export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** A running master started by {@link startFleet}. */
export interface Fleet {
  /** The master's pid. */
  pid: number
  /** The master's combined log (its stderr). */
  log: OutputBuffer
  /** The runtime dir (BATON_RUNTIME_DIR). */
  runtimeDir: string
  /** The fleet's name. */
  name: string
  /** Resolves when the master exits. */
  exited: Promise<ExitStatus>
  /** Run `baton <args>` against this runtime dir. */
  cli(args: string[]): Promise<CliResult>
  /** `baton status --json`, parsed. */
  status(): Promise<Status>
  /** Pids of the workers currently listed. */
  workerPids(): Promise<number[]>
}

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** The worker script; without one, `baton start` reads a config file (see `cwd`). */
  script?: string
  /** The master's working directory (where `baton.config.*` is looked for). */
  cwd?: string
  /** Workers to wait for when they are not `count` (a config file with several groups). */
  expectWorkers?: number
  name?: string
  count?: number
  listen?: string[]
  args?: string[]
  env?: Record<string, string>
  /** Extra `baton start` flags. */
  flags?: string[]
  /** Do not wait for every worker to be ready. */
  noWait?: boolean
}

/**
 * Start a master and wait until every worker is ready. `t.teardown` kills whatever is
 * left (master and workers) and removes the runtime dir.
 */
export async function startFleet(t: ExecutionContext, options: FleetOptions): Promise<Fleet> {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-test-')
  const name = options.name ?? 'fleet'
  const env = { ...process.env, ...options.env, BATON_RUNTIME_DIR: dir.path }
  // Workers seen in a status, with their start time (so a recycled pid is never killed).
  const seen = new Map<number, string | undefined>()
  t.teardown(async () => {
    // A master that replaced this one (`baton upgrade`) and was never seen in a status.
    const current = currentMaster(dir.path, name)
    if (current !== undefined && !seen.has(current)) seen.set(current, startTime(current))
    for (const [pid, startedAt] of seen) tracker.trackPid(pid, startedAt)
    await tracker.killAll()
    await dir.cleanup()
  })
  const args = [
    BATON,
    'start',
    ...(options.script !== undefined ? [options.script, '--name', name, '--count', String(options.count ?? 2)] : []),
    ...(options.listen ?? []).flatMap((a) => ['--listen', a]),
    ...(options.flags ?? []),
    ...(options.args ? ['--', ...options.args] : []),
  ]
  const master = tracker.spawn(process.execPath, args, { env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const log = new OutputBuffer().follow(master.stderr)
  log.follow(master.stdout)
  const exited = waitForExit(master)

  const cli = (cliArgs: string[]): Promise<CliResult> =>
    new Promise((resolve) => {
      const child = tracker.spawn(process.execPath, [BATON, ...cliArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      const out = new OutputBuffer().follow(child.stdout)
      const err = new OutputBuffer().follow(child.stderr)
      child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
    })
  const status = async (): Promise<Status> => {
    const r = await cli(['status', name, '--json'])
    if (r.code !== 0) throw new Error(`baton status failed (${r.code}): ${r.stderr}`)
    const s = JSON.parse(r.stdout) as Status
    for (const w of s.workers) if (w.pid !== null && !seen.has(w.pid)) seen.set(w.pid, startTime(w.pid))
    // A master that replaced this one (`baton upgrade`) is cleaned up too.
    if (s.pid !== master.pid && !seen.has(s.pid)) seen.set(s.pid, startTime(s.pid))
    return s
  }
  const fleet: Fleet = {
    pid: master.pid ?? -1,
    log,
    runtimeDir: dir.path,
    name,
    exited,
    cli,
    status,
    workerPids: async () => (await status()).workers.flatMap((w) => (w.pid === null ? [] : [w.pid])),
  }
  if (!options.noWait) {
    const count = options.expectWorkers ?? options.count ?? 2
    await waitFor(
      async () => {
        const s = await status()
        return s.workers.length === count && s.workers.every((w) => w.state === 'ready')
      },
      { timeoutMs: 20_000, message: `${count} workers ready; master log:\n${log.text}` },
    )
  }
  return fleet
}

/** The pid in the runtime dir's pid file of master `name`, if any. */
function currentMaster(runtimeDir: string, name: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(runtimeDir, `${name}.pid`), 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** A fleet of the test app (`fixtures/app.mjs`) whose code version can be changed. */
export interface VersionedFleet {
  fleet: Fleet
  /** The port it listens on (127.0.0.1). */
  port: number
  /** "Deploy": write the version file the app reads at start (`throw`, `hang`: bad code). */
  deploy(content: string): void
}

/**
 * Start `fixtures/app.mjs` with `count` workers on a free 127.0.0.1 port, serving version
 * `v1` from a version file in its own temp dir (removed by `t.teardown`).
 */
export async function versionedFleet(
  t: ExecutionContext,
  options: { count: number; flags?: string[]; env?: Record<string, string> },
): Promise<VersionedFleet> {
  return startVersioned(t, (port) => ({
    script: fixture('app.mjs'),
    count: options.count,
    listen: [`127.0.0.1:${port}`],
    env: options.env,
    flags: options.flags ?? [],
  }))
}

/**
 * Start a fleet on a free port (`options(port)`) whose app reads its version from
 * `APP_VERSION_FILE` (`v1`, in a temp dir removed by `t.teardown`), as
 * examples/frameworks/version.mjs does.
 */
export async function startVersioned(
  t: ExecutionContext,
  options: (port: number) => FleetOptions,
): Promise<VersionedFleet> {
  const dir = await tmpDir('baton-app-')
  t.teardown(() => dir.cleanup())
  const versionFile = join(dir.path, 'version.txt')
  writeFileSync(versionFile, 'v1')
  const port = await freePort()
  const given = options(port)
  const fleet = await startFleet(t, { ...given, env: { ...given.env, APP_VERSION_FILE: versionFile } })
  return { fleet, port, deploy: (content) => writeFileSync(versionFile, content) }
}

/** Run `baton <args>` (or `node <entry> <args>`) with a given environment, outside any fleet. */
export function runCli(args: string[], env: Record<string, string | undefined>, entry = BATON): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [entry, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out = new OutputBuffer().follow(child.stdout)
    const err = new OutputBuffer().follow(child.stderr)
    child.on('close', (code) => resolve({ code, stdout: out.text, stderr: err.text }))
  })
}

/**
 * How each worker ended, read from a master log (`web#0 (pid 123) exited with code 0`):
 * pid → `exited with code N` or `killed by SIGNAME`.
 */
export function workerExits(log: string): Map<number, string> {
  const lines = log.matchAll(/\(pid (\d+)\) (exited with code \d+|killed by \S+)/g)
  return new Map([...lines].map((m) => [Number(m[1]), m[2] as string]))
}
