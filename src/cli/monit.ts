/**
 * `baton monit [NAME]`: a live view of a running fleet, refreshed about once a second.
 *
 * On a terminal it takes the alternate screen, hides the cursor and puts stdin in raw mode
 * to read single keys: `r` reloads, `+`/`-` scale the selected group by one worker (tab,
 * the arrow keys or shift-tab select the group), `q` quits (exit 0). It shows per worker
 * its id, pid, state, generation, CPU, memory, open connections, restarts and uptime; the
 * progress of a reload or scale while it runs (from the events of the request it started,
 * else from the status: workers of the new generation, ready workers against the count);
 * a `baton upgrade` while it runs (Linux: {@link upgradeProgress}) and the master it
 * replaced; and the latest log lines (a `logs` follow request).
 * The screen is written in place (cursor home, each line cleared to its end), cut to the
 * terminal's width and height: an 80x24 terminal shows the header, up to 12 workers, the
 * latest log lines and the key line.
 *
 * Whatever way it ends (`q`, Ctrl-C, SIGTERM, SIGHUP, an error), the terminal is restored:
 * raw mode off, cursor shown, alternate screen left, so the shell's screen comes back.
 *
 * When stdout is not a terminal it prints a plain table (no escapes) every second, so
 * `baton monit NAME | head` or a log file gets readable text; a closed pipe ends it (exit 0).
 *
 * Plain ANSI escapes, not a TUI library: the view is one full-screen redraw a second plus
 * a handful of keys, which a few dozen lines do; a library (blessed, ink) would bring its
 * own terminal database or React and many dependencies for no feature used here.
 *
 * Every text that comes from the fleet (group names, log lines, messages) goes through
 * {@link visible}, so no worker can drive the terminal.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { request, type ControlAnswer } from './control-client.js'
import { CommandError } from './commands.js'
import { MAX_WORKERS } from '../defaults.js'
import { uptime, visible } from '../format.js'
import type { OutputLine, Status, WorkerStatus } from '../types.js'

/** Refresh period of the view. */
export const MONIT_INTERVAL_MS = 1000

/** Log lines kept for the view. */
const LOG_KEEP = 200

/** Escapes used (VT100/xterm, understood by every terminal baton targets). */
const ESC = {
  enterAlt: '\x1b[?1049h',
  leaveAlt: '\x1b[?1049l',
  hideCursor: '\x1b[?25l',
  showCursor: '\x1b[?25h',
  home: '\x1b[H',
  clearLine: '\x1b[K',
  clearBelow: '\x1b[J',
  inverse: '\x1b[7m',
  bold: '\x1b[1m',
  reset: '\x1b[0m',
} as const

/** A worker row with the fields other versions may add (CPU, per-master figures). */
type WorkerRow = WorkerStatus & { cpu?: number | null }
/** The status with the master's own CPU and memory, when the master reports them. */
type MonitStatus = Status & { cpu?: number | null; rssBytes?: number | null }

/** What the view shows besides the status: the action running or its outcome. */
export interface MonitActivity {
  /** One line: progress of the running action, else the last outcome. */
  line: string
  /** Whether an action started from the view is running. */
  busy: boolean
}

/** Everything {@link renderMonit} draws. */
export interface MonitView {
  status: MonitStatus | undefined
  /** Why the status is missing or stale (the master does not answer). */
  error?: string
  /** The selected group's index in `status.groups`. */
  selected: number
  activity: MonitActivity
  /** Latest log lines, already made visible. */
  logs: string[]
  /** Master pid changes seen (an upgrade), as a line. */
  upgrade?: string
  /** An upgrade running now (see {@link upgradeProgress}), as a line. */
  upgrading?: string
  now: number
}

