/**
 * The commands that talk to a running master (reload, stop, restart, status), shared by
 * the `baton` CLI and `supervisor.runAll()`. Each returns the process exit code.
 */
import { closeSync, constants, openSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { listMasters, NotRunningError, processState, request, runningMasterPid } from './control-client.js'
import {
  FileFollower,
  FilterError,
  logSources,
  matches,
  mergeByTime,
  parseLine,
  readHistory,
  selectSources,
  type LineFilter,
  type LogSource,
  type StreamName,
} from './log-files.js'
import { logPath, startDaemon } from './daemon.js'
import { MAX_WORKERS } from '../defaults.js'
import { CommandError } from './errors.js'
import { defaultRuntimeDir, dirOfMaster, readTrusted, trustPath } from '../runtime-dir.js'
import { formatOutputLine, formatStatus, visible } from '../format.js'
import type { GroupStatus, OutputLine, ReloadProgressEvent, Status } from '../types.js'

/** Where a command's output goes. */
export interface Output {
  out: (line: string) => void
  err: (line: string) => void
}

/** The default output: stdout and stderr. */
export const stdio: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
}

export { CommandError } from './errors.js'

/** One runtime dir, or the dirs the CLI searches (the runtime dir first, then the old places). */
export type RuntimeDirs = string | readonly string[]

function dirList(dirs: RuntimeDirs): readonly string[] {
  return typeof dirs === 'string' ? [dirs] : dirs
}

/** The master to talk to and its runtime dir: the named one, or the only one running in `dirs`. */
export function locateMaster(dirs: RuntimeDirs, name: string | undefined): { dir: string; name: string } {
  const list = dirList(dirs)
  if (name) return { dir: dirOfMaster(list, name), name }
  const found = list.flatMap((dir) => listMasters(dir).map((n) => ({ dir, name: n })))
  if (found.length === 1) return found[0]
  if (found.length === 0) throw new CommandError(`no baton master is running (runtime dir ${list[0]})`)
  throw new CommandError(`several baton masters are running (${found.map((f) => f.name).join(', ')}): name one`)
}

/** The master to talk to: the named one, or the only one running. */
export function pickMaster(runtimeDir: string, name: string | undefined): string {
  return locateMaster(runtimeDir, name).name
}

/** `baton reload`: progress lines, exit 0 on success, 1 when the reload was aborted. */
export async function reloadCommand(runtimeDir: string, name: string, io: Output = stdio): Promise<number> {
  const answer = await request(runtimeDir, name, { cmd: 'reload' }, (event) => {
    if (event.type === 'reload:progress') {
      const e = event as unknown as ReloadProgressEvent
      io.out(`${e.group} ${e.replaced}/${e.due} replaced`)
    } else if (event.type === 'reload:start') {
      io.out(visible(String(event.message)))
    }
  })
  if (answer.ok) {
    io.out(visible(answer.report?.message ?? 'reload done'))
    return 0
  }
  io.err(`baton reload: ${visible(answer.error ?? 'failed')}`)
  const f = answer.report?.failure
  if (f?.stderrTail.trim())
    io.err(`stderr of ${f.group}#${f.id} (pid ${f.pid ?? '-'}):\n${visible(f.stderrTail.trimEnd())}`)
  return 1
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
  // An exited master whose parent has not reaped it yet (a zombie) is gone. Without
  // /proc (macOS) kill(pid, 0) is all we know.
  return processState(pid) !== 'Z'
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive(pid)) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return !alive(pid)
}

/** `baton stop`: stop the fleet and wait until the master has exited. */
export async function stopCommand(
  runtimeDir: string,
  name: string,
  force: boolean,
  io: Output = stdio,
): Promise<number> {
  const before = await request(runtimeDir, name, { cmd: 'status' })
  const pid = before.status?.pid
  const answer = await request(runtimeDir, name, { cmd: 'stop', force })
  if (!answer.ok) {
    io.err(`baton stop: ${answer.error ?? 'failed'}`)
    return 1
  }
  if (pid !== undefined && !(await waitGone(pid, 10_000))) {
    io.err(`baton stop: every worker stopped but the master (pid ${pid}) is still running`)
    return 1
  }
  io.out(`stopped "${name}"`)
  return 0
}

