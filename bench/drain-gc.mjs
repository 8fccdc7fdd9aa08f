#!/usr/bin/env node
/**
 * What the drain's connection tracking costs the garbage collector, with one new
 * connection per request: a plain node:http server against the same server tracked by
 * the drain (`trackServer` of dist/worker/drain.js, as every baton worker does), in
 * alternating rounds. Each round starts the server under `--trace-gc-nvp`, runs
 * `wrk -t1 -c32 -H "Connection: close"` for `--duration` seconds, stops the server and
 * sums V8's own figures over its life: bytes promoted to the old generation and scavenge
 * time, per 1,000 connections. Bytes depend on what the code keeps alive, not on the
 * load of a shared machine, so they tell the tracking's cost where CPU times cannot.
 *
 * `--drain FILE` measures another build of drain.js (for instance the parent commit's).
 *
 * Needs wrk (Linux). Usage:
 *   node bench/drain-gc.mjs [--rounds 6] [--duration 5] [--drain dist/worker/drain.js]
 * Writes bench/results/drain-gc.json and prints a markdown table.
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import { ROOT, writeResult } from './lib/paths.mjs'
import { exited, freePort, installCleanup, runMain, spawnTracked, tempDir } from './lib/processes.mjs'
import { args } from './lib/args.mjs'
import { parseWrk } from './lib/wrk.mjs'
import { fmt, median } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'

const opt = args()
const ROUNDS = Number(opt.rounds ?? 6)
const DURATION = Number(opt.duration ?? 5)
const DRAIN = path.resolve(ROOT, opt.drain ?? path.join('dist', 'worker', 'drain.js'))
const log = (s) => process.stderr.write(`${s}\n`)

/** The app: the hot-path handler; tracked when TRACK is set; exits (flushing V8's trace) on SIGTERM. */
function writeApp(dir) {
  const file = path.join(dir, 'app.mjs')
  writeFileSync(
    file,
    `import http from 'node:http';
const server = http.createServer((req, res) => {
  res.setHeader('x-pid', String(process.pid));
  res.end('ok\\n');
});
if (process.env.TRACK) {
  const { trackServer } = await import(${JSON.stringify(pathToFileURL(DRAIN).href)});
  trackServer(server);
}
process.on('SIGTERM', () => process.exit(0));
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.stderr.write('listening\\n'));
`,
  )
  return file
}

function runWrk(port, durationS) {
  const child = spawnTracked(
    'wrk',
    ['-t1', '-c32', `-d${durationS}s`, '-H', 'Connection: close', `http://127.0.0.1:${port}/`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  return exited(child).then(() => parseWrk(out))
}

/** One server's life: warm-up and measured load; V8's figures summed over all of it. */
async function measure(app, tracked) {
  const port = await freePort()
  const env = { ...process.env, PORT: String(port) }
  if (tracked) env.TRACK = '1'
  else delete env.TRACK
  const child = spawnTracked(process.execPath, ['--trace-gc-nvp', app], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let trace = ''
  child.stdout.on('data', (d) => (trace += d))
  await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => String(d).includes('listening') && resolve())
    child.once('exit', (code) => reject(new Error(`the app exited with code ${code} before listening`)))
  })
  const warm = await runWrk(port, 1)
  const load = await runWrk(port, DURATION)
  child.kill('SIGTERM')
  await exited(child)
  let promoted = 0
  let scavengeMs = 0
  let scavenges = 0
  for (const line of trace.split('\n')) {
    if (!/\bgc=s\b/.test(line)) continue
    scavenges += 1
    promoted += Number(/\bpromoted=(\d+)/.exec(line)?.[1] ?? 0)
    scavengeMs += Number(/\bscavenge=([\d.]+)/.exec(line)?.[1] ?? 0)
  }
  const connections = (warm.requests ?? 0) + (load.requests ?? 0)
  return {
    connections,
    rps: load.rps,
    scavenges,
    promotedKiBPer1k: (promoted / 1024 / connections) * 1000,
    scavengeMsPer1k: (scavengeMs / connections) * 1000,
  }
}

async function main() {
  installCleanup()
  const app = writeApp(tempDir('baton-bench-drain-gc-'))
  const runs = []
  for (let i = 0; i < ROUNDS; i++) {
    const round = {}
    for (const kind of i % 2 === 0 ? ['plain', 'tracked'] : ['tracked', 'plain']) {
      round[kind] = await measure(app, kind === 'tracked')
      const r = round[kind]
      log(
        `round ${i + 1}/${ROUNDS} ${kind}: ${r.connections} connections, ${fmt(r.promotedKiBPer1k)} KiB promoted and ${fmt(r.scavengeMsPer1k, 2)} ms of scavenges per 1,000`,
      )
    }
    runs.push(round)
  }
  const side = (k) => ({
    promotedKiBPer1k: median(runs.map((r) => r[k].promotedKiBPer1k)),
    scavengeMsPer1k: median(runs.map((r) => r[k].scavengeMsPer1k)),
    rps: median(runs.map((r) => r[k].rps)),
  })
  const result = {
    benchmark: 'drain-gc',
    machine: machine(),
    settings: { rounds: ROUNDS, durationS: DURATION, drain: path.relative(ROOT, DRAIN) },
    runs,
    plain: side('plain'),
    tracked: side('tracked'),
    promotedRatio: median(runs.map((r) => r.tracked.promotedKiBPer1k / r.plain.promotedKiBPer1k)),
  }
  const file = writeResult('drain-gc.json', result)
  console.log('\n| server | KiB promoted per 1,000 connections | scavenge ms per 1,000 | req/s |')
  console.log('| --- | --- | --- | --- |')
  console.log(
    `| plain node:http | ${fmt(result.plain.promotedKiBPer1k)} | ${fmt(result.plain.scavengeMsPer1k, 2)} | ${fmt(result.plain.rps)} |`,
  )
  console.log(
    `| tracked by the drain (${result.settings.drain}) | ${fmt(result.tracked.promotedKiBPer1k)} | ${fmt(result.tracked.scavengeMsPer1k, 2)} | ${fmt(result.tracked.rps)} |`,
  )
  console.log(
    `\ntracked ÷ plain, promoted bytes: ${fmt(result.promotedRatio, 2)} (median of ${ROUNDS} rounds); ${file}`,
  )
  return 0
}

runMain('drain-gc', main)
