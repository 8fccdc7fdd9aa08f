/**
 * The worker runtime: what application code inside a baton worker uses.
 *
 * Under baton (env `BATON_GROUP` set) the process has inherited listening sockets at
 * fds 3.. (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`, as in systemd socket activation)
 * and a Node IPC channel to the master. `worker.listen(server)` listens on an inherited
 * socket and tells the master the worker is ready; `SIGTERM`, `SIGINT`, a `stop` message
 * or the loss of the master (IPC disconnect) drain the servers, run the `onStop` hooks and
 * exit 0. Outside baton (`node app.js`) `worker.listen` listens on `PORT` (or the given
 * port, or 3000) and `SIGTERM`/`SIGINT` still drain, so the same code runs in development.
 *
 * The ready message is `{ type: 'ready', handoff: true }` once a server listens on an
 * inherited socket or on one the master gave for the app's own `listen(port)` (drop-in,
 * preload.ts): the worker then also takes connections the master hands over (with
 * `balance: 'reuseport'` or `'sticky'`, connections left in the queue of a slot without a
 * ready worker) as `{ type: 'baton:connection', fd }` or `{ type: 'baton:connection',
 * port }` messages carrying the socket (Node's IPC handle passing); each is emitted as a
 * `'connection'` of the server listening on inherited fd `fd`, or of the adopted drop-in
 * server listening on `port`, so it is served and drained like one it accepted itself.
 *
 * @module
 */
import * as net from 'node:net'

import { DEFAULT_BACKLOG, DEFAULT_STOP_TIMEOUT_MS } from '../defaults.js'
import {
  connectionCount,
  DEFAULT_IDLE_MS,
  drainServer,
  isDrainable,
  stopAccepting,
  trackServer,
  waitForConnections,
} from './drain.js'
import {
  addOwnSignalListener,
  appSignalsHanded,
  hasAppSignalListeners,
  holdAppSignals,
  installSignalDeferral,
  releaseAppSignals,
} from './app-signals.js'
import { ConnectionBalance } from './rebalance.js'

/** Options of {@link Worker.listen}. */
export interface WorkerListenOptions {
  /**
   * Under baton: the name of the inherited listen address to use: its key when the group's
   * `listen` option is an object (`{ http: ':8080', admin: ':9090' }`), else `listen0`,
   * `listen1`, ... in order. Default: the first one.
   */
  name?: string
  /** Outside baton: the port to listen on when `PORT` is not set. Default 3000. */
  port?: number
  /** Outside baton: the host to listen on. Default: Node's default (all interfaces). */
  host?: string
  /**
   * WebSockets of this server when a graceful stop starts: `'close'` (default) sends each
   * a close frame with code 1012 (service restart), so clients reconnect to a new worker;
   * `'keep'` leaves them to the application (close them on {@link Worker.signal}).
   */
  upgrades?: 'close' | 'keep'
}

/** A hook run by the worker runtime: on graceful stop ({@link Worker.onStop}) or on reload. */
export type WorkerHook = () => void | Promise<void>

/** The worker runtime (see {@link worker}). */
export interface Worker {
  /** True when this process is a baton worker (env `BATON_GROUP` is set). */
  readonly isWorker: boolean
  /** The worker's slot in its group, `0..count-1` (`BATON_WORKER_ID`); 0 outside baton. */
  readonly id: number
  /** The worker's group name (`BATON_GROUP`); `''` outside baton. */
  readonly group: string
  /** The master's generation counter when this worker was spawned; 0 outside baton. */
  readonly generation: number
  /** True once a graceful stop has started. */
  readonly stopping: boolean
  /**
   * Aborted when a graceful stop starts (the drain begins): end long-lived responses
   * (SSE, long polls) and streams on it, so they finish cleanly before the deadline.
   */
  readonly signal: AbortSignal
  /**
   * Resolves when the servers are drained (every HTTP connection closed) during a
   * graceful stop; never before one starts. An `onStop` hook that closes what requests
   * use (a database pool) awaits it first.
   */
  readonly drained: Promise<void>
  /**
   * Listen with `server`. Under baton: on the inherited socket named `name` (or the first
   * one), with the configured backlog; each inherited socket serves one server. Outside
   * baton: on `process.env.PORT`, else `options.port`, else 3000 (host `options.host`).
   * Resolves once listening (then marks the worker ready); rejects on error. The server is
   * tracked, so a graceful stop drains it.
   */
  listen(server: net.Server, nameOrOptions?: string | WorkerListenOptions): Promise<void>
  /**
   * Tell the master this worker is ready (sends `{ type: 'ready' }` once, with
   * `handoff: true` when a server listens on an inherited or drop-in socket: the master may
   * then hand it connections). `listen()` does it; call it yourself in a worker without servers.
   * No-op outside baton.
   */
  ready(): void
  /**
   * Register a hook run during a graceful stop. Hooks start when the drain starts (with
   * {@link Worker.signal} aborted), so they can end streams the drain would otherwise wait
   * for; they run in registration order and are awaited; one that throws is logged, the
   * others still run. To close something requests still use, `await worker.drained` first.
   */
  onStop(fn: WorkerHook): void
  /**
   * Register a hook run when the master sends `reload` (groups with `reloadable: false`:
   * the worker keeps running). Hooks run in order; errors are logged.
   */
  onReload(fn: WorkerHook): void
  /**
   * Start the graceful stop (same as `SIGTERM`): stop accepting, drain, run the `onStop`
   * hooks, exit 0; bounded by the stop timeout. Idempotent; the process exits at its end.
   */
  stop(): Promise<void>
}

