/**
 * The worker's side of connection balancing (per-slot sockets, see docs/architecture.md):
 * it tells the master how many connections the worker holds, and sheds keep-alive
 * connections when the master asks, so that clients reconnect and the master's steering
 * sends them to a less loaded worker.
 *
 * The counts and the shedding are the drain's own (`drain.ts`): the open connections it
 * tracks, and `Connection: close` on the next response of a shed connection, so the
 * client reconnects without an error. Only HTTP/1 servers shed; other servers are only
 * counted.
 *
 * @module
 */
import type * as net from 'node:net'

import { connectionCount, onConnectionCount, shedConnections } from './drain.js'

/** Delay between a change of the count and its report (reports are coalesced). */
const REPORT_DELAY_MS = 100

/** Reports the connections of the servers it watches, and sheds on request. */
export class ConnectionBalance {
  readonly #report: (connections: number) => void
  readonly #servers = new Set<net.Server>()
  #reported = -1
  #timer: NodeJS.Timeout | undefined

  /** `report` sends the current count to the master. */
  constructor(report: (connections: number) => void) {
    this.#report = report
  }

  /** Open connections of the watched servers. */
  get connections(): number {
    let n = 0
    for (const server of this.#servers) n += connectionCount(server)
    return n
  }

  /** Report `server`'s connections from now on (it is tracked by the drain). Idempotent. */
  watch(server: net.Server): void {
    if (this.#servers.has(server)) return
    this.#servers.add(server)
    // The drain's own tracking tells us (no listener of our own on every socket).
    onConnectionCount(server, this.#onCount)
  }

  /** Close `count` keep-alive connections gracefully, taken from the servers in turn. */
  shed(count: number): void {
    if (!Number.isSafeInteger(count) || count < 0) return
    let left = count
    for (const server of this.#servers) {
      const here = Math.min(left, connectionCount(server))
      shedConnections(server, here)
      left -= here
    }
  }

  /** Send the count now if it changed (also used for the first report). */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
    const connections = this.connections
    if (connections === this.#reported) return
    this.#reported = connections
    this.#report(connections)
  }

  readonly #onCount = (): void => this.#changed()

  #changed(): void {
    if (this.#timer !== undefined) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.flush()
    }, REPORT_DELAY_MS)
    this.#timer.unref()
  }
}
