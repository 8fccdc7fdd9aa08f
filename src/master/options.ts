/**
 * Supervisor and group options. Their types, defaults, ranges and validation are declared
 * once, in Rust (crates/baton-contract/src/options.rs, generated into
 * `native/index.d.cts`); this module adds only what is JavaScript by nature: paths relative
 * to the current directory, the `listen` shorthands, environment objects, functions. Every
 * error names the field (`groups.web.count`) and says what is expected.
 */
import { existsSync, statSync } from 'node:fs'
import { basename, dirname, extname, resolve } from 'node:path'
import type {
  BackoffOptions,
  Balance,
  GroupOptions as NativeGroupOptions,
  ListenTarget,
  OptionProblem,
  Order,
  Readiness,
  SupervisorOptions as NativeSupervisorOptions,
} from '../../native/index.cjs'
import { native } from '../native.js'
import { defaultRuntimeDir } from '../runtime-dir.js'
import { fleetOrCommon } from '../format.js'

export type { BackoffOptions, Balance, ListenTarget, Readiness }

/** How a reload replaces one slot (the generated `Order`). */
export type ReloadOrder = Order

/** Options of one group of workers: the generated `GroupOptions`, with JavaScript's forms of `listen`, `env`, `uid` and `gid`. */
export interface GroupOptions extends Omit<NativeGroupOptions, 'listen' | 'env' | 'uid' | 'gid'> {
  /**
   * Addresses the master listens on for this group: `host:port`, `:port`,
   * `tcp://host:port`, `[::1]:port`, `unix:/path`. An object gives each address a name
   * for `worker.listen(server, name)`; in an array, the names are `listen0`, `listen1`, ...
   */
  listen?: string | string[] | Record<string, string>
  /** Extra environment variables for the workers (on top of the master's); `undefined` values are left out. */
  env?: Record<string, string | undefined>
  /**
   * Run the workers as this user: a uid or a user name (the master must be root). Its
   * primary group and supplementary groups come from the user database unless `gid` is
   * given.
   */
  uid?: number | string
  /** Run the workers as this group: a gid or a group name (the master must be root for another group). */
  gid?: number | string
}

/** Options of a {@link Supervisor}: the generated `SupervisorOptions`, with what only JavaScript has. */
export interface SupervisorOptions extends Omit<NativeSupervisorOptions, 'groups'> {
  /** Groups by name. More can be added with `supervisor.group()`. */
  groups?: Record<string, GroupOptions>
  /** Where log lines go; `false` silences them. Default: stderr. */
  log?: ((line: string) => void) | false
  /**
   * Called before every reload (API, signal or `baton reload`) to re-read the options,
   * e.g. from a config file (`baton start` does this for `baton.config.*`). Resolve with
   * the new options (same shape as these) to apply them to the workers the reload starts
   * (see {@link Supervisor.reconfigure}), or with `undefined` to keep the current ones. A
   * rejection fails the reload with its message; nothing is replaced.
   */
  beforeReload?: () => SupervisorOptions | undefined | Promise<SupervisorOptions | undefined>
}

/** A group after validation: its options with every default filled in (listen addresses canonical, paths absolute), its name and listen names. */
export type ResolvedGroup = NativeGroupOptions & { name: string; listenNames: string[] }

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

/** Whether `value` is usable as a master or group name (the rule is the Rust one). */
export function isValidName(value: string): boolean {
  return native().isValidName(value)
}

