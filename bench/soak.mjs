#!/usr/bin/env node
/**
 * Soak: many reloads in a row under HTTP load, watching the master for leaks.
 *
 *   npm run soak                       # 1,000 reloads of 2 workers under 16 keep-alive connections
 *   node bench/soak.mjs --reloads 200 --count 4 --connections 32 --every 50 [--json]
 *
 * Starts the benchmark app (textbook under baton, boot delay 0) with `baton start`, runs
 * the load, and reloads with `baton reload` (each waits for its outcome and must exit 0).
 * Every `--every` reloads it prints the master's RSS, open fds (/proc/<pid>/fd), zombie
 * children (state Z) and the failed requests so far. Exit code 1 when a reload failed, a
 * request failed, or the master ends with more fds or zombies than it started with.
 * Linux only (/proc).
 */
import { parseArgs } from 'node:util'
import path from 'node:path'

import { startLoad } from '../harness/load.mjs'
import { childrenOf, fdCount, rssBytes } from '../harness/proc.mjs'
import { BATON_CLI } from './lib/paths.mjs'
import { freePort, installCleanup, run, runMain, sleep, spawnTracked, tempDir } from './lib/processes.mjs'
import { writeBenchApp } from './lib/app.mjs'

const { values } = parseArgs({
  options: {
    reloads: { type: 'string', default: '1000' },
    count: { type: 'string', default: '2' },
    connections: { type: 'string', default: '16' },
    every: { type: 'string', default: '100' },
    json: { type: 'boolean', default: false },
  },
})

async function main() {
  installCleanup()
  if (process.platform !== 'linux') throw new Error('the soak reads /proc: Linux only')
  const reloads = Number(values.reloads)
  const count = Number(values.count)
  const connections = Number(values.connections)
  const every = Number(values.every)
  const dir = tempDir('baton-soak-')
  const script = writeBenchApp(path.join(dir, 'app'))
  const port = await freePort()
  const env = { ...process.env, BATON_RUNTIME_DIR: path.join(dir, 'run'), BOOT_DELAY_MS: '0' }
  const name = 'soak'
  const master = spawnTracked(
    process.execPath,
    [BATON_CLI, 'start', script, '--name', name, '--count', String(count), '--listen', `127.0.0.1:${port}`],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  master.stderr.on('data', (d) => {
    log += d
    if (log.length > 1 << 20) log = log.slice(-(1 << 19))
  })
  const cli = (...args) => run(process.execPath, [BATON_CLI, ...args], { env })
  for (let i = 0; ; i++) {
    const s = await cli('status', name, '--json')
    if (s.code === 0) {
      const st = JSON.parse(s.stdout)
      if (st.workers.length === count && st.workers.every((w) => w.state === 'ready')) break
    }
    if (i > 200) throw new Error(`the fleet did not start:\n${log}`)
    await sleep(100)
  }
  const pid = master.pid
  const sample = (n, load) => {
    const r = load.snapshot ? load.snapshot() : load
    const children = childrenOf(pid)
    return {
      reloads: n,
      rssMiB: Number((rssBytes(pid) / 1048576).toFixed(1)),
      fds: fdCount(pid),
      zombies: children.filter((c) => c.state === 'Z').length,
      workers: children.filter((c) => c.state !== 'Z').length,
      requests: r.requests,
      failed: r.errors + r.non2xx,
    }
  }
  const load = startLoad({ port, connections })
  await sleep(1000)
  const rows = [sample(0, load)]
  const print = (row) => {
    if (!values.json) {
      console.log(
        `${String(row.reloads).padStart(5)} reloads  rss ${row.rssMiB.toFixed(1).padStart(6)} MiB  ` +
          `fds ${String(row.fds).padStart(3)}  zombies ${row.zombies}  workers ${row.workers}  ` +
          `requests ${String(row.requests).padStart(8)}  failed ${row.failed}`,
      )
    }
  }
  print(rows[0])
  const t0 = Date.now()
  let failedReloads = 0
  for (let n = 1; n <= reloads; n++) {
    const r = await cli('reload', name)
    if (r.code !== 0) {
      failedReloads += 1
      console.error(`reload ${n} failed (exit ${r.code}): ${r.stderr.trim()}`)
    }
    if (n % every === 0 || n === reloads) {
      // The replaced workers are reaped by their waiter threads within moments: settle first.
      await sleep(200)
      const row = sample(n, load)
      rows.push(row)
      print(row)
    }
  }
  const result = await load.stop()
  const first = rows[0]
  const last = { ...rows[rows.length - 1], requests: result.requests, failed: result.errors + result.non2xx }
  const summary = {
    reloads,
    count,
    connections,
    minutes: Number(((Date.now() - t0) / 60000).toFixed(1)),
    failedReloads,
    failedRequests: last.failed,
    errorCodes: result.errorCodes,
    requests: result.requests,
    rssMiB: { first: first.rssMiB, last: last.rssMiB, max: Math.max(...rows.map((r) => r.rssMiB)) },
    fds: { first: first.fds, last: last.fds, max: Math.max(...rows.map((r) => r.fds)) },
    zombies: { max: Math.max(...rows.map((r) => r.zombies)) },
    rows,
  }
  await cli('stop', name)
  if (values.json) console.log(JSON.stringify(summary, null, 2))
  else {
    console.log(
      `\n${reloads} reloads in ${summary.minutes} min: ${failedReloads} failed reloads, ${summary.failedRequests} failed of ${summary.requests} requests; ` +
        `master rss ${first.rssMiB} -> ${last.rssMiB} MiB (max ${summary.rssMiB.max}), fds ${first.fds} -> ${last.fds}, max zombies ${summary.zombies.max}`,
    )
  }
  const leaked = last.fds > first.fds || last.zombies > 0
  return failedReloads === 0 && summary.failedRequests === 0 && !leaked ? 0 : 1
}

runMain('soak', main)
