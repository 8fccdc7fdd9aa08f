/**
 * `baton logs` from the log files: the files a fleet writes its workers' output to (a
 * group's `stdout`/`stderr` FILE, or the master's own log file, where inherited output
 * goes: `--log FILE`, `--daemon`), and their rotated copies `FILE.1` (newest) ... `FILE.N`.
 * The CLI reads them itself (it runs as the master's user), so a big read never lands on
 * the master's supervision loop; it learns the paths and line formats from the status.
 *
 * What is read is untrusted: a worker's user may own the directory of its log file and
 * have replaced the file with a symlink or a hard link to a secret. Every file is opened
 * with `O_NOFOLLOW | O_NONBLOCK` and used only when the open file is a regular file owned
 * by the user running the CLI, with one link; anything else is refused with the path and
 * the rule, and nothing of it is printed.
 *
 * History is read backwards in 64 KiB chunks (`--lines 5000` of a 10 GB file reads about
 * as many bytes as the 5,000 lines hold); `-f` then continues at the byte where history
 * ended, in the same open file, so no line is shown twice or lost. A follower notices a
 * rotation (FILE renamed, a new FILE created: logrotate + `baton reopen-logs`, or the
 * master's own rotation) by the inode at the path, reads the old file to its end once the
 * master writes to the new one, then reads the new one from its start.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from 'node:fs'
import { CommandError } from './errors.js'
import type { Status } from '../types.js'

/** Which stream a line came from, as `baton logs --out/--err` select it. */
export type StreamName = 'out' | 'err'

/** What `baton logs` keeps (every field optional: none means everything). */
export interface LineFilter {
  /** Only this group's lines. */
  group?: string
  /** Only this worker slot's lines. */
  id?: number
  /** Only stdout (`out`) or stderr (`err`) lines. */
  stream?: StreamName
  /** Only lines read at or after this time (ms since the epoch). */
  since?: number
}

/** One log file and what the fleet writes into it. */
export interface LogSource {
  /** The file's path, as the fleet was told. */
  path: string
  /** The group streams written to it. */
  roles: { group: string; stream: StreamName }[]
  /** The master's own log file (its lines and the inherited output of the workers). */
  master: boolean
  /** Every line is a JSON object (`logFormat: 'json'` for every role). */
  json: boolean
  /** Every line starts with a time stamp (`logTime` or JSON for every role). */
  time: boolean
  /** Every worker line names its worker (`logPrefix` or JSON for every role). */
  prefix: boolean
}

/** A group stream whose output is not in a file (`ignore`, or `inherit` without a log file). */
export interface Unfiled {
  group: string
  stream: StreamName
  /** Where it goes instead. */
  target: 'inherit' | 'ignore'
}

/** The files a fleet writes its workers' output to, from its status. */
export function logSources(status: Status): { sources: LogSource[]; unfiled: Unfiled[] } {
  const byPath = new Map<string, LogSource>()
  const unfiled: Unfiled[] = []
  const masterFile = status.logs.file ?? undefined
  for (const g of status.groups) {
    const json = g.options.logFormat === 'json'
    const time = json || g.options.logTime === true
    const prefix = json || g.logs.prefix
    for (const stream of ['out', 'err'] as const) {
      const target = stream === 'out' ? g.logs.stdout : g.logs.stderr
      if (target === 'ignore') {
        unfiled.push({ group: g.name, stream, target })
        continue
      }
      let path: string
      let master = false
      if (target === 'inherit') {
        if (masterFile === undefined) {
          unfiled.push({ group: g.name, stream, target })
          continue
        }
        path = masterFile
        master = true
      } else path = target
      const known = byPath.get(path)
      if (known === undefined) {
        byPath.set(path, { path, roles: [{ group: g.name, stream }], master, json, time, prefix })
      } else {
        known.roles.push({ group: g.name, stream })
        known.master ||= master
        known.json &&= json
        known.time &&= time
        known.prefix &&= prefix
      }
    }
  }
  return { sources: [...byPath.values()], unfiled }
}

/** A line and what could be told about it. */
export interface LogLine {
  /** The line as written, without its newline. */
  text: string
  /** When the master read it (ms since the epoch), if the line says. */
  time?: number
  group?: string
  id?: number
  stream?: StreamName | 'master'
}

const TIME_STAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z) /
const PREFIX = /^(\S+)#(\d+) /