/** Milliseconds the runtime keeps for itself before the master's `SIGKILL`. */
const STOP_MARGIN_MS = 200
/** Smallest graceful-stop budget. */
const MIN_STOP_BUDGET_MS = 500
/** Budget once the master is gone: the port must be released within 3 s. */
const ORPHAN_STOP_BUDGET_MS = 3000 - 500
/**
 * The app's own SIGTERM listeners run after the drain, or at the latest this long before
 * the stop deadline (a quarter of the budget, from 200 ms to 1 s), so their cleanup has
 * time (app-signals.ts).
 */
function appSignalMargin(budgetMs: number): number {
  return Math.min(1000, Math.max(200, Math.floor(budgetMs / 4)))
}
/** The exit code of a process that reports it ended because of SIGTERM (128 + 15). */
const EXIT_CODE_SIGTERM = 143
/** First inherited fd (systemd's SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3

/** An inherited listening socket. */
interface InheritedSocket {
  readonly fd: number
  /** Name from `LISTEN_FDNAMES` ('' when unknown). */
  readonly name: string
}

/** What the runtime reads from the environment at startup. */
interface WorkerEnv {
  readonly isWorker: boolean
  readonly id: number
  readonly group: string
  readonly generation: number
  readonly stopBudgetMs: number
  readonly backlog: number
  readonly sockets: readonly InheritedSocket[]
}

function intFrom(value: string | undefined, fallback: number): number {
  if (value === undefined || value.trim() === '') return fallback
  const n = Number(value)
  return Number.isSafeInteger(n) ? n : fallback
}

/**
 * Split `LISTEN_FDNAMES` (names joined with `:`; the master only uses names without `:`)
 * into `count` names. Names that do not match the count are unknown ('').
 */
export function parseListenFdNames(raw: string | undefined, count: number): string[] {
  if (count <= 0) return []
  const parts = raw === undefined || raw === '' ? [] : raw.split(':')
  return parts.length === count ? parts : Array.from({ length: count }, () => '')
}

function readEnv(env: NodeJS.ProcessEnv): WorkerEnv {
  const group = env.BATON_GROUP ?? ''
  const isWorker = group !== ''
  const stopTimeout = intFrom(env.BATON_STOP_TIMEOUT, DEFAULT_STOP_TIMEOUT_MS)
  const backlog = intFrom(env.BATON_BACKLOG, DEFAULT_BACKLOG)
  let sockets: InheritedSocket[] = []
  const count = intFrom(env.LISTEN_FDS, 0)
  const listenPid = env.LISTEN_PID
  const forUs = listenPid === undefined || listenPid === '' || Number(listenPid) === process.pid
  if (isWorker && count > 0 && forUs) {
    const names = parseListenFdNames(env.LISTEN_FDNAMES, count)
    sockets = names.map((name, i) => ({ fd: LISTEN_FDS_START + i, name }))
  }
  return {
    isWorker,
    id: isWorker ? intFrom(env.BATON_WORKER_ID, 0) : 0,
    group,
    generation: isWorker ? intFrom(env.BATON_GENERATION, 0) : 0,
    stopBudgetMs: Math.max(MIN_STOP_BUDGET_MS, stopTimeout - STOP_MARGIN_MS),
    backlog: backlog > 0 ? backlog : DEFAULT_BACKLOG,
    sockets,
  }
}

/** `net.ListenOptions` plus `fd` (supported by Node, missing from @types/node 20). */
type ListenTarget = net.ListenOptions & { fd?: number }

