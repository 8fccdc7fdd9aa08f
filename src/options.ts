/**
 * Supervisor and group options: their types, defaults and validation. Every error names
 * the field (`groups.web.count`) and says what is expected.
 */
import { existsSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, extname, resolve } from 'node:path'
import { native } from './native.js'
import { DEFAULT_BACKLOG, DEFAULT_READY_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS, MAX_WORKERS } from './defaults.js'

/** How connections are spread across a group's workers. */
export type Balance = 'shared' | 'reuseport' | 'sticky'

/**
 * How a worker becomes ready: `listen` (any ready, including the drop-in preload's once the
 * app's own `listen()` is listening), `message` (an explicit ready only:
 * `process.send('ready')`, `worker.ready()` or `worker.listen()`; PM2's `wait_ready`), or
 * `uptime` (once up for `minUptime` ms, whatever it says: for processes that never listen,
 * like queue consumers; PM2's `min_uptime`).
 */
export type Readiness = 'listen' | 'message' | 'uptime'

/** How a reload replaces one slot. */
export type ReloadOrder = 'start-first' | 'stop-first'

/**
 * Where a worker output stream goes: `inherit` (the master's own stdout or stderr),
 * `ignore` (discarded; `baton logs` and failure reports still see it), or a file path
 * (appended to, created 0640, reopened by `baton reopen-logs`; relative paths are resolved
 * like `script`). A file literally named `inherit` or `ignore` needs a `./`.
 */
export type OutputTarget = 'inherit' | 'ignore' | (string & {})

/** Options of one group of workers. */
export interface GroupOptions {
  /** The worker script (resolved against `cwd`). Defaults, in `supervisor.group()`, to the current script. */
  script?: string
  /** Number of workers. Default 1. */
  count?: number
  /**
   * Addresses the master listens on for this group: `host:port`, `:port`,
   * `tcp://host:port`, `[::1]:port`, `unix:/path`. An object gives each address a name
   * for `worker.listen(server, name)`; in an array, the names are `listen0`, `listen1`, ...
   */
  listen?: string | string[] | Record<string, string>
  /** Extra environment variables for the workers (on top of the master's). */
  env?: Record<string, string | undefined>
  /** Arguments passed to the script. */
  args?: string[]
  /** Node options for the workers (e.g. `['--max-old-space-size=512']`). Default: none. */
  execArgv?: string[]
  /** Working directory of the workers. Default: the master's. */
  cwd?: string
  /** Whether a reload replaces these workers. `false`: they get `onWorkerReload` instead (the gateway pattern). Default true. */
  reloadable?: boolean
  /**
   * Drop-in mode: a worker's plain `listen(port)` (an app that does not import baton) gets
   * a socket the master creates on first request and keeps across reloads (preload.ts,
   * loaded with `--import`). Default true; `false` loads nothing into the workers.
   */
  dropIn?: boolean
  /**
   * How a worker becomes ready (see {@link Readiness}). Default `listen`. A reload of any
   * mode is sequential and readiness-gated: under `uptime`, a replacement that exits before
   * `minUptime` fails the reload.
   */
  readiness?: Readiness
  /** `readiness: 'uptime'`: milliseconds a worker must stay up to be ready (less than `readyTimeout`). Default 1000. */
  minUptime?: number
  /**
   * Alias of `readiness: 'message'` (PM2's `wait_ready`): a worker is ready only when it
   * sends `process.send('ready')` (or calls `worker.ready()` / `worker.listen()`), not when
   * it has listened. Default false.
   */
  waitReady?: boolean
  /**
   * The environment variable every worker finds its id (0, 1, ...) in. Default
   * `NODE_APP_INSTANCE`, as under PM2; PM2's `instance_var` renames it.
   */
  instanceVar?: string
  /** Milliseconds a new worker has to become ready. Default 30000. */
  readyTimeout?: number
  /** Milliseconds a stopping worker has before SIGKILL. Default 2000. */
  stopTimeout?: number
  /** Reload order. Default `start-first`. */
  order?: ReloadOrder
  /**
   * Workers a reload replaces at once, each readiness-gated. Default 1. `start-first`
   * keeps at least `count` workers ready (at most `count + 2 × parallel` processes while
   * old ones drain); `stop-first` keeps at least `count - parallel` ready (at most `count`
   * processes).
   */
  parallel?: number
  /** Listen backlog. Default 511. */
  backlog?: number
  /**
   * `reuseport` (default on Linux): one `SO_REUSEPORT` socket per address and worker slot,
   * held by the master (listen addresses, and the app's own `listen(PORT)` in drop-in
   * mode); new connections go only to slots with a ready worker, weighted towards the
   * workers with fewer connections, and over-full workers shed keep-alive connections
   * after a reload (docs/architecture.md, "Balancing").
   * `sticky` (Linux): the sockets of `reuseport`, but the kernel picks the slot from the
   * client's source address only, so every connection of one client address goes to the
   * same worker slot while it serves (Socket.IO's long-polling, sessions held in memory;
   * clients behind one NAT or proxy share a worker). Works with or without `listen` (a
   * drop-in app's own `listen(PORT)` gets its slot's socket). The start fails if the
   * kernel refuses the steering program.
   * `shared` (default elsewhere): one socket per address that every worker accepts on.
   */
  balance?: Balance
  /**
   * Run the workers as this user: a uid or a user name (the master must be root). Its
   * primary group and supplementary groups come from the user database unless `gid` is
   * given.
   */
  uid?: number | string
  /** Run the workers as this group: a gid or a group name (the master must be root for another group). */
  gid?: number | string
  /** Where the workers' stdout goes. Default `inherit`. */
  stdout?: OutputTarget
  /** Where the workers' stderr goes. Default `inherit`. */
  stderr?: OutputTarget
  /**
   * Prefix every line the workers write with `group#id ` (e.g. `web#2 listening`), on
   * stdout and stderr alike. Lines are then buffered per worker: a last line without a
   * newline is written when the worker exits (or once 16 KiB long). Default false.
   */
  logPrefix?: boolean
}

