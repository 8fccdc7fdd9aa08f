/** Human-readable rendering of status for the CLI. */
import type { GroupStatus, OutputLine, Status } from './types.js'

/** How long a worker has been up, as `baton status` and `baton monit` show it (`-` for an empty slot). */
export function uptime(startedAt: string | null, now: number): string {
  if (!startedAt) return '-'
  const s = Math.max(0, Math.floor((now - Date.parse(startedAt)) / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`
}

function memory(bytes: number | null): string {
  if (bytes === null) return '-'
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

function cpu(percent: number | null | undefined): string {
  return percent === null || percent === undefined ? '-' : `${percent.toFixed(1)}%`
}

function listenText(g: GroupStatus): string {
  const sockets = g.sockets ?? []
  return g.listen
    .map((address, i) => {
      const s = sockets[i]
      if (s?.from !== 'inherited') return address
      return `${address} (from systemd, fd ${s.fd}${s.fdName ? ` "${s.fdName}"` : ''})`
    })
    .join(', ')
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

/**
 * `text` with every control character made visible, so that bytes a worker wrote cannot
 * drive the admin's terminal (set its title, clear it, move the cursor, answer back):
 * C0 controls and DEL as `\xHH` (ESC is `\x1b`, BEL `\x07`, CR `\x0d`), C1 controls
 * (U+0080 to U+009F; U+009B is a one-character CSI) as `\uHHHH`. Tab and newline are
 * kept (a stderr tail spans lines). Used for every worker-written text the CLI prints:
 * `baton logs` lines, a failed start's or reload's stderr tail and error messages, the
 * master's own log lines.
 */
export function visible(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => {
    const n = c.charCodeAt(0)
    return n < 0x80 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`
  })
}

/** One line of `baton logs`: `web#0 out | text` (`err` for stderr), controls made visible. */
export function formatOutputLine(line: OutputLine): string {
  return `${line.group}#${line.id} ${line.stream === 'stderr' ? 'err' : 'out'} | ${visible(line.text)}`
}

/** A table of groups and workers, with a header line for the master. */
export function formatStatus(status: Status, now = Date.now()): string {
  const header = [
    `baton "${status.name}"  master pid ${status.pid}  generation ${status.generation}` +
      `  cpu ${cpu(status.cpu)}  memory ${memory(status.rssBytes ?? null)}` +
      (status.reloading ? '  RELOADING' : '') +
      (status.stopping ? '  STOPPING' : ''),
  ]
  for (const g of status.groups) {
    header.push(
      `  group ${g.name}: ${g.count} worker${g.count === 1 ? '' : 's'}` +
        (g.listen.length ? ` on ${listenText(g)}` : ' (no listen address)') +
        (g.reloadable ? '' : ' (not reloadable)') +
        (g.readiness === 'message'
          ? '  ready: on its own message'
          : g.readiness === 'uptime'
            ? `  ready: once up ${g.minUptimeMs ?? 0} ms`
            : '') +
        (g.logs && g.logs.stdout !== 'inherit' ? `  stdout: ${g.logs.stdout}` : '') +
        (g.logs && g.logs.stderr !== 'inherit' ? `  stderr: ${g.logs.stderr}` : ''),
    )
  }
  const rows = [['GROUP', 'ID', 'PID', 'GEN', 'STATE', 'UPTIME', 'RESTARTS', 'CPU', 'MEMORY', 'NOTE']]
  for (const w of status.workers) {
    let note = ''
    if (w.pid === null && w.restartInMs !== null) {
      note = `restarting in ${(w.restartInMs / 1000).toFixed(1)}s after: ${w.lastExit ?? 'crash'}`
    } else if (w.restarts > 0 && w.lastExit) {
      note = `last exit: ${w.lastExit}`
    } else if (w.lastReplaced) {
      note = `replaced: ${w.lastReplaced}`
    }
    rows.push([
      w.group,
      String(w.id),
      w.pid === null ? '-' : String(w.pid),
      String(w.generation),
      w.state,
      uptime(w.startedAt, now),
      String(w.restarts),
      cpu(w.cpu),
      memory(w.rssBytes),
      note,
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const table = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  )
  const footer: string[] = []
  if (status.lastReload) footer.push(`last reload: ${status.lastReload.message}`)
  for (const g of status.groups) {
    if (g.logs?.droppedBytes) {
      footer.push(
        `output dropped: ${size(g.logs.droppedBytes)} of group ${g.name} (its destination did not keep up; see baton logs)`,
      )
    }
  }
  if (status.logs?.failedBytes)
    footer.push(`output lost: ${size(status.logs.failedBytes)} could not be written (closed pipe or full disk)`)
  return [...header, '', ...table, ...(footer.length ? ['', ...footer] : [])].join('\n')
}

/** The options that shape a log line (of the fleet or of one group). */
export interface LogLineOptions {
  /** Start each line with the time. */
  logTime?: boolean | null
  /** `json`: one object per line. */
  logFormat?: string | null
}

/** How the master writes its own log lines: the fleet's `logTime` / `logFormat`. */
export interface MasterLineFormat {
  /** Start each line with the time (ISO 8601, UTC, milliseconds). */
  time: boolean
  /** One JSON object per line (`stream: "master"`). */
  json: boolean
}

/**
 * The fleet's own `key`, or, when the fleet sets none, the value every group sets alike
 * (a fleet started from `baton start` flags is one group): what the master's own log
 * follows.
 */
export function fleetOrCommon<K extends string, V>(
  fleet: { readonly [k in K]?: V | null },
  groups: readonly { readonly [k in K]?: V | null }[],
  key: K,
): V | undefined {
  const own = fleet[key]
  if (own !== undefined && own !== null) return own
  const values = new Set(groups.map((g) => g[key]))
  const [only] = values
  return values.size === 1 && only !== null ? only : undefined
}

/** The master's own line format: the fleet's options, or what every group sets alike ({@link fleetOrCommon}). */
export function masterLineFormat(fleet: LogLineOptions, groups: LogLineOptions[]): MasterLineFormat {
  const time = fleetOrCommon(fleet, groups, 'logTime') ?? false
  const format = fleetOrCommon(fleet, groups, 'logFormat') ?? 'text'
  return { time: time === true, json: format === 'json' }
}

/**
 * One line of the master's own log as `format` says: `[<time> ]<tag> <line>`, or a JSON
 * object with the keys of the workers' JSON lines (`group` and `id` null, `pid` the master's,
 * `stream` `master`).
 */
export function masterLine(
  format: MasterLineFormat,
  fleet: string,
  tag: string,
  line: string,
  now = new Date(),
): string {
  if (format.json)
    return JSON.stringify({
      time: now.toISOString(),
      fleet,
      group: null,
      id: null,
      pid: process.pid,
      stream: 'master',
      msg: line,
    })
  return `${format.time ? `${now.toISOString()} ` : ''}${tag} ${line}`
}
