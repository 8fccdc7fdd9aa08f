/**
 * Drop-in mode: loaded with `--import` into every baton worker, so an app that calls
 * `server.listen(port)` (`app.listen(port)`, `fastify.listen({ port })`, ...) and never
 * imports baton runs under baton unchanged, as it would under node:cluster or PM2.
 *
 * A TCP `listen()` (a port, with or without a host; not a path, an fd or a handle) asks the
 * master for the socket (`{ type: 'baton:listen', req, port, host }` on the control
 * channel). The master binds it the first time a worker of the group asks for that
 * address, or answers with the group's own listen address on that port, and keeps it, so
 * the port never closes during a reload: with `balance: 'reuseport'` or `'sticky'` (Linux)
 * one socket per worker slot, each worker (and its replacement) getting its own slot's;
 * with `'shared'` one socket for every worker. The socket comes back as a handle with the answer; the server listens on it, is
 * tracked for the drain, and the worker is marked ready once it listens when the group's
 * readiness is `listen` (the default). Under `message` (PM2's `wait_ready`) the app says so
 * itself (`process.send('ready')`); under `uptime` the master counts time. The master sets
 * `BATON_READINESS` in every worker's environment (config.rs, `READINESS_ENV`).
 *
 * Outside a baton worker this module does nothing, and inside one it loads baton's worker
 * runtime only when the app makes such a `listen()` call: an app that listens on its
 * inherited fd itself, or uses no socket, keeps its own signal and IPC handling.
 *
 * @module
 */
import { lookup } from 'node:dns/promises'
import * as net from 'node:net'
import { installSignalDeferral } from './app-signals.js'
import { DEFAULT_BACKLOG } from '../defaults.js'
import { constants } from 'node:os'

/** What a TCP `listen()` call asks for. */
export interface PortTarget {
  port: number
  host: string | undefined
  backlog: number | undefined
  callback: (() => void) | undefined
}

/**
 * The TCP port a `server.listen(...)` call asks for, following Node's argument forms
 * (`listen()`, `listen(port[, host][, backlog][, cb])`, `listen({ port, host, backlog }[,
 * cb])`); undefined for a path, an fd or a handle, which are left to Node.
 */
export function portTarget(args: readonly unknown[]): PortTarget | undefined {
  const last = args.at(-1)
  const callback = typeof last === 'function' ? (last as () => void) : undefined
  const rest = callback === undefined ? args : args.slice(0, -1)
  const [first, second, third] = rest
  const toPort = (v: unknown): number | undefined => {
    if (v === undefined || v === null) return 0
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535) return v
    if (typeof v === 'string' && /^\d+$/.test(v) && Number(v) <= 65535) return Number(v)
    return undefined
  }
  if (first === undefined || typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    const port = toPort(first)
    if (port === undefined) return undefined
    const host = typeof second === 'string' ? second : undefined
    const backlogArg = typeof second === 'number' ? second : typeof third === 'number' ? third : undefined
    return { port, host, backlog: backlogArg, callback }
  }
  if (typeof first === 'object' && first !== null) {
    const o = first as {
      port?: unknown
      host?: unknown
      path?: unknown
      fd?: unknown
      handle?: unknown
      _handle?: unknown
      backlog?: unknown
    }
    if (o.path !== undefined || o.fd !== undefined || o.handle !== undefined || o._handle !== undefined)
      return undefined
    if (!('port' in o) && !('host' in o)) return undefined // a server or socket passed as a handle
    const port = toPort(o.port)
    if (port === undefined) return undefined
    return {
      port,
      host: typeof o.host === 'string' ? o.host : undefined,
      backlog: typeof o.backlog === 'number' ? o.backlog : undefined,
      callback,
    }
  }
  return undefined
}

/** The master's answer to a `baton:listen` request. */
interface ListenAnswer {
  readonly type: 'baton:listen'
  readonly req: number
  readonly error?: string
  readonly code?: string
}

/**
 * The error a refused or failed `baton:listen` becomes: shaped as Node's own listen error
 * (`code`, `errno`, `syscall: 'listen'`, `address`, `port`), the message naming the port
 * and the master's rule (e.g. `listen EACCES: 127.0.0.1:81: port 81 is below 1024 ...`).
 */
