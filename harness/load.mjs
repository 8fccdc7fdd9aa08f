/**
 * A small keep-alive HTTP load generator (Node standard library only), one implementation
 * for the tests (`__test__/`) and the benchmarks (`bench/`).
 *
 * `connections` lanes over as many keep-alive connections, each lane sending its next GET
 * as soon as the previous response has ended (or `pauseMs` later), until `stop()`. It
 * never throws: every failure is counted by code (`ECONNRESET`, `ECONNREFUSED`, `EPIPE`,
 * `socket hang up`, `ETIMEDOUT`, `ETRUNCATED`...) and the lane goes on. It counts ok /
 * non-2xx / errors, responses per version (the first word of the body), the open
 * connections per serving pid, and latency percentiles. Responses per worker: the `x-pid`
 * response header (the test and benchmark apps set it), per pid in total (`workers`) and,
 * with `bucketMs`, per time bucket (`timeline`: requests per pid and failures per bucket,
 * bucket i = [i, i+1) × bucketMs from the start of the load).
 *
 * As a module:  const load = startLoad({ port, connections: 32 }); ...; const r = await load.stop();
 * As a CLI:     node harness/load.mjs --port 8080 [--connections 64] [--duration 12] [--path /] [--bucket-ms 100]
 *               runs until --duration (s) or SIGINT/SIGTERM, then prints the result as JSON.
 *
 * Plain ESM with JSDoc types: `__test__/tsconfig.json` type-checks it (`checkJs`).
 */
import http from 'node:http'
import { fileURLToPath } from 'node:url'

/**
 * Options of {@link startLoad}.
 * @typedef {object} LoadOptions
 * @property {number} port Target port.
 * @property {string} [host] Target host. Default `127.0.0.1`.
 * @property {number} [connections] Concurrent keep-alive connections (lanes). Default 32.
 * @property {string} [path] Request path. Default `/`.
 * @property {number} [requestTimeoutMs] A request not finished after this long is aborted and counted as `ETIMEDOUT`. Default 10000.
 * @property {number} [errorPauseMs] Pause of a lane after a failed request, so a dead target is not hammered. Default 5.
 * @property {number} [pauseMs] Pause of a lane after each answered request (a steady load that leaves CPU to the rest). Default 0.
 * @property {number} [bucketMs] With > 0, keep a timeline of requests per pid and failures per bucket of this length. Default 0.
 * @property {(body: string) => string} [versionOf] The key a response body is counted under in `bodies`. Default: its first word.
 */

/**
 * One served pid's counters.
 * @typedef {object} WorkerCount
 * @property {number} requests Responses it served.
 * @property {Record<string, number>} versions Responses per version.
 * @property {number} firstMs First response, ms from the start of the load.
 * @property {number} lastMs Last response, ms from the start of the load.
 */

/**
 * Counters of a load run.
 * @typedef {object} LoadCounts
 * @property {number} requests Requests finished (response read to its end, or failed).
 * @property {number} ok Responses with a 2xx status, read completely.
 * @property {number} non2xx Responses with another status, read completely.
 * @property {number} errors Requests that failed (connection error, reset, timeout, truncated body).
 * @property {Record<string, number>} errorCodes Failures per error code (or message when there is no code).
 * @property {Record<string, number>} bodies Completed responses per version (see `versionOf`).
 */

/**
 * A snapshot of a load run: the counters plus who served.
 * @typedef {LoadCounts & {
 *   connectionsByPid: Record<string, number>,
 *   workers: Record<string, WorkerCount>,
 *   firstErrors: { atMs: number, code: string }[],
 *   elapsedMs: number,
 *   timeline?: { bucketMs: number, requests: Record<string, number>[], failed: number[] },
 * }} LoadSnapshot
 * `connectionsByPid`: open keep-alive connections per serving process, each counted for
 * the pid in the `x-pid` header of its latest response (connections without one are left
 * out). `workers`: responses per `x-pid` (`?` without the header). `firstErrors`: the first
 * 20 failures, ms from the start.
 */

/**
 * The final result: a snapshot plus latency percentiles (ms) of the answered requests.
 * @typedef {LoadSnapshot & { latency: { p50: number | null, p99: number | null, max: number | null } }} LoadResult
 */

/**
 * A running load (see {@link startLoad}).
 * @typedef {object} Load
 * @property {number} startedAt performance.now() at the start: time 0 of `elapsedMs`, `firstErrors`, the timeline.
 * @property {() => LoadCounts} counts The counters so far (a copy; cheap).
 * @property {() => LoadSnapshot} snapshot The counters and who served so far (a copy).
 * @property {() => Promise<LoadResult>} stop Stop issuing requests, wait for the ones in flight, and return the final result.
 */

