/**
 * Connection spread: established connections on 127.0.0.1:port per server-side pid (ss).
 */
import { execFileSync } from 'node:child_process'

/**
 * Server-side established connections on 127.0.0.1:port, one entry per connection: the
 * owning pid as a string, or null for a connection no process holds yet (still in a
 * listen queue). With `clientPid`, only the connections whose client end that process
 * holds (e.g. wrk's, not a probe's). null without ss.
 */
function establishedOwners(port, clientPid = null) {
  let out
  try {
    out = execFileSync('ss', ['-tnpH', 'state', 'established', `( sport = :${port} or dport = :${port} )`], {
      encoding: 'utf8',
    })
  } catch {
    return null
  }
  const server = []
  const clientOf = new Map() // client's local port -> client pid
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4) continue
    const local = Number(f[2].slice(f[2].lastIndexOf(':') + 1))
    const peer = Number(f[3].slice(f[3].lastIndexOf(':') + 1))
    const pid = /pid=(\d+)/.exec(line)?.[1] ?? null
    if (local === port) server.push({ peer, pid })
    else if (peer === port) clientOf.set(local, pid)
  }
  const mine = clientPid === null ? server : server.filter((c) => clientOf.get(c.peer) === String(clientPid))
  return mine.map((c) => c.pid)
}

/** `{ pid: count }` of established connections on the port, from `ss -tnp`; null without ss. */
export function connectionsPerPid(port) {
  const owners = establishedOwners(port)
  if (!owners) return null
  const per = {}
  for (const pid of owners) if (pid) per[pid] = (per[pid] ?? 0) + 1
  return per
}

/** Connections per worker, in the order of `pids` ("41+23"); null without ss. */
export function spreadOf(port, pids) {
  const per = connectionsPerPid(port)
  return per ? pids.map((p) => per[p] ?? 0) : null
}

/**
 * How the established connections on the port are split over the worker slots:
 * `workers` = [{ slot, pid }] (pid null for an empty slot). Returns { slots: [{ slot, pid,
 * conns }] (conns null for an empty slot), other: connections held by pids that are not
 * current workers (old workers still draining), queued: connections no process holds
 * (accepted by the kernel, waiting in a listen queue) }; null without ss. `clientPid`:
 * count only the connections of that client process (the load generator).
 */
export function connectionSplit(port, workers, { clientPid = null } = {}) {
  const owners = establishedOwners(port, clientPid)
  if (!owners) return null
  const per = {}
  let queued = 0
  for (const pid of owners) {
    if (pid) per[pid] = (per[pid] ?? 0) + 1
    else queued += 1
  }
  const mine = new Set(workers.filter((w) => w.pid).map((w) => String(w.pid)))
  let other = 0
  for (const [pid, n] of Object.entries(per)) if (!mine.has(pid)) other += n
  const slots = workers.map((w) => ({
    slot: w.slot,
    pid: w.pid ?? null,
    conns: w.pid ? (per[String(w.pid)] ?? 0) : null,
  }))
  return { slots, other, queued }
}

/** "32+18+–+2 (+3 old, 2 queued)" of a {@link connectionSplit} result (– = empty slot). */
export function splitText(split) {
  if (!split) return '?'
  const base = split.slots.map((s) => (s.conns === null ? '–' : String(s.conns))).join('+')
  const extra = [split.other ? `+${split.other} old` : '', split.queued ? `${split.queued} queued` : '']
    .filter(Boolean)
    .join(', ')
  return extra ? `${base} (${extra})` : base
}