/** The command line a CLI-started master records, so `baton restart` can run it again (and `baton startup` put it in a unit). */
export interface StartRecord {
  /** The absolute bin/baton.js, `start`, then the flags as given. */
  args: string[]
  /** The working directory it was started in. */
  cwd: string
  /** The groups as started (names, sockets, timeouts), for `baton startup` when the master is gone. */
  groups?: Array<Pick<GroupStatus, 'name' | 'sockets' | 'stopTimeoutMs' | 'readyTimeoutMs' | 'balance'>>
  /** Its log file, when it ran in the background (or with `--log`). */
  log?: string
}

function recordPath(runtimeDir: string, name: string): string {
  return join(runtimeDir, `${name}.start.json`)
}

/** Remember how a master was started (for `baton restart` and `baton startup`). */
export function recordStart(
  runtimeDir: string,
  name: string,
  args: string[],
  extra: Pick<StartRecord, 'groups' | 'log'> = {},
): void {
  const record: StartRecord = { args, cwd: process.cwd(), ...extra }
  // Never through a link (the master checked the dir: it is ours and private).
  const fd = openSync(
    recordPath(runtimeDir, name),
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
    0o600,
  )
  try {
    writeFileSync(fd, `${JSON.stringify(record)}\n`)
  } finally {
    closeSync(fd)
  }
}

/**
 * The start record of `name`, if the CLI started it (and it has not stopped since). The
 * dir and the record must pass the checks of runtime-dir.ts (throws
 * `UntrustedRuntimeError`): its `args` are what `baton restart` runs.
 */
export function readStartRecord(runtimeDir: string, name: string): StartRecord | undefined {
  const path = recordPath(runtimeDir, name)
  if (!trustPath(runtimeDir, 'dir')) return undefined
  const text = readTrusted(path, 'file')
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as StartRecord
  } catch (e) {
    throw new CommandError(
      `the start record ${path} is unreadable (${(e as Error).message}): start the fleet again with baton start`,
    )
  }
}

/** Forget the start record (the master stopped). */
export function forgetStart(runtimeDir: string, name: string): void {
  rmSync(recordPath(runtimeDir, name), { force: true })
}

/** `baton restart`: stop the master, then start it again, in the background, as it was started. */
export async function restartCommand(runtimeDir: string, name: string, io: Output = stdio): Promise<number> {
  await request(runtimeDir, name, { cmd: 'status' }) // throws NotRunningError (or a refusal) first
  const record = readStartRecord(runtimeDir, name)
  if (record === undefined) {
    throw new CommandError(`"${name}" was not started by the baton CLI, so there is no command line to restart it with`)
  }
  const code = await stopCommand(runtimeDir, name, false, io)
  if (code !== 0) return code
  process.chdir(record.cwd)
  // A fleet an older version started in an old place starts again in the runtime dir.
  const target = defaultRuntimeDir()
  const log = target !== runtimeDir && record.log === logPath(runtimeDir, name) ? logPath(target, name) : record.log
  const pid = await startDaemon(record.args, name, target, log)
  io.out(`restarted "${name}" in the background (master pid ${pid})`)
  return 0
}

/** `baton status`: a table, or the JSON contract with `--json`. Without a name, every master. */
export async function statusCommand(
  dirs: RuntimeDirs,
  name: string | undefined,
  json: boolean,
  io: Output = stdio,
): Promise<number> {
  const list = dirList(dirs)
  const runtimeDir = list[0]
  const masters = name
    ? [{ dir: dirOfMaster(list, name), name }]
    : list.flatMap((dir) => listMasters(dir).map((n) => ({ dir, name: n })))
  if (masters.length === 0) throw new CommandError(`no baton master is running (runtime dir ${runtimeDir})`)
  const statuses: Status[] = []
  const failures: string[] = []
  for (const { dir, name: n } of masters) {
    try {
      const answer = await request(dir, n, { cmd: 'status' })
      if (answer.status) statuses.push(answer.status)
    } catch (e) {
      if (name) throw e
      // One master that does not answer must not hide the others.
      if (!(e instanceof NotRunningError)) failures.push((e as Error).message)
    }
  }
  if (statuses.length === 0 && failures.length === 0) {
    throw new CommandError(`no baton master is running (runtime dir ${runtimeDir})`)
  }
  if (statuses.length > 0) {
    if (json) io.out(JSON.stringify(name ? statuses[0] : statuses.length === 1 ? statuses[0] : statuses, null, 2))
    else io.out(statuses.map((s) => formatStatus(s)).join('\n\n'))
  }
  for (const f of failures) io.err(`baton: ${f}`)
  return failures.length > 0 ? 1 : 0
}

