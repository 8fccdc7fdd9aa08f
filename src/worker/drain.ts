/**
 * Connection tracking and graceful draining for `net.Server`s, HTTP-aware.
 *
 * The rules (`docs/design.md#http-draining` and `#pitfalls`), tuned for zero failed requests for
 * keep-alive clients under load:
 *
 * - Stop accepting with `net.Server.prototype.close` only. `http.Server#close()` on
 *   Node >= 19 also destroys idle kept-alive sockets at once, so a client whose next
 *   request is already on the wire gets `ECONNRESET`.
 * - Every response produced while draining carries `Connection: close`
 *   (`res.shouldKeepAlive = false`, set by a listener that runs before the application's
 *   own `'request'` handler); Node then closes the socket after that response.
 * - Pipelining: only the LAST response of a connection carries `Connection: close`. When
 *   draining starts, the newest in-flight response whose headers are not sent yet is the
 *   one; a pipelined request that arrives later takes the mark over (the earlier response
 *   goes back to keep-alive), as long as the marked response's headers are not sent. A
 *   request that arrives after that would be answered on a socket Node closes after the
 *   marked response: it is never given to the application (the client sees the connection
 *   close without an answer to a request that was not handled, and can retry it).
 *   If the newest response's headers are already sent (keep-alive), the socket becomes
 *   idle after it and follows the idle rule below (its next request, if any, is answered
 *   with `Connection: close`).
 * - A socket with no request in flight (including one just accepted that has not sent a
 *   request yet) is closed only after it has stayed idle for `idleMs`; a request arriving
 *   in the meantime cancels the timer (and is answered with `Connection: close`), and so
 *   does any byte received (a request still being sent), including bytes that arrived
 *   while the event loop was busy past the window and are read only after the timer fired.
 * - Sockets taken over through `'upgrade'` (WebSocket) or `'connect'` belong to the
 *   application: the HTTP drain does not wait for them (`waitForConnections` does). A
 *   WebSocket (`Upgrade: websocket`) is sent a close frame with code 1012 ("service
 *   restart") when draining starts, so its client reconnects, to a new worker, and is
 *   closed {@link WEBSOCKET_CLOSE_GRACE_MS} later if its client has not closed it; with
 *   `upgrades: 'keep'` the application closes its WebSockets itself (`worker.signal`).
 * - HTTP/2 (`http2.createServer`, `createSecureServer`, and servers built on them such as
 *   `@grpc/grpc-js`): each session gets GOAWAY when draining starts (`session.close()`:
 *   streams in flight finish, the client opens new streams on a new connection) and the
 *   drain waits for the sessions to end. A session that starts while draining gets GOAWAY
 *   at once.
 *
 * For a TLS server (`https.Server`, `tls.Server`) the tracked connections are the
 * `'secureConnection'` sockets; sockets still in the TLS handshake are not tracked.
 *
 * Tracking listens to the server's `'connection'` event, so a socket emitted on the server
 * by other code (the worker runtime does it for connections the master hands over) is
 * tracked and drained exactly like one the server accepted itself.
 *
 * @module
 */
import * as http from 'node:http'
import type * as http2 from 'node:http2'
import * as net from 'node:net'

import { Connections, type Conn } from './connections.js'

/** Options of {@link drainServer} and {@link trackServer}. */
export interface DrainOptions {
  /**
   * How long (ms) a connection with no request in flight must stay idle while draining
   * before it is closed. Default {@link DEFAULT_IDLE_MS}.
   */
  idleMs?: number
  /**
   * WebSockets (sockets taken over through `'upgrade'`) when draining starts: `'close'`
   * (default) sends each a close frame with code 1012 (service restart); `'keep'` leaves
   * them to the application.
   */
  upgrades?: 'close' | 'keep'
}

/** Time a WebSocket has to close after baton's 1012 close frame before it is destroyed. */
export const WEBSOCKET_CLOSE_GRACE_MS = 1000

/** A WebSocket close frame (server to client: unmasked), status 1012 "service restart". */
const WEBSOCKET_CLOSE_1012 = Buffer.from([0x88, 0x02, 0x03, 0xf4])

/** Default idle window of a draining HTTP connection, in ms. */
export const DEFAULT_IDLE_MS = 500

