#!/usr/bin/env node
/**
 * CLI start-up: the wall time of `baton status` (against a running fleet) paired with
 * `pm2 ping` (against a running PM2 daemon), and of `node -e 0` in the same pairs, plus
 * what each part of batonjs costs to import and what a worker with the runtime holds
 * against a bare node.
 *
 * - fleets: `baton start app.mjs --count 2` (the benchmark app, lib/app.mjs) and PM2
 *   `-i 2` of the same app (lib/pm2.mjs installs PM2 outside the repository), both idle;
 * - pairs: `--pairs` (15) rounds of `baton status bench`, `pm2 ping` and `node -e 0`, each
 *   a fresh process timed from spawn to exit, the order alternating between rounds; the
 *   ratio of each round's baton (and node) time to its pm2 time, and their medians;
 * - imports: `--imports` (9) fresh processes per module, each timing one `import()` and
 *   reading its RSS afterwards: the native addon (loaded), the CLI, the whole API
 *   (`batonjs`), the worker runtime (`batonjs/worker`), against a bare node's RSS.
 *
 * Usage: node bench/cli-startup.mjs [--pairs 15] [--imports 9] [--other-cli OTHER/bin/baton.js
 *        --other-label 'commit abc1234'] (another build's CLI, e.g. an older commit's, timed
 *        in the same rounds)
 * Writes bench/results/cli-startup.json and prints a markdown table.
 */
import { execFileSync } from 'node:child_process'
import path from 'node:path'

import { ROOT, writeResult } from './lib/paths.mjs'
import { freePort, installCleanup, run, runMain, tempDir } from './lib/processes.mjs'
import { args } from './lib/args.mjs'
import { writeBenchApp } from './lib/app.mjs'
import { fmt, median, stats } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'
import { startCliFleet } from './lib/fleet.mjs'
import { ensurePm2, PM2_VERSION, startPm2Fleet } from './lib/pm2.mjs'

const opt = args()
const PAIRS = Number(opt.pairs ?? 15)
const IMPORTS = Number(opt.imports ?? 9)
/** Another build's bin/baton.js (e.g. a checkout of an older commit), timed in the same rounds. */
const OTHER_CLI = typeof opt['other-cli'] === 'string' ? path.resolve(opt['other-cli']) : undefined
/** How the results name that build (not its path, which is one machine's). */
const OTHER_LABEL = typeof opt['other-label'] === 'string' ? opt['other-label'] : 'another build'

/** Modules whose import is measured: label -> specifier relative to the repo root ('' = nothing). */
const MODULES = [
  ['bare node', ''],
  ['node:http (what an HTTP app loads anyway)', 'node:http'],
  ['native addon (loaded)', './dist/native.js'],
  ['CLI (dist/cli/main.js)', './dist/cli/main.js'],
  ['whole API (batonjs)', './dist/index.js'],
  ['worker runtime (batonjs/worker)', './dist/worker/worker.js'],
]

/** One fresh node importing `spec`: { ms: the import, rssMiB: RSS after it }. */
function importCost(spec) {
  const code = `const t = performance.now();
if (${JSON.stringify(spec)}) { const m = await import(${JSON.stringify(spec)}); if (typeof m.native === 'function') m.native() }
const ms = performance.now() - t;
console.log(JSON.stringify({ ms, rssMiB: process.memoryUsage().rss / 1048576 }))`
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' })
  return JSON.parse(out)
}

