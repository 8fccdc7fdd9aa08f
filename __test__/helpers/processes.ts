/**
 * Process and timing helpers for tests that run real processes.
 *
 * Synchronise on events or poll with a deadline (`waitFor`), never on fixed sleeps, and
 * register every spawned process with a {@link ProcessTracker} so that it is killed even
 * when the test fails.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import type { Readable } from 'node:stream'

/** A free TCP port on `host` (default 127.0.0.1): harness/ports.mjs, shared with the benchmarks. */
export { freePort } from '../../harness/ports.mjs'

/** A temporary directory (see {@link tmpDir}). */
export interface TmpDir {
  /** Absolute path of the directory. */
  readonly path: string
  /** Remove the directory and its content (idempotent, never throws). */
  cleanup(): Promise<void>
}

/** Create a fresh directory under `os.tmpdir()` whose name starts with `prefix`. */
export async function tmpDir(prefix: string): Promise<TmpDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  return {
    path: dir,
    cleanup: async () => {
      await rm(dir, { recursive: true, force: true }).catch(() => undefined)
    },
  }
}

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. Default 10000 ms. */
  timeoutMs?: number
  /** Poll period. Default 20 ms. */
  intervalMs?: number
  /** Describes what is awaited, for the timeout error. */
  message?: string
}

/**
 * Poll `predicate` until it returns a truthy value (returned) or the deadline passes
 * (throws, naming `message` and the last error thrown by the predicate, if any).
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const intervalMs = options.intervalMs ?? 20
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await predicate()
      if (value) return value as NonNullable<T>
    } catch (err) {
      lastError = err
    }
    if (Date.now() >= deadline) {
      const what = options.message ?? 'condition'
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message})` : ''
      throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms${cause}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/**
 * Reject with `message` if `promise` has not settled within `timeoutMs`.
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${timeoutMs} ms: ${message}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Whether process `pid` exists and is not a zombie (on Linux a zombie, e.g. an orphan not
 * yet reaped by pid 1, counts as dead).
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  if (process.platform === 'linux') {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      if (state === 'Z' || state === 'X') return false
    } catch {
      return false
    }
  }
  return true
}

/**
 * The start time of process `pid` (field 22 of `/proc/<pid>/stat`, in clock ticks since
 * boot): with the pid, it names one process. Undefined without /proc or for a gone pid.
 */
export function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** How a process ended. */
export interface ExitStatus {
  /** Exit code, or null when killed by a signal. */
  code: number | null
  /** Signal that killed it, or null. */
  signal: NodeJS.Signals | null
}

/**
 * Resolves when `child` has exited (immediately if it already has) and its piped output
 * that a reader follows has been read to the end.
 *
 * 'exit' can come before the last bytes of a pipe are read: a test that checks an
 * {@link OutputBuffer} right after the exit would then see an empty text. So each
 * flowing stdout/stderr is awaited to its 'close' too, capped at {@link OUTPUT_END_CAP_MS}
 * for the case of a grandchild that holds the pipe open after the child is gone.
 */
export async function waitForExit(child: ChildProcess): Promise<ExitStatus> {
  const status =
    child.exitCode !== null || child.signalCode !== null
      ? { code: child.exitCode, signal: child.signalCode }
      : await new Promise<ExitStatus>((resolve) => {
          child.once('exit', (code, signal) => resolve({ code, signal }))
        })
  await Promise.all([child.stdout, child.stderr].map((stream) => outputEnd(stream)))
  return status
}

/** How long {@link waitForExit} waits for a followed pipe to end after the exit. */
const OUTPUT_END_CAP_MS = 2_000

/** Resolves when a followed (flowing) stream has closed, or after the cap; at once otherwise. */
function outputEnd(stream: Readable | null): Promise<void> {
  if (stream === null || stream.readableFlowing !== true || stream.closed || stream.destroyed) {
    return Promise.resolve()
  }
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, OUTPUT_END_CAP_MS)
    stream.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Accumulates the text of a stream and lets a test wait for a pattern in it. */
export class OutputBuffer {
  /** Everything received so far. */
  text = ''
  readonly #waiters = new Set<() => void>()

  /** Append text (also used by relays that receive output as messages). */
  push(chunk: string): void {
    this.text += chunk
    for (const wake of this.#waiters) wake()
  }

  /** Follow `stream` (may be null). */
  follow(stream: Readable | null): this {
    stream?.setEncoding('utf8')
    stream?.on('data', (chunk: string) => this.push(chunk))
    return this
  }

  /** Resolves with the first match of `pattern` in the text (event driven). */
  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const found = this.text.match(pattern)
    if (found !== null) return Promise.resolve(found)
    return withTimeout(
      new Promise<RegExpMatchArray>((resolve) => {
        const wake = (): void => {
          const match = this.text.match(pattern)
          if (match !== null) {
            this.#waiters.delete(wake)
            resolve(match)
          }
        }
        this.#waiters.add(wake)
      }),
      timeoutMs,
      `output matching ${String(pattern)}; got:\n${this.text.slice(-2000)}`,
    )
  }
}

/**
 * Registers every process a test starts (children, and pids of grandchildren) so that
 * {@link ProcessTracker.killAll} can SIGKILL all of them, e.g. in `t.teardown` or
 * `test.afterEach.always`, even when the test failed.
 */
export class ProcessTracker {
  readonly #children = new Set<ChildProcess>()
  readonly #pids = new Map<number, string | undefined>()

  /** `child_process.spawn` + {@link ProcessTracker.track}. */
  spawn(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    return this.track(spawn(command, args, options))
  }

  /** Track a child process; returns it. */
  track(child: ChildProcess): ChildProcess {
    this.#children.add(child)
    child.on('error', () => undefined) // reported through 'exit' / the test's own checks
    return child
  }

  /**
   * Track a process that is not our child (e.g. a worker spawned by a helper process).
   * `startedAt` ({@link startTime} when it was seen; read now by default) is checked again
   * before the kill: pids are recycled quickly (pid_max is often 32768), and the teardown
   * must never SIGKILL another test's process that got the number.
   */
  trackPid(pid: number, startedAt: string | undefined = startTime(pid)): void {
    this.#pids.set(pid, startedAt)
  }

  /** SIGKILL every tracked process still running and wait (bounded) until they are gone. */
  async killAll(): Promise<void> {
    const exits: Array<Promise<unknown>> = []
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        const exited = waitForExit(child)
        try {
          child.kill('SIGKILL')
        } catch {
          // already gone
        }
        exits.push(withTimeout(exited, 5000, `pid ${child.pid} to die`).catch(() => undefined))
      }
    }
    for (const [pid, startedAt] of this.#pids) {
      if (isAlive(pid) && (startedAt === undefined || startTime(pid) === startedAt)) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // already gone
        }
        exits.push(
          waitFor(() => !isAlive(pid), { timeoutMs: 5000, message: `pid ${pid} to die` }).catch(() => undefined),
        )
      }
    }
    await Promise.all(exits)
    this.#children.clear()
    this.#pids.clear()
  }
}
