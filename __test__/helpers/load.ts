/**
 * A small HTTP load generator for tests: `connections` keep-alive "lanes", each sending
 * its next GET as soon as the previous response has ended, until `stop()`.
 *
 * It never throws: every failure is counted by code (`ECONNRESET`, `ECONNREFUSED`,
 * `socket hang up`, `ETIMEDOUT`...), and a lane whose request failed goes on.
 */
import * as http from 'node:http'

/** Options of {@link startLoad}. */
export interface LoadOptions {
  /** Target port. */
  port: number
  /** Target host. Default `127.0.0.1`. */
  host?: string
  /** Concurrent keep-alive connections (lanes). Default 32. */
  connections?: number
  /** Request path. Default `/`. */
  path?: string
  /** A request not finished after this long is aborted and counted as `ETIMEDOUT`. Default 10000. */
  requestTimeoutMs?: number
  /** Pause of a lane after a failed request, so a dead target is not hammered. Default 5. */
  errorPauseMs?: number
  /** Pause of a lane after each answered request (a steady load that leaves CPU to the rest). Default 0. */
  pauseMs?: number
}

/** Counters of a load run. */
export interface LoadResult {
  /** Requests finished (response read to its end, or failed). */
  requests: number
  /** Responses with a 2xx status, read completely. */
  ok: number
  /** Responses with another status, read completely. */
  non2xx: number
  /** Requests that failed (connection error, reset, timeout, truncated body). */
  errors: number
  /** Failures per error code (or message when there is no code). */
  errorCodes: Record<string, number>
  /** Completed responses per distinct body (e.g. a version string). */
  bodies: Record<string, number>
  /**
   * Open keep-alive connections per serving process: each connection counts for the pid
   * in the `x-pid` header of its latest response (connections without one are left out).
   */
  connectionsByPid: Record<string, number>
}

/** A running load (see {@link startLoad}). */
export interface Load {
  /** The counters so far (a copy). */
  snapshot(): LoadResult
  /** Stop issuing requests, wait for the ones in flight, and return the final counters. */
  stop(): Promise<LoadResult>
}

function emptyResult(): LoadResult {
  return { requests: 0, ok: 0, non2xx: 0, errors: 0, errorCodes: {}, bodies: {}, connectionsByPid: {} }
}

function copy(r: LoadResult, pids: Map<import('node:net').Socket, string>): LoadResult {
  const connectionsByPid: Record<string, number> = {}
  // A destroyed socket whose 'close' has not been emitted yet is no longer a connection.
  for (const [socket, pid] of pids) {
    if (!socket.destroyed) connectionsByPid[pid] = (connectionsByPid[pid] ?? 0) + 1
  }
  return { ...r, errorCodes: { ...r.errorCodes }, bodies: { ...r.bodies }, connectionsByPid }
}

function errorKey(err: unknown): string {
  if (err instanceof Error) {
    if (err.message === 'socket hang up') return 'socket hang up'
    const code = (err as NodeJS.ErrnoException).code
    return typeof code === 'string' && code !== '' ? code : err.message
  }
  return String(err)
}

/** Start a keep-alive HTTP load against `host:port` (see {@link LoadOptions}). */
export function startLoad(options: LoadOptions): Load {
  const host = options.host ?? '127.0.0.1'
  const connections = options.connections ?? 32
  const path = options.path ?? '/'
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000
  const errorPauseMs = options.errorPauseMs ?? 5
  const pauseMs = options.pauseMs ?? 0
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections })
  const result = emptyResult()
  /** Open sockets and the pid that answered each one last. */
  const socketPids = new Map<import('node:net').Socket, string>()
  let stopping = false

  const fail = (err: unknown): void => {
    result.requests += 1
    result.errors += 1
    const key = errorKey(err)
    result.errorCodes[key] = (result.errorCodes[key] ?? 0) + 1
  }

  /** One request; resolves (never rejects) once it has been counted. */
  const once = (): Promise<boolean> =>
    new Promise((resolve) => {
      let settled = false
      const settle = (ok: boolean, err?: unknown): void => {
        if (settled) return
        settled = true
        if (!ok) fail(err)
        resolve(ok)
      }
      let req: http.ClientRequest
      /** The connection this request went out on (kept: the agent may take it back first). */
      let socket: import('node:net').Socket | undefined
      try {
        req = http.request({ host, port: options.port, path, method: 'GET', agent }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('error', (err) => settle(false, err))
          res.on('close', () => {
            // Closed before 'end' (and without an 'error'): the body was cut short.
            settle(false, Object.assign(new Error('response closed before its end'), { code: 'ETRUNCATED' }))
          })
          res.on('end', () => {
            if (settled) return
            if (!res.complete) {
              settle(false, Object.assign(new Error('truncated response'), { code: 'ETRUNCATED' }))
              return
            }
            const status = res.statusCode ?? 0
            result.requests += 1
            if (status >= 200 && status < 300) result.ok += 1
            else result.non2xx += 1
            const body = Buffer.concat(chunks).toString('utf8')
            result.bodies[body] = (result.bodies[body] ?? 0) + 1
            const pid = res.headers['x-pid']
            const s = socket
            if (typeof pid === 'string' && s !== undefined && !s.destroyed) {
              if (!socketPids.has(s)) s.once('close', () => socketPids.delete(s))
              socketPids.set(s, pid)
            }
            settled = true
            resolve(true)
          })
        })
      } catch (err) {
        settle(false, err)
        return
      }
      req.setTimeout(requestTimeoutMs, () => {
        req.destroy(Object.assign(new Error(`no response within ${requestTimeoutMs} ms`), { code: 'ETIMEDOUT' }))
      })
      req.on('socket', (s) => {
        socket = s
      })
      req.on('error', (err) => settle(false, err))
      req.end()
    })

  const lane = async (): Promise<void> => {
    while (!stopping) {
      const ok = await once()
      const pause = ok ? pauseMs : errorPauseMs
      if (!stopping && pause > 0) {
        await new Promise((resolve) => setTimeout(resolve, pause))
      }
    }
  }

  const lanes = Array.from({ length: connections }, () => lane())
  let stopped: Promise<LoadResult> | undefined

  return {
    snapshot: () => copy(result, socketPids),
    stop: () => {
      if (stopped === undefined) {
        stopping = true
        stopped = Promise.all(lanes).then(() => {
          agent.destroy()
          return copy(result, socketPids)
        })
      }
      return stopped
    },
  }
}
