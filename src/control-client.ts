/**
 * Client side of the control socket (see crates/baton-core/src/control.rs): one JSON
 * request line, then progress events and one final answer line.
 */
import { readdirSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import type { ReloadReport, Status } from './types.js'

/** A request the master understands. */
export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'reload' }
  | { cmd: 'stop'; force: boolean }
  | { cmd: 'logs'; lines: number; follow: boolean; group?: string }
  | { cmd: 'reopen-logs' }

/** The master's final answer. */
export interface ControlAnswer {
  ok: boolean
  error?: string
  status?: Status
  report?: ReloadReport
  stopped?: boolean
  /** `reopen-logs`: the number of files reopened. */
  reopened?: number
}

/** No master of that name is running. */
export class NotRunningError extends Error {
  constructor(name: string, runtimeDir: string) {
    super(`no baton master named "${name}" is running (no control socket in ${runtimeDir})`)
    this.name = 'NotRunningError'
  }
}

/** Path of a master's control socket. */
export function socketPath(runtimeDir: string, name: string): string {
  return join(runtimeDir, `${name}.sock`)
}

/** Names of the masters that have a control socket in `runtimeDir`. */
export function listMasters(runtimeDir: string): string[] {
  try {
    return readdirSync(runtimeDir)
      .filter((f) => f.endsWith('.sock'))
      .map((f) => f.slice(0, -5))
      .sort()
  } catch {
    return []
  }
}

/** Send one request; `onEvent` receives progress events; resolves with the final answer. */
export function request(
  runtimeDir: string,
  name: string,
  req: ControlRequest,
  onEvent?: (event: Record<string, unknown>) => void,
): Promise<ControlAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath(runtimeDir, name))
    let buffer = ''
    let answered = false
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write(`${JSON.stringify(req)}\n`))
    socket.on('data', (chunk: string) => {
      buffer += chunk
      let nl: number
      while ((nl = buffer.indexOf('\n')) >= 0) {
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
          answered = true
          resolve(msg as unknown as ControlAnswer)
          socket.end()
        }
      }
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (answered) return
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new NotRunningError(name, runtimeDir))
      else reject(new Error(`cannot talk to baton master "${name}": ${err.message}`))
    })
    socket.on('close', () => {
      if (!answered) reject(new Error(`baton master "${name}" closed the control connection without answering`))
    })
  })
}
