/**
 * The health endpoint (`baton start --health ADDR`, the `health` supervisor option): a tiny
 * HTTP server in the master, for container orchestrators' readiness and liveness probes.
 *
 * Every `GET` (any path: `/`, `/ready`, `/healthz` all answer the same) and `HEAD` gets
 * `200` with the status JSON (`baton status --json`) while the fleet is ready, `503` with
 * the status JSON while it is not; the status's `ready` and `notReadyReason` fields say
 * which and why. Ready means: every worker has been ready once (`fleet:ready`), the fleet is
 * not stopping, and every group has at least one worker in state `ready` (computed in the
 * core, `public_json::readiness`). A start-first reload therefore stays ready throughout; a
 * stop-first reload of a group with one worker is not ready while that slot is empty.
 * Other methods get `405`.
 *
 * The server listens before the first worker is spawned (so a port in use fails the start
 * and nothing runs), is unref'd (it never keeps the master alive), and is closed, with its
 * connections, once the fleet has stopped.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Status } from './types.js'

/** What the endpoint reports before the fleet exists or after it has stopped. */
export interface NotRunning {
  ready: false
  notReadyReason: string
}

/** Returns the fleet's status, or why there is none. May throw (the fleet just stopped). */
export type StatusSource = () => Status | NotRunning

/** A listening health endpoint. */
export class HealthServer {
  readonly #server: Server
  /** The bound address, in the `host:port` / `unix:/path` form of listen addresses. */
  readonly address: string

  private constructor(server: Server, address: string) {
    this.#server = server
    this.address = address
  }

  /**
   * Listen on `address` (a canonical listen address, as `normalizeListenAddress` returns
   * it: `host:port`, `:port`, `[::1]:port`, `unix:/path`) and answer with `source()`.
   */
  static listen(address: string, source: StatusSource): Promise<HealthServer> {
    const server = createServer((req, res) => answer(req, res, source))
    server.keepAliveTimeout = 1000
    const target = parseAddress(address)
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      const listening = (): void => {
        server.off('error', reject)
        server.on('error', () => undefined) // per-connection errors: nothing to do
        server.unref()
        resolve(new HealthServer(server, boundAddress(server, address)))
      }
      if ('path' in target) server.listen(target.path, listening)
      else if (target.host === '') server.listen(target.port, listening)
      else server.listen(target.port, target.host, listening)
    })
  }

  /** Stop listening and close every open connection; resolves once the socket is closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve())
      this.#server.closeAllConnections()
    })
  }
}

function answer(req: IncomingMessage, res: ServerResponse, source: StatusSource): void {
  res.shouldKeepAlive = false
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' })
    res.end('the health endpoint answers GET and HEAD\n')
    return
  }
  let status: Status | NotRunning
  try {
    status = source()
  } catch (e) {
    status = { ready: false, notReadyReason: `no status: ${(e as Error).message}` }
  }
  const body = `${JSON.stringify(status)}\n`
  res.writeHead(status.ready ? 200 : 503, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  res.end(req.method === 'HEAD' ? undefined : body)
}

type Target = { path: string } | { host: string; port: number }

function parseAddress(address: string): Target {
  if (address.startsWith('unix:')) {
    const rest = address.slice('unix:'.length)
    return { path: rest.startsWith('//') ? rest.slice(2) : rest }
  }
  const colon = address.lastIndexOf(':')
  let host = address.slice(0, colon)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  return { host, port: Number(address.slice(colon + 1)) }
}

function boundAddress(server: Server, configured: string): string {
  const a = server.address()
  if (a === null || typeof a === 'string') return configured
  const { address, port } = a as AddressInfo
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}
