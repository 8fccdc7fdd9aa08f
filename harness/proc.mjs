/**
 * What /proc says about a process (Linux): its children, open fds, memory, CPU time and
 * zombies. One implementation for the tests (`__test__/`: the fault, fuzz and soak specs
 * check that the master keeps no leftovers) and the benchmarks (`bench/`: the soak, the
 * footprint and scaling figures). Plain ESM with JSDoc types: `__test__/tsconfig.json`
 * type-checks it (`checkJs`), Node runs it as is.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/**
 * One line of /proc/<pid>/stat, the fields the tests and benchmarks need.
 * @typedef {object} ProcStat
 * @property {number} pid
 * @property {string} state Single-letter state: R, S, D, T (stopped), Z (zombie), ...
 * @property {number} ppid
 */

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on Linux). */
export const CLK_TCK = 100

/**
 * The fields after the command name of /proc/<pid>/stat, or null when the process is gone.
 * The command name (field 2) may hold spaces and parentheses: split after the last ')'.
 * @param {number} pid
 * @returns {string[] | null}
 */
function statFields(pid) {
  // After "(comm)": state=0, ppid=1, ..., utime=11, stime=12, cutime=13, cstime=14.
  let text
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ')
}

/**
 * Parse /proc/<pid>/stat; null when the process is gone.
 * @param {number} pid
 * @returns {ProcStat | null}
 */
export function procStat(pid) {
  const f = statFields(pid)
  if (f === null) return null
  return { pid, state: f[0] ?? '?', ppid: Number(f[1]) }
}

/**
 * CPU time of `pid` in clock ticks (utime + stime; with `withChildren`, plus the time of
 * the children it has reaped); null when the process is gone.
 * @param {number} pid
 * @param {boolean} [withChildren]
 * @returns {number | null}
 */
export function cpuTicks(pid, withChildren = false) {
  const f = statFields(pid)
  if (f === null) return null
  const own = Number(f[11]) + Number(f[12])
  return withChildren ? own + Number(f[13]) + Number(f[14]) : own
}

/**
 * {@link cpuTicks} in seconds.
 * @param {number} pid
 * @param {boolean} [withChildren]
 * @returns {number | null}
 */
export function cpuSeconds(pid, withChildren = false) {
  const t = cpuTicks(pid, withChildren)
  return t === null ? null : t / CLK_TCK
}

/**
 * Every process whose parent is `pid` (zombies included), by scanning /proc.
 * @param {number} pid
 * @returns {ProcStat[]}
 */
export function childrenOf(pid) {
  /** @type {ProcStat[]} */
  const out = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const s = procStat(Number(entry))
    if (s !== null && s.ppid === pid) out.push(s)
  }
  return out
}

/**
 * Children of `pid` in state Z (exited, not reaped).
 * @param {number} pid
 * @returns {number}
 */
export function zombieChildren(pid) {
  return childrenOf(pid).filter((c) => c.state === 'Z').length
}

/**
 * Number of open fds of `pid`.
 * @param {number} pid
 * @returns {number}
 */
export function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length
}

/**
 * fd number -> link target (`socket:[123]`, `pipe:[45]`, a path...) of `pid`.
 * @param {number} pid
 * @returns {Map<number, string>}
 */
export function fdTargets(pid) {
  /** @type {Map<number, string>} */
  const out = new Map()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`))
    } catch {
      // closed while we looked
    }
  }
  return out
}

/**
 * Resident memory of `pid` in bytes (VmRSS of /proc/<pid>/status).
 * @param {number} pid
 * @returns {number}
 */
export function rssBytes(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return line === undefined ? 0 : Number(line.replace(/\D+/g, '')) * 1024
}

/**
 * A snapshot of a master's resources, for before/after comparisons and logs.
 * @typedef {object} Resources
 * @property {number} rssBytes
 * @property {number} fds
 * @property {number} zombies
 * @property {number} children
 */

/**
 * RSS, fd count, zombie children and live children of `pid`.
 * @param {number} pid
 * @returns {Resources}
 */
export function resources(pid) {
  const children = childrenOf(pid)
  return {
    rssBytes: rssBytes(pid),
    fds: fdCount(pid),
    zombies: children.filter((c) => c.state === 'Z').length,
    children: children.filter((c) => c.state !== 'Z').length,
  }
}

/**
 * `rss 52.1 MiB, 31 fds, 0 zombies, 4 children`, for log lines.
 * @param {Resources} r
 * @returns {string}
 */
export function describeResources(r) {
  return `rss ${(r.rssBytes / 1048576).toFixed(1)} MiB, ${r.fds} fds, ${r.zombies} zombies, ${r.children} children`
}

/**
 * The uid and primary gid of the user "nobody", from /etc/passwd (tests run as root).
 * @returns {{ uid: number, gid: number }}
 */
export function nobody() {
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
 * @param {string} name
 * @param {string} value
 * @returns {number[]}
 */
export function processesWithEnv(name, value) {
  const wanted = `${name}=${value}`
  /** @type {number[]} */
  const out = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let environ
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
