/**
 * `--daemon` / `start -d`: run the master detached in the background, its output in a log
 * file in the runtime dir, and return once its workers are ready (or report why not).
 */
import { spawn } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from './control-client.js'

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
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 })
  const fd = openSync(log, 'a', 0o640)
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