/** Per-server tracking state. */
interface Tracked {
  readonly server: net.Server
  /** The server speaks HTTP/1 (`http.Server` or `https.Server`). */
  readonly http: boolean
  /** The server speaks HTTP/2 (its sessions get GOAWAY when draining starts). */
  readonly http2: boolean
  readonly sessions: Set<http2.ServerHttp2Session>
  upgrades: 'close' | 'keep'
  readonly conns: Connections
  draining: boolean
  /** Connections still to shed (see {@link shedConnections}). */
  shedQuota: number
  idleMs: number
  /** Callbacks waiting for connections to close (`httpOnly`: ignore detached ones). */
  readonly waiters: Set<{ readonly httpOnly: boolean; readonly resolve: () => void }>
  /** Called when a connection opens or closes (see {@link onConnectionCount}). */
  readonly counters: Array<() => void>
  /** The `'close'` listener of every tracked socket (`this` is the socket). */
  readonly onSocketClose: (this: net.Socket) => void
  /** The pipelining guard on `server.emit` is installed (see {@link guardRequests}). */
  guarded: boolean
}

const tracked = new WeakMap<net.Server, Tracked>()

/** HTTP server events that carry a request + response instead of `'request'`. */
const REQUEST_LIKE_EVENTS = ['checkContinue', 'checkExpectation'] as const
/** HTTP server events that hand the socket over to the application. */
const DETACH_EVENTS = ['upgrade', 'connect'] as const

/**
 * Whether `server` is an HTTP/1 server (`http.Server` or `https.Server`), whose
 * connections {@link drainServer} closes itself.
 */
export function isHttpServer(server: net.Server): boolean {
  if (server instanceof http.Server) return true
  return isTlsServer(server) && server instanceof process.getBuiltinModule('node:https').Server
}

/**
 * Whether `server` is a TLS server (`tls.Server`, `https.Server`, HTTP/2's secure server),
 * whose connections are announced by `'secureConnection'`. Such a server exists only once
 * the application has loaded node:tls, so the runtime looks the module up then and never
 * loads it itself: a worker that serves plain HTTP does not load TLS and crypto (what a
 * worker loads is measured in docs/benchmarks.md).
 */
export function isTlsServer(server: net.Server): boolean {
  return (
    typeof (server as { setSecureContext?: unknown }).setSecureContext === 'function' &&
    server instanceof process.getBuiltinModule('node:tls').Server
  )
}

/**
 * Whether `server` is an HTTP/2 server (`http2.createServer` / `createSecureServer`; Node
 * does not export their classes, so they are recognized by their `'session'` event and
 * constructor name).
 */
export function isHttp2Server(server: net.Server): boolean {
  const name = server.constructor?.name
  return name === 'Http2Server' || name === 'Http2SecureServer'
}

/** Whether {@link drainServer} knows the protocol of `server` (HTTP/1 or HTTP/2). */
export function isDrainable(server: net.Server): boolean {
  return isHttpServer(server) || isHttp2Server(server)
}

/**
 * Start tracking the connections of `server` (idempotent). Call it before the server
 * accepts its first connection: connections accepted earlier are unknown to the drain.
 */
