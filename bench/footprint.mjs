#!/usr/bin/env node
/**
 * The master's memory footprint: the RSS of the master process of
 * `baton start app.mjs --count 2` (default options otherwise), once its workers are ready
 * and it has idled for `--settle` ms, against a bare idle node of the same binary
 * (`node -e 'setInterval(() => {}, 1e9)'`) measured the same way, `--runs` alternating
 * rounds; the median ratio. Also each side's RssAnon / RssFile and threads, to show where
 * the difference lies, and the floor of any master: an idle ES module (as bin/baton.js)
 * that loaded the native addon.
 *
 * Usage: node bench/footprint.mjs [--runs 7] [--settle 10000] [--count 2]
 * Writes bench/results/footprint.json and prints a markdown table.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import { ROOT, writeResult } from './lib/paths.mjs'
import { exited, freePort, installCleanup, runMain, sleep, spawnTracked, tempDir } from './lib/processes.mjs'
import { args } from './lib/args.mjs'
import { writeBenchApp } from './lib/app.mjs'
import { fmt, median, stats } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'
import { startCliFleet } from './lib/fleet.mjs'

const opt = args()
const RUNS = Number(opt.runs ?? 7)
const SETTLE_MS = Number(opt.settle ?? 10_000)
const COUNT = Number(opt.count ?? 2)

/** VmRSS, RssAnon, RssFile (MiB) and Threads of `pid`, from /proc/<pid>/status. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN)
  return {
    rssMiB: field('VmRSS') / 1024,
    anonMiB: field('RssAnon') / 1024,
    fileMiB: field('RssFile') / 1024,
    threads: field('Threads'),
  }
}

async function measureMaster(script) {
  const fleet = await startCliFleet({ script, count: COUNT, port: await freePort(), name: 'footprint' })
  try {
    await sleep(SETTLE_MS)
    return memory(fleet.master.pid)
  } finally {
    await fleet.dispose()
  }
}

/** An idle node running `args` (bare: `-e`; floor: an ES module that loads the addon). */
async function measureIdle(args) {
  const child = spawnTracked(process.execPath, args, { stdio: 'ignore' })
  try {
    await sleep(SETTLE_MS)
    return memory(child.pid)
  } finally {
    child.kill('SIGKILL')
    await exited(child)
  }
}

async function main() {
  installCleanup()
  const dir = tempDir('baton-bench-footprint-')
  const script = writeBenchApp(path.join(dir, 'app'), 'v1', {})
  // The floor of any master: an ES module entry (as bin/baton.js) with the addon loaded.
  const floor = path.join(dir, 'floor.mjs')
  writeFileSync(
    floor,
    `import { native } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'native.js')).href)}\nnative()\nsetInterval(() => {}, 1e9)\n`,
  )
  const measure = {
    master: () => measureMaster(script),
    bare: () => measureIdle(['-e', 'setInterval(() => {}, 1e9)']),
    floor: () => measureIdle([floor]),
  }
  const runs = []
  for (let i = 0; i < RUNS; i++) {
    const r = {}
    for (const k of i % 2 === 0 ? ['master', 'bare', 'floor'] : ['bare', 'floor', 'master']) r[k] = await measure[k]()
    r.ratio = r.master.rssMiB / r.bare.rssMiB
    runs.push(r)
    console.error(
      `run ${i + 1}/${RUNS}: master ${fmt(r.master.rssMiB, 1)} MiB, bare ${fmt(r.bare.rssMiB, 1)} MiB, ${fmt(r.ratio, 3)}x`,
    )
  }
  const side = (k) => ({
    rssMiB: stats(runs.map((r) => r[k].rssMiB)),
    anonMiB: median(runs.map((r) => r[k].anonMiB)),
    fileMiB: median(runs.map((r) => r[k].fileMiB)),
    threads: median(runs.map((r) => r[k].threads)),
  })
  const result = {
    machine: machine(),
    commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim(),
    settings: { runs: RUNS, settleMs: SETTLE_MS, count: COUNT },
    runs,
    master: side('master'),
    bare: side('bare'),
    floor: side('floor'),
    ratio: median(runs.map((r) => r.ratio)),
    floorRatio: median(runs.map((r) => r.floor.rssMiB / r.bare.rssMiB)),
  }
  const file = writeResult('footprint.json', result)
  console.log('\n| process | RSS MiB (min / median / max) | RssAnon | RssFile | threads |')
  console.log('| --- | --- | --- | --- | --- |')
  for (const [label, s] of [
    [`baton master, ${COUNT} workers`, result.master],
    ['bare idle node (`node -e`)', result.bare],
    ['idle ES module with the addon loaded', result.floor],
  ]) {
    console.log(
      `| ${label} | ${fmt(s.rssMiB.min, 1)} / ${fmt(s.rssMiB.median, 1)} / ${fmt(s.rssMiB.max, 1)} | ${fmt(s.anonMiB, 1)} | ${fmt(s.fileMiB, 1)} | ${s.threads} |`,
    )
  }
  console.log(
    `\nmedian ratio ${fmt(result.ratio, 3)}x (addon floor ${fmt(result.floorRatio, 3)}x) over ${RUNS} rounds; commit ${result.commit}; ${file}`,
  )
  return 0
}

runMain('footprint', main)