function mem(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '-'
  const mib = bytes / 1024 / 1024
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)}G` : `${mib.toFixed(1)}M`
}

function cpu(value: number | null | undefined): string {
  return typeof value === 'number' && Number.isFinite(value) ? `${value.toFixed(1)}%` : '-'
}

/** Printable width of `s`: code points, without this module's own SGR escapes. */
function width(s: string): number {
  return [...s.replace(/\x1b\[[0-9;]*m/g, '')].length
}

/** `s` cut to `cols` printable columns (escapes kept, a reset added when cut). */
export function fit(s: string, cols: number): string {
  if (width(s) <= cols) return s
  let out = ''
  let n = 0
  for (let i = 0; i < s.length;) {
    const m = /^\x1b\[[0-9;]*m/.exec(s.slice(i))
    if (m) {
      out += m[0]
      i += m[0].length
      continue
    }
    const cp = s.codePointAt(i) ?? 0
    const ch = String.fromCodePoint(cp)
    if (n + 1 > cols) break
    out += ch
    n += 1
    i += ch.length
  }
  return `${out}${ESC.reset}`
}

/** Fleet text made safe and single-line for the view (tabs as spaces). */
function safe(text: string): string {
  return visible(text).replace(/[\t\n]/g, ' ')
}

const COLUMNS = ['GROUP', 'ID', 'PID', 'STATE', 'GEN', 'CPU', 'MEM', 'CONN', 'RST', 'UPTIME'] as const

/** The worker table, header first, columns padded (plain text). */
export function workerTable(status: MonitStatus, now: number): string[] {
  const rows: string[][] = [[...COLUMNS]]
  for (const w of status.workers as WorkerRow[]) {
    rows.push([
      safe(w.group),
      String(w.id),
      w.pid === null ? '-' : String(w.pid),
      w.pid === null && w.restartInMs !== null ? 'restart' : w.state,
      String(w.generation),
      cpu(w.cpu),
      mem(w.rssBytes),
      w.connections === null || w.connections === undefined ? '-' : String(w.connections),
      String(w.restarts),
      uptime(w.startedAt, now),
    ])
  }
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => width(r[i] ?? ''))))
  // The group column is cut so a row fits 80 columns with long group names.
  widths[0] = Math.min(widths[0] ?? 5, 16)
  return rows.map((r) =>
    r
      .map((c, i) => {
        const w = widths[i] ?? 0
        const cell = width(c) > w ? `${[...c].slice(0, w - 1).join('')}~` : c
        return i >= 1 && i !== 3 ? cell.padStart(w) : cell.padEnd(w)
      })
      .join(' ')
      .trimEnd(),
  )
}

/** The master's header line. */
function headerLine(status: MonitStatus | undefined, now: number): string {
  const clock = new Date(now).toISOString().slice(11, 19)
  if (!status) return `baton monit  ${clock}`
  const master =
    typeof status.cpu === 'number' || typeof status.rssBytes === 'number'
      ? `  cpu ${cpu(status.cpu)} mem ${mem(status.rssBytes)}`
      : ''
  return `baton "${safe(status.name)}"  master ${status.pid}${master}  gen ${status.generation}  ${clock}`
}

/**
 * What runs, from the status alone (for actions not started from this view): a reload
 * (workers already of the new generation), a scale (ready workers against the count), a
 * stop.
 */
export function statusProgress(status: MonitStatus): string | undefined {
  if (status.stopping) return 'STOPPING: the workers drain'
  if (status.reloading) {
    const done = status.workers.filter((w) => w.generation >= status.generation && w.state === 'ready').length
    return `RELOADING to generation ${status.generation}: ${done}/${status.workers.length} workers new and ready`
  }
  for (const g of status.groups) {
    const workers = status.workers.filter((w) => w.group === g.name)
    const ready = workers.filter((w) => w.state === 'ready').length
    if (workers.length !== g.count || ready < workers.length) {
      return `${safe(g.name)}: ${ready}/${g.count} workers ready (${workers.length - ready} starting or stopping)`
    }
  }
  return undefined
}

/** Child pids of `pid` (every thread's, from /proc/PID/task/TID/children); empty without them. */
function childrenOf(pid: number): number[] {
  const found: number[] = []
  let tasks: string[]
  try {
    tasks = readdirSync(`/proc/${pid}/task`)
  } catch {
    return found
  }
  for (const task of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ')) {
        if (/^[0-9]+$/.test(c)) found.push(Number(c))
      }
    } catch {
      // the thread ended, or a kernel without the children file
    }
  }
  return found
}

/**
 * An upgrade that runs now, on Linux: the master's status does not say, but the new
 * master is its child with the handover variable (`BATON_UPGRADE`, removed from the
 * workers' environment) and its new workers are that child's children. Readable for the
 * master's own user (and root); undefined otherwise.
 */
export function upgradeProgress(status: Status): string | undefined {
  if (process.platform !== 'linux') return undefined
  const workers = new Set(status.workers.map((w) => w.pid))
  for (const child of childrenOf(status.pid)) {
    if (workers.has(child)) continue
    let environ: string
    try {
      environ = readFileSync(`/proc/${child}/environ`, 'utf8')
    } catch {
      continue
    }
    if (!environ.split('\0').some((kv) => kv.startsWith('BATON_UPGRADE='))) continue
    const started = childrenOf(child).length
    return `UPGRADING: new master pid ${child} started, ${started} of its workers running; the old workers drain once it serves`
  }
  return undefined
}

/** The group selector line: every group with its ready/count, the selected one in inverse video. */
function groupLine(status: MonitStatus, selected: number, color: boolean): string {
  const parts = status.groups.map((g, i) => {
    const ready = status.workers.filter((w) => w.group === g.name && w.state === 'ready').length
    const text = `${safe(g.name)} ${ready}/${g.count}`
    if (i !== selected) return ` ${text} `
    return color ? `${ESC.inverse}[${text}]${ESC.reset}` : `[${text}]`
  })
  return `groups:${parts.join('')}`
}

/** The whole screen: exactly `rows` lines of at most `cols` columns. */
export function renderMonit(view: MonitView, cols: number, rows: number, color = true): string[] {
  const lines: string[] = []
  const { status } = view
  lines.push(color ? `${ESC.bold}${headerLine(status, view.now)}${ESC.reset}` : headerLine(status, view.now))
  const progress =
    view.error ??
    view.upgrading ??
    (view.activity.busy ? view.activity.line : status ? statusProgress(status) : undefined) ??
    view.activity.line
  lines.push(progress ? safe(progress) : status ? 'all workers ready' : '')
  if (view.upgrade) lines.push(safe(view.upgrade))
  if (status) lines.push(groupLine(status, view.selected, color))
  const keys = 'r reload  +/- scale group  tab/arrows select  q quit'
  const table = status ? workerTable(status, view.now) : []
  // Rows left for the table and the log: at least 5 log lines when the terminal allows.
  const free = rows - lines.length - 1
  const logRows = Math.min(Math.max(free - table.length - 1, 5), Math.max(free - 2, 0))
  const tableRows = Math.max(free - logRows - 1, 0)
  if (table.length > tableRows && tableRows > 1) {
    lines.push(...table.slice(0, tableRows - 1), `... ${table.length - tableRows + 1} more workers`)
  } else {
    lines.push(...table.slice(0, tableRows))
  }
  for (let i = table.length; i < tableRows; i += 1) lines.push('')
  lines.push(`-- latest log lines ${'-'.repeat(Math.max(cols - 21, 0))}`)
  const shown = view.logs.slice(-logRows)
  lines.push(...shown)
  while (lines.length < rows - 1) lines.push('')
  lines.length = Math.min(lines.length, rows - 1)
  lines.push(color ? `${ESC.inverse}${keys}${ESC.reset}` : keys)
  return lines.map((l) => fit(l, cols))
}

/** The plain table printed when stdout is not a terminal. */
export function plainSnapshot(view: MonitView): string {
  const lines = [headerLine(view.status, view.now)]
  const progress = view.error ?? view.upgrading ?? (view.status ? statusProgress(view.status) : undefined)
  if (progress) lines.push(safe(progress))
  if (view.upgrade) lines.push(safe(view.upgrade))
  if (view.status) lines.push(...workerTable(view.status, view.now))
  return `${lines.join('\n')}\n\n`
}

/** Options of {@link monitCommand}. */
export interface MonitOptions {
  /** Refresh period (default {@link MONIT_INTERVAL_MS}; `--interval MS`). */
  intervalMs?: number
}

/**
 * `baton monit`: the live view of master `name` in `runtimeDir`. Resolves with the exit
 * code: 0 on `q` (or a closed pipe), 130 on Ctrl-C, 128+n on another signal. Throws
 * (NotRunningError, a refusal) when the master cannot be reached at start.
 */
export async function monitCommand(runtimeDir: string, name: string, options: MonitOptions = {}): Promise<number> {
  const interval = options.intervalMs ?? MONIT_INTERVAL_MS
  const first = await request(runtimeDir, name, { cmd: 'status' })
  if (!first.status) throw new CommandError(`baton master "${name}" answered without a status`)
  const view: MonitView = {
    status: first.status,
    upgrading: upgradeProgress(first.status),
    selected: 0,
    activity: { line: '', busy: false },
    logs: [],
    now: Date.now(),
  }
  const tty = process.stdout.isTTY === true
  let finish: (code: number) => void = () => undefined
  const done = new Promise<number>((resolve) => {
    finish = resolve
  })
  let ended = false
  const cleanups: Array<() => void> = []
  const end = (code: number): void => {
    if (ended) return
    ended = true
    for (const c of cleanups.splice(0).reverse()) {
      try {
        c()
      } catch {
        // restoring the rest matters more
      }
    }
    finish(code)
  }

  // A reader closed our pipe (`| head`): stop quietly.
  const onStdoutError = (e: NodeJS.ErrnoException): void => end(e.code === 'EPIPE' ? 0 : 1)
  process.stdout.on('error', onStdoutError)
  cleanups.push(() => process.stdout.off('error', onStdoutError))

  let masterPid = first.status.pid
  const poll = async (): Promise<void> => {
    try {
      const answer = await request(runtimeDir, name, { cmd: 'status' })
      if (answer.status) {
        if (answer.status.pid !== masterPid) {
          view.upgrade = `master replaced (baton upgrade): pid ${masterPid} -> ${answer.status.pid}`
          masterPid = answer.status.pid
        }
        view.status = answer.status
        view.upgrading = upgradeProgress(answer.status)
        view.error = undefined
        view.selected = Math.min(view.selected, Math.max(answer.status.groups.length - 1, 0))
      }
    } catch (e) {
      view.error = `not answering: ${(e as Error).message}`
    }
    view.now = Date.now()
  }

  // The latest log lines: a follow request, opened again if it ends (an upgrade, a restart).
  const stopFollowing = new AbortController()
  cleanups.push(() => stopFollowing.abort())
  const follow = (): void => {
    if (ended) return
    const onLine = (event: Record<string, unknown>): void => {
      if (event.type !== 'output') return
      const line = event as unknown as OutputLine
      view.logs.push(`${safe(line.group)}#${line.id} ${line.stream === 'stderr' ? 'err' : 'out'} | ${safe(line.text)}`)
      if (view.logs.length > LOG_KEEP) view.logs.splice(0, view.logs.length - LOG_KEEP)
    }
    request(runtimeDir, name, { cmd: 'logs', lines: 20, follow: true }, onLine, stopFollowing.signal).then(
      () => setTimeout(follow, interval).unref(),
      () => setTimeout(follow, interval).unref(),
    )
  }
  follow()

  let redraw: () => void
  if (tty) {
    // Writes to a terminal are synchronous in Node, so the restore is out before the exit.
    const write = (s: string): void => {
      process.stdout.write(s)
    }
    const stdin = process.stdin
    const raw = stdin.isTTY === true
    write(ESC.enterAlt + ESC.hideCursor)
    if (raw) stdin.setRawMode(true)
    cleanups.push(() => {
      if (raw) stdin.setRawMode(false)
      write(ESC.reset + ESC.showCursor + ESC.leaveAlt)
    })
    const onExit = (): void => end(0)
    process.on('exit', onExit)
    cleanups.push(() => process.off('exit', onExit))
    redraw = () => {
      const cols = process.stdout.columns || 80
      const rows = process.stdout.rows || 24
      const lines = renderMonit(view, cols, rows)
      write(ESC.home + lines.map((l) => l + ESC.clearLine).join('\r\n') + ESC.clearBelow)
    }
    const onResize = (): void => redraw()
    process.stdout.on('resize', onResize)
    cleanups.push(() => process.stdout.off('resize', onResize))

    const act = (label: string, run: () => Promise<ControlAnswer>, describe: (a: ControlAnswer) => string): void => {
      if (view.activity.busy) {
        view.activity.line = `${view.activity.line} (wait: ${label} not started)`
        redraw()
        return
      }
      view.activity = { line: `${label}...`, busy: true }
      redraw()
      run().then(
        (answer) => {
          view.activity = {
            busy: false,
            line: answer.ok ? describe(answer) : `${label} failed: ${answer.error ?? 'no cause given'}`,
          }
          void poll().then(redraw)
        },
        (e: Error) => {
          view.activity = { busy: false, line: `${label} failed: ${e.message}` }
          redraw()
        },
      )
    }
    const reload = (): void =>
      act(
        'reload',
        () =>
          request(runtimeDir, name, { cmd: 'reload' }, (event) => {
            if (event.type === 'reload:start') {
              view.activity.line = `RELOADING to generation ${String(event.generation)}: 0/${String(event.due)} replaced`
            } else if (event.type === 'reload:progress') {
              view.activity.line = `RELOADING to generation ${String(event.generation)}: ${String(event.replaced)}/${String(event.due)} replaced (last: ${String(event.group)}#${String(event.id)})`
            } else return
            redraw()
          }),
        (a) => `reload done: ${a.report?.message ?? 'every worker replaced'}`,
      )
    const scale = (delta: number): void => {
      const group = view.status?.groups[view.selected]
      if (!group) return
      const count = group.count + delta
      if (count < 1 || count > MAX_WORKERS) {
        view.activity.line = `scale: ${safe(group.name)} keeps between 1 and ${MAX_WORKERS} workers`
        redraw()
        return
      }
      act(
        `SCALING ${group.name} from ${group.count} to ${count} workers`,
        () => request(runtimeDir, name, { cmd: 'scale', group: group.name, count }),
        (a) => `scaled ${a.group ?? group.name} to ${a.count ?? count} workers, all ready`,
      )
    }
    const select = (delta: number): void => {
      const n = view.status?.groups.length ?? 0
      if (n > 0) view.selected = (view.selected + delta + n) % n
      redraw()
    }
    const onKey = (data: Buffer | string): void => {
      const keys = String(data)
      if (keys === '\x1b[A' || keys === '\x1b[D' || keys === '\x1b[Z') return select(-1)
      if (keys === '\x1b[B' || keys === '\x1b[C' || keys === '\t') return select(1)
      for (const k of keys) {
        if (k === 'q' || k === 'Q') return end(0)
        if (k === '\x03') return end(130)
        if (k === 'r' || k === 'R') reload()
        else if (k === '+' || k === '=') scale(1)
        else if (k === '-' || k === '_') scale(-1)
      }
    }
    if (raw) {
      stdin.on('data', onKey)
      stdin.resume()
      cleanups.push(() => {
        stdin.off('data', onKey)
        stdin.pause()
      })
    }
  } else {
    redraw = () => {
      process.stdout.write(plainSnapshot(view))
    }
  }

  // Ctrl-C (without raw mode), kill, a closed terminal: restore, then the usual exit code.
  for (const [signal, n] of [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ] as const) {
    const handler = (): void => end(128 + n)
    process.on(signal, handler)
    cleanups.push(() => process.off(signal, handler))
  }

  redraw()
  let timer: NodeJS.Timeout | undefined
  const tick = (): void => {
    timer = setTimeout(() => {
      void poll().then(() => {
        if (ended) return
        redraw()
        tick()
      })
    }, interval)
  }
  tick()
  cleanups.push(() => clearTimeout(timer))
  return await done
}
