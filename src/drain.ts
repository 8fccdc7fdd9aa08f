/**
 * Connection tracking and graceful draining for `net.Server`s, HTTP-aware.
 *
 * The rules (design §3 "HTTP draining", §8 pitfalls), tuned for zero failed requests for
 * keep-alive clients under load:
 *
 * - Stop accepting with `net.Server.prototype.close` only. `http.Server#close()` on
 *   Node >= 19 also destroys idle kept-alive sockets at once, so a client whose next
 *   request is already on the wire gets `ECONNRESET`.
 * - Every response produced while draining carries `Connection: close`
 *   (`res.shouldKeepAlive = false`, set by a listener that runs before the application's
 *   own `'request'` handler); Node then closes the socket after that response.
 * - A response already in flight when draining starts gets `Connection: close` too if its
 *   headers are not sent yet. If they are, the socket becomes idle after it and follows the
 *   idle rule below (its next request, if any, is answered with `Connection: close`).
 * - A socket with no request in flight (including one just accepted that has not sent a
 *   request yet) is closed only after it has stayed idle for `idleMs`; a request arriving
 *   in the meantime cancels the timer (and is answered with `Connection: close`), and so
 *   does any byte received (a request still being sent).
 * - Sockets taken over through `'upgrade'` (WebSocket) or `'connect'` belong to the
 *   application: the HTTP drain does not close them and does not wait for them
 *   (`waitForConnections` does).
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
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';

/** Options of {@link drainServer} and {@link trackServer}. */
export interface DrainOptions {
  /**
   * How long (ms) a connection with no request in flight must stay idle while draining
   * before it is closed. Default {@link DEFAULT_IDLE_MS}.
   */
  idleMs?: number;
}

/** Default idle window of a draining HTTP connection, in ms. */
export const DEFAULT_IDLE_MS = 500;

/** One tracked connection. */
interface Conn {
  readonly socket: net.Socket;
  /** Responses in flight on this socket (requests received, response not finished). */
  readonly responses: Set<http.ServerResponse>;
  /** Pending idle-close timer while draining. */
  idleTimer: NodeJS.Timeout | undefined;
  /** `socket.bytesRead` when the idle timer was armed (bytes since then = activity). */
  bytesAtIdle: number;
  /** Taken over by an `'upgrade'` / `'connect'` handler: owned by the application. */
  detached: boolean;
  /** Shed (see {@link shedConnections}): its next response closes it. */
  shed: boolean;
}

/** Per-server tracking state. */
interface Tracked {
  readonly server: net.Server;
  /** The server speaks HTTP/1 (`http.Server` or `https.Server`). */
  readonly http: boolean;
  readonly conns: Map<net.Socket, Conn>;
  draining: boolean;
  /** Connections still to shed (see {@link shedConnections}). */
  shedQuota: number;
  idleMs: number;
  /** Callbacks waiting for connections to close (`httpOnly`: ignore detached ones). */
  readonly waiters: Set<{ readonly httpOnly: boolean; readonly resolve: () => void }>;
}

const tracked = new WeakMap<net.Server, Tracked>();

/** HTTP server events that carry a request + response instead of `'request'`. */
const REQUEST_LIKE_EVENTS = ['checkContinue', 'checkExpectation'] as const;
/** HTTP server events that hand the socket over to the application. */
const DETACH_EVENTS = ['upgrade', 'connect'] as const;

/**
 * Whether `server` is an HTTP/1 server (`http.Server` or `https.Server`), whose
 * connections {@link drainServer} closes itself.
 */
export function isHttpServer(server: net.Server): boolean {
  return server instanceof http.Server || server instanceof https.Server;
}

/**
 * Start tracking the connections of `server` (idempotent). Call it before the server
 * accepts its first connection: connections accepted earlier are unknown to the drain.
 */
export function trackServer(server: net.Server, options: DrainOptions = {}): void {
  const existing = tracked.get(server);
  if (existing !== undefined) {
    if (options.idleMs !== undefined) existing.idleMs = checkIdleMs(options.idleMs);
    return;
  }
  const t: Tracked = {
    server,
    http: isHttpServer(server),
    conns: new Map(),
    draining: false,
    shedQuota: 0,
    idleMs: checkIdleMs(options.idleMs ?? DEFAULT_IDLE_MS),
    waiters: new Set(),
  };
  tracked.set(server, t);

  const connectionEvent = server instanceof tls.Server ? 'secureConnection' : 'connection';
  server.on(connectionEvent, (socket: net.Socket) => {
    const conn = connOf(t, socket);
    if (t.draining && t.http && conn.responses.size === 0) armIdle(t, conn);
  });

  if (!t.http) return;

  // Runs before the application's handler, so the response is still unsent.
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    onRequestStart(t, req, res);
  };
  server.prependListener('request', onRequest);

  // `checkContinue` / `checkExpectation` replace `'request'`, and `upgrade` / `connect`
  // change Node's behaviour by merely having a listener: mirror the application's
  // listeners (ours exists exactly while one of theirs does) instead of adding our own.
  const onDetach = (_req: http.IncomingMessage, socket: net.Socket): void => {
    const conn = connOf(t, socket);
    conn.detached = true;
    clearIdle(conn);
    settle(t);
  };
  type Listener = typeof onRequest | typeof onDetach;
  const mirrored = new Map<string, Listener>();
  for (const event of REQUEST_LIKE_EVENTS) mirrored.set(event, onRequest);
  for (const event of DETACH_EVENTS) mirrored.set(event, onDetach);
  const ensureMirror = (event: string): void => {
    const ours = mirrored.get(event);
    if (ours === undefined) return;
    const listeners = server.listeners(event);
    const theirs = listeners.filter((l) => l !== ours).length;
    if (theirs > 0 && !listeners.includes(ours)) server.prependListener(event, ours);
    if (theirs === 0 && listeners.includes(ours)) server.removeListener(event, ours);
  };
  server.on('newListener', (event: string | symbol, listener: unknown) => {
    if (typeof event !== 'string' || listener === mirrored.get(event)) return;
    // 'newListener' fires before the listener is added: add ours first so it runs first.
    const ours = mirrored.get(event);
    if (ours !== undefined && !server.listeners(event).includes(ours)) {
      server.prependListener(event, ours);
    }
  });
  server.on('removeListener', (event: string | symbol) => {
    if (typeof event === 'string') ensureMirror(event);
  });
  for (const event of mirrored.keys()) ensureMirror(event);
}

