/**
 * HTTP probes, each on a fresh connection: one GET, a GET every few ms (outages), and
 * streams of fresh connections spread over a window.
 */
import http from 'node:http'

import { sleep } from './processes.mjs'

/**
 * One GET on a fresh connection; resolves { ok, status, body, error, ms }. `timeoutMs` is
 * a deadline for the whole exchange (connect + response): error `TIMEOUT` after it.
 */
export function probeOnce(port, { timeoutMs = 2000, path: p = '/' } = {}) {
  const t0 = performance.now()
  return new Promise((resolve) => {
    let done = false
    let timer
    const finish = (r) => {
      if (!done) {
        done = true
        clearTimeout(timer)
        resolve({ ...r, ms: performance.now() - t0 })
      }
    }
    const req = http.get(
      { host: '127.0.0.1', port, path: p, agent: false, headers: { connection: 'close' } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () =>
          finish({ ok: res.statusCode === 200, status: res.statusCode, body, pid: res.headers['x-pid'] ?? null }),
        )
        res.on('error', (e) => finish({ ok: false, error: e.code ?? e.message }))
      },
    )
    timer = setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })), timeoutMs)
    req.on('error', (e) => finish({ ok: false, error: e.code ?? e.message }))
  })
}

/** `n` sequential fresh-connection GETs; counts responses per version (first body token). */
export async function versionsServed(port, n = 20) {
  const versions = {}
  let failed = 0
  for (let i = 0; i < n; i++) {
    const r = await probeOnce(port)
    if (r.ok) {
      const v = r.body.split(' ')[0]
      versions[v] = (versions[v] ?? 0) + 1
    } else failed += 1
  }
  return { versions, failed }
}

/**
 * A fresh-connection GET every `intervalMs` until stopped: failures by code and the
 * longest run of consecutive failures (outage, ms).
 */
export function startProbe(port, intervalMs = 10) {
  let stopping = false
  const r = { sent: 0, failed: 0, codes: {}, outageMs: 0 }
  let failStart = null
  const loop = (async () => {
    while (!stopping) {
      const t = performance.now()
      const res = await probeOnce(port)
      r.sent += 1
      if (res.ok) {
        if (failStart !== null) r.outageMs = Math.max(r.outageMs, t - failStart)
        failStart = null
      } else {
        r.failed += 1
        const code = res.error ?? `HTTP ${res.status}`
        r.codes[code] = (r.codes[code] ?? 0) + 1
        if (failStart === null) failStart = t
      }
      const wait = intervalMs - (performance.now() - t)
      if (wait > 0) await sleep(wait)
    }
    if (failStart !== null) r.outageMs = Math.max(r.outageMs, performance.now() - failStart)
  })()
  return {
    stop: async () => {
      stopping = true
      await loop
      r.outageMs = Math.round(r.outageMs)
      return r
    },
  }
}

/**
 * A stream of `count` fresh-connection GETs started at even intervals over `spreadMs`
 * (each its own TCP connection, not waiting for the previous one), each with a `timeoutMs`
 * deadline. Resolves when all have ended: answered (200) / timed out / other errors by
 * code, versions and worker pids answering, the latency of the answered ones, and when
 * (ms from the stream's start) the first and last failures were sent.
 */
export async function freshStream(port, { count = 200, spreadMs = 3000, timeoutMs = 1500 } = {}) {
  const t0 = performance.now()
  const r = {
    sent: 0,
    answered: 0,
    timedOut: 0,
    errors: 0,
    codes: {},
    versions: {},
    pids: {},
    firstFailAtMs: null,
    lastFailAtMs: null,
  }
  const lat = []
  const one = async (i) => {
    const due = t0 + (i * spreadMs) / count
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    const at = Math.round(performance.now() - t0)
    r.sent += 1
    const res = await probeOnce(port, { timeoutMs })
    if (res.ok) {
      r.answered += 1
      lat.push(res.ms)
      const v = res.body.split(' ')[0]
      r.versions[v] = (r.versions[v] ?? 0) + 1
      if (res.pid) r.pids[res.pid] = (r.pids[res.pid] ?? 0) + 1
      return
    }
    const code = res.error ?? `HTTP ${res.status}`
    if (code === 'TIMEOUT') r.timedOut += 1
    else r.errors += 1
    r.codes[code] = (r.codes[code] ?? 0) + 1
    if (r.firstFailAtMs === null || at < r.firstFailAtMs) r.firstFailAtMs = at
    if (r.lastFailAtMs === null || at > r.lastFailAtMs) r.lastFailAtMs = at
  }
  await Promise.all(Array.from({ length: count }, (_, i) => one(i)))
  lat.sort((a, b) => a - b)
  const pct = (q) =>
    lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.ceil(q * lat.length) - 1)] * 10) / 10 : null
  return {
    ...r,
    ms: Math.round(performance.now() - t0),
    latencyMs: { p50: pct(0.5), p99: pct(0.99), max: pct(1) },
    settings: { count, spreadMs, timeoutMs },
  }
}

/** "answered / timed out / errors" of a {@link freshStream} result. */
export function freshText(f) {
  if (!f) return '–'
  const codes = Object.entries(f.codes).filter(([k]) => k !== 'TIMEOUT')
  return `${f.answered} / ${f.timedOut} / ${f.errors}${codes.length ? ` (${codes.map(([k, v]) => `${k}×${v}`).join(', ')})` : ''}`
}
