/**
 * Client side of the control socket (see crates/baton-core/src/control.rs): one JSON
 * request line, then progress events, heartbeats and one final answer line.
 *
 * Every request has a timeout: the master sends a line at least every second while a
 * request waits (a heartbeat during a long reload), so a silence of
 * {@link REQUEST_IDLE_TIMEOUT_MS} means it is not answering (stopped, wedged), and the
 * error says which. A control socket that a killed master left behind is recognized by
 * its unlocked pid file and removed.
 *
 * Nothing in the runtime dir is used before it passes the checks of runtime-dir.ts (ours,
 * not a link, not writable by group or others): a refusal throws
 * {@link UntrustedRuntimeError} before any connection.
 */
import { readdirSync, readFileSync } from 'node:fs'
import type * as Net from 'node:net'
import { join } from 'node:path'
import { native } from '../native.js'
import { trustPath, UntrustedRuntimeError } from '../runtime-dir.js'
import type { ControlAnswer } from '../types.js'

/**
 * `node:net`, loaded on the first request: `baton start` imports this module with the CLI
 * but its master never connects to a control socket, and `node:net` with the stream and
 * socket bindings it pulls in is about 0.3 MiB of the master's RSS (bench/footprint.mjs).
 */
function net(): typeof Net {
  return process.getBuiltinModule('node:net')
}

/** Silence from the master (no answer, event or heartbeat) after which a request fails. */
export const REQUEST_IDLE_TIMEOUT_MS = 3000

/** A request the master understands. */
export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'reload' }
  | { cmd: 'stop'; force: boolean }
  | { cmd: 'logs'; lines: number; follow: boolean; group?: string }
  | { cmd: 'reopen-logs' }
  | { cmd: 'scale'; group?: string; count: number }
  | { cmd: 'upgrade' }

/** The master's final answer (declared in crates/baton-contract/src/control.rs). */
export type { ControlAnswer }

/** No master of that name is running. */
export class NotRunningError extends Error {
  constructor(name: string, runtimeDir: string, stalePid?: number) {
    super(
      stalePid === undefined
        ? `no baton master named "${name}" is running (no control socket in ${runtimeDir})`
        : `no baton master named "${name}" is running: pid ${stalePid} died without cleaning up; its stale control socket and pid file in ${runtimeDir} were removed`,
    )
    this.name = 'NotRunningError'
  }
}

/** The master did not answer in time. */
export class MasterTimeoutError extends Error {
  constructor(name: string, pid: number | undefined, cause: string) {
    const who = pid === undefined ? `baton master "${name}"` : `baton master "${name}" (pid ${pid})`
    super(`${who} did not answer within ${REQUEST_IDLE_TIMEOUT_MS / 1000} s: ${cause}`)
    this.name = 'MasterTimeoutError'
  }
}

/**
 * The state letter of process `pid` in `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...);
 * undefined without /proc (macOS) or for a pid that is gone.
 */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch {
    return undefined
  }
}

/** Why a process does not answer, from its state in /proc (Linux; a guess elsewhere). */
function silenceCause(pid: number | undefined): string {
  if (pid === undefined) return 'it is not responding'
  const state = processState(pid)
  if (state === undefined) {
    try {
      process.kill(pid, 0)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return 'the process is gone'
    }
  }
  switch (state) {
    case 'T':
      return `it is stopped (SIGSTOP or job control); resume it with kill -CONT ${pid}`
    case 't':
      return 'it is stopped by a debugger (ptrace)'
    case 'Z':
    case 'X':
      return 'it has exited'
    case 'D':
      return 'it is blocked in the kernel (uninterruptible I/O, e.g. a hung file system)'
    default:
      return 'it is running but its supervisor loop does not respond (wedged or overloaded)'
  }
}

/** Path of a master's control socket. */
export function socketPath(runtimeDir: string, name: string): string {
  return join(runtimeDir, `${name}.sock`)
}

export { UntrustedRuntimeError }

/** Path of a master's pid file. */
function pidPath(runtimeDir: string, name: string): string {
  return join(runtimeDir, `${name}.pid`)
}

/**
 * Check master `name`'s control socket and pid file (and the dir) before using them;
 * throws {@link UntrustedRuntimeError}. Returns whether the socket is there.
 */