/**
 * Stop accepting new connections on `server` without touching the open ones
 * (`net.Server.prototype.close`, deliberately not `http.Server#close`). No-op when the
 * server is not listening.
 */
export function stopAccepting(server: net.Server): void {
  if (!server.listening) return;
  net.Server.prototype.close.call(server);
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
  trackServer(server, options);
  const t = tracked.get(server) as Tracked;
  stopAccepting(server);
  if (t.http && !t.draining) {
    t.draining = true;
    for (const conn of t.conns.values()) {
      if (conn.detached) continue;
      if (conn.responses.size === 0) {
        armIdle(t, conn);
      } else {
        for (const res of conn.responses) {
          if (!res.headersSent) res.shouldKeepAlive = false;
        }
      }
    }
  }
  return whenClosed(t, t.http);
}

/**
 * Resolves when every tracked connection of `server` has closed, including sockets taken
 * over by `'upgrade'`/`'connect'`. Does not close anything itself.
 */
export function waitForConnections(server: net.Server): Promise<void> {
  const t = tracked.get(server);
  if (t === undefined) return Promise.resolve();
  return whenClosed(t, false);
}

/**
 * Close `count` keep-alive connections of an HTTP/1 `server` gracefully, without
 * draining it: the next request on each of `count` distinct connections is answered with
 * `Connection: close`, and Node closes the socket after that response, so the client
 * reconnects without an error (the master uses it to rebalance, see rebalance.ts). A new
 * call replaces the rest of an earlier one. No-op for other servers.
 */
export function shedConnections(server: net.Server, count: number): void {
  const t = tracked.get(server);
  if (t === undefined || !t.http) return;
  t.shedQuota = Math.max(0, Math.min(count, t.conns.size));
}

/** Number of open tracked connections of `server` (0 when it is not tracked). */
export function connectionCount(server: net.Server): number {
  return tracked.get(server)?.conns.size ?? 0;
}

/** Whether {@link drainServer} has been called for `server`. */
export function isDraining(server: net.Server): boolean {
  return tracked.get(server)?.draining ?? false;
}

function checkIdleMs(idleMs: number): number {
  if (!Number.isFinite(idleMs) || idleMs < 0) {
    throw new RangeError(`idleMs must be a finite number >= 0, got ${String(idleMs)}`);
  }
  return idleMs;
}

/** The state of `socket`, created (and watched for 'close') on first sight. */
function connOf(t: Tracked, socket: net.Socket): Conn {
  let conn = t.conns.get(socket);
  if (conn !== undefined) return conn;
  conn = { socket, responses: new Set(), idleTimer: undefined, bytesAtIdle: 0, detached: false, shed: false };
  t.conns.set(socket, conn);
  const created = conn;
  socket.once('close', () => {
    clearIdle(created);
    t.conns.delete(socket);
    settle(t);
  });
  return conn;
}

function onRequestStart(t: Tracked, req: http.IncomingMessage, res: http.ServerResponse): void {
  const conn = connOf(t, req.socket);
  conn.responses.add(res);
  clearIdle(conn);
  if (!t.draining && t.shedQuota > 0 && !conn.shed) {
    t.shedQuota -= 1;
    conn.shed = true;
  }
  if (t.draining || conn.shed) res.shouldKeepAlive = false;
  const done = (): void => {
    if (!conn.responses.delete(res)) return;
    if (t.draining && conn.responses.size === 0 && !conn.detached && !conn.socket.destroyed) {
      armIdle(t, conn);
    }
  };
  res.once('finish', done);
  res.once('close', done);
}

function armIdle(t: Tracked, conn: Conn): void {
  clearIdle(conn);
  conn.bytesAtIdle = conn.socket.bytesRead;
  conn.idleTimer = setTimeout(() => {
    conn.idleTimer = undefined;
    if (conn.detached || conn.responses.size > 0 || conn.socket.destroyed) return;
    // Bytes arrived but no request yet: a request is being received. Wait again.
    if (conn.socket.bytesRead !== conn.bytesAtIdle) {
      armIdle(t, conn);
      return;
    }
    conn.socket.destroy();
  }, t.idleMs);
  conn.idleTimer.unref();
}

function clearIdle(conn: Conn): void {
  if (conn.idleTimer !== undefined) {
    clearTimeout(conn.idleTimer);
    conn.idleTimer = undefined;
  }
}

function remaining(t: Tracked, httpOnly: boolean): number {
  if (!httpOnly) return t.conns.size;
  let n = 0;
  for (const conn of t.conns.values()) if (!conn.detached) n += 1;
  return n;
}

function whenClosed(t: Tracked, httpOnly: boolean): Promise<void> {
  if (remaining(t, httpOnly) === 0) return Promise.resolve();
  return new Promise((resolve) => {
    t.waiters.add({ httpOnly, resolve });
  });
}

function settle(t: Tracked): void {
  for (const waiter of t.waiters) {
    if (remaining(t, waiter.httpOnly) === 0) {
      t.waiters.delete(waiter);
      waiter.resolve();
    }
  }
}