async function main() {
  installCleanup()
  const pm2 = await ensurePm2({ log: (m) => console.error(m) })
  const dir = tempDir('baton-bench-startup-')
  const batonApp = writeBenchApp(path.join(dir, 'baton'), 'v1')
  const pm2App = writeBenchApp(path.join(dir, 'pm2'), 'v1', { flavor: 'close' })
  const fleet = await startCliFleet({ script: batonApp, count: 2, port: await freePort(), name: 'bench' })
  const pm2Fleet = await startPm2Fleet({ pm2, script: pm2App, count: 2, port: await freePort(), name: 'bench' })
  console.error(`fleets up: baton ${fleet.master.pid}, pm2 in ${pm2Fleet.home}; ${PAIRS} pairs`)

  const timed = {
    baton: async () => {
      const r = await fleet.cli(['status', 'bench'])
      if (r.code !== 0) throw new Error(`baton status failed: ${r.stderr}`)
      return r.ms
    },
    pm2: async () => {
      const r = await pm2Fleet.cli(['ping'])
      if (r.code !== 0) throw new Error(`pm2 ping failed: ${r.stderr}`)
      return r.ms
    },
    node: async () => (await run(process.execPath, ['-e', '0'])).ms,
  }
  if (OTHER_CLI !== undefined) {
    timed.other = async () => {
      const r = await run(process.execPath, [OTHER_CLI, 'status', 'bench'], {
        env: { ...process.env, BATON_RUNTIME_DIR: fleet.runtimeDir },
      })
      if (r.code !== 0) throw new Error(`${OTHER_CLI} status failed: ${r.stderr}`)
      return r.ms
    }
  }
  // One of each first: page cache, PM2's first connection.
  for (const f of Object.values(timed)) await f()
  const rounds = []
  for (let i = 0; i < PAIRS; i++) {
    const order = i % 2 === 0 ? ['baton', 'pm2', 'node', 'other'] : ['pm2', 'other', 'baton', 'node']
    const r = {}
    for (const k of order) if (timed[k]) r[k] = await timed[k]()
    rounds.push({
      ...r,
      batonRatio: r.baton / r.pm2,
      nodeRatio: r.node / r.pm2,
      ...(r.other === undefined ? {} : { otherRatio: r.other / r.pm2 }),
    })
  }
  await fleet.dispose()
  await pm2Fleet.dispose()

  const imports = []
  for (const [label, spec] of MODULES) {
    const runs = Array.from({ length: IMPORTS }, () => importCost(spec))
    imports.push({
      label,
      spec,
      ms: stats(runs.map((x) => x.ms)),
      rssMiB: stats(runs.map((x) => x.rssMiB)),
    })
  }
  const bare = imports[0].rssMiB.median

  const result = {
    machine: machine(),
    commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim(),
    pm2: PM2_VERSION,
    pairs: PAIRS,
    rounds,
    median: {
      batonMs: median(rounds.map((r) => r.baton)),
      pm2Ms: median(rounds.map((r) => r.pm2)),
      nodeMs: median(rounds.map((r) => r.node)),
      batonRatio: median(rounds.map((r) => r.batonRatio)),
      nodeRatio: median(rounds.map((r) => r.nodeRatio)),
      ...(OTHER_CLI === undefined
        ? {}
        : { otherMs: median(rounds.map((r) => r.other)), otherRatio: median(rounds.map((r) => r.otherRatio)) }),
    },
    other: OTHER_CLI === undefined ? null : OTHER_LABEL,
    imports,
  }
  const file = writeResult('cli-startup.json', result)
  const m = result.median
  console.log(`\n| command | median ms | median ratio to \`pm2 ping\` |`)
  console.log('| --- | --- | --- |')
  console.log(`| \`baton status\` | ${fmt(m.batonMs, 1)} | ${fmt(m.batonRatio, 2)} |`)
  console.log(`| \`pm2 ping\` | ${fmt(m.pm2Ms, 1)} | 1 |`)
  console.log(`| \`node -e 0\` | ${fmt(m.nodeMs, 1)} | ${fmt(m.nodeRatio, 2)} |`)
  if (OTHER_CLI !== undefined)
    console.log(`| \`baton status\` of ${OTHER_LABEL} | ${fmt(m.otherMs, 1)} | ${fmt(m.otherRatio, 2)} |`)
  console.log(`\n| import | median ms | RSS after, MiB | RSS over bare node |`)
  console.log('| --- | --- | --- | --- |')
  for (const x of imports) {
    console.log(
      `| ${x.label} | ${x.spec ? fmt(x.ms.median, 1) : '–'} | ${fmt(x.rssMiB.median, 1)} | ${x.spec ? `+${fmt(x.rssMiB.median - bare, 1)}` : '–'} |`,
    )
  }
  console.log(`\n${PAIRS} pairs, commit ${result.commit}, ${result.machine.node}, ${file}`)
  return 0
}

runMain('cli-startup', main)
