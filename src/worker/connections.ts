/**
 * The open connections of a server that the drain tracks (`drain.ts`), each with its
 * drain state.
 *
 * They form an intrusive doubly linked list of {@link Conn} records, and each socket finds
 * its record through a property under a module-private symbol. Not a `Map` or `Set` keyed
 * by the sockets: under connection churn (one new connection per request) such a table
 * made V8 keep every closed connection's objects (socket, request, response, parser)
 * alive through the next scavenges, so that they were promoted to the old generation:
 * 2.8 times the promoted bytes and 2.2 times the scavenge time of a server without
 * tracking (bench/drain-gc.mjs), the largest part of the CPU a baton worker spent per
 * connection beyond node:cluster's (docs/benchmarks.md, "The hot path"). A list costs
 * each connection two links, and a closed connection is unlinked at once, so nothing
 * holds it: 1.03 times a plain server's promoted bytes.
 *
 * @module
 */
import type * as http from 'node:http'
import type * as net from 'node:net'

/**
 * One open connection and its drain state (the rules are in `drain.ts`).
 *
 * Node finishes the responses of one HTTP/1 connection in request order (a pipelined
 * response waits, buffered, until the earlier ones are written), so "a response is in
 * flight" is "the newest one is not finished", and only the newest response needs
 * watching, and only while draining.
 */
export interface Conn {
  readonly socket: net.Socket
  /** The response to the newest request. */
  newest: http.ServerResponse | undefined
  /** The newest response was seen to finish or close (watched while draining). */
  newestDone: boolean
  /** Pending idle-close timer while draining. */
  idleTimer: NodeJS.Timeout | undefined
  /** `socket.bytesRead` when the idle timer was armed (bytes since then = activity). */
  bytesAtIdle: number
  /** Taken over by an `'upgrade'` / `'connect'` handler: owned by the application. */
  detached: boolean
  /** Shed: its next response closes it. */
  shed: boolean
  /** Taken over by an `'upgrade'` to the WebSocket protocol. */
  websocket: boolean
  /** The response that carries `Connection: close` (the drain's pipelining rule). */
  closer: http.ServerResponse | undefined
  /** The list that holds it; undefined once removed. Written by {@link Connections} only. */
  list: Connections | undefined
  /** The neighbours in {@link Connections}' list. Written by {@link Connections} only. */
  prev: Conn | undefined
  next: Conn | undefined
}

/** Where a socket keeps its {@link Conn}. */
const CONN = Symbol('baton.conn')

/** A socket as {@link Connections} marks it. */
interface MarkedSocket extends net.Socket {
  [CONN]?: Conn
}

/** The open connections of one server (see the module documentation). */
export class Connections {
  #head: Conn | undefined = undefined
  #size = 0

  /** Number of connections in the list. */
  get size(): number {
    return this.#size
  }

  /** The record of `socket` if it is in this list. */
  get(socket: net.Socket): Conn | undefined {
    const conn = (socket as MarkedSocket)[CONN]
    return conn !== undefined && conn.list === this ? conn : undefined
  }

  /** Add a fresh record for `socket` (which must not be in the list) and return it. */
  add(socket: net.Socket): Conn {
    const conn: Conn = {
      socket,
      newest: undefined,
      newestDone: false,
      idleTimer: undefined,
      bytesAtIdle: 0,
      detached: false,
      shed: false,
      websocket: false,
      closer: undefined,
      list: this,
      prev: undefined,
      next: this.#head,
    }
    if (this.#head !== undefined) this.#head.prev = conn
    this.#head = conn
    this.#size += 1
    ;(socket as MarkedSocket)[CONN] = conn
    return conn
  }

  /** Remove the record of `socket` and return it; undefined if it is not in the list. */
  delete(socket: net.Socket): Conn | undefined {
    const conn = this.get(socket)
    if (conn === undefined) return undefined
    if (conn.prev === undefined) this.#head = conn.next
    else conn.prev.next = conn.next
    if (conn.next !== undefined) conn.next.prev = conn.prev
    // A socket the application keeps after it closed must not keep its neighbours.
    conn.prev = undefined
    conn.next = undefined
    conn.list = undefined
    this.#size -= 1
    return conn
  }

  /** Every record, newest first; removing the current one while iterating is safe. */
  *values(): IterableIterator<Conn> {
    let conn = this.#head
    while (conn !== undefined) {
      const next = conn.next
      yield conn
      conn = next
    }
  }
}