function checkName(field: string, value: unknown): string {
  if (typeof value !== 'string' || !isValidName(value)) {
    throw new OptionsError(
      field,
      `${JSON.stringify(value)} is not a valid name (1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.')`,
    )
  }
  return value
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The `listen` shorthands as an array of addresses and one name each. */
function listenOf(field: string, value: unknown): { listen: unknown; names: string[]; fields: string[] } {
  if (value === undefined) return { listen: undefined, names: [], fields: [] }
  const entries: Array<[string, unknown]> =
    typeof value === 'string'
      ? [['listen0', value]]
      : Array.isArray(value)
        ? value.map((v, i) => [`listen${i}`, v] as [string, unknown])
        : isObject(value)
          ? Object.entries(value)
          : []
  if (entries.length === 0 && typeof value !== 'object') {
    throw new OptionsError(field, 'expected an address string, an array of addresses or an object of named addresses')
  }
  const fields: string[] = []
  for (const [name, addr] of entries) {
    const f = Array.isArray(value)
      ? `${field}[${name.slice(6)}]`
      : typeof value === 'string'
        ? field
        : `${field}.${name}`
    if (typeof addr !== 'string') throw new OptionsError(f, `expected an address string, got ${JSON.stringify(addr)}`)
    if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new OptionsError(f, `listen names may use A-Z a-z 0-9 . _ - only`)
    fields.push(f)
  }
  return { listen: entries.map(([, a]) => a), names: entries.map(([n]) => n), fields }
}

function fail(problem: OptionProblem | undefined, rename?: (field: string) => string): never {
  const field = problem?.field ?? 'options'
  throw new OptionsError(rename?.(field) ?? field, problem?.message ?? 'invalid')
}

/**
 * Validate one group's options and fill in defaults. JavaScript resolves what is its own
 * (`cwd`, `script`, `stdout`/`stderr` paths against the current directory, the `listen`
 * shorthands); every rule is the Rust one (`resolveGroupOptions`).
 */
export function resolveGroup(name: string, raw: unknown, defaultScript?: string): ResolvedGroup {
  const field = `groups.${name}`
  checkName(field, name)
  if (!isObject(raw)) throw new OptionsError(field, 'expected an object of group options')
  const o = { ...raw }
  const cwd = o.cwd === undefined ? process.cwd() : o.cwd
  if (typeof cwd === 'string' && cwd !== '') {
    const absCwd = resolve(cwd)
    if (!existsSync(absCwd) || !statSync(absCwd).isDirectory()) {
      throw new OptionsError(`${field}.cwd`, `${absCwd} is not a directory`)
    }
    o.cwd = absCwd
    const scriptRaw = o.script ?? defaultScript
    if (typeof scriptRaw !== 'string' || scriptRaw === '') {
      throw new OptionsError(`${field}.script`, 'expected the path of the worker script')
    }
    const script = resolve(absCwd, scriptRaw)
    if (!existsSync(script)) throw new OptionsError(`${field}.script`, `${script} does not exist`)
    if (!statSync(script).isFile()) throw new OptionsError(`${field}.script`, `${script} is not a file`)
    o.script = script
    for (const key of ['stdout', 'stderr'] as const) {
      const target = o[key]
      if (typeof target === 'string' && target !== '' && target !== 'inherit' && target !== 'ignore')
        o[key] = logFilePath(`${field}.${key}`, resolve(absCwd, target))
    }
  }
  const { listen, names, fields } = listenOf(`${field}.listen`, o.listen)
  o.listen = listen
  const check = native().resolveGroupOptions(name, JSON.stringify(o))
  if (!check.options) {
    // The core names the i-th address `listen[i]`; name it as the user wrote it.
    fail(check.problem, (f) => {
      const i = /\.listen\[(\d+)\]$/.exec(f)?.[1]
      return i !== undefined && f.startsWith(`${field}.listen[`) ? (fields[Number(i)] ?? f) : f
    })
  }
  return { ...check.options, name, listenNames: names }
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

/** A fleet's options after the one check of them in Rust (`resolveSupervisorOptions`). */
export interface CheckedFleet {
  /** The options as checked: unset ones unset, `health` canonical, a given `backoff` with its defaults, no `groups`. */
  options: NativeSupervisorOptions
  /** `health` parsed into what `net.Server.listen()` takes. */
  health: ListenTarget | undefined
}

/**
 * Check a fleet's options: the functions (`log`, `beforeReload`: the Rust check leaves
 * them to the host, `HOST_FIELDS`) here, every other option by the one Rust check (crates/baton-contract/src/options.rs, `validate_supervisor`:
 * `name`, `runtimeDir`, `health`, `upgradeCommand`, ...). Each group is checked by
 * {@link resolveGroup}. Throws an {@link OptionsError} naming the field.
 */
export function checkFleet(raw: unknown): CheckedFleet {
  if (!isObject(raw)) throw new OptionsError('options', 'expected an object')
  if (raw.log !== undefined && raw.log !== false && typeof raw.log !== 'function')
    throw new OptionsError('log', 'expected a function taking each line, or false to silence the log')
  if (raw.beforeReload !== undefined && typeof raw.beforeReload !== 'function')
    throw new OptionsError('beforeReload', 'expected a function returning the re-read options')
  let json: string
  try {
    json = JSON.stringify(raw)
  } catch (e) {
    throw new OptionsError('options', `cannot be read as data: ${(e as Error).message}`)
  }
  const check = native().resolveSupervisorOptions(json)
  if (!check.options) fail(check.problem)
  return { options: check.options, health: check.health ?? undefined }
}

/** A fleet's options checked, with what only JavaScript resolves filled in. */
export interface ResolvedFleet extends CheckedFleet {
  /** `name`, else the main script's base name. */
  name: string
  /** `runtimeDir` made absolute, else the default runtime dir. */
  runtimeDir: string
  /** `logFile` made absolute (its directory exists). */
  logFile: string | undefined
  /** `upgradeCommand`, else this process's own command line. */
  upgradeCommand: string[]
}

/**
 * {@link checkFleet}, then what is JavaScript's by nature: the default name (the main
 * script's), paths made absolute against the current directory, the default upgrade
 * command (this process's own). `current` gives the defaults of a running fleet
 * (`reconfigure`: its name, runtime dir and upgrade command stay).
 */
export function resolveFleet(raw: unknown, current?: ResolvedFleet): ResolvedFleet {
  const checked = checkFleet(raw)
  const o = checked.options
  const main = process.argv[1] ? basename(process.argv[1], extname(process.argv[1])) : 'baton'
  return {
    ...checked,
    name: o.name ?? current?.name ?? (isValidName(main) ? main : 'baton'),
    runtimeDir: o.runtimeDir !== undefined ? resolve(o.runtimeDir) : (current?.runtimeDir ?? defaultRuntimeDir()),
    logFile: o.logFile !== undefined ? logFilePath('logFile', resolve(o.logFile)) : current?.logFile,
    upgradeCommand: o.upgradeCommand ??
      current?.upgradeCommand ?? [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
  }
}

/** The fleet-wide options that are a group's default: a group that sets its own overrides them. */
const FLEET_LOG_OPTIONS = ['logTime', 'logFormat', 'logMaxSize', 'logMaxFiles'] as const

/**
 * A group's options with the fleet's `logTime`, `logFormat`, `logMaxSize` and
 * `logMaxFiles` filled in where the group sets none (a group overrides the fleet's).
 */
export function withLogDefaults(
  group: GroupOptions,
  fleet: Pick<SupervisorOptions, (typeof FLEET_LOG_OPTIONS)[number]>,
): GroupOptions {
  if (!isObject(group)) return group
  const o: Record<string, unknown> = { ...group }
  for (const key of FLEET_LOG_OPTIONS) if (o[key] === undefined && fleet[key] !== undefined) o[key] = fleet[key]
  return o as GroupOptions
}

/**
 * How the master's own `logFile` rotates: the fleet's `logMaxSize` / `logMaxFiles`, or
 * what every group sets alike ({@link fleetOrCommon}). The size is checked already
 * (`validate_supervisor`, `resolveGroup`).
 */
export function masterLogRotation(
  fleet: SupervisorOptions,
  groups: GroupOptions[],
): { masterLogMaxSize?: string; masterLogMaxFiles?: number } {
  const size = fleetOrCommon<'logMaxSize', string>(fleet, groups, 'logMaxSize')
  if (size === undefined) return {}
  const files = fleetOrCommon<'logMaxFiles', number>(fleet, groups, 'logMaxFiles')
  return { masterLogMaxSize: String(size), ...(files !== undefined ? { masterLogMaxFiles: files } : {}) }
}
