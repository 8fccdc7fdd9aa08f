/**
 * Process bookkeeping with guaranteed cleanup: every process and temp dir a benchmark
 * creates is registered here and removed on normal exit, on error, on SIGINT/SIGTERM/SIGHUP,
 * and (synchronously, SIGKILL) on exit. Also spawning, running to the end, free ports.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// on normal exit, on error, on SIGINT/SIGTERM/SIGHUP, and (synchronously, SIGKILL) on exit.

const pids = new Set()
const dirs = new Set()
const asyncCleanups = new Set()
let cleaning

/** Remember a pid to kill at exit (workers, wrk, masters...). */
export function trackPid(pid) {
  if (Number.isInteger(pid) && pid > 0) pids.add(pid)
}
export function untrackPid(pid) {
  pids.delete(pid)
}
/** A temp dir removed at exit. */
export function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix))
  dirs.add(dir)
  return dir
}
/** Remove a temp dir of {@link tempDir} now. */
export function removeTempDir(dir) {
  rmSync(dir, { recursive: true, force: true })
  dirs.delete(dir)
}
/** An async cleanup step (e.g. a graceful `sup.stop()`), run before the hard kills. */
export function onCleanup(fn) {
  asyncCleanups.add(fn)
  return () => asyncCleanups.delete(fn)
}

/** Whether process `pid` exists. */
export function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function killAllSync() {
  for (const pid of pids) {
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  }
  pids.clear()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs.clear()
}

/** Run the async cleanups (bounded by `timeoutMs`), then kill what is left and remove temp dirs. */
export function cleanup(timeoutMs = 5000) {
  if (!cleaning) {
    cleaning = (async () => {
      const steps = [...asyncCleanups]
      asyncCleanups.clear()
      await Promise.race([Promise.allSettled(steps.map(async (fn) => fn())), sleep(timeoutMs)])
      killAllSync()
    })()
  }
  return cleaning
}

/**
 * Run a benchmark's `main()` (which resolves with its exit code), clean up everything it
 * started, also when it throws, and exit with that code.
 */
export async function runMain(name, main) {
  let code = 1
  try {
    code = await main()
  } catch (e) {
    process.stderr.write(`${name} failed: ${e?.stack ?? e}\n`)
    code = 1
  } finally {
    await cleanup()
  }
  process.exit(code)
}

let installed = false
/** Install signal handlers and an exit hook that clean up. Call once at the top of a script. */
export function installCleanup() {
  if (installed) return
  installed = true
  let signals = 0
  const onSignal = (signal) => {
    signals += 1
    if (signals > 1) {
      killAllSync()
      process.exit(130)
    }
    process.stderr.write(`\n${signal}: cleaning up...\n`)
    cleanup(3000).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, onSignal)
  process.on('exit', killAllSync)
}

/** Spawn a tracked child process. */
export function spawnTracked(cmd, args, options = {}) {
  const child = spawn(cmd, args, options)
  trackPid(child.pid)
  child.once('exit', () => untrackPid(child.pid))
  return child
}

/** Resolves with { code, signal } when the child exits (at once if it already has). */
export function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
}

/** Run a command to its end; resolves with { code, stdout, stderr, ms }. */
export function run(cmd, args, options = {}) {
  const t0 = performance.now()
  const child = spawnTracked(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  return exited(child).then(({ code, signal }) => ({ code, signal, stdout, stderr, ms: performance.now() - t0 }))
}

/** A free TCP port on 127.0.0.1 (harness/ports.mjs, shared with the tests). */
export { freePort } from '../../harness/ports.mjs'