/** Listen and settle on the first 'listening' or 'error'. */
function listenOnce(server: net.Server, options: ListenTarget): Promise<void> {
  return new Promise((resolve, reject) => {
    const onListening = (): void => {
      server.off('error', onError)
      resolve()
    }
    const onError = (err: Error): void => {
      server.off('listening', onListening)
      reject(err)
    }
    server.once('listening', onListening)
    server.once('error', onError)
    try {
      server.listen(options)
    } catch (err) {
      server.off('listening', onListening)
      server.off('error', onError)
      reject(err)
    }
  })
}

function describeSocket(s: InheritedSocket): string {
  return s.name === '' ? `fd ${s.fd}` : `'${s.name}' (fd ${s.fd})`
}

function isStopMessage(msg: unknown): boolean {
  return msg === 'stop' || (typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'stop')
}

/**
 * The master hands over a connection queued on inherited listening fd `fd`, or on the
 * drop-in socket bound to `port`.
 */
interface ConnectionMessage {
  readonly type: 'baton:connection'
  readonly fd?: number
  readonly port?: number
}

function isConnectionMessage(msg: unknown): msg is ConnectionMessage {
  if (typeof msg !== 'object' || msg === null || (msg as { type?: unknown }).type !== 'baton:connection') return false
  const { fd, port } = msg as { fd?: unknown; port?: unknown }
  return Number.isSafeInteger(fd) || Number.isSafeInteger(port)
}

/**
 * What `net.Server` does for a connection it accepted itself (lib/net.js `onconnection`),
 * through the fields it uses for that: `maxConnections`, `noDelay`/`keepAlive`, the
 * `_connections` count (which `server.close()` and `getConnections()` rely on; the socket
 * decrements it when it is destroyed, through `_server`).
 */
interface ServerInternals {
  _connections?: number
  noDelay?: boolean
  keepAlive?: boolean
  keepAliveInitialDelay?: number
}

interface SocketInternals {
  server?: net.Server
  _server?: net.Server
}

/** Emit `socket` on `server` as if the server had accepted it. */
function adoptConnection(server: net.Server, socket: net.Socket): void {
  const internals = server as net.Server & ServerInternals
  const open = internals._connections ?? 0
  if (server.maxConnections > 0 && open >= server.maxConnections) {
    socket.destroy()
    return
  }
  if (internals.noDelay === true) socket.setNoDelay(true)
  if (internals.keepAlive === true) socket.setKeepAlive(true, internals.keepAliveInitialDelay ?? 0)
  if (typeof internals._connections === 'number') {
    internals._connections += 1
    const s = socket as net.Socket & SocketInternals
    s.server = server
    s._server = server
  }
  server.emit('connection', socket)
}

/** The master asks to close `count` keep-alive connections gracefully (see rebalance.ts). */
function shedCount(msg: unknown): number | undefined {
  if (typeof msg !== 'object' || msg === null) return undefined
  const m = msg as { type?: unknown; count?: unknown }
  return m.type === 'shed' && typeof m.count === 'number' ? m.count : undefined
}

function isReloadMessage(msg: unknown): boolean {
  return msg === 'reload' || (typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'reload')
}

class WorkerRuntime implements Worker {
  readonly isWorker: boolean
  readonly id: number
  readonly group: string
  readonly generation: number