/** What `baton logs` asks for. */
export interface LogsOptions {
  /** Recent lines to show first (with `since` and without `linesGiven`: every line since). */
  lines: number
  /** `lines` was given (`--lines N`), not the default. */
  linesGiven?: boolean
  /** Keep showing new lines until the fleet stops (or Ctrl-C); across `baton upgrade` too. */
  follow: boolean
  /** Only this group's lines. */
  group?: string
  /** Only this worker slot's lines. */
  id?: number
  /** Only stdout (`out`) or stderr (`err`) lines. */
  stream?: StreamName
  /** Only lines read at or after this time (ms since the epoch). */
  since?: number
}

/** The most lines a `logs` request may ask the ring for (`MAX_LOG_LINES` in crates/baton-core/src/control.rs). */
const MAX_LOG_LINES = 1_000_000

/** How often a follower looks for new lines in the files, and for the master. */
const FOLLOW_POLL_MS = 200
/** How long a follower waits for a new master after the old one ended (`baton upgrade`). */
const SUCCESSOR_WAIT_MS = 10_000

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Print lines in batches (one write per thousand lines, not one per line). */
function printLines(io: Output, lines: readonly string[]): void {
  for (let i = 0; i < lines.length; i += 1000) io.out(lines.slice(i, i + 1000).join('\n'))
}

/**
 * The pid of the master that replaced `old` (`baton upgrade`), once the pid file names
 * it; undefined when no master of that name runs any more (the fleet stopped).
 */
async function successor(runtimeDir: string, name: string, old: number): Promise<number | undefined> {
  const deadline = Date.now() + SUCCESSOR_WAIT_MS
  while (Date.now() < deadline) {
    let pid: number | undefined
    try {
      pid = runningMasterPid(runtimeDir, name)
    } catch {
      pid = undefined
    }
    if (pid === undefined) return undefined
    if (pid !== old) return pid
    await sleep(100)
  }
  return undefined
}

/**
 * `baton logs`: worker output from the fleet's log files when it writes them (any number
 * of lines, rotated files included, `--since`, filters; see log-files.ts), else from the
 * master's 1 MiB ring buffer; then new lines with `follow`, across log rotations and
 * `baton upgrade`, until the fleet stops.
 */
