/**
 * What /proc says about a process (Linux): its children, open fds, memory, and zombies.
 * Used by the fault, fuzz and soak tests to check that the master keeps no leftovers.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/** One line of /proc/<pid>/stat, the fields the tests need. */
export interface ProcStat {
  pid: number
  /** Single-letter state: R, S, D, T (stopped), Z (zombie), ... */
  state: string
  ppid: number
}

/** Parse /proc/<pid>/stat; null when the process is gone. */
export function procStat(pid: number): ProcStat | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { pid, state: rest[0] ?? '?', ppid: Number(rest[1]) }
}

/** Every process whose parent is `pid` (zombies included), by scanning /proc. */
export function childrenOf(pid: number): ProcStat[] {
  const out: ProcStat[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const s = procStat(Number(entry))
    if (s !== null && s.ppid === pid) out.push(s)
  }
  return out
}

/** Children of `pid` in state Z (exited, not reaped). */
export function zombieChildren(pid: number): number {
  return childrenOf(pid).filter((c) => c.state === 'Z').length
}

/** Number of open fds of `pid`. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** fd number -> link target (`socket:[123]`, `pipe:[45]`, a path...) of `pid`. */
export function fdTargets(pid: number): Map<number, string> {
  const out = new Map<number, string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`))
    } catch {
      // closed while we looked
    }
  }
  return out
}

/** Resident memory of `pid` in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return line === undefined ? 0 : Number(line.replace(/\D+/g, '')) * 1024
}

/** A snapshot of a master's resources, for before/after comparisons and logs. */
export interface Resources {
  rssBytes: number
  fds: number
  zombies: number
  children: number
}

/** RSS, fd count, zombie children and live children of `pid`. */
export function resources(pid: number): Resources {
  const children = childrenOf(pid)
  return {
    rssBytes: rssBytes(pid),
    fds: fdCount(pid),
    zombies: children.filter((c) => c.state === 'Z').length,
    children: children.filter((c) => c.state !== 'Z').length,
  }
}

/** `rss 52.1 MiB, 31 fds, 0 zombies, 4 children`, for t.log lines. */
export function describeResources(r: Resources): string {
  return `rss ${(r.rssBytes / 1048576).toFixed(1)} MiB, ${r.fds} fds, ${r.zombies} zombies, ${r.children} children`
}

/** The uid and primary gid of the user "nobody", from /etc/passwd (tests run as root). */
export function nobody(): { uid: number; gid: number } {
  const entry = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nobody:'))
  if (!entry) throw new Error('this test needs the user "nobody" in /etc/passwd')
  const [, , uid, gid] = entry.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}

/**
 * Every live process whose environment has `name=value` (by scanning /proc/<pid>/environ):
 * with a test's own BATON_RUNTIME_DIR, exactly the masters and workers of its fleet.
 */
export function processesWithEnv(name: string, value: string): number[] {
  const wanted = `${name}=${value}`
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let environ: string
    try {
      environ = readFileSync(`/proc/${entry}/environ`, 'latin1')
    } catch {
      continue // gone, or not ours to read
    }
    const state = procStat(Number(entry))?.state
    if (state !== undefined && state !== 'Z' && environ.split('\0').includes(wanted)) out.push(Number(entry))
  }
  return out.sort((a, b) => a - b)
}

/** CPU time (utime + stime, fields 14 and 15 of /proc/<pid>/stat) in seconds; null when the process is gone. */
export function cpuSeconds(pid: number): number | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // rest[0] is field 3 (state): utime and stime are rest[11] and rest[12], in clock ticks.
  return (Number(rest[11]) + Number(rest[12])) / clockTicks()
}

let hz: number | undefined
/** Clock ticks per second (`getconf CLK_TCK`). */
function clockTicks(): number {
  hz ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  return hz
}