  /** Counts connections on inherited and drop-in sockets for the master, and sheds when asked. */
  readonly #balance = new ConnectionBalance((count) => this.#reportConnections(count))
  readonly #env: WorkerEnv
  readonly #servers = new Set<net.Server>()
  readonly #fdOwners = new Map<number, net.Server>()
  /** Servers listening on a socket from the master's drop-in `listen` (preload.ts). */
  readonly #adopted = new Set<net.Server>()
  readonly #stopHooks: WorkerHook[] = []
  readonly #reloadHooks: WorkerHook[] = []
  #reloadChain: Promise<void> = Promise.resolve()
  #readySent = false
  #signalsInstalled = false
  #stopPromise: Promise<void> | undefined
  #deadlineAt = Infinity
  #deadlineTimer: NodeJS.Timeout | undefined
  #releaseTimer: NodeJS.Timeout | undefined
  /** Every server was drained (set with `drained`). */
  #isDrained = false
  /** The exit is the runtime's own (end of the stop, or its deadline). */
  #exitingOnPurpose = false
  readonly #abort = new AbortController()
  #resolveDrained: () => void = () => undefined
  readonly drained: Promise<void> = new Promise((resolve) => (this.#resolveDrained = resolve))

  constructor(env: WorkerEnv) {
    this.#env = env
    this.isWorker = env.isWorker
    this.id = env.id
    this.group = env.group
    this.generation = env.generation
    if (env.isWorker) {
      // The app's own SIGTERM listeners run after the drain (app-signals.ts).
      installSignalDeferral()
      this.#installSignals()
      this.#installChannel()
    }
  }

  get stopping(): boolean {
    return this.#stopPromise !== undefined
  }

  get signal(): AbortSignal {
    return this.#abort.signal
  }

  async listen(server: net.Server, nameOrOptions?: string | WorkerListenOptions): Promise<void> {
    const options: WorkerListenOptions =
      typeof nameOrOptions === 'string' ? { name: nameOrOptions } : (nameOrOptions ?? {})
    if (this.stopping) throw new Error('baton: worker.listen(): the worker is stopping')
    if (this.isWorker) {
      await this.#listenInherited(server, options.name, options.upgrades)
      this.ready()
    } else {
      await this.#listenStandalone(server, options)
    }
  }

  async #listenInherited(
    server: net.Server,
    name: string | undefined,
    upgrades: 'close' | 'keep' | undefined,
  ): Promise<void> {
    const sockets = this.#env.sockets
    if (sockets.length === 0) {
      throw new Error(
        `baton: worker.listen(): this group has no listen addresses (group '${this.group}'); ` +
          'give the group a listen address, or do not call listen() in this worker',
      )
    }
    let socket: InheritedSocket | undefined = sockets[0]
    if (name !== undefined) {
      socket = sockets.find((s) => s.name === name)
      if (socket === undefined) {
        const available = sockets.map(describeSocket).join(', ')
        throw new Error(`baton: worker.listen(): no listen address named '${name}'; available: ${available}`)
      }
    }
    const { fd } = socket as InheritedSocket
    const owner = this.#fdOwners.get(fd)
    if (owner !== undefined) {
      throw new Error(
        `baton: worker.listen(): listen address ${describeSocket(socket as InheritedSocket)} is already used by ` +
          `${owner === server ? 'this server' : 'another server'}; each listen address serves one server`,
      )
    }
    this.#fdOwners.set(fd, server)
    this.#balance.watch(server)
    try {
      await this.#listenTracked(server, { fd, backlog: this.#env.backlog }, upgrades)
    } catch (err) {
      this.#fdOwners.delete(fd)
      const reason = err instanceof Error ? err.message : String(err)
      throw new Error(
        `baton: worker.listen(): listening on inherited ${describeSocket(socket as InheritedSocket)} failed: ${reason}`,
        { cause: err },
      )
    }
  }

  /** Track `server` (so a stop that starts meanwhile covers it) and listen. */
  async #listenTracked(server: net.Server, target: ListenTarget, upgrades?: 'close' | 'keep'): Promise<void> {
    trackServer(server, upgrades === undefined ? { idleMs: DEFAULT_IDLE_MS } : { idleMs: DEFAULT_IDLE_MS, upgrades })
    this.#servers.add(server)
    try {
      await listenOnce(server, target)
    } catch (err) {
      this.#servers.delete(server)
      throw err
    }
    // A stop began while we were binding: do not start accepting now.
    if (this.stopping) stopAccepting(server)
  }