/**
 * What `source`'s line `text` says about itself: JSON keys, or time stamp and `group#id`
 * prefix. Each is read only where the fleet writes it (`source.json`, `.time`, `.prefix`):
 * a worker that prints a JSON object or a `web#1 ` of its own into a text file cannot pass
 * its line off as another worker's or stream's.
 */
export function parseLine(text: string, source: LogSource): LogLine {
  if (source.json && text.startsWith('{')) {
    try {
      const o = JSON.parse(text) as Record<string, unknown>
      if (typeof o === 'object' && o !== null && typeof o.time === 'string' && typeof o.stream === 'string') {
        const time = Date.parse(o.time)
        const stream = o.stream === 'out' || o.stream === 'err' || o.stream === 'master' ? o.stream : undefined
        return {
          text,
          time: Number.isNaN(time) ? undefined : time,
          group: typeof o.group === 'string' ? o.group : undefined,
          id: typeof o.id === 'number' ? o.id : undefined,
          stream,
        }
      }
    } catch {
      // not JSON after all: a text line
    }
  }
  const line: LogLine = { text }
  let rest = text
  const stamp = source.time ? TIME_STAMP.exec(rest) : null
  if (stamp) {
    const time = Date.parse(stamp[1])
    if (!Number.isNaN(time)) line.time = time
    rest = rest.slice(stamp[0].length)
  }
  const prefix = source.prefix ? PREFIX.exec(rest) : null
  if (prefix && source.roles.some((r) => r.group === prefix[1])) {
    line.group = prefix[1]
    line.id = Number(prefix[2])
  }
  const groups = new Set(source.roles.map((r) => r.group))
  const streams = new Set(source.roles.map((r) => r.stream))
  if (!source.master) {
    if (line.group === undefined && groups.size === 1) line.group = [...groups][0]
    if (streams.size === 1) line.stream = [...streams][0]
  } else if (line.group !== undefined) {
    const own = new Set(source.roles.filter((r) => r.group === line.group).map((r) => r.stream))
    if (own.size === 1) line.stream = [...own][0]
  } else if (source.prefix) {
    // In the master's file with prefixes on, a line without one is the master's own.
    line.stream = 'master'
  }
  return line
}

/**
 * A filter that a file's lines cannot answer (exit 2 when nothing else can). `ringAnswers`:
 * the master's ring can, since it knows every line's group, worker and stream.
 */
export class FilterError extends CommandError {
  constructor(
    message: string,
    readonly ringAnswers: boolean,
  ) {
    super(message, 2)
    this.name = 'FilterError'
  }
}

function can(message: string, ringAnswers = true): never {
  throw new FilterError(message, ringAnswers)
}

/**
 * The sources `filter` selects, or a {@link FilterError} when a filter cannot be told from
 * a file's lines: what was asked, which file, why, and what to turn on.
 */
export function selectSources(sources: LogSource[], filter: LineFilter): LogSource[] {
  const selected = sources.filter(
    (s) =>
      s.roles.some(
        (r) =>
          (filter.group === undefined || r.group === filter.group) &&
          (filter.stream === undefined || r.stream === filter.stream),
      ) ||
      (s.master && filter.group === undefined && filter.stream === undefined && filter.id === undefined),
  )
  for (const s of selected) {
    const groups = new Set(s.roles.map((r) => r.group))
    const streams = new Set(s.roles.map((r) => r.stream))
    if (filter.since !== undefined && !s.time) {
      can(
        `--since: the lines in ${s.path} carry no time stamp; start the fleet with --log-time or --log-format json (logTime: true or logFormat: 'json') to read them by time`,
        false,
      )
    }
    if (filter.group !== undefined && (groups.size > 1 || s.master) && !s.prefix) {
      can(
        `--group: ${s.path} holds the lines of ${s.master ? 'the master and ' : ''}the groups ${[...groups].join(', ')} without naming theirs; start the fleet with --log-prefix or --log-format json to tell them apart`,
      )
    }
    if (filter.id !== undefined && !s.prefix) {
      can(
        `--id: the lines in ${s.path} do not name their worker; start the fleet with --log-prefix or --log-format json to select a worker by id`,
      )
    }
    if (filter.stream !== undefined && streams.size > 1 && !s.json) {
      can(
        `--${filter.stream}: ${s.path} holds stdout and stderr lines alike; only --log-format json (or separate --stdout/--stderr files) tells them apart`,
      )
    }
    if (filter.stream !== undefined && s.master && !s.prefix) {
      can(
        `--${filter.stream}: ${s.path} holds the master's own lines and the workers' alike; start the fleet with --log-prefix or --log-format json to tell them apart`,
      )
    }
  }
  return selected
}