function trustMaster(runtimeDir: string, name: string): boolean {
  trustPath(runtimeDir, 'dir')
  trustPath(pidPath(runtimeDir, name), 'pid')
  return trustPath(socketPath(runtimeDir, name), 'socket')
}

/** {@link native}'s `probeMaster` (which reads the pid file and may clean), after the checks. */
function probe(runtimeDir: string, name: string, clean: boolean): ReturnType<ReturnType<typeof native>['probeMaster']> {
  trustMaster(runtimeDir, name)
  return native().probeMaster(runtimeDir, name, clean)
}

/**
 * The pid of master `name` when one runs (its pid file is locked), else undefined. A
 * `baton upgrade` passes the lock to the new master: the pid changes, it never lapses.
 */
export function runningMasterPid(runtimeDir: string, name: string): number | undefined {
  const found = probe(runtimeDir, name, false)
  return found.state === 'running' ? (found.pid ?? undefined) : undefined
}

/**
 * Names of the masters running in `runtimeDir`: those with a control socket and a locked
 * pid file. What killed masters left behind is removed on the way. Throws
 * {@link UntrustedRuntimeError} when the dir or a master's files there fail the checks.
 */
export function listMasters(runtimeDir: string): string[] {
  if (!trustPath(runtimeDir, 'dir')) return []
  let files: string[]
  try {
    files = readdirSync(runtimeDir)
  } catch {
    return []
  }
  return files
    .filter((f) => f.endsWith('.sock'))
    .map((f) => f.slice(0, -5))
    .filter((name) => probe(runtimeDir, name, true).state !== 'stale')
    .sort()
}

/**
 * Send one request; `onEvent` receives progress events; resolves with the final answer.
 * Aborting `signal` closes the connection (a `logs` follower) and rejects.
 */
export function request(
  runtimeDir: string,
  name: string,
  req: ControlRequest,
  onEvent?: (event: Record<string, unknown>) => void,
  signal?: AbortSignal,
): Promise<ControlAnswer> {
  return new Promise((resolve, reject) => {
    // Before anything in the runtime dir is used (throws: the promise rejects).
    trustMaster(runtimeDir, name)
    if (signal?.aborted) throw new Error('request aborted')
    const socket = net().connect(socketPath(runtimeDir, name))
    signal?.addEventListener(
      'abort',
      () => {
        socket.destroy()
        settle(() => reject(new Error('request aborted')))
      },
      { once: true },
    )
    let buffer = ''
    let settled = false
    const settle = (fn: () => void): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    const onSilence = (): void => {
      socket.destroy()
      let pid: number | undefined
      try {
        pid = probe(runtimeDir, name, false).pid ?? undefined
      } catch {
        pid = undefined
      }
      settle(() => reject(new MasterTimeoutError(name, pid, silenceCause(pid))))
    }
    let timer = setTimeout(onSilence, REQUEST_IDLE_TIMEOUT_MS)
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write(`${JSON.stringify(req)}\n`))
    socket.on('data', (chunk: string) => {
      if (settled) return
      buffer += chunk
      let nl: number
      while ((nl = buffer.indexOf('\n')) >= 0) {
        clearTimeout(timer)
        timer = setTimeout(onSilence, REQUEST_IDLE_TIMEOUT_MS)
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        let msg: Record<string, unknown>
        try {
          msg = JSON.parse(line) as Record<string, unknown>
        } catch {
          continue
        }
        if ('event' in msg) {
          onEvent?.(msg.event as Record<string, unknown>)
        } else if ('ok' in msg) {
          settle(() => resolve(msg as unknown as ControlAnswer))
          socket.end()
          return
        }
        // anything else ({"heartbeat":true}) only says the master is alive
      }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        // Nobody listens: a master that is gone. Clean what it left, if it left anything.
        let found: ReturnType<typeof probe>
        try {
          found = probe(runtimeDir, name, true)
        } catch (e) {
          settle(() => reject(e as Error))
          return
        }
        settle(() =>
          reject(new NotRunningError(name, runtimeDir, found.cleaned ? (found.pid ?? undefined) : undefined)),
        )
      } else {
        settle(() => reject(new Error(`cannot talk to baton master "${name}": ${err.message}`)))
      }
    })
    socket.on('close', () => {
      settle(() => reject(new Error(`baton master "${name}" closed the control connection without answering`)))
    })
  })
}
