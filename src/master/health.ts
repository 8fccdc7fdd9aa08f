/**
 * The health endpoint (`baton start --health ADDR`, the `health` supervisor option): a tiny
 * HTTP server in the master, for container orchestrators' readiness and liveness probes.
 *
 * Every `GET` (any path but `/metrics`: `/`, `/ready`, `/healthz` all answer the same) and
 * `HEAD` gets `200` while the fleet is ready, `503` while it is not. Ready means: every worker has been
 * ready once (`fleet:ready`), the fleet is not stopping, and every group has at least one
 * worker in state `ready` (computed in the core, `public_json::readiness`). A start-first
 * reload therefore stays ready throughout; a stop-first reload of a group with one worker is
 * not ready while that slot is empty. Other methods get `405`.
 *
 * Anyone who can reach the address may ask, so the body is minimal by default:
 * `{"ready": bool, "groups": {"<name>": {"ready": n, "count": n}}}` (ready workers and slots
 * per group; no path, pid or worker output). The full status JSON (`baton status --json`,
 * with `notReadyReason`) is served only with `--health-detail` (`healthDetail: true`).
 *
 * `GET /metrics` answers the fleet's metrics in the Prometheus text format
 * (src/master/metrics.ts): `200` whenever there is a status (readiness is the
 * `baton_ready` gauge), `503` with a one-line reason when there is none or it is stale.
 * They are numbers only (label values: group names, worker ids, states, outcomes), so
 * they are served whether or not `--health-detail` is on.
 *
 * A status older than {@link HEALTH_STALE_MS} (the supervisor loop in the core stopped
 * turning; it turns at least once a second) is answered with 503, not with what it last
 * said. At most {@link HEALTH_MAX_CONNECTIONS} connections are open at once (more are
 * closed at once), and each is closed {@link HEALTH_CONNECTION_TIMEOUT_MS} after it opened
 * whatever it sent, so slow or idle clients cannot hold the endpoint.
 *
 * The server listens before the first worker is spawned (so a port in use fails the start
 * and nothing runs), is unref'd (it never keeps the master alive), and is closed, with its
 * connections, once the fleet has stopped.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { ListenTarget } from '../../native/index.cjs'
import type { Status } from '../types.js'
import { METRICS_CONTENT_TYPE, formatMetrics } from './metrics.js'

/** A status older than this (ms) is not served: the endpoint answers 503 (the loop is stuck). */
export const HEALTH_STALE_MS = 5000
/** Connections the endpoint keeps open at once; more are closed as soon as they arrive. */
export const HEALTH_MAX_CONNECTIONS = 32
/** A connection is closed this long (ms) after it opened, answered or not. */
export const HEALTH_CONNECTION_TIMEOUT_MS = 2000

/** What the endpoint reports before the fleet exists or after it has stopped. */
export interface NotRunning {
  ready: false
  notReadyReason: string
}

/** Returns the fleet's status, or why there is none. May throw (the fleet just stopped). */
export type StatusSource = () => Status | NotRunning

/** The default body: readiness, and ready workers and slots per group. */
export interface HealthBody {
  ready: boolean
  groups: Record<string, { ready: number; count: number }>
}

/** How the endpoint answers. */
export interface HealthOptions {
  /** Serve the full status JSON instead of {@link HealthBody}. Default: false. */
  detail?: boolean
  /** Milliseconds since the status was last confirmed current. Default: always fresh. */
  ageMs?: () => number
}

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
   * Listen on `target` (the `health` option as the Rust check parsed it:
   * `resolveSupervisorOptions`, crates/baton-node/src/fleet_options.rs) and answer with
   * `source()`.
   */
  static listen(target: ListenTarget, source: StatusSource, options: HealthOptions = {}): Promise<HealthServer> {
    const server = createServer((req, res) => answer(req, res, source, options))
    server.keepAliveTimeout = 1000
    // Excess connections are destroyed by net.Server as soon as they are accepted.
    server.maxConnections = HEALTH_MAX_CONNECTIONS
    server.on('connection', limitLifetime)
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      const listening = (): void => {
        server.off('error', reject)
        server.on('error', () => undefined) // per-connection errors: nothing to do
        server.unref()
        resolve(new HealthServer(server, boundAddress(server, target.address)))
      }
      if (target.path != null) server.listen(target.path, listening)
      else if (!target.host) server.listen(target.port ?? 0, listening)
      else server.listen(target.port ?? 0, target.host, listening)
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

/** Close a connection {@link HEALTH_CONNECTION_TIMEOUT_MS} after it opened (slowloris). */
function limitLifetime(socket: Socket): void {
  const timer = setTimeout(() => socket.destroy(), HEALTH_CONNECTION_TIMEOUT_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
}

/** The default body: no path, pid or worker output, only counts. */
export function minimalBody(status: Status | NotRunning): HealthBody {
  const groups: HealthBody['groups'] = {}
  if ('groups' in status) {
    for (const g of status.groups) {
      const ready = status.workers.filter((w) => w.group === g.name && w.state === 'ready').length
      groups[g.name] = { ready, count: g.count }
    }
  }
  return { ready: status.ready, groups }
}

function answer(req: IncomingMessage, res: ServerResponse, source: StatusSource, options: HealthOptions): void {
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
  const age = options.ageMs?.() ?? 0
  const stale = age > HEALTH_STALE_MS
  if (stale) {
    const notReadyReason = `the supervisor loop has not updated the status for ${Math.round(age)} ms (more than ${HEALTH_STALE_MS} ms): it is stuck`
    status = { ...status, ready: false, notReadyReason } as Status | NotRunning
  }
  if (pathOf(req.url) === '/metrics') {
    metrics(req, res, status, stale)
    return
  }
  const body = `${JSON.stringify(options.detail ? status : minimalBody(status))}\n`
  res.writeHead(status.ready ? 200 : 503, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/** The path of a request target, without its query string. */
function pathOf(url: string | undefined): string {
  const target = url ?? '/'
  const q = target.indexOf('?')
  return q < 0 ? target : target.slice(0, q)
}

/** When the master started (seconds since the epoch), for `process_start_time_seconds`. */
const MASTER_START_SECONDS = Math.round(Date.now() / 1000 - process.uptime())

/** `GET /metrics`: the metrics text, or 503 with why there is none (no status, a stuck loop). */
function metrics(req: IncomingMessage, res: ServerResponse, status: Status | NotRunning, stale: boolean): void {
  if (!('workers' in status) || stale) {
    const body = `no metrics: ${status.notReadyReason ?? 'no status'}\n`
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    res.end(req.method === 'HEAD' ? undefined : body)
    return
  }
  const body = formatMetrics(status, { startTimeSeconds: MASTER_START_SECONDS })
  res.writeHead(200, {
    'content-type': METRICS_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  res.end(req.method === 'HEAD' ? undefined : body)
}

function boundAddress(server: Server, configured: string): string {
  const a = server.address()
  if (a === null || typeof a === 'string') return configured
  const { address, port } = a as AddressInfo
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}