/** Crash-restart backoff. */
export interface BackoffOptions {
  /** First restart delay in ms. Default 100. */
  initial?: number
  /** Largest restart delay in ms. Default 30000. */
  max?: number
  /** A worker up this many ms no longer counts as crash-looping. Default 10000. */
  resetAfter?: number
}

/** Options of a {@link Supervisor}. */
export interface SupervisorOptions {
  /** Master name: names the control socket (`baton status <name>`). Default: the main script's base name. */
  name?: string
  /** Runtime dir for the control socket and pid file. Default: `BATON_RUNTIME_DIR`, else `/run/baton` for root, else `~/.baton` (`<tmpdir>/baton-<uid>` when the home directory is unusable). */
  runtimeDir?: string
  /** Groups by name. More can be added with `supervisor.group()`. */
  groups?: Record<string, GroupOptions>
  /** Handle SIGTERM/SIGINT (stop), a second SIGINT (force), SIGHUP/SIGUSR2 (reload). Default true. */
  handleSignals?: boolean
  /** Where log lines go; `false` silences them. Default: stderr. */
  log?: ((line: string) => void) | false
  /** Crash-restart backoff. */
  backoff?: BackoffOptions
  /**
   * Called before every reload (API, signal or `baton reload`) to re-read the options,
   * e.g. from a config file (`baton start` does this for `baton.config.*`). Resolve with
   * the new options (same shape as these) to apply them to the workers the reload starts
   * (see {@link Supervisor.reconfigure}), or with `undefined` to keep the current ones. A
   * rejection fails the reload with its message; nothing is replaced.
   */
  beforeReload?: () => SupervisorOptions | undefined | Promise<SupervisorOptions | undefined>
  /**
   * Address of a health endpoint for readiness/liveness probes (`host:port`, `:port`,
   * `[::1]:port`, `unix:/path`): every GET or HEAD answers 200 while the fleet is ready,
   * 503 while it is not or while its status is stale, with
   * `{"ready": bool, "groups": {"<name>": {"ready": n, "count": n}}}` (src/health.ts).
   * Default: none.
   */
  health?: string
  /**
   * The health endpoint serves the full status JSON (`baton status --json`: paths, pids,
   * the stderr tail of a failed reload) instead of the minimal body. Only for an address
   * that no untrusted client can reach. Needs `health`. Default: false.
   */
  healthDetail?: boolean
  /**
   * Send the master's own stdout and stderr (its log lines, and the output of groups
   * whose `stdout`/`stderr` is `inherit`) to this file, appended to and reopened by
   * `reopenLogs()` / `baton reopen-logs`. A master started in the background
   * (`baton start --daemon`, `start -d`) uses `<runtime dir>/<name>.log` (or
   * `--log FILE`). Default: none.
   */
  logFile?: string
  /**
   * The command line `upgrade()` / `baton upgrade` starts the new master with, program
   * first. Default: this master's own (`process.execPath`, `process.execArgv`,
   * `process.argv`), run in its working directory, so the new master is the baton and
   * Node installed now, reading its options or config file afresh.
   */
  upgradeCommand?: string[]
}