/** Whether `line` passes `filter` (its time aside: see {@link readHistory}). */
export function matches(line: LogLine, filter: LineFilter): boolean {
  const filtered = filter.group !== undefined || filter.id !== undefined || filter.stream !== undefined
  if (filtered && line.stream === 'master') return false
  if (filter.group !== undefined && line.group !== filter.group) return false
  if (filter.id !== undefined && line.id !== filter.id) return false
  if (filter.stream !== undefined && line.stream !== filter.stream) return false
  return true
}

/** A file `baton logs` will not read: the path and the rule. */
export class RefusedFile extends Error {
  constructor(path: string, rule: string) {
    super(
      `refused to read ${path}: ${rule}; a worker's user may have planted it. Check the file and its directory, then run baton reopen-logs so the master writes a fresh file there`,
    )
    this.name = 'RefusedFile'
  }
}

/** The open file, checked: a regular file of ours with one link, opened without following a link. */
export function openChecked(path: string): { fd: number; stat: Stats } | undefined {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    if (code === 'ELOOP')
      throw new RefusedFile(path, 'it is a symbolic link (log files are read without following links)')
    throw new RefusedFile(path, `it cannot be opened (${code ?? (e as Error).message})`)
  }
  try {
    const stat = fstatSync(fd)
    const uid = process.geteuid?.()
    if (!stat.isFile()) throw new RefusedFile(path, 'it is not a regular file')
    if (uid !== undefined && stat.uid !== uid) {
      throw new RefusedFile(path, `it is owned by uid ${stat.uid}, not by uid ${uid} that runs baton and its master`)
    }
    if (stat.nlink !== 1) throw new RefusedFile(path, `it has ${stat.nlink} hard links (a log file has one)`)
    return { fd, stat }
  } catch (e) {
    closeSync(fd)
    throw e
  }
}

const CHUNK = 64 * 1024

/** Offset just past the last newline before `size` (the end of the last whole line). */
export function lastLineEnd(fd: number, size: number): number {
  const buf = Buffer.alloc(CHUNK)
  let pos = size
  while (pos > 0) {
    const start = Math.max(0, pos - CHUNK)
    const n = readSync(fd, buf, 0, pos - start, start)
    const nl = buf.subarray(0, n).lastIndexOf(0x0a)
    if (nl >= 0) return start + nl + 1
    pos = start
  }
  return 0
}

/**
 * The longest line kept whole (1 MiB): in a file the master writes as read (no prefix, time
 * or JSON, which cut lines at 16 KiB), a worker may write a gigabyte without a newline. A
 * longer line is shown cut: its last (history) or first (follow) MiB, then {@link CUT}.
 */
export const MAX_LINE = 1024 * 1024
/** Marks a line cut at {@link MAX_LINE}. */
export const CUT = ' [line cut at 1 MiB]'

/** The lines of `fd` before byte `end`, last first, read backwards in chunks. */
export function* linesBackward(fd: number, end: number): Generator<string> {
  const buf = Buffer.alloc(CHUNK)
  let pos = end
  let carry: Buffer = Buffer.alloc(0)
  let cut = false
  // `end` is just past a newline (or 0): skip that newline.
  let skipNewline = true
  while (pos > 0) {
    const start = Math.max(0, pos - CHUNK)
    const n = readSync(fd, buf, 0, pos - start, start)
    pos = start
    let block: Buffer
    if (carry.length >= MAX_LINE) {
      // Too long to keep: only the newline before it is looked for.
      const nl = buf.subarray(0, n).lastIndexOf(0x0a)
      cut = true
      if (nl < 0) continue
      yield carry.subarray(carry.length - MAX_LINE).toString('utf8') + CUT
      cut = false
      block = buf.subarray(0, nl)
    } else {
      block = Buffer.concat([buf.subarray(0, n), carry])
      if (skipNewline && block.length > 0 && block[block.length - 1] === 0x0a) block = block.subarray(0, -1)
    }
    skipNewline = false
    let lineEnd = block.length
    for (let i = block.length - 1; i >= 0; i--) {
      if (block[i] === 0x0a) {
        yield block.subarray(i + 1, lineEnd).toString('utf8')
        lineEnd = i
      }
    }
    carry = Buffer.from(block.subarray(0, lineEnd))
  }
  if (carry.length > 0 || end > 0) {
    yield cut ? carry.subarray(carry.length - MAX_LINE).toString('utf8') + CUT : carry.toString('utf8')
  }
}

