// Runs in the Node of a target platform from a project where batonjs and its platform
// package are installed (scripts/verify-targets.mjs, .github/workflows/release.yml):
// starts a 2-worker fleet, reloads it under a request loop, stops it, and prints one JSON
// line with what it saw. Exits 1 when a request failed or a worker was not replaced.
// BATON_SMOKE_NODE: the command the workers run as (a wrapper when this Node runs under
// an emulator or a private loader); BATON_SMOKE_PORT: a free TCP port on 127.0.0.1.
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Supervisor } from 'batonjs'

if (process.env.BATON_SMOKE_NODE) process.execPath = process.env.BATON_SMOKE_NODE
const port = Number(process.env.BATON_SMOKE_PORT ?? 0) || 18000 + (process.pid % 2000)
const url = `http://127.0.0.1:${port}/`

/** GET `url`: the worker's pid, or null on any failure. */
function get() {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 30_000 }, (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve(res.statusCode === 200 ? Number(body.trim()) : null))
      res.on('error', () => resolve(null))
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(null))
  })
}

const result = { node: process.version, platform: process.platform, arch: process.arch }
const supervisor = new Supervisor({
  name: `smoke-${process.pid}`,
  log: false,
  handleSignals: false,
  groups: {
    web: {
      script: fileURLToPath(new URL('./app.mjs', import.meta.url)),
      count: 2,
      listen: `127.0.0.1:${port}`,
      readyTimeout: 180_000,
    },
  },
})
let ok = false
try {
  await supervisor.start()
  // The addons this process mapped: Node's report lists them on Linux and macOS alike.
  const objects = process.report.getReport().sharedObjects ?? []
  if (process.platform === 'linux') {
    objects.push(
      ...readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .map((l) => l.split(/\s+/).pop()),
    )
  }
  result.binding = [...new Set(objects.filter((f) => f?.endsWith('.node')))]
  const pidsOf = () => supervisor.status().workers.map((w) => w.pid)
  result.before = pidsOf()
  let requests = 0
  let failed = 0
  let loading = true
  const load = (async () => {
    while (loading) {
      requests++
      if ((await get()) === null) failed++
    }
  })()
  const report = await supervisor.reload()
  loading = false
  await load
  result.reload = { outcome: report.outcome, replaced: report.replaced, durationMs: report.durationMs }
  result.after = pidsOf()
  result.requests = requests
  result.failed = failed
  ok = failed === 0 && result.after.every((p) => !result.before.includes(p)) && result.after.length === 2
} catch (e) {
  result.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e)
} finally {
  await supervisor.stop().catch((e) => (result.stopError = String(e)))
}
console.log(JSON.stringify({ ok, ...result }))
process.exitCode = ok ? 0 : 1
