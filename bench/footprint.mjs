#!/usr/bin/env node
/**
 * The master's memory footprint: the RSS of the master process of
 * `baton start app.mjs --count 2` (default options otherwise), once its workers are ready
 * and it has idled for `--settle` ms, against a bare idle node of the same binary
 * (`node -e 'setInterval(() => {}, 1e9)'`) measured the same way, `--runs` alternating
 * rounds; the median ratio. Also each side's RssAnon / RssFile and threads, and its RSS by
 * mapping (from /proc/<pid>/smaps: the node binary's pages, the addon's, anonymous memory
 * and the rest), to show where the difference lies in bytes, which the load of a shared
 * machine does not change; and the floor of any master: an idle ES module (as
 * bin/baton.js) that loaded the native addon.
 *
 * Usage: node bench/footprint.mjs [--runs 10] [--settle 10000] [--count 2]
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
const RUNS = Number(opt.runs ?? 10)
const SETTLE_MS = Number(opt.settle ?? 10_000)
const COUNT = Number(opt.count ?? 2)

/**
 * RSS (MiB) of `pid` by mapping, from /proc/<pid>/smaps: `node` (the node binary's
 * pages), `addon` (baton's native binary), `anon` (the heap, V8's heap, thread stacks and
 * malloc arenas) and `other` (shared libraries, vdso...).
 */
function byMapping(pid) {
  const out = { node: 0, addon: 0, anon: 0, other: 0 }
  let kind = 'other'
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (m) {
      const name = m[1]
      if (name === process.execPath || name.endsWith('/bin/node')) kind = 'node'
      else if (name.endsWith('.node')) kind = 'addon'
      else if (name === '' || name === '[heap]' || name === '[stack]') kind = 'anon'
      else kind = 'other'
    } else if (line.startsWith('Rss:')) {
      out[kind] += Number(line.split(/\s+/)[1]) / 1024
    }
  }
  return out
}

/** VmRSS, RssAnon, RssFile (MiB), Threads and RSS by mapping of `pid`, from /proc. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN)
  return {
    rssMiB: field('VmRSS') / 1024,
    anonMiB: field('RssAnon') / 1024,
    fileMiB: field('RssFile') / 1024,
    threads: field('Threads'),
    mapping: byMapping(pid),
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
    mappingMiB: Object.fromEntries(
      ['node', 'addon', 'anon', 'other'].map((m) => [m, median(runs.map((r) => r[k].mapping[m]))]),
    ),
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
  console.log(
    '\n| process | RSS MiB (min / median / max) | RssAnon | RssFile | threads | node binary | addon | anonymous | other |',
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const [label, s] of [
    [`baton master, ${COUNT} workers`, result.master],
    ['bare idle node (`node -e`)', result.bare],
    ['idle ES module with the addon loaded', result.floor],
  ]) {
    console.log(
      `| ${label} | ${fmt(s.rssMiB.min, 1)} / ${fmt(s.rssMiB.median, 1)} / ${fmt(s.rssMiB.max, 1)} | ${fmt(s.anonMiB, 1)} | ${fmt(s.fileMiB, 1)} | ${s.threads} | ` +
        ['node', 'addon', 'anon', 'other'].map((m) => fmt(s.mappingMiB[m], 2)).join(' | ') +
        ' |',
    )
  }
  console.log(
    `\nmedian ratio ${fmt(result.ratio, 3)}x (addon floor ${fmt(result.floorRatio, 3)}x) over ${RUNS} rounds; commit ${result.commit}; ${file}`,
  )
  return 0
}

runMain('footprint', main)
