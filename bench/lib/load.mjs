/**
 * A small keep-alive HTTP load generator (Node standard library only).
 *
 * `connections` lanes, each with its own keep-alive connection, sending its next GET as
 * soon as the previous response has ended. Never throws: every failure is counted by code
 * (`ECONNRESET`, `ECONNREFUSED`, `EPIPE`, `socket hang up`, `ETIMEDOUT`, `ETRUNCATED`...)
 * and the lane goes on. Counts ok / non-2xx / errors, bodies per version (the first word
 * of the body), and latency percentiles. Responses per worker: the `x-pid` response header
 * (the benchmark app sets it), per pid in total (`workers`) and, with `bucketMs`, per time
 * bucket (`timeline`: requests per pid and failures per bucket, bucket i = [i, i+1) ×
 * bucketMs from the start of the load; `startedAt` = that start, a performance.now() value).
 *
 * As a module:  const load = startLoad({ port, connections: 32 }); ...; const r = await load.stop();
 * As a CLI:     node bench/lib/load.mjs --port 8080 [--connections 64] [--duration 12] [--path /] [--bucket-ms 100]
 *               runs until --duration (s) or SIGINT/SIGTERM, then prints the result as JSON.
 */
import http from 'node:http'
import { fileURLToPath } from 'node:url'

function errorKey(err) {
  if (err instanceof Error) {
    if (err.message === 'socket hang up') return 'socket hang up'
    if (typeof err.code === 'string' && err.code !== '') return err.code
    return err.message
  }
  return String(err)
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

/**
 * Start a keep-alive load against 127.0.0.1:port.
 * options: { port, host = '127.0.0.1', connections = 32, path = '/', requestTimeoutMs = 10000,
 *            errorPauseMs = 5, versionOf = (body) => first word, bucketMs = 0 (no timeline),
 *            workerOf = (res) => res.headers['x-pid'] }
 */
export function startLoad(options) {
  const host = options.host ?? '127.0.0.1'
  const connections = options.connections ?? 32
  const reqPath = options.path ?? '/'
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000
  const errorPauseMs = options.errorPauseMs ?? 5
  const versionOf = options.versionOf ?? ((body) => body.split(/\s/, 1)[0])
  const workerOf = options.workerOf ?? ((res) => res.headers['x-pid'] ?? '?')
  const bucketMs = options.bucketMs ?? 0
  const t0 = performance.now()
  const result = { requests: 0, ok: 0, non2xx: 0, errors: 0, errorCodes: {}, bodies: {}, firstErrors: [] }
  // Per worker: { requests, versions, firstMs, lastMs }; per bucket: { pid: requests } and failures.
  const workers = {}
  const buckets = []
  const failedBuckets = []
  const bucketOf = () => Math.floor((performance.now() - t0) / bucketMs)
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
  let latencies = new Float64Array(1 << 16)
  let nLat = 0
  let stopping = false

  const recordLatency = (ms) => {
    if (nLat === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2)
      bigger.set(latencies)
      latencies = bigger
    }
    latencies[nLat++] = ms
  }

  const fail = (err) => {
    result.requests += 1
    result.errors += 1
    const key = errorKey(err)
    result.errorCodes[key] = (result.errorCodes[key] ?? 0) + 1
    if (bucketMs > 0) {
      const b = bucketOf()
      failedBuckets[b] = (failedBuckets[b] ?? 0) + 1
    }
    if (result.firstErrors.length < 20) {
      result.firstErrors.push({ atMs: Math.round(performance.now() - t0), code: key })
    }
  }

  // One agent per lane, one socket each: a lane = one keep-alive connection (like wrk).
  const once = (agent) =>
    new Promise((resolve) => {
      const start = performance.now()
      let settled = false
      const settle = (ok, err) => {
        if (settled) return
        settled = true
        if (!ok) fail(err)
        resolve(ok)
      }
      let req
      try {
        req = http.request({ host, port: options.port, path: reqPath, method: 'GET', agent }, (res) => {
          const chunks = []
          res.on('data', (c) => chunks.push(c))
          res.on('error', (err) => settle(false, err))
          res.on('close', () =>
            settle(false, Object.assign(new Error('response closed before its end'), { code: 'ETRUNCATED' })),
          )
          res.on('end', () => {
            if (settled) return
            if (!res.complete) {
              settle(false, Object.assign(new Error('truncated response'), { code: 'ETRUNCATED' }))
              return
            }
            settled = true
            const status = res.statusCode ?? 0
            result.requests += 1
            if (status >= 200 && status < 300) result.ok += 1
            else result.non2xx += 1
            const v = versionOf(Buffer.concat(chunks).toString('utf8'))
            result.bodies[v] = (result.bodies[v] ?? 0) + 1
            countWorker(String(workerOf(res)), v)
            recordLatency(performance.now() - start)
            resolve(true)
          })
        })
      } catch (err) {
        settle(false, err)
        return
      }
      req.setTimeout(requestTimeoutMs, () => {
        req.destroy(Object.assign(new Error(`no response within ${requestTimeoutMs} ms`), { code: 'ETIMEDOUT' }))
      })
      req.on('error', (err) => settle(false, err))
      req.end()
    })

  const agents = []
  const lane = async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })
    agents.push(agent)
    while (!stopping) {
      const ok = await once(agent)
      if (!ok && !stopping && errorPauseMs > 0) await new Promise((r) => setTimeout(r, errorPauseMs))
    }
  }
  const lanes = Array.from({ length: connections }, () => lane())

  const snapshot = () => {
    const sorted = latencies.slice(0, nLat).sort()
    const out = {
      ...result,
      errorCodes: { ...result.errorCodes },
      bodies: { ...result.bodies },
      firstErrors: [...result.firstErrors],
      elapsedMs: Math.round(performance.now() - t0),
      latency: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: nLat ? sorted[nLat - 1] : null },
      workers: JSON.parse(JSON.stringify(workers)),
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
  let stopped
  return {
    /** performance.now() at the start of the load: time 0 of `elapsedMs`, `firstErrors`, the timeline. */
    startedAt: t0,
    /** Counters so far (a copy); cheap fields only. */
    counts: () => ({
      requests: result.requests,
      ok: result.ok,
      non2xx: result.non2xx,
      errors: result.errors,
      errorCodes: { ...result.errorCodes },
      bodies: { ...result.bodies },
    }),
    snapshot,
    /** Stop issuing requests, wait for those in flight, and return the final result. */
    stop() {
      if (!stopped) {
        stopping = true
        stopped = Promise.all(lanes).then(() => {
          for (const a of agents) a.destroy()
          return snapshot()
        })
      }
      return stopped
    },
  }
}

// CLI mode: node bench/lib/load.mjs --port P [--connections C] [--duration S] [--path /] [--bucket-ms B]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const a = process.argv.slice(2)
  const opt = (name, def) => {
    const i = a.indexOf(`--${name}`)
    return i >= 0 ? a[i + 1] : def
  }
  const port = Number(opt('port'))
  if (!port) {
    process.stderr.write(
      'usage: node bench/lib/load.mjs --port P [--connections 64] [--duration 12] [--path /] [--bucket-ms 100]\n',
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
