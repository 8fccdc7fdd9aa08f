/**
 * `--daemon` / `start -d`: run the master detached in the background, its output in a log
 * file in the runtime dir, and return once its workers are ready (or report why not).
 *
 * The runtime dir is created (0700) or checked as the master does it before anything is
 * opened there, and the log in it is opened with `O_NOFOLLOW`: a link or a FIFO another
 * user planted is refused, never written through.
 */
import { closeSync, constants, openSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { request } from './control-client.js'
import { native } from '../native.js'
import { trustPath } from '../runtime-dir.js'

/** Path of a daemonized master's log file. */
export function logPath(runtimeDir: string, name: string): string {
  return join(runtimeDir, `${name}.log`)
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/**
 * Start `node <args>` detached and wait until the master named `name` reports every
 * worker ready. Its stdout and stderr go to `log` (default `<runtime dir>/<name>.log`),
 * which the master learns from `BATON_LOG_FILE` so that `baton reopen-logs` reopens it.
 * Resolves with the master's pid; rejects with the log's tail if it exits first.
 */
export async function startDaemon(
  args: string[],
  name: string,
  runtimeDir: string,
  log: string = logPath(runtimeDir, name),
  timeoutMs = 60_000,
): Promise<number> {
  // Loaded here, not at the top: every client command imports this module (restart uses
  // it), and only starting a daemon spawns.
  const { spawn } = await import('node:child_process')
  native().ensureRuntimeDir(runtimeDir)
  const append = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT
  let fd: number
  if (resolve(log) === resolve(logPath(runtimeDir, name))) {
    // In the runtime dir: ours, a regular file, never through a link.
    trustPath(log, 'file')
    fd = openSync(log, append | constants.O_NOFOLLOW, 0o600)
  } else {
    // A file the admin named (--log FILE): as given.
    fd = openSync(log, append, 0o640)
  }
  const child = spawn(process.execPath, [...process.execArgv, ...args], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, BATON_DAEMONIZED: '1', BATON_LOG_FILE: log },
  })
  closeSync(fd)
  let exited: string | undefined
  child.on('exit', (code, signal) => {
    exited = signal ? `killed by ${signal}` : `exited with code ${code}`
  })
  child.unref()
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(
        `the baton master ${exited} before its workers were ready; its log (${log}) ends with:\n${tail(log)}`,
      )
    }
    try {
      const answer = await request(runtimeDir, name, { cmd: 'status' })
      const status = answer.status
      if (
        status &&
        status.pid === child.pid &&
        status.workers.length > 0 &&
        status.workers.every((w) => w.state === 'ready')
      ) {
        return status.pid
      }
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`the baton master did not become ready within ${timeoutMs} ms; see ${log}`)
}