/** A group after validation and defaults. */
export interface ResolvedGroup {
  name: string
  script: string
  count: number
  listen: string[]
  listenNames: string[]
  env: Record<string, string | undefined>
  args: string[]
  execArgv: string[]
  cwd: string
  reloadable: boolean
  dropIn: boolean
  readiness: Readiness
  minUptime: number
  instanceVar: string
  readyTimeout: number
  stopTimeout: number
  order: ReloadOrder
  parallel: number
  backlog: number
  balance: Balance
  uid: string | undefined
  gid: string | undefined
  stdout: string
  stderr: string
  logPrefix: boolean
}

/** Thrown for invalid options; `field` names the option. */
export class OptionsError extends Error {
  /** The offending option, e.g. `groups.web.count`. */
  readonly field: string
  constructor(field: string, message: string) {
    super(`${field}: ${message}`)
    this.name = 'OptionsError'
    this.field = field
  }
}

const GROUP_KEYS = new Set([
  'script',
  'count',
  'listen',
  'env',
  'args',
  'execArgv',
  'cwd',
  'reloadable',
  'readyTimeout',
  'stopTimeout',
  'order',
  'parallel',
  'backlog',
  'balance',
  'uid',
  'gid',
  'stdout',
  'stderr',
  'logPrefix',
  'dropIn',
  'waitReady',
  'readiness',
  'minUptime',
  'instanceVar',
])
const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/

/** Whether `value` is usable as a master or group name. */
export function isValidName(value: string): boolean {
  return NAME_RE.test(value)
}

function checkName(field: string, value: unknown): string {
  if (typeof value !== 'string' || !NAME_RE.test(value)) {
    throw new OptionsError(
      field,
      `${JSON.stringify(value)} is not a valid name (1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.')`,
    )
  }
  return value
}