export async function logsCommand(
  runtimeDir: string,
  name: string,
  options: LogsOptions,
  io: Output = stdio,
): Promise<number> {
  const first = await request(runtimeDir, name, { cmd: 'status' })
  if (!first.ok || !first.status) {
    io.err(`baton logs: ${first.error ?? 'no status'}`)
    return 1
  }
  const status = first.status
  if (options.group !== undefined && !status.groups.some((g) => g.name === options.group)) {
    throw new CommandError(
      `--group: "${name}" has no group "${options.group}" (its groups: ${status.groups.map((g) => g.name).join(', ')})`,
      2,
    )
  }
  const filter: LineFilter = { group: options.group, id: options.id, stream: options.stream, since: options.since }
  const { sources, unfiled } = logSources(status)
  let selected: LogSource[]
  try {
    selected = selectSources(sources, filter)
  } catch (e) {
    if (!(e instanceof FilterError) || !e.ringAnswers) throw e
    // The ring knows each line's group, worker and stream: it answers, and says so.
    io.err(`baton logs: ${e.message}. Showing the last lines the master keeps (1 MiB) instead`)
    selected = []
  }
  if (selected.length === 0) return ringLogs(runtimeDir, name, status.pid, options, filter, io)

  const wanted = unfiled.filter(
    (u) =>
      (filter.group === undefined || u.group === filter.group) &&
      (filter.stream === undefined || u.stream === filter.stream),
  )
  for (const u of wanted) {
    const std = u.stream === 'out' ? 'stdout' : 'stderr'
    io.err(
      `baton logs: group ${u.group}'s ${std} ${u.target === 'ignore' ? 'is ignored' : `goes to the master's ${std}`}, not to a file: its lines are not shown here (baton logs --group ${u.group} --${u.stream} shows the last ones the master keeps)`,
    )
  }
  const limit = options.since !== undefined && options.linesGiven !== true ? Infinity : options.lines
  let refused = 0
  const onRefused = (e: Error): void => {
    refused += 1
    io.err(`baton logs: ${e.message}`)
  }
  const histories = selected.map((s) => readHistory(s, filter, limit, options.follow))
  for (const h of histories) h.refused.forEach(onRefused)
  if (selected.length > 1 && !selected.every((s) => s.time)) {
    // No time stamps to put the files' lines in one order: file by file, as tail does.
    histories.forEach((h, i) => {
      io.out(`==> ${selected[i].path} <==`)
      printLines(
        io,
        h.lines.map((l) => visible(l.text)),
      )
    })
  } else {
    printLines(
      io,
      mergeByTime(
        histories.map((h) => h.lines),
        limit,
      ).map((l) => visible(l.text)),
    )
  }
  if (!options.follow) {
    for (const h of histories) if (h.current) closeSync(h.current.fd)
    return refused > 0 ? 1 : 0
  }

  // Follow: the files, while a master of this name runs (`baton upgrade` hands over).
  // A file a new master adds is new from here on; what it held before is not.
  const followFrom = Date.now()
  const followers = new Map<string, FileFollower>()
  selected.forEach((s, i) => followers.set(s.path, new FileFollower(s, histories[i].current, onRefused)))
  let pid = status.pid
  const drain = (): void => {
    for (const f of followers.values()) {
      const lines = f
        .poll()
        .map((text) => parseLine(text, f.source))
        .filter((l) => matches(l, filter))
      printLines(
        io,
        lines.map((l) => visible(l.text)),
      )
    }
  }
  try {
    for (;;) {
      drain()
      await sleep(FOLLOW_POLL_MS)
      let now: number | undefined
      try {
        now = runningMasterPid(runtimeDir, name)
      } catch {
        now = undefined
      }
      if (now === undefined) break
      if (now !== pid) {
        // A new master (`baton upgrade`): follow the files it adds (new log options).
        pid = now
        const answer = await request(runtimeDir, name, { cmd: 'status' }).catch(() => undefined)
        if (answer?.status) {
          for (const s of selectSources(logSources(answer.status).sources, filter)) {
            if (!followers.has(s.path)) followers.set(s.path, new FileFollower(s, undefined, onRefused, followFrom))
          }
        }
      }
    }
    drain()
  } finally {
    for (const f of followers.values()) f.close()
  }
  io.err(`baton logs: "${name}" stopped`)
  return refused > 0 ? 1 : 0
}

/** `baton logs` from the master's ring (output not written to files). */
async function ringLogs(
  runtimeDir: string,
  name: string,
  masterPid: number,
  options: LogsOptions,
  filter: LineFilter,
  io: Output,
): Promise<number> {
  const passes = (e: OutputLine): boolean =>
    (filter.id === undefined || e.id === filter.id) &&
    (filter.stream === undefined || (e.stream === 'stderr' ? 'err' : 'out') === filter.stream) &&
    (filter.since === undefined || Date.parse(e.time) >= filter.since)
  const clientFiltered = filter.id !== undefined || filter.stream !== undefined || filter.since !== undefined
  // Without follow, the whole ring is filtered here and the last N kept; with follow,
  // history and new lines come on one stream, so the filters apply to the last N.
  let lines = clientFiltered && (!options.follow || filter.since !== undefined) ? MAX_LOG_LINES : options.lines
  const limit = options.since !== undefined && options.linesGiven !== true ? Infinity : options.lines
  let pid = masterPid
  for (;;) {
    const held: string[] = []
    const answer = await request(
      runtimeDir,
      name,
      { cmd: 'logs', lines, follow: options.follow, group: options.group },
      (event) => {
        if (event.type === 'output') {
          const line = event as unknown as OutputLine
          if (!passes(line)) return
          if (options.follow) io.out(formatOutputLine(line))
          else held.push(formatOutputLine(line))
        } else if (event.type === 'output:dropped')
          io.err(`baton logs: ${String(event.lines)} lines not shown (this output was read too slowly)`)
      },
    ).catch((e: Error) => ({ ok: false, error: e.message, stopped: undefined }) as const)
    if (!options.follow) {
      if (!answer.ok) {
        io.err(`baton logs: ${answer.error ?? 'failed'}`)
        return 1
      }
      printLines(io, Number.isFinite(limit) ? held.slice(Math.max(0, held.length - limit)) : held)
      return 0
    }
    if (!answer.ok && !/closed the control connection|no baton master/.test(answer.error ?? '')) {
      io.err(`baton logs: ${answer.error ?? 'failed'}`)
      return 1
    }
    // The master ended: a `baton upgrade` (a new master took over) or the fleet stopped.
    const next = await successor(runtimeDir, name, pid)
    if (next === undefined) break
    pid = next
    lines = 0
  }
  io.err(`baton logs: "${name}" stopped`)
  return 0
}