export function listenError(answer: { error?: string; code?: string }, port: number, host: string | undefined): Error {
  const code = answer.code ?? 'EINVAL'
  const address = host ?? ''
  const where = address === '' ? `port ${port}` : `${address}:${port}`
  const err = new Error(
    `listen ${code}: ${where}: ${answer.error ?? 'the master sent no socket'}`,
  ) as NodeJS.ErrnoException & {
    address?: string
    port?: number
  }
  err.code = code
  const errno = (constants.errno as Record<string, number | undefined>)[code]
  if (errno !== undefined) err.errno = -errno
  err.syscall = 'listen'
  if (address !== '') err.address = address
  err.port = port
  return err
}

/**
 * The host a `listen()` names, as the master takes it: an IP literal, or none. The master
 * resolves no names (it would block its loop), so a name is looked up here, in the worker,
 * as Node's own `listen(port, host)` does (the first address `dns.lookup` gives).
 */
async function literalHost(host: string | undefined): Promise<string | undefined> {
  if (host === undefined || host === '' || net.isIP(host) !== 0) return host
  return (await lookup(host)).address
}

function isListenAnswer(msg: unknown): msg is ListenAnswer {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'baton:listen'
}

let nextRequest = 1
/** listen() calls waiting for their socket. */
let pending = 0
const waiting = new Map<
  number,
  { resolve: (handle: unknown) => void; reject: (err: Error) => void; port: number; host: string | undefined }
>()

/** Ask the master for the socket of `target`; resolves with the listening handle. */
async function requestSocket(target: PortTarget): Promise<unknown> {
  const req = nextRequest++
  const host = await literalHost(target.host)
  return new Promise((resolve, reject) => {
    waiting.set(req, { resolve, reject, port: target.port, host })
    const message = { type: 'baton:listen', req, port: target.port, host: host ?? null }
    ;(process.send as NonNullable<typeof process.send>)(message, undefined, undefined, (err) => {
      if (err === null || err === undefined) return
      waiting.delete(req)
      reject(new Error(`baton: cannot ask the master for port ${target.port}: ${err.message}`))
    })
  })
}

function install(): void {
  // Before the app's code: its SIGTERM listeners run after baton's drain (app-signals.ts).
  installSignalDeferral()
  const original = net.Server.prototype.listen as (this: net.Server, ...args: unknown[]) => net.Server
  process.on('message', (msg: unknown, handle: unknown) => {
    if (!isListenAnswer(msg)) return
    const w = waiting.get(msg.req)
    if (w === undefined) return
    waiting.delete(msg.req)
    if (msg.error !== undefined || handle === undefined) {
      w.reject(listenError(msg, w.port, w.host))
    } else {
      w.resolve(handle)
    }
  })
  process.channel?.unref()
  // Only `listen` groups count a drop-in listen as ready (set by the master, never by the
  // user: the master removes every BATON_* variable from a group's env).
  const readyOnListen = (process.env.BATON_READINESS ?? 'listen') === 'listen'
  net.Server.prototype.listen = function listen(this: net.Server, ...args: unknown[]): net.Server {
    const target = portTarget(args)
    if (target === undefined) return original.apply(this, args)
    if (target.callback !== undefined) this.once('listening', target.callback)
    // Until the server listens, nothing else may keep the app alive (a top-level
    // `await fastify.listen()` would end with "unsettled top-level await"): hold the channel.
    pending += 1
    process.channel?.ref()
    const settled = (): void => {
      pending -= 1
      if (pending === 0) process.channel?.unref()
    }
    import('./worker.js')
      .then((runtime) => {
        // Loading the runtime unrefs the channel (worker.ts): hold it again until listening.
        process.channel?.ref()
        return requestSocket(target).then((handle) => [handle, runtime] as const)
      })
      .then(
        ([handle, runtime]) => {
          runtime.adoptServer(this)
          this.once('listening', () => {
            if (readyOnListen) runtime.worker.ready()
          })
          original.call(this, handle, target.backlog ?? Number(process.env.BATON_BACKLOG ?? DEFAULT_BACKLOG))
          settled() // the listening handle keeps the process alive from here
        },
        (err: Error) => {
          settled()
          this.emit('error', err)
        },
      )
    return this
  }
}

// A baton worker: the master sets BATON_GROUP (see worker.ts) and the IPC channel.
if ((process.env.BATON_GROUP ?? '') !== '' && typeof process.send === 'function') install()