  async #listenStandalone(server: net.Server, options: WorkerListenOptions): Promise<void> {
    const envPort = process.env.PORT
    const port = envPort !== undefined && envPort.trim() !== '' ? Number(envPort) : (options.port ?? 3000)
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(
        `baton: worker.listen(): invalid port ${JSON.stringify(envPort ?? options.port)} (PORT or options.port)`,
      )
    }
    this.#installSignals()
    await this.#listenTracked(
      server,
      options.host === undefined ? { port } : { port, host: options.host },
      options.upgrades,
    )
  }

  /**
   * Drop-in mode (preload.ts): `server` listens on a socket the master handed over for a
   * plain `listen(port)`; track it so a graceful stop drains it.
   * @internal
   */
  adopt(server: net.Server): void {
    trackServer(server, { idleMs: DEFAULT_IDLE_MS })
    this.#servers.add(server)
    this.#adopted.add(server)
    // Its connections count for the master's balance, as an inherited socket's do.
    this.#balance.watch(server)
    if (this.stopping) server.once('listening', () => stopAccepting(server))
  }

  ready(): void {
    if (!this.isWorker || this.#readySent) return
    if (typeof process.send !== 'function' || !process.connected) return
    this.#readySent = true
    // Handed-off connections need a server on an inherited or drop-in socket to go to.
    const handoff = this.#fdOwners.size > 0 || this.#adopted.size > 0
    const message = handoff ? { type: 'ready', handoff: true } : { type: 'ready' }
    process.send(message, undefined, undefined, (err) => {
      if (err !== null && err !== undefined) this.#log(`could not send 'ready' to the master: ${err.message}`)
    })
    if (handoff) this.#balance.flush()
  }

  /** Report the open connections on inherited and drop-in sockets (the master balances with them). */
  #reportConnections(count: number): void {
    if (this.stopping || typeof process.send !== 'function' || !process.connected) return
    process.send({ type: 'connections', count }, undefined, undefined, () => undefined)
  }

  onStop(fn: WorkerHook): void {
    if (typeof fn !== 'function') throw new TypeError('baton: worker.onStop(fn): fn must be a function')
    this.#stopHooks.push(fn)
  }

  onReload(fn: WorkerHook): void {
    if (typeof fn !== 'function') throw new TypeError('baton: worker.onReload(fn): fn must be a function')
    this.#reloadHooks.push(fn)
  }

  stop(): Promise<void> {
    return this.#beginStop(this.#env.stopBudgetMs)
  }

  #beginStop(budgetMs: number): Promise<void> {
    if (this.#stopPromise === undefined) {
      holdAppSignals()
      if (this.isWorker) process.once('exit', (code) => this.#onStopExit(code))
    }
    this.#armDeadline(budgetMs)
    if (this.#stopPromise === undefined) {
      this.#stopPromise = this.#runStop().then(
        () => this.#finishStop(),
        (err: unknown) => {
          this.#log(`graceful stop failed: ${formatError(err)}`)
          this.#finishStop()
        },
      )
    }
    return this.#stopPromise
  }

  /**
   * The drain is over: hand the app its SIGTERM (its listeners then end the process; the
   * deadline still bounds it), or exit 0 when it has none.
   */
  #finishStop(): void {
    if (releaseAppSignals()) return
    this.#exitingOnPurpose = true
    process.exit(0)
  }

  /**
   * The process exits during a stop. After a complete drain, an app's own SIGTERM cleanup
   * that ends with `process.exit(143)` (128 + SIGTERM: "terminated by SIGTERM", as Next.js's
   * `next start` does) finished the stop baton asked for: the worker exits 0. Before the
   * drain is over, whatever the code, the log says so.
   */
  #onStopExit(code: number): void {
    if (code === EXIT_CODE_SIGTERM && this.#isDrained && appSignalsHanded()) {
      process.exitCode = 0
      return
    }
    if (this.#isDrained || this.#exitingOnPurpose) return
    const open = [...this.#servers].reduce((n, server) => n + connectionCount(server), 0)
    this.#log(
      `exited with code ${code} before its connections were drained (${open} still open): ` +
        'the app ended the process during the graceful stop (its own stop or SIGTERM handling?)',
    )
  }

  /** Exit at `now + budgetMs` at the latest (only ever moves the deadline earlier). */
  #armDeadline(budgetMs: number): void {
    const at = Date.now() + budgetMs
    if (at >= this.#deadlineAt) return
    this.#deadlineAt = at
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer)
    this.#deadlineTimer = setTimeout(() => {
      const open = [...this.#servers].reduce((n, server) => n + connectionCount(server), 0)
      this.#log(
        this.#isDrained && appSignalsHanded()
          ? `the app's own SIGTERM handler ran after the drain but did not end the process within ${budgetMs} ms of the stop; exiting`
          : `graceful stop not finished after ${budgetMs} ms (${open} connections still open); exiting anyway`,
      )
      this.#exitingOnPurpose = true
      process.exit(0)
    }, budgetMs)
    // The app's own SIGTERM listeners get some of the budget even if the drain is slow.
    if (this.#releaseTimer !== undefined) clearTimeout(this.#releaseTimer)
    this.#releaseTimer = setTimeout(() => releaseAppSignals(), budgetMs - appSignalMargin(budgetMs))
    this.#releaseTimer.unref()
  }

  async #runStop(): Promise<void> {
    const servers = [...this.#servers]
    for (const server of servers) stopAccepting(server)
    // The drain, the signal and the hooks start together: a hook (or a listener of the
    // signal) ends the streams that the drain would otherwise wait for until the deadline.
    const drains = Promise.all(servers.filter(isDrainable).map((server) => drainServer(server))).then(() => {
      this.#isDrained = true
      this.#resolveDrained()
    })
    this.#abort.abort(new Error('baton: the worker is stopping'))
    await Promise.all([drains, this.#runStopHooks()])
    // Non-HTTP connections and upgraded sockets: the hooks may have closed them.
    await Promise.all(servers.map((server) => waitForConnections(server)))
  }

  async #runStopHooks(): Promise<void> {
    // Index loop: a hook may register further hooks.
    for (let i = 0; i < this.#stopHooks.length; i += 1) {
      const hook = this.#stopHooks[i] as WorkerHook
      try {
        await hook()
      } catch (err) {
        this.#log(`onStop hook failed: ${formatError(err)}`)
      }
    }
  }

  #runReloadHooks(): void {
    this.#reloadChain = this.#reloadChain.then(async () => {
      for (let i = 0; i < this.#reloadHooks.length; i += 1) {
        const hook = this.#reloadHooks[i] as WorkerHook
        try {
          await hook()
        } catch (err) {
          this.#log(`onReload hook failed: ${formatError(err)}`)
        }
      }
    })
  }

  #installSignals(): void {
    if (this.#signalsInstalled) return
    this.#signalsInstalled = true
    const onSignal = (): void => {
      void this.#beginStop(this.#env.stopBudgetMs)
    }
    addOwnSignalListener((late) => {
      // The app was handed SIGTERM, has no listener left, and signals itself again (NestJS
      // does, to die by the signal): its cleanup is done.
      if (!late && appSignalsHanded() && !hasAppSignalListeners()) {
        this.#exitingOnPurpose = true
        process.exit(0)
      }
      onSignal()
    })
    process.on('SIGINT', onSignal)
  }

  #installChannel(): void {
    if (typeof process.send !== 'function' || process.channel === undefined) return
    // First: a stop message starts the drain before an app listener of its own can exit.
    process.prependListener('message', (msg: unknown, handle: unknown) => {
      const shed = shedCount(msg)
      if (shed !== undefined) this.#balance.shed(shed)
      else if (isConnectionMessage(msg)) this.#takeConnection(msg, handle)
      else if (isStopMessage(msg)) void this.#beginStop(this.#env.stopBudgetMs)
      else if (isReloadMessage(msg)) this.#runReloadHooks()
    })
    process.on('disconnect', () => {
      // The master is gone: release the port quickly, whatever the stop timeout.
      void this.#beginStop(ORPHAN_STOP_BUDGET_MS)
    })
    // Listening for 'message'/'disconnect' refs the channel; the channel alone must not
    // keep a worker alive (one with no servers or timers left exits as usual).
    process.channel.unref()
  }

  /**
   * A connection the master accepted on inherited fd `fd` (or on the drop-in socket bound
   * to `port`) for us: serve it on the server listening there (also while stopping: the
   * drain answers it with `Connection: close`).
   */
  #takeConnection(msg: ConnectionMessage, handle: unknown): void {
    if (!(handle instanceof net.Socket)) return // the fd did not arrive (Node sent a NACK)
    const server =
      msg.fd !== undefined
        ? this.#fdOwners.get(msg.fd)
        : [...this.#adopted].find((s) => {
            const address = s.address()
            return typeof address === 'object' && address !== null && address.port === msg.port
          })
    if (server === undefined) {
      handle.destroy()
      const where = msg.fd !== undefined ? `fd ${msg.fd}` : `port ${msg.port}`
      this.#log(`a connection handed over for ${where} was closed: no server listens there`)
      return
    }
    adoptConnection(server, handle)
  }

  #log(message: string): void {
    process.stderr.write(`baton worker ${this.group || '-'}#${this.id} (pid ${process.pid}): ${message}\n`)
  }
}

function formatError(err: unknown): string {
  if (err instanceof Error) return err.stack ?? err.message
  return String(err)
}

/**
 * The worker runtime singleton: identity (`isWorker`, `id`, `group`, `generation`),
 * `listen`, `ready`, `onStop`, `onReload`, `stop`. Importing it installs the stop
 * listeners only in a baton worker (in a plain process, on the first `listen()`).
 */
const runtime = new WorkerRuntime(readEnv(process.env))
export const worker: Worker = runtime

/**
 * Track a server that listens on a socket from the master's drop-in `listen` (see
 * preload.ts), so the graceful stop drains it. Not part of the public API.
 * @internal
 */
export function adoptServer(server: net.Server): void {
  runtime.adopt(server)
}