export function trackServer(server: net.Server, options: DrainOptions = {}): void {
  const existing = tracked.get(server)
  if (existing !== undefined) {
    if (options.idleMs !== undefined) existing.idleMs = checkIdleMs(options.idleMs)
    if (options.upgrades !== undefined) existing.upgrades = checkUpgrades(options.upgrades)
    return
  }
  const t: Tracked = {
    server,
    http: isHttpServer(server),
    http2: isHttp2Server(server),
    sessions: new Set(),
    upgrades: checkUpgrades(options.upgrades ?? 'close'),
    conns: new Connections(),
    draining: false,
    shedQuota: 0,
    idleMs: checkIdleMs(options.idleMs ?? DEFAULT_IDLE_MS),
    waiters: new Set(),
    counters: [],
    onSocketClose(this: net.Socket) {
      const conn = t.conns.delete(this)
      if (conn === undefined) return
      clearIdle(conn)
      settle(t)
      for (const counter of t.counters) counter()
    },
    guarded: false,
  }
  tracked.set(server, t)

  const connectionEvent = isTlsServer(server) ? 'secureConnection' : 'connection'
  server.on(connectionEvent, (socket: net.Socket) => {
    const conn = connOf(t, socket)
    if (t.draining && t.http && inFlight(conn) === undefined) armIdle(t, conn)
  })

  if (t.http2) {
    server.on('session', (session: http2.ServerHttp2Session) => {
      t.sessions.add(session)
      session.once('close', () => t.sessions.delete(session))
      if (t.draining) session.close()
    })
  }

  if (!t.http) return

  // Runs before the application's handler, so the response is still unsent.
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    onRequestStart(t, req, res)
  }
  server.prependListener('request', onRequest)

  // `checkContinue` / `checkExpectation` replace `'request'`, and `upgrade` / `connect`
  // change Node's behaviour by merely having a listener: mirror the application's
  // listeners (ours exists exactly while one of theirs does) instead of adding our own.
  const onDetach = (req: http.IncomingMessage, socket: net.Socket): void => {
    const conn = connOf(t, socket)
    conn.detached = true
    conn.websocket = /\bwebsocket\b/i.test(req.headers.upgrade ?? '')
    clearIdle(conn)
    settle(t)
  }
  type Listener = typeof onRequest | typeof onDetach
  const mirrored = new Map<string, Listener>()
  for (const event of REQUEST_LIKE_EVENTS) mirrored.set(event, onRequest)
  for (const event of DETACH_EVENTS) mirrored.set(event, onDetach)
  const ensureMirror = (event: string): void => {
    const ours = mirrored.get(event)
    if (ours === undefined) return
    const listeners = server.listeners(event)
    const theirs = listeners.filter((l) => l !== ours).length
    if (theirs > 0 && !listeners.includes(ours)) server.prependListener(event, ours)
    if (theirs === 0 && listeners.includes(ours)) server.removeListener(event, ours)
  }
  server.on('newListener', (event: string | symbol, listener: unknown) => {
    if (typeof event !== 'string' || listener === mirrored.get(event)) return
    // 'newListener' fires before the listener is added: add ours first so it runs first.
    const ours = mirrored.get(event)
    if (ours !== undefined && !server.listeners(event).includes(ours)) {
      server.prependListener(event, ours)
    }
  })
  server.on('removeListener', (event: string | symbol) => {
    if (typeof event === 'string') ensureMirror(event)
  })
  for (const event of mirrored.keys()) ensureMirror(event)
}

/**
 * Call `fn` whenever a tracked connection of `server` opens or closes (the worker reports
 * its count to the master with it, rebalance.ts). Tracks `server` if it is not yet.
 */
export function onConnectionCount(server: net.Server, fn: () => void): void {
  trackServer(server)
  ;(tracked.get(server) as Tracked).counters.push(fn)
}

/**
 * Make sure a pipelined request that would be answered on a socket closing after its
 * marked response is never given to the application (see the pipelining rule). Installed
 * on `server.emit` when the first response is marked: until then no socket closes after a
 * marked response, and the requests skip the check.
 */
function guardRequests(t: Tracked): void {
  if (t.guarded) return
  t.guarded = true
  const server = t.server
  const emit = server.emit as (this: net.Server, event: string | symbol, ...args: unknown[]) => boolean
  ;(server as { emit: typeof emit }).emit = function (this: net.Server, event, ...args): boolean {
    if (event === 'request') {
      const req = args[0] as http.IncomingMessage
      const conn = t.conns.get(req.socket)
      if (conn?.closer?.headersSent === true) return true
    }
    return emit.call(this, event, ...args)
  }
}

/**
 * Stop accepting new connections on `server` without touching the open ones
 * (`net.Server.prototype.close`, deliberately not `http.Server#close`). No-op when the
 * server is not listening.
 *
 * The application may close the same server itself afterwards (its own `SIGTERM` handler
 * runs after the drain, see app-signals.ts): `server.close(cb)` then calls `cb` without an
 * error once the server has closed, as it would have had baton not closed it first, instead
 * of Node's `ERR_SERVER_NOT_RUNNING` (Next.js's `next start` logs that error, and
 * `util.promisify(server.close)` would reject with it).
 */
export function stopAccepting(server: net.Server): void {
  if (!server.listening) return
  quietAppClose(server)
  net.Server.prototype.close.call(server)
}

type CloseCallback = (err?: Error) => void

/** Servers whose `close` is wrapped by {@link quietAppClose}. */
const quietClose = new WeakSet<net.Server>()

/**
 * Make the application's `close(cb)` of a server that baton stopped succeed: while the
 * server is not listening, `cb` is called with no error on the server's next `'close'`
 * (Node emits it once no connection is left), and the server's own `close` still runs
 * (for an HTTP server it closes idle connections). Once the server listens again, `close`
 * is Node's own.
 */