/**
 * @param {unknown} err
 * @returns {string}
 */
function errorKey(err) {
  if (err instanceof Error) {
    if (err.message === 'socket hang up') return 'socket hang up'
    const code = /** @type {NodeJS.ErrnoException} */ (err).code
    return typeof code === 'string' && code !== '' ? code : err.message
  }
  return String(err)
}

/**
 * @param {Float64Array} sorted
 * @param {number} p
 * @returns {number | null}
 */
function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] ?? null
}

/**
 * @param {string} message
 * @param {string} code
 * @returns {Error}
 */
function coded(message, code) {
  return Object.assign(new Error(message), { code })
}

/**
 * Start a keep-alive HTTP load against `host:port` (see {@link LoadOptions}).
 * @param {LoadOptions} options
 * @returns {Load}
 */
export function startLoad(options) {
  const host = options.host ?? '127.0.0.1'
  const connections = options.connections ?? 32
  const reqPath = options.path ?? '/'
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000
  const errorPauseMs = options.errorPauseMs ?? 5
  const pauseMs = options.pauseMs ?? 0
  const bucketMs = options.bucketMs ?? 0
  const versionOf = options.versionOf ?? ((body) => body.split(/\s/, 1)[0] ?? '')
  const t0 = performance.now()
  /** @type {LoadCounts} */
  const result = { requests: 0, ok: 0, non2xx: 0, errors: 0, errorCodes: {}, bodies: {} }
  /** @type {{ atMs: number, code: string }[]} */
  const firstErrors = []
  /** @type {Record<string, WorkerCount>} */
  const workers = {}
  /** @type {Record<string, number>[]} */
  const buckets = []
  /** @type {number[]} */
  const failedBuckets = []
  /** Open sockets and the pid that answered each one last. */
  /** @type {Map<import('node:net').Socket, string>} */
  const socketPids = new Map()
  let latencies = new Float64Array(1 << 16)
  let nLat = 0
  let stopping = false

  const bucketOf = () => Math.floor((performance.now() - t0) / bucketMs)

  /**
   * @param {string} pid
   * @param {string} version
   */
  const countWorker = (pid, version) => {
    const now = Math.round(performance.now() - t0)
    const w = (workers[pid] ??= { requests: 0, versions: {}, firstMs: now, lastMs: now })
    w.requests += 1
    w.versions[version] = (w.versions[version] ?? 0) + 1
    w.lastMs = now
    if (bucketMs > 0) {
      const b = (buckets[bucketOf()] ??= {})
      b[pid] = (b[pid] ?? 0) + 1
    }
  }

  /** @param {number} ms */
  const recordLatency = (ms) => {
    if (nLat === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2)
      bigger.set(latencies)
      latencies = bigger
    }
    latencies[nLat++] = ms
  }

  /** @param {unknown} err */
  const fail = (err) => {
    result.requests += 1
    result.errors += 1
    const key = errorKey(err)
    result.errorCodes[key] = (result.errorCodes[key] ?? 0) + 1
    if (bucketMs > 0) {
      const b = bucketOf()
      failedBuckets[b] = (failedBuckets[b] ?? 0) + 1
    }
    if (firstErrors.length < 20) firstErrors.push({ atMs: Math.round(performance.now() - t0), code: key })
  }

  /**
   * One request; resolves (never rejects) with whether it was answered, once counted.
   * @param {http.Agent} agent
   * @returns {Promise<boolean>}
   */
  const once = (agent) =>
    new Promise((resolve) => {
      const start = performance.now()
      let settled = false
      /**
       * @param {boolean} ok
       * @param {unknown} [err]
       */
      const settle = (ok, err) => {
        if (settled) return
        settled = true
        if (!ok) fail(err)
        resolve(ok)
      }
      /** @type {http.ClientRequest} */
      let req
      /** The connection this request went out on (kept: the agent may take it back first). */
      /** @type {import('node:net').Socket | undefined} */
      let socket
      try {
        req = http.request({ host, port: options.port, path: reqPath, method: 'GET', agent }, (res) => {
          /** @type {Buffer[]} */
          const chunks = []
          res.on('data', (/** @type {Buffer} */ c) => chunks.push(c))
          res.on('error', (err) => settle(false, err))
          // Closed before 'end' (and without an 'error'): the body was cut short.
          res.on('close', () => settle(false, coded('response closed before its end', 'ETRUNCATED')))
          res.on('end', () => {
            if (settled) return
            if (!res.complete) {
              settle(false, coded('truncated response', 'ETRUNCATED'))
              return
            }
            settled = true
            const status = res.statusCode ?? 0
            result.requests += 1
            if (status >= 200 && status < 300) result.ok += 1
            else result.non2xx += 1
            const v = versionOf(Buffer.concat(chunks).toString('utf8'))
            result.bodies[v] = (result.bodies[v] ?? 0) + 1
            const pid = res.headers['x-pid']
            countWorker(typeof pid === 'string' ? pid : '?', v)
            const s = socket
            if (typeof pid === 'string' && s !== undefined && !s.destroyed) {
              if (!socketPids.has(s)) s.once('close', () => socketPids.delete(s))
              socketPids.set(s, pid)
            }
            recordLatency(performance.now() - start)
            resolve(true)
          })
        })
      } catch (err) {
        settle(false, err)
        return
      }
      req.setTimeout(requestTimeoutMs, () => {
        req.destroy(coded(`no response within ${requestTimeoutMs} ms`, 'ETIMEDOUT'))
      })
      req.on('socket', (s) => {
        socket = s
      })
      req.on('error', (err) => settle(false, err))
      req.end()
    })

  // One agent for all lanes, at most one socket per lane: a lane is a keep-alive connection.
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections })
  const lane = async () => {
    while (!stopping) {
      const ok = await once(agent)
      const pause = ok ? pauseMs : errorPauseMs
      if (!stopping && pause > 0) await new Promise((r) => setTimeout(r, pause))
    }
  }
  const lanes = Array.from({ length: connections }, () => lane())

  /** @returns {LoadCounts} */
  const counts = () => ({ ...result, errorCodes: { ...result.errorCodes }, bodies: { ...result.bodies } })

  /** @returns {LoadSnapshot} */
  const snapshot = () => {
    /** @type {Record<string, number>} */
    const connectionsByPid = {}
    // A destroyed socket whose 'close' has not been emitted yet is no longer a connection.
    for (const [s, pid] of socketPids) {
      if (!s.destroyed) connectionsByPid[pid] = (connectionsByPid[pid] ?? 0) + 1
    }
    /** @type {LoadSnapshot} */
    const out = {
      ...counts(),
      connectionsByPid,
      workers: structuredClone(workers),
      firstErrors: [...firstErrors],
      elapsedMs: Math.round(performance.now() - t0),
    }
    if (bucketMs > 0) {
      const n = Math.max(buckets.length, failedBuckets.length)
      out.timeline = {
        bucketMs,
        requests: Array.from({ length: n }, (_, i) => ({ ...(buckets[i] ?? {}) })),
        failed: Array.from({ length: n }, (_, i) => failedBuckets[i] ?? 0),
      }
    }
    return out
  }

  /** @type {Promise<LoadResult> | undefined} */
  let stopped
  return {
    startedAt: t0,
    counts,
    snapshot,
    stop() {
      if (stopped === undefined) {
        stopping = true
        stopped = Promise.all(lanes).then(() => {
          agent.destroy()
          const out = snapshot()
          const sorted = latencies.slice(0, nLat).sort()
          const max = nLat > 0 ? (sorted[nLat - 1] ?? null) : null
          return { ...out, latency: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max } }
        })
      }
      return stopped
    },
  }
}

// CLI mode: node harness/load.mjs --port P [--connections C] [--duration S] [--path /] [--bucket-ms B]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const a = process.argv.slice(2)
  /**
   * @param {string} name
   * @param {string} [def]
   * @returns {string | undefined}
   */
  const opt = (name, def) => {
    const i = a.indexOf(`--${name}`)
    return i >= 0 ? a[i + 1] : def
  }
  const port = Number(opt('port'))
  if (!port) {
    process.stderr.write(
      'usage: node harness/load.mjs --port P [--connections 64] [--duration 12] [--path /] [--bucket-ms 100]\n',
    )
    process.exit(2)
  }
  const load = startLoad({
    port,
    connections: Number(opt('connections', '64')),
    path: opt('path', '/'),
    bucketMs: Number(opt('bucket-ms', '0')),
  })
  const finish = async () => {
    const r = await load.stop()
    process.stdout.write(`${JSON.stringify(r)}\n`)
    process.exit(0)
  }
  const duration = Number(opt('duration', '0'))
  if (duration > 0) setTimeout(finish, duration * 1000)
  process.once('SIGINT', finish)
  process.once('SIGTERM', finish)
}