/** Most rotated copies looked at (`FILE.1` ... `FILE.100`). */
const MAX_ROTATED = 100

/** What {@link readHistory} found in one source. */
export interface History {
  /** The lines, oldest first. */
  lines: LogLine[]
  /** The current file, open at the end of its last whole line (for `-f`), if it exists. */
  current?: { fd: number; stat: Stats; end: number }
  /** Files refused (their error), nothing of them read. */
  refused: RefusedFile[]
}

/**
 * The last `limit` lines of `source` that pass `filter` (all those since `filter.since`
 * with an infinite limit), from FILE, then FILE.1, FILE.2 ... while more are needed.
 * Leaves the current file open for a follower when `keepOpen`.
 */
export function readHistory(source: LogSource, filter: LineFilter, limit: number, keepOpen: boolean): History {
  const picked: LogLine[] = []
  const refused: RefusedFile[] = []
  let current: History['current']
  let done = limit === 0
  for (let k = 0; k <= MAX_ROTATED; k++) {
    const path = k === 0 ? source.path : `${source.path}.${k}`
    let opened: ReturnType<typeof openChecked>
    try {
      opened = openChecked(path)
    } catch (e) {
      if (!(e instanceof RefusedFile)) throw e
      refused.push(e)
      // A refused current file: the rotated ones are still ours to read.
      if (k === 0) continue
      break
    }
    if (opened === undefined) {
      if (k === 0) continue
      break
    }
    const { fd, stat } = opened
    try {
      // The current file may end in a line still being written: history stops before it
      // and a follower starts there. A rotated file is whole.
      const end = k === 0 ? lastLineEnd(fd, stat.size) : stat.size
      if (k === 0 && keepOpen) current = { fd, stat, end }
      if (!done) {
        for (const text of linesBackward(fd, end)) {
          const line = parseLine(text, source)
          if (filter.since !== undefined && line.time !== undefined && line.time < filter.since) {
            done = true
            break
          }
          if (!matches(line, filter)) continue
          picked.push(line)
          if (picked.length >= limit) {
            done = true
            break
          }
        }
      }
    } finally {
      if (current?.fd !== fd) closeSync(fd)
    }
    if (done) break
  }
  picked.reverse()
  return { lines: picked, current, refused }
}

/**
 * The lines of several sources in time order (stable: a line without a time stamp keeps
 * the time of the line before it), the last `limit` of them.
 */
export function mergeByTime(histories: LogLine[][], limit: number): LogLine[] {
  const all: { line: LogLine; key: number; order: number }[] = []
  let order = 0
  for (const lines of histories) {
    let last = -Infinity
    for (const line of lines) {
      if (line.time !== undefined) last = line.time
      all.push({ line, key: last, order: order++ })
    }
  }
  all.sort((a, b) => a.key - b.key || a.order - b.order)
  const lines = all.map((a) => a.line)
  return Number.isFinite(limit) ? lines.slice(Math.max(0, lines.length - limit)) : lines
}

/**
 * Follows one log file: `poll()` returns the whole lines written since the last call,
 * continuing across a rotation and a truncation (`copytruncate`: read again from the
 * start).
 *
 * A rotation shows as another file (inode) at the path. The master writes to the old file
 * until it reopens, and to the new one only after, so the follower keeps reading the old
 * file while the new one is empty; once the new one holds a byte, the old one gets no more:
 * it is read to its end, then the new one from its start. No line is lost or shown twice,
 * and they come out in the order the master wrote them.
 */
export class FileFollower {
  private fd: number | undefined
  private ino = -1
  private pos = 0
  private partial: Buffer = Buffer.alloc(0)
  /** The current line was shown cut at {@link MAX_LINE}: drop the rest of it. */
  private skipToNewline = false
  /** A new file at the path, not yet written to. */
  private next: { fd: number; ino: number; birth: number; size: number } | undefined
  private readonly buf = Buffer.alloc(CHUNK)
  /** Refusals seen, each reported once. */
  private readonly reported = new Set<string>()

