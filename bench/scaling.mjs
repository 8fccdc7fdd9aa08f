#!/usr/bin/env node
/**
 * How the master's cost grows with the fleet. For each worker count (`--counts`,
 * default 2,8,32,64): `baton start app.mjs --count N --parallel max(1, N/8)
 * --ready-timeout 120000` (default options otherwise; the benchmark app, lib/app.mjs),
 * and once every worker is ready and the master has idled `--settle` ms:
 *
 * - the master's RSS and open fds (/proc, harness/proc.mjs);
 * - `baton status` latency: the wall time of `--status` (7) runs of the CLI, median, and
 *   of `node -e 0` in the same rounds (what a process start costs on this machine);
 * - one `baton reload`: its wall time (the CLI's), the core's `durationMs`, and the
 *   master's own CPU seconds over it (utime + stime of the master process, before/after;
 *   its workers' time is not counted).
 *
 * Usage: node bench/scaling.mjs [--counts 2,8,32,64] [--settle 3000] [--status 7] [--boot-delay 300]
 *        [--ready-timeout 120000]
 * Writes bench/results/scaling.json and prints a markdown table with per-worker figures.
 */
import { execFileSync } from 'node:child_process'
import path from 'node:path'

import { cpuSeconds, fdCount, rssBytes } from '../harness/proc.mjs'
import { ROOT, writeResult } from './lib/paths.mjs'
import { freePort, installCleanup, run, runMain, sleep, tempDir } from './lib/processes.mjs'
import { args, listOption } from './lib/args.mjs'
import { writeBenchApp } from './lib/app.mjs'
import { fmt, median } from './lib/stats.mjs'
import { machine } from './lib/machine.mjs'
import { startCliFleet } from './lib/fleet.mjs'

const opt = args()
const COUNTS = listOption(opt.counts, '2,8,32,64').map(Number)
const SETTLE_MS = Number(opt.settle ?? 3000)
const STATUS_RUNS = Number(opt.status ?? 7)
const BOOT_DELAY_MS = String(opt['boot-delay'] ?? 300)
const READY_TIMEOUT_MS = Number(opt['ready-timeout'] ?? 120_000)

async function measure(script, count) {
  const parallel = Math.max(1, Math.floor(count / 8))
  const fleet = await startCliFleet({
    script,
    count,
    port: await freePort(),
    name: 'scaling',
    env: { BOOT_DELAY_MS },
    // A long ready timeout: 64 node processes starting at once on a small shared machine
    // can take longer than the default 30 s, which is not what this measures.
    flags: ['--ready-timeout', String(READY_TIMEOUT_MS), ...(parallel > 1 ? ['--parallel', String(parallel)] : [])],
    readyTimeoutMs: READY_TIMEOUT_MS + count * 3000,
  })
  try {
    await sleep(SETTLE_MS)
    const pid = fleet.master.pid
    const rssMiB = rssBytes(pid) / 1048576
    const fds = fdCount(pid)
    const statusMs = []
    const nodeMs = []
    for (let i = 0; i < STATUS_RUNS; i++) {
      const s = await fleet.cli(['status', 'scaling'])
      if (s.code !== 0) throw new Error(`baton status failed: ${s.stderr}`)
      statusMs.push(s.ms)
      nodeMs.push((await run(process.execPath, ['-e', '0'])).ms)
    }
    const cpuBefore = cpuSeconds(pid)
    const reload = await fleet.reload()
    const cpuAfter = cpuSeconds(pid)
    if (reload.code !== 0) throw new Error(`baton reload failed (${reload.code}): ${reload.stderr}`)
    const report = await fleet.lastReport()
    return {
      count,
      parallel,
      rssMiB,
      fds,
      statusMs: median(statusMs),
      nodeMs: median(nodeMs),
      reloadCpuS: cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore,
      reloadMs: reload.ms,
      reloadCoreMs: report?.coreMs ?? null,
    }
  } finally {
    await fleet.dispose()
  }
}

async function main() {
  installCleanup()
  const script = writeBenchApp(path.join(tempDir('baton-bench-scaling-'), 'app'), 'v1')
  const rows = []
  for (const count of COUNTS) {
    console.error(`${count} workers...`)
    try {
      const row = await measure(script, count)
      console.error(`  ${JSON.stringify(row)}`)
      rows.push(row)
    } catch (e) {
      // Recorded, and the other counts still run.
      console.error(`  ${count} workers failed: ${e.message.split('\n')[0]}`)
      rows.push({ count, error: e.message.split('\n')[0] })
    }
  }
  const result = {
    machine: machine(),
    commit: execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim(),
    settings: { counts: COUNTS, settleMs: SETTLE_MS, statusRuns: STATUS_RUNS, bootDelayMs: Number(BOOT_DELAY_MS) },
    rows,
  }
  const file = writeResult('scaling.json', result)
  console.log(
    '\n| workers | parallel | master RSS MiB | fds | `baton status` ms (`node -e 0`) | reload CPU s (per worker ms) | reload wall ms (core ms) |',
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- |')
  for (const r of rows) {
    if (r.error) {
      console.log(`| ${r.count} | – | failed: ${r.error} | | | | |`)
      continue
    }
    console.log(
      `| ${r.count} | ${r.parallel} | ${fmt(r.rssMiB, 1)} | ${r.fds} | ${fmt(r.statusMs)} (${fmt(r.nodeMs)}) | ${fmt(r.reloadCpuS, 2)} (${fmt((1000 * r.reloadCpuS) / r.count, 1)}) | ${fmt(r.reloadMs)} (${fmt(r.reloadCoreMs)}) |`,
    )
  }
  console.log(`\ncommit ${result.commit}; ${file}`)
  return 0
}

runMain('scaling', main)