/** `baton reopen-logs`: reopen every log file of the master (for logrotate's postrotate). */
export async function reopenLogsCommand(runtimeDir: string, name: string, io: Output = stdio): Promise<number> {
  const answer = await request(runtimeDir, name, { cmd: 'reopen-logs' })
  if (!answer.ok) {
    io.err(`baton reopen-logs: ${answer.error ?? 'failed'}`)
    return 1
  }
  const n = answer.reopened ?? 0
  io.out(`reopened ${n} log file${n === 1 ? '' : 's'} of "${name}"`)
  return 0
}

/**
 * `baton upgrade [NAME]`: replace the master itself with zero failed requests (a new
 * baton or Node version, new options from the config file, new listen addresses). Exit 0
 * once the new master serves and the old workers have drained, 1 with the cause (the old
 * master then keeps serving and nothing of the new one is left).
 */
export async function upgradeCommand(runtimeDir: string, name: string, io: Output = stdio): Promise<number> {
  const before = await request(runtimeDir, name, { cmd: 'status' })
  io.out(`upgrading "${name}" (master pid ${before.status?.pid ?? '?'}): starting the new master`)
  const answer = await request(runtimeDir, name, { cmd: 'upgrade' })
  if (!answer.ok) {
    io.err(`baton upgrade: ${visible(answer.error ?? 'failed')}`)
    return 1
  }
  io.out(visible(answer.message ?? `upgraded "${name}"`))
  return 0
}

/** The most workers `baton scale` accepts (the bound of the `count` option). */

/**
 * `baton scale [NAME] [GROUP] N`: change a group's worker count without a restart. With
 * two arguments the first is a running master's name if one has it, else a group of the
 * only master. Exit 0 once every new worker is ready / every removed one exited, 1 with
 * the cause, 2 on bad usage (the argument named).
 */
export async function scaleCommand(dirs: RuntimeDirs, args: string[], io: Output = stdio): Promise<number> {
  const list = dirList(dirs)
  if (args.length === 0)
    throw new CommandError('scale: missing N, the new worker count (baton scale [NAME] [GROUP] N)', 2)
  if (args.length > 3)
    throw new CommandError(
      `scale: unexpected arguments: ${args.slice(0, -3).join(' ')} (baton scale [NAME] [GROUP] N)`,
      2,
    )
  const raw = args[args.length - 1]
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_WORKERS) {
    throw new CommandError(`scale: count: expected a whole number of workers from 1 to ${MAX_WORKERS}, got "${raw}"`, 2)
  }
  const count = Number(raw)
  let name: string | undefined
  let group: string | undefined
  if (args.length === 3) [name, group] = args
  else if (args.length === 2) {
    if (list.some((dir) => listMasters(dir).includes(args[0]))) name = args[0]
    else group = args[0]
  }
  const { dir, name: master } = locateMaster(list, name)
  const answer = await request(
    dir,
    master,
    group === undefined ? { cmd: 'scale', count } : { cmd: 'scale', group, count },
  )
  if (!answer.ok) {
    const error = answer.error ?? 'failed'
    io.err(`baton scale: ${error}`)
    // The master names a bad argument (an unknown group) the same way: usage.
    return /^(group|count):/.test(error) ? 2 : 1
  }
  io.out(`scaled ${answer.group ?? group ?? 'the group'} of "${master}" to ${answer.count ?? count} workers, all ready`)
  return 0
}