  constructor(
    readonly source: LogSource,
    start?: { fd: number; stat: Stats; end: number },
    private readonly onRefused: (e: RefusedFile) => void = () => {},
    /**
     * Without `start`: a file found at the first look that was created before this time
     * (ms since the epoch) is followed from its end, not its start: a path a new master
     * added after `baton upgrade`, whose earlier content is not new. (Where the file system
     * keeps no creation time, from its end too.)
     */
    private bornBefore?: number,
  ) {
    if (start) {
      this.fd = start.fd
      this.ino = start.stat.ino
      this.pos = start.end
    }
  }

  /** Whole lines of the current file from where the last read stopped, into `out`. */
  private readCurrent(out: string[]): void {
    if (this.fd === undefined) return
    if (fstatSync(this.fd).size < this.pos) {
      // Truncated in place (logrotate copytruncate): from the start again.
      this.pos = 0
      this.partial = Buffer.alloc(0)
      this.skipToNewline = false
    }
    for (;;) {
      const n = readSync(this.fd, this.buf, 0, CHUNK, this.pos)
      if (n <= 0) break
      this.pos += n
      let chunk = this.buf.subarray(0, n)
      if (this.skipToNewline) {
        // The rest of a line already shown cut.
        const end = chunk.indexOf(0x0a)
        if (end < 0) continue
        chunk = chunk.subarray(end + 1)
        this.skipToNewline = false
      }
      let block = Buffer.concat([this.partial, chunk])
      let nl: number
      while ((nl = block.indexOf(0x0a)) >= 0) {
        out.push(block.subarray(0, nl).toString('utf8'))
        block = block.subarray(nl + 1)
      }
      this.partial = Buffer.from(block)
      if (this.partial.length >= MAX_LINE) {
        out.push(this.partial.subarray(0, MAX_LINE).toString('utf8') + CUT)
        this.partial = Buffer.alloc(0)
        this.skipToNewline = true
      }
    }
  }

  /** The file now at the path, when it is another one than the current (checked, opened). */
  private lookForNext(): void {
    let atPath: Stats | undefined
    try {
      atPath = lstatSync(this.source.path)
    } catch {
      return
    }
    if (atPath.ino === this.ino || atPath.ino === this.next?.ino) return
    let opened: ReturnType<typeof openChecked>
    try {
      opened = openChecked(this.source.path)
    } catch (e) {
      if (!(e instanceof RefusedFile)) throw e
      if (!this.reported.has(e.message)) {
        this.reported.add(e.message)
        this.onRefused(e)
      }
      return
    }
    if (opened === undefined) return
    if (this.next !== undefined) closeSync(this.next.fd)
    this.next = { fd: opened.fd, ino: opened.stat.ino, birth: opened.stat.birthtimeMs, size: opened.stat.size }
  }

  /** New whole lines, oldest first. */
  poll(): string[] {
    const out: string[] = []
    this.readCurrent(out)
    this.lookForNext()
    if (this.next !== undefined && (this.fd === undefined || fstatSync(this.next.fd).size > 0)) {
      // The master writes to the new file: the old one is complete.
      this.readCurrent(out)
      if (this.partial.length > 0) out.push(this.partial.toString('utf8'))
      const first = this.fd === undefined
      if (this.fd !== undefined) closeSync(this.fd)
      this.fd = this.next.fd
      this.ino = this.next.ino
      const old = first && this.bornBefore !== undefined && !(this.next.birth >= this.bornBefore)
      this.pos = old ? lastLineEnd(this.next.fd, this.next.size) : 0
      this.bornBefore = undefined
      this.next = undefined
      this.partial = Buffer.alloc(0)
      this.skipToNewline = false
      this.readCurrent(out)
    }
    return out
  }

  /** Close every file. */
  close(): void {
    if (this.next !== undefined) closeSync(this.next.fd)
    this.next = undefined
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}

/**
 * `--since`: a duration back from `now` (`30s`, `10m`, `2h`, `1d`, `500ms`) or an ISO 8601
 * time (`2026-12-07T02:20:00Z`, `2026-12-07`); ms since the epoch. A usage error (exit 2)
 * names --since otherwise.
 */
export function parseSince(value: string, now = Date.now()): number {
  const d = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value)
  if (d) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[d[2] as 'ms' | 's' | 'm' | 'h' | 'd']
    return now - Number(d[1]) * unit
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const t = Date.parse(value)
    if (!Number.isNaN(t)) return t
  }
  throw new CommandError(
    `--since expects a duration (30s, 10m, 2h, 1d) or an ISO 8601 time (2026-12-07T02:20:00Z), got "${value}"`,
    2,
  )
}
