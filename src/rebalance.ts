/**
 * The worker's side of connection balancing (per-slot sockets, see docs/architecture.md):
 * it tells the master how many connections the worker holds, and sheds keep-alive
 * connections when the master asks, so that clients reconnect and the master's steering
 * sends them to a less loaded worker.
 *
 * Shedding is the drain's own mechanism applied to a few connections: the next response
 * on a shed connection carries `Connection: close` and Node closes the socket after it, so
 * the client reconnects without an error. Only HTTP/1 servers shed; other servers are
 * only counted.
 *
 * @module
 */
import type * as net from 'node:net';
import * as tls from 'node:tls';
import type * as http from 'node:http';

import { isHttpServer } from './drain.js';

/** Delay between a change of the count and its report (reports are coalesced). */
const REPORT_DELAY_MS = 100;

/** Counts the connections of the servers it watches, reports them, and sheds on request. */
export class ConnectionBalance {
  readonly #report: (connections: number) => void;
  readonly #watched = new WeakSet<net.Server>();
  /** Sockets already told to close after their current response. */
  readonly #shed = new WeakSet<net.Socket>();
  #connections = 0;
  #reported = -1;
  #quota = 0;
  #timer: NodeJS.Timeout | undefined;

  /** `report` sends the current count to the master. */
  constructor(report: (connections: number) => void) {
    this.#report = report;
  }

  /** Open connections of the watched servers. */
  get connections(): number {
    return this.#connections;
  }

  /** Count `server`'s connections from now on, and let it shed (HTTP/1 servers). Idempotent. */
  watch(server: net.Server): void {
    if (this.#watched.has(server)) return;
    this.#watched.add(server);
    const event = server instanceof tls.Server ? 'secureConnection' : 'connection';
    server.on(event, (socket: net.Socket) => {
      this.#connections += 1;
      this.#changed();
      socket.once('close', () => {
        this.#connections -= 1;
        this.#changed();
      });
    });
    if (!isHttpServer(server)) return;
    server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (this.#quota === 0 || this.#shed.has(req.socket)) return;
      this.#quota -= 1;
      this.#shed.add(req.socket);
      res.shouldKeepAlive = false;
    });
  }

  /**
   * Close `count` keep-alive connections gracefully: the next requests on that many
   * distinct connections are answered with `Connection: close`. A new request replaces an
   * earlier one that is not used up.
   */
  shed(count: number): void {
    if (!Number.isSafeInteger(count) || count < 0) return;
    this.#quota = Math.min(count, this.#connections);
  }

  /** Send the count now if it changed (also used for the first report). */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#connections === this.#reported) return;
    this.#reported = this.#connections;
    this.#report(this.#connections);
  }

  #changed(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, REPORT_DELAY_MS);
    this.#timer.unref();
  }
}