function integer(field: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new OptionsError(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`)
  }
  return value
}

function stringArray(field: string, value: unknown): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
    throw new OptionsError(field, 'expected an array of strings')
  }
  return value as string[]
}

function listenOf(field: string, value: unknown): { listen: string[]; names: string[] } {
  if (value === undefined) return { listen: [], names: [] }
  const entries: Array<[string, unknown]> =
    typeof value === 'string'
      ? [['listen0', value]]
      : Array.isArray(value)
        ? value.map((v, i) => [`listen${i}`, v] as [string, unknown])
        : typeof value === 'object' && value !== null
          ? Object.entries(value)
          : []
  if (entries.length === 0 && typeof value !== 'object') {
    throw new OptionsError(field, 'expected an address string, an array of addresses or an object of named addresses')
  }
  const listen: string[] = []
  const names: string[] = []
  for (const [name, addr] of entries) {
    const f = Array.isArray(value)
      ? `${field}[${name.slice(6)}]`
      : typeof value === 'string'
        ? field
        : `${field}.${name}`
    if (typeof addr !== 'string') throw new OptionsError(f, `expected an address string, got ${JSON.stringify(addr)}`)
    if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new OptionsError(f, `listen names may use A-Z a-z 0-9 . _ - only`)
    try {
      listen.push(native().normalizeListenAddress(addr))
    } catch (e) {
      throw new OptionsError(f, (e as Error).message)
    }
    names.push(name)
  }
  return { listen, names }
}

/** Validate one group's options and fill in defaults. */
export function resolveGroup(name: string, raw: unknown, defaultScript?: string): ResolvedGroup {
  const field = `groups.${name}`
  checkName(field, name)
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new OptionsError(field, 'expected an object of group options')
  }
  const o = raw as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!GROUP_KEYS.has(key)) {
      throw new OptionsError(`${field}.${key}`, `unknown option (known: ${[...GROUP_KEYS].join(', ')})`)
    }
  }
  const cwd = o.cwd === undefined ? process.cwd() : o.cwd
  if (typeof cwd !== 'string') throw new OptionsError(`${field}.cwd`, 'expected a directory path')
  const absCwd = resolve(cwd)
  if (!existsSync(absCwd) || !statSync(absCwd).isDirectory()) {
    throw new OptionsError(`${field}.cwd`, `${absCwd} is not a directory`)
  }
  const scriptRaw = o.script ?? defaultScript
  if (typeof scriptRaw !== 'string' || scriptRaw === '') {
    throw new OptionsError(`${field}.script`, 'expected the path of the worker script')
  }
  const script = resolve(absCwd, scriptRaw)
  if (!existsSync(script)) {
    throw new OptionsError(`${field}.script`, `${script} does not exist`)
  }
  if (!statSync(script).isFile()) throw new OptionsError(`${field}.script`, `${script} is not a file`)
  const { listen, names } = listenOf(`${field}.listen`, o.listen)
  if (o.env !== undefined && (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env))) {
    throw new OptionsError(`${field}.env`, 'expected an object of environment variables')
  }
  for (const [k, v] of Object.entries((o.env ?? {}) as Record<string, unknown>)) {
    if (v !== undefined && typeof v !== 'string') throw new OptionsError(`${field}.env.${k}`, 'expected a string')
  }
  const order = o.order ?? 'start-first'
  if (order !== 'start-first' && order !== 'stop-first') {
    throw new OptionsError(`${field}.order`, `expected 'start-first' or 'stop-first', got ${JSON.stringify(order)}`)
  }
  const balance = o.balance ?? defaultBalance()
  if (balance !== 'shared' && balance !== 'reuseport' && balance !== 'sticky') {
    throw new OptionsError(
      `${field}.balance`,
      `expected 'shared', 'reuseport' or 'sticky', got ${JSON.stringify(balance)}`,
    )
  }
  if (balance !== 'shared' && process.platform !== 'linux') {
    throw new OptionsError(
      `${field}.balance`,
      `'${balance}' needs Linux (${process.platform} does not spread connections across SO_REUSEPORT sockets); use 'shared'`,
    )
  }
  for (const key of ['dropIn', 'waitReady'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean')
      throw new OptionsError(`${field}.${key}`, 'expected true or false')
  }
  const readiness = resolveReadiness(field, o)
  const readyTimeout = integer(`${field}.readyTimeout`, o.readyTimeout, DEFAULT_READY_TIMEOUT_MS, 1, 3_600_000)
  const minUptime = integer(`${field}.minUptime`, o.minUptime, 1_000, 0, 3_600_000)
  if (readiness === 'uptime' && minUptime >= readyTimeout) {
    throw new OptionsError(
      `${field}.minUptime`,
      `${minUptime} ms is not less than readyTimeout (${readyTimeout} ms): a worker could never become ready; lower minUptime or raise readyTimeout`,
    )
  }
  const instanceVar = o.instanceVar ?? 'NODE_APP_INSTANCE'
  if (
    typeof instanceVar !== 'string' ||
    !/^[A-Za-z_][A-Za-z0-9_]*$/.test(instanceVar) ||
    instanceVar.startsWith('BATON_')
  )
    throw new OptionsError(
      `${field}.instanceVar`,
      `expected an environment variable name (A-Z a-z 0-9 _, not starting with a digit or BATON_), got ${JSON.stringify(instanceVar)}`,
    )
  if (o.reloadable !== undefined && typeof o.reloadable !== 'boolean') {
    throw new OptionsError(`${field}.reloadable`, 'expected true or false')
  }
  if (o.logPrefix !== undefined && typeof o.logPrefix !== 'boolean') {
    throw new OptionsError(`${field}.logPrefix`, 'expected true or false')
  }
  return {
    name,
    script,
    count: integer(`${field}.count`, o.count, 1, 1, MAX_WORKERS),
    listen,
    listenNames: names,
    env: (o.env ?? {}) as Record<string, string | undefined>,
    args: stringArray(`${field}.args`, o.args),
    execArgv: stringArray(`${field}.execArgv`, o.execArgv),
    cwd: absCwd,
    reloadable: o.reloadable !== false,
    dropIn: o.dropIn !== false,
    readiness,
    minUptime,
    instanceVar,
    readyTimeout,
    stopTimeout: integer(`${field}.stopTimeout`, o.stopTimeout, DEFAULT_STOP_TIMEOUT_MS, 1, 3_600_000),
    order,
    parallel: integer(`${field}.parallel`, o.parallel, 1, 1, MAX_WORKERS),
    backlog: integer(`${field}.backlog`, o.backlog, DEFAULT_BACKLOG, 1, 65_535),
    balance,
    uid: userOrGroup(`${field}.uid`, o.uid, 'user'),
    gid: userOrGroup(`${field}.gid`, o.gid, 'group'),
    stdout: resolveOutputTarget(`${field}.stdout`, o.stdout, absCwd),
    stderr: resolveOutputTarget(`${field}.stderr`, o.stderr, absCwd),
    logPrefix: o.logPrefix === true,
  }
}

/** `readiness`, with `waitReady: true` as `'message'`; both given must agree. */
function resolveReadiness(field: string, o: Record<string, unknown>): Readiness {
  const r = o.readiness
  if (r !== undefined && r !== 'listen' && r !== 'message' && r !== 'uptime')
    throw new OptionsError(`${field}.readiness`, `expected 'listen', 'message' or 'uptime', got ${JSON.stringify(r)}`)
  if (o.waitReady === true && r !== undefined && r !== 'message')
    throw new OptionsError(
      `${field}.waitReady`,
      `waitReady: true means readiness 'message', but readiness is '${r}': keep one of the two`,
    )
  return o.waitReady === true ? 'message' : ((r as Readiness | undefined) ?? 'listen')
}

/** Validate an output target: `inherit`, `ignore`, or a file path made absolute against `base`. */
export function resolveOutputTarget(field: string, value: unknown, base: string): string {
  if (value === undefined || value === 'inherit' || value === 'ignore')
    return (value as string | undefined) ?? 'inherit'
  if (typeof value !== 'string' || value === '') {
    throw new OptionsError(field, `expected 'inherit', 'ignore' or a file path, got ${JSON.stringify(value)}`)
  }
  return logFilePath(field, resolve(base, value))
}

/** Check that `path` can be a log file: not a directory, in an existing directory. */
function logFilePath(field: string, path: string): string {
  if (existsSync(path) && statSync(path).isDirectory()) {
    throw new OptionsError(field, `${path} is a directory; give the path of a log file`)
  }
  const dir = dirname(path)
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new OptionsError(field, `cannot write ${path}: directory ${dir} does not exist (create it first)`)
  }
  return path
}

/** Validate the `logFile` option; returns its absolute path, or undefined when unset. */
export function resolveLogFile(raw: unknown): string | undefined {
  if (raw === undefined) return undefined
  if (typeof raw !== 'string' || raw === '')
    throw new OptionsError('logFile', `expected a file path, got ${JSON.stringify(raw)}`)
  return logFilePath('logFile', resolve(raw))
}

/** `upgradeCommand`, or this process's own command line. */
export function resolveUpgradeCommand(raw: unknown): string[] {
  if (raw === undefined) return [process.execPath, ...process.execArgv, ...process.argv.slice(1)]
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((a) => typeof a === 'string') || raw[0] === '') {
    throw new OptionsError('upgradeCommand', 'expected a command line as an array of strings, program first')
  }
  return raw as string[]
}

/** A uid/gid or a name, as the string the core looks up (digits are an id). */
function userOrGroup(field: string, value: unknown, kind: 'user' | 'group'): string | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'number') return String(integer(field, value, 0, 0, 2 ** 32 - 2))
  if (typeof value === 'string' && /^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(value) && value.length <= 256) return value
  throw new OptionsError(field, `expected a numeric ${kind} id or a ${kind} name, got ${JSON.stringify(value)}`)
}

/** `reuseport` on Linux, where the kernel spreads connections over per-slot sockets; else `shared`. */
export function defaultBalance(): Balance {
  return process.platform === 'linux' ? 'reuseport' : 'shared'
}

/** The supervisor's name: the given one, else the main script's base name. */
export function resolveName(name: unknown): string {
  if (name !== undefined) return checkName('name', name)
  const main = process.argv[1] ? basename(process.argv[1], extname(process.argv[1])) : 'baton'
  return NAME_RE.test(main) ? main : 'baton'
}

/**
 * The runtime dir: the given one, else `BATON_RUNTIME_DIR`, else `/run/baton` for root,
 * else `~/.baton` (`<tmpdir>/baton-<uid>` when the home directory is unusable). The rule
 * itself is in the core (crates/baton-core/src/runtime_dir.rs), shared by the master and
 * the CLI.
 */
export function resolveRuntimeDir(dir?: string): string {
  if (dir !== undefined) {
    if (typeof dir !== 'string' || dir === '') throw new OptionsError('runtimeDir', 'expected a directory path')
    return resolve(dir)
  }
  return native().resolveRuntimeDir(
    process.env.BATON_RUNTIME_DIR || undefined,
    process.geteuid?.() ?? 0,
    process.env.HOME || undefined,
    tmpdir(),
  )
}

/** Validate the backoff options. */
export function resolveBackoff(raw: unknown): { initial: number; max: number; resetAfter: number } {
  if (raw !== undefined && (typeof raw !== 'object' || raw === null)) {
    throw new OptionsError('backoff', 'expected an object { initial, max, resetAfter }')
  }
  const o = (raw ?? {}) as Record<string, unknown>
  const initial = integer('backoff.initial', o.initial, 100, 1, 3_600_000)
  const max = integer('backoff.max', o.max, 30_000, initial, 3_600_000)
  const resetAfter = integer('backoff.resetAfter', o.resetAfter, 10_000, 1, 86_400_000)
  return { initial, max, resetAfter }
}

/** Validate `healthDetail` (a boolean, only with `health`); returns it, false when unset. */
export function resolveHealthDetail(raw: unknown, health: string | undefined): boolean {
  if (raw === undefined) return false
  if (typeof raw !== 'boolean')
    throw new OptionsError('healthDetail', `expected true or false, got ${JSON.stringify(raw)}`)
  if (raw && health === undefined)
    throw new OptionsError(
      'healthDetail',
      'applies to the health endpoint only: set health to an address, or remove healthDetail',
    )
  return raw
}

/** Validate the `health` address; returns its canonical form, or undefined when unset. */
export function resolveHealth(raw: unknown): string | undefined {
  if (raw === undefined) return undefined
  if (typeof raw !== 'string')
    throw new OptionsError('health', `expected an address string, got ${JSON.stringify(raw)}`)
  try {
    return native().normalizeListenAddress(raw)
  } catch (e) {
    throw new OptionsError('health', (e as Error).message)
  }
}
