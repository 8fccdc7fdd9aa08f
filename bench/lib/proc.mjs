/**
 * What /proc says about a process (Linux): its children, open fds and memory. The soak
 * watches the master with it. (The tests have the same readers in TypeScript,
 * `__test__/helpers/proc.ts`.)
 */
import { readdirSync, readFileSync } from 'node:fs'

/** { pid, state, ppid } from /proc/<pid>/stat, or null when the process is gone. */
export function procStat(pid) {
  let text
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { pid, state: rest[0] ?? '?', ppid: Number(rest[1]) }
}

/** Every process whose parent is `pid` (zombies included). */
export function childrenOf(pid) {
  const out = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const s = procStat(Number(entry))
    if (s !== null && s.ppid === pid) out.push(s)
  }
  return out
}

/** Open fds of `pid`. */
export function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** VmRSS of `pid` in bytes. */
export function rssBytes(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return line === undefined ? 0 : Number(line.replace(/\D+/g, '')) * 1024
}
