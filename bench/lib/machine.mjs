/**
 * Machine facts and CPU accounting: the machine a run happened on, how busy it is, and how
 * much CPU time processes outside the benchmark used during a window (contamination check).
 */
import { readFileSync } from 'node:fs'
import os from 'node:os'

import { CLK_TCK, cpuTicks } from '../../harness/proc.mjs'
import { sleep } from './processes.mjs'
import { wrkVersion } from './wrk.mjs'

function cpuTimes() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + (f[4] ?? 0)
  const total = f.reduce((a, b) => a + b, 0)
  return { idle, total }
}
/** Machine CPU busy % over `ms` (Linux; null elsewhere). */
export async function cpuBusy(ms = 1000) {
  try {
    const a = cpuTimes()
    await sleep(ms)
    const b = cpuTimes()
    const total = b.total - a.total
    return total > 0 ? Math.round((100 * (total - (b.idle - a.idle))) / total) : null
  } catch {
    return null
  }
}
/** Wait (up to `maxWaitMs`) until the machine is quiet; returns the last busy %. */
export async function waitQuiet(limit = 25, maxWaitMs = 10_000) {
  const t0 = Date.now()
  let busy = await cpuBusy(500)
  while (busy !== null && busy > limit && Date.now() - t0 < maxWaitMs) busy = await cpuBusy(500)
  return busy
}

/** Node, CPUs, OS, wrk and load average of this machine, with the date. */
export function machine() {
  const cpus = os.cpus()
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    os: `${os.type()} ${os.release()}`,
    wrk: wrkVersion(),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  }
}

function machineBusyTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal: user + nice + system only, since
  // (soft)irq time (loopback networking) is not charged to any process.
  return f[0] + f[1] + f[2]
}

/**
 * Snapshot for {@link foreignCpuSeconds}. `roots`: pids whose own + reaped children's time
 * is ours (this harness, a master); `leaves()`: live pids whose own time is ours (workers).
 */
export function cpuSnapshot(roots, leaves) {
  try {
    const ours = new Map()
    for (const pid of roots) ours.set(`r${pid}`, cpuTicks(pid, true) ?? 0)
    for (const pid of leaves) ours.set(`l${pid}`, cpuTicks(pid, false) ?? 0)
    return { busy: machineBusyTicks(), ours, t: performance.now() }
  } catch {
    return null
  }
}

/** CPU-seconds the rest of the machine used between two snapshots (null off Linux). */
export function foreignCpuSeconds(a, b) {
  if (!a || !b) return null
  let ours = 0
  for (const [k, v] of b.ours) ours += v - (a.ours.get(k) ?? 0)
  // a leaf that exited in between moved into its root's children time: its start value
  // is then counted in the root's delta already, so subtract it once.
  for (const [k, v] of a.ours) if (k.startsWith('l') && !b.ours.has(k)) ours -= v
  return Math.max(0, Math.round(((b.busy - a.busy - ours) / CLK_TCK) * 100) / 100)
}