function quietAppClose(server: net.Server): void {
  if (quietClose.has(server)) return
  quietClose.add(server)
  // The close the application would call (its class's, or one it installed itself).
  const own = server.close as (this: net.Server, cb?: CloseCallback) => net.Server
  Object.defineProperty(server, 'close', {
    configurable: true,
    writable: true,
    value: function close(this: net.Server, ...args: unknown[]): net.Server {
      const [cb] = args
      if (this.listening || typeof cb !== 'function') return own.apply(this, args as [CloseCallback?])
      this.once('close', () => (cb as CloseCallback)())
      return own.call(this)
    },
  })
}

/**
 * Drain `server`: stop accepting and, for an HTTP server, answer further requests with
 * `Connection: close` and close connections that stay idle for `idleMs`.
 *
 * Resolves when every tracked connection the drain is responsible for has closed: for an
 * HTTP server its HTTP connections (not sockets taken over by `'upgrade'`/`'connect'`);
 * for any other server all of its connections, which the application has to end (use
 * {@link stopAccepting} + {@link waitForConnections} to run code in between). Never
 * rejects; has no time limit of its own.
 */
export function drainServer(server: net.Server, options: DrainOptions = {}): Promise<void> {
  trackServer(server, options)
  const t = tracked.get(server) as Tracked
  stopAccepting(server)
  if (t.http2 && !t.draining) {
    t.draining = true
    for (const session of t.sessions) session.close()
  }
  if (t.http && !t.draining) {
    t.draining = true
    for (const conn of t.conns.values()) {
      if (conn.detached) {
        if (conn.websocket && t.upgrades === 'close') closeWebSocket(conn.socket)
        continue
      }
      const newest = inFlight(conn)
      if (newest === undefined) {
        armIdle(t, conn)
      } else {
        watchResponse(t, conn, newest)
        if (!newest.headersSent) markCloser(t, conn, newest)
      }
    }
  }
  return whenClosed(t, t.http)
}

/**
 * Resolves when every tracked connection of `server` has closed, including sockets taken
 * over by `'upgrade'`/`'connect'`. Does not close anything itself.
 */
export function waitForConnections(server: net.Server): Promise<void> {
  const t = tracked.get(server)
  if (t === undefined) return Promise.resolve()
  return whenClosed(t, false)
}

/**
 * Close `count` keep-alive connections of an HTTP/1 `server` gracefully, without
 * draining it: the next request on each of `count` distinct connections is answered with
 * `Connection: close`, and Node closes the socket after that response, so the client
 * reconnects without an error (the master uses it to rebalance, see rebalance.ts). A new
 * call replaces the rest of an earlier one. No-op for other servers.
 */
export function shedConnections(server: net.Server, count: number): void {
  const t = tracked.get(server)
  if (t === undefined || !t.http) return
  t.shedQuota = Math.max(0, Math.min(count, t.conns.size))
}

/** Number of open tracked connections of `server` (0 when it is not tracked). */
export function connectionCount(server: net.Server): number {
  return tracked.get(server)?.conns.size ?? 0
}

function checkUpgrades(upgrades: string): 'close' | 'keep' {
  if (upgrades !== 'close' && upgrades !== 'keep') {
    throw new RangeError(`upgrades must be 'close' or 'keep', got ${JSON.stringify(upgrades)}`)
  }
  return upgrades
}

/** What Node chose for a response before baton marked it (restored if the mark moves). */
const ownKeepAlive = new WeakMap<http.ServerResponse, boolean>()

/** Make `res` the response of `conn` that carries `Connection: close`. */
function markCloser(t: Tracked, conn: Conn, res: http.ServerResponse): void {
  guardRequests(t)
  const previous = conn.closer
  if (previous !== undefined && previous !== res && !previous.headersSent) {
    previous.shouldKeepAlive = ownKeepAlive.get(previous) ?? true
  }
  if (!ownKeepAlive.has(res)) ownKeepAlive.set(res, res.shouldKeepAlive)
  res.shouldKeepAlive = false
  conn.closer = res
}

