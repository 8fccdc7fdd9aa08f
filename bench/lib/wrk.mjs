/**
 * The load tools run as child processes: wrk (parsed output), and the Node load generator
 * (harness/load.mjs) as the fallback where wrk is missing, in the same shape.
 */
import { execFileSync } from 'node:child_process'
import path from 'node:path'

import { ROOT } from './paths.mjs'
import { exited, spawnTracked } from './processes.mjs'

export function wrkVersion() {
  try {
    const out = execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return out.split('\n')[0].trim()
  } catch (e) {
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`
    if (/wrk/.test(out)) return out.split('\n')[0].trim()
    return null
  }
}

/** Parse wrk's text output. */
export function parseWrk(text) {
  const num = (re) => {
    const m = re.exec(text)
    return m ? Number(m[1]) : null
  }
  const toMs = (v, unit) => {
    const n = Number(v)
    return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : unit === 'm' ? n * 60000 : n
  }
  const lat = (pct) => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
    return m ? toMs(m[1], m[2]) : null
  }
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const errors = se
    ? { connect: +se[1], read: +se[2], write: +se[3], timeout: +se[4] }
    : { connect: 0, read: 0, write: 0, timeout: 0 }
  return {
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    errors,
    socketErrors: errors.connect + errors.read + errors.write + errors.timeout,
    p50: lat(50),
    p99: lat(99),
  }
}

/** Start wrk; `.done` resolves with the parsed result and raw output. */
export function startWrk(port, { connections = 64, threads = 1, durationS = 12, timeout = '2s', path: p = '/' } = {}) {
  const args = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${durationS}s`,
    '--timeout',
    timeout,
    '--latency',
    `http://127.0.0.1:${port}${p}`,
  ]
  const child = spawnTracked('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const done = exited(child).then(({ code }) => ({ code, raw: out, ...parseWrk(out) }))
  return { child, done, args }
}

/**
 * Start `node harness/load.mjs` as a child; `.stop()` resolves with its JSON result.
 * `bucketMs` > 0 adds its timeline (requests per pid and failures per bucket).
 */
export function startNodeLoad(port, { connections = 64, durationS = 12, bucketMs = 0 } = {}) {
  const script = path.join(ROOT, 'harness', 'load.mjs')
  const child = spawnTracked(
    process.execPath,
    [
      script,
      '--port',
      String(port),
      '--connections',
      String(connections),
      '--duration',
      String(durationS),
      ...(bucketMs > 0 ? ['--bucket-ms', String(bucketMs)] : []),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const done = exited(child).then(() => {
    try {
      return JSON.parse(out)
    } catch {
      return { error: `load generator printed no result: ${out.slice(0, 200)}` }
    }
  })
  return {
    child,
    done,
    stop: () => {
      child.kill('SIGINT')
      return done
    },
  }
}

/** wrk-like summary of a load.mjs result. */
export function loadToWrkShape(r, durationS) {
  const codes = r.errorCodes ?? {}
  return {
    requests: r.requests,
    rps: r.requests / durationS,
    non2xx: r.non2xx,
    errors: codes,
    socketErrors: r.errors,
    p50: r.latency?.p50 ?? null,
    p99: r.latency?.p99 ?? null,
  }
}