/** Send a WebSocket close frame (1012, service restart); destroy the socket if it lingers. */
function closeWebSocket(socket: net.Socket): void {
  if (socket.destroyed || !socket.writable) return
  // Frames are written whole by WebSocket libraries (synchronously), so this one cannot
  // land inside another.
  socket.write(WEBSOCKET_CLOSE_1012)
  const timer = setTimeout(() => socket.destroy(), WEBSOCKET_CLOSE_GRACE_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
}

function checkIdleMs(idleMs: number): number {
  if (!Number.isFinite(idleMs) || idleMs < 0) {
    throw new RangeError(`idleMs must be a finite number >= 0, got ${String(idleMs)}`)
  }
  return idleMs
}

/** The state of `socket`, created (and watched for 'close') on first sight. */
function connOf(t: Tracked, socket: net.Socket): Conn {
  const known = t.conns.get(socket)
  if (known !== undefined) return known
  const conn = t.conns.add(socket)
  socket.on('close', t.onSocketClose)
  for (const counter of t.counters) counter()
  return conn
}

/**
 * The response of `conn` still in flight, if any: its newest one, unless that one has
 * finished or closed (responses finish in request order, see {@link Conn}).
 */
function inFlight(conn: Conn): http.ServerResponse | undefined {
  const res = conn.newest
  if (res === undefined || conn.newestDone || res.writableFinished || res.destroyed) return undefined
  return res
}

/** The connection a watched response belongs to (see {@link watchResponse}). */
const responseConn = new WeakMap<http.ServerResponse, { readonly t: Tracked; readonly conn: Conn }>()

/** While draining: when `res`, the newest response of `conn`, ends, the connection idles. */
function watchResponse(t: Tracked, conn: Conn, res: http.ServerResponse): void {
  if (responseConn.has(res)) return
  responseConn.set(res, { t, conn })
  res.once('finish', onWatchedResponseEnd)
  res.once('close', onWatchedResponseEnd)
}

function onWatchedResponseEnd(this: http.ServerResponse): void {
  const owner = responseConn.get(this)
  if (owner === undefined) return
  const { t, conn } = owner
  // An earlier response (a newer one is in flight), or the second of 'finish' / 'close'.
  if (conn.newest !== this || conn.newestDone) return
  conn.newestDone = true
  if (t.draining && !conn.detached && !conn.socket.destroyed) armIdle(t, conn)
}

function onRequestStart(t: Tracked, req: http.IncomingMessage, res: http.ServerResponse): void {
  const conn = connOf(t, req.socket)
  conn.newest = res
  conn.newestDone = false
  if (conn.idleTimer !== undefined) clearIdle(conn)
  if (t.shedQuota > 0 && !t.draining && !conn.shed) {
    t.shedQuota -= 1
    conn.shed = true
  }
  if (t.draining) {
    markCloser(t, conn, res)
    watchResponse(t, conn, res)
  } else if (conn.shed) {
    markCloser(t, conn, res)
  }
}

function armIdle(t: Tracked, conn: Conn): void {
  clearIdle(conn)
  conn.bytesAtIdle = conn.socket.bytesRead
  const timer = setTimeout(() => {
    // Timers run before the loop reads its sockets: a request that arrived while the loop
    // was busy (an app rendering a page) past the idle window is still unread, and closing
    // now would reset it. Decide after this iteration's poll phase has read it.
    setImmediate(() => {
      if (conn.idleTimer !== timer) return // cleared, or armed again
      conn.idleTimer = undefined
      if (conn.detached || inFlight(conn) !== undefined || conn.socket.destroyed) return
      // Bytes arrived but no request yet: a request is being received. Wait again.
      if (conn.socket.bytesRead !== conn.bytesAtIdle) {
        armIdle(t, conn)
        return
      }
      conn.socket.destroy()
    }).unref()
  }, t.idleMs)
  conn.idleTimer = timer
  timer.unref()
}

function clearIdle(conn: Conn): void {
  if (conn.idleTimer !== undefined) {
    clearTimeout(conn.idleTimer)
    conn.idleTimer = undefined
  }
}

function remaining(t: Tracked, httpOnly: boolean): number {
  if (!httpOnly) return t.conns.size
  let n = 0
  for (const conn of t.conns.values()) if (!conn.detached) n += 1
  return n
}

function whenClosed(t: Tracked, httpOnly: boolean): Promise<void> {
  if (remaining(t, httpOnly) === 0) return Promise.resolve()
  return new Promise((resolve) => {
    t.waiters.add({ httpOnly, resolve })
  })
}

function settle(t: Tracked): void {
  for (const waiter of t.waiters) {
    if (remaining(t, waiter.httpOnly) === 0) {
      t.waiters.delete(waiter)
      waiter.resolve()
    }
  }
}
