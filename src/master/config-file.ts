/**
 * Config files: `baton start` with no script reads `baton.config.{mjs,js,cjs,json}` from
 * the current directory (or `--config FILE`). The file holds {@link SupervisorOptions}
 * (`{ name, groups: { web: { script, count, listen, env, ... } }, backoff, health, ... }`:
 * {@link CONFIG_FILE_OPTIONS}) as its default
 * export (`module.exports` for CommonJS, the whole document for JSON), or a function
 * (possibly async) returning them. Relative `script`, `cwd`, `stdout`, `stderr` and
 * `logFile` paths are resolved against the file's directory. Every error names the file and the key.
 *
 * A file in PM2's format (`{ apps: [...] }`, e.g. `ecosystem.config.js`, `e.config.js`,
 * `apps.json`, `ecosystem.yml`) is read too: each app becomes a group (see
 * pm2-ecosystem.ts). YAML is parsed with the `yaml` package.
 *
 * A root master refuses a file that a user one of its groups runs as (`uid`) may change:
 * owned by that user, group-writable with one of its groups, or writable by everyone; the
 * same for every directory above it (a sticky directory counts through its owner only;
 * POSIX mode bits, no ACLs: crates/baton-core/src/writers.rs). At a reload the file is
 * checked against the running groups' users before it is loaded (no code of it runs), and
 * against its own groups after.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { native } from '../native.js'
import {
  checkFleet,
  isValidName,
  OptionsError,
  resolveGroup,
  withLogDefaults,
  type GroupOptions,
  type SupervisorOptions,
} from './options.js'
import { EcosystemError, fromEcosystem, isEcosystem, isYamlFile } from './pm2-ecosystem.js'

/** The file names `baton start` looks for, in this order. */
export const CONFIG_NAMES = ['baton.config.mjs', 'baton.config.js', 'baton.config.cjs', 'baton.config.json'] as const

/**
 * The fleet options a config file may hold. Every option of the generated
 * `SupervisorOptions` is here or in {@link NOT_CONFIG_FILE_OPTIONS}
 * (__test__/option-contract.spec.ts checks it).
 */
export const CONFIG_FILE_OPTIONS = [
  'name',
  'groups',
  'backoff',
  'health',
  'healthDetail',
  'logFile',
  'logTime',
  'logFormat',
  'logMaxSize',
  'logMaxFiles',
] as const satisfies ReadonlyArray<keyof SupervisorOptions>

/** The fleet options a config file cannot hold, each with the reason. */
export const NOT_CONFIG_FILE_OPTIONS = {
  runtimeDir:
    'every baton command looks for the master in BATON_RUNTIME_DIR (or the default runtime dir): a file cannot move it',
  handleSignals: 'baton start always handles signals: they are how a master is stopped and reloaded',
  upgradeCommand: "baton upgrade runs the master's own command line, which reads this file afresh",
} as const satisfies Partial<Record<keyof SupervisorOptions, string>>

const FILE_KEYS: ReadonlySet<string> = new Set(CONFIG_FILE_OPTIONS)

/** A config file that cannot be used; the message names the file and, where known, the key. */
export class ConfigError extends Error {
  /** The config file. */
  readonly file: string
  /** The offending key (`groups.web.count`), when the error is about one. */
  readonly key: string | undefined
  constructor(file: string, key: string | undefined, message: string) {
    super(`${file}: ${key ? `${key}: ` : ''}${message}`)
    this.name = 'ConfigError'
    this.file = file
    this.key = key
  }
}

/** The config file in `dir`, if there is one. */
export function findConfig(dir: string): string | undefined {
  for (const name of CONFIG_NAMES) {
    const path = join(dir, name)
    if (existsSync(path)) return path
  }
  return undefined
}

/**
 * Refuse `file` when a user that one of `groups` runs as may change it or a directory
 * above it. Only in a root master (euid 0), and only for groups with a `uid`: a master
 * that is not root cannot switch users, and a group of root is root already. Throws a
 * {@link ConfigError} naming the file, the path at fault, its owner or group and the rule.
 */
export function checkConfigWriters(file: string, groups: Record<string, GroupOptions> | undefined): void {
  if ((process.geteuid?.() ?? -1) !== 0 || groups === undefined) return
  const users = Object.entries(groups).flatMap(([group, g]) =>
    g.uid === undefined || g.uid === null
      ? []
      : [{ group, uid: String(g.uid), gid: g.gid === undefined || g.gid === null ? undefined : String(g.gid) }],
  )
  if (users.length === 0) return
  try {
    native().checkConfigWriters(file, users)
  } catch (e) {
    throw new ConfigError(file, undefined, (e as Error).message)
  }
}

/** What the file's options apply on top of, from `baton start` flags. */
export interface ConfigOverrides {
  /** `--name`. */
  name?: string
  /** Group options given as flags (`--count`, `--listen`, ...), applied to every group. */
  group?: GroupOptions
  /**
   * `--env NAME`: `env_<NAME>` is merged over `env`, in a PM2 ecosystem file's apps as in
   * a baton config file's groups (see {@link selectEnv}).
   */
  env?: string
  /**
   * The groups running now (a reload): the file is refused before it is loaded when a
   * user one of them runs as may change it (see {@link checkConfigWriters}).
   */
  running?: Record<string, GroupOptions>
}

let generation = 0

function isCommonJs(path: string): boolean {
  if (path.endsWith('.cjs')) return true
  if (path.endsWith('.mjs')) return false
  // .js: the nearest package.json's "type" decides, as in Node.
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: string }).type !== 'module'
      } catch {
        return true
      }
    }
    if (dirname(dir) === dir) return true
  }
}

/** Load the file's exported value afresh (a re-read sees the file as it is now). */
async function loadValue(path: string): Promise<unknown> {
  if (isYamlFile(path)) {
    // Loaded only for a YAML file, so every other start pays nothing for the parser.
    const { parse } = await import('yaml')
    try {
      return parse(readFileSync(path, 'utf8')) as unknown
    } catch (e) {
      throw new ConfigError(path, undefined, `is not valid YAML: ${(e as Error).message}`)
    }
  }
  if (path.endsWith('.json')) {
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as unknown
    } catch (e) {
      throw new ConfigError(path, undefined, `is not valid JSON: ${(e as Error).message}`)
    }
  }
  let exported: unknown
  try {
    if (isCommonJs(path)) {
      const require = createRequire(path)
      delete require.cache[require.resolve(path)]
      exported = require(path) as unknown
    } else {
      // A query makes Node load the module again instead of answering from its cache.
      generation += 1
      const mod = (await import(`${pathToFileURL(path).href}?baton-reload=${generation}`)) as { default?: unknown }
      if (!('default' in mod))
        throw new ConfigError(path, undefined, 'has no default export (export default { groups: { ... } })')
      exported = mod.default
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e
    throw new ConfigError(path, undefined, `cannot be loaded: ${(e as Error).message}`)
  }
  if (typeof exported === 'function') {
    try {
      exported = await (exported as () => unknown)()
    } catch (e) {
      throw new ConfigError(path, undefined, `its exported function threw: ${(e as Error).message}`)
    }
  }
  return exported
}

/**
 * Read and validate a config file, with `baton start` flags applied on top. Throws a
 * {@link ConfigError} naming the file and key.
 */
export async function readConfig(
  path: string,
  overrides: ConfigOverrides = {},
  notes?: string[],
): Promise<SupervisorOptions> {
  const file = resolve(path)
  if (!existsSync(file)) throw new ConfigError(file, undefined, 'does not exist')
  checkConfigWriters(file, overrides.running)
  const value = await loadValue(file)
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(
      file,
      undefined,
      'must export an object: { name, groups: { web: { script, count, listen } } }',
    )
  }
  let raw = value as Record<string, unknown>
  if (isEcosystem(value)) {
    try {
      const eco = fromEcosystem(value, dirname(file), overrides.env)
      notes?.push(...eco.notes)
      const names = Object.keys(eco.groups)
      raw = { groups: eco.groups, ...(names.length === 1 ? { name: names[0] } : {}) }
    } catch (e) {
      if (e instanceof EcosystemError) throw new ConfigError(file, e.key, e.message)
      throw e
    }
  }
  for (const key of Object.keys(raw)) {
    if (!FILE_KEYS.has(key)) throw new ConfigError(file, key, `unknown option (known: ${[...FILE_KEYS].join(', ')})`)
  }
  const groupsRaw = raw.groups
  if (
    typeof groupsRaw !== 'object' ||
    groupsRaw === null ||
    Array.isArray(groupsRaw) ||
    Object.keys(groupsRaw).length === 0
  ) {
    throw new ConfigError(
      file,
      'groups',
      'expected an object of groups by name, e.g. { web: { script: "app.mjs", listen: ":8080" } }',
    )
  }
  const base = dirname(file)
  const groups: Record<string, GroupOptions> = {}
  const flags = Object.fromEntries(
    Object.entries(overrides.group ?? {}).filter(([, v]) => v !== undefined),
  ) as GroupOptions
  if (flags.listen !== undefined && Object.keys(groupsRaw).length > 1) {
    throw new ConfigError(
      file,
      'groups',
      '--listen cannot apply to several groups: set listen for each group in the file',
    )
  }
  for (const [name, g] of Object.entries(groupsRaw as Record<string, unknown>)) {
    if (typeof g !== 'object' || g === null || Array.isArray(g)) {
      throw new ConfigError(file, `groups.${name}`, 'expected an object of group options')
    }
    const options = { ...selectEnv(file, name, g as Record<string, unknown>, overrides.env), ...flags }
    // Paths in the file are relative to the file, not to wherever baton was started.
    options.cwd =
      typeof options.cwd === 'string' ? resolve(base, options.cwd) : options.cwd === undefined ? base : options.cwd
    for (const key of ['stdout', 'stderr'] as const) {
      const target = options[key]
      if (typeof target === 'string' && target !== '' && target !== 'inherit' && target !== 'ignore')
        options[key] = resolve(base, target)
    }
    groups[name] = options
  }
  if (overrides.env !== undefined && !isEcosystem(value)) {
    const key = `env_${overrides.env}`
    if (!Object.values(groupsRaw as Record<string, Record<string, unknown>>).some((g) => key in g)) {
      throw new ConfigError(
        file,
        undefined,
        `--env ${overrides.env}: no group has ${key} (groups: ${Object.keys(groupsRaw).join(', ')}); add ${key}: { ... } next to env in a group, or leave --env out`,
      )
    }
  }
  const options: SupervisorOptions = {
    name: overrides.name ?? (raw.name as string | undefined) ?? defaultName(file),
    groups,
  }
  // Checked with the rest below. Read at start only: `health`, `healthDetail` (a reload keeps
  // the endpoint as it is) and `logFile`; `--health` and `--log` override them.
  const given = options as Record<string, unknown>
  for (const key of CONFIG_FILE_OPTIONS)
    if (key !== 'name' && key !== 'groups' && raw[key] !== undefined) given[key] = raw[key]
  // A log file's path is relative to the file, like the groups' stdout and stderr.
  if (typeof options.logFile === 'string' && options.logFile !== '') options.logFile = resolve(base, options.logFile)
  try {
    // The one check of fleet options (the constructor runs it again with the flags applied:
    // `--health` may give the address a file's healthDetail needs).
    const { healthDetail, ...rest } = options
    checkFleet(healthDetail === true && options.health === undefined ? rest : options)
    for (const [name, g] of Object.entries(groups)) resolveGroup(name, withLogDefaults(g, options))
  } catch (e) {
    if (e instanceof OptionsError) throw new ConfigError(file, e.field, e.message.slice(e.field.length + 2))
    throw e
  }
  checkConfigWriters(file, groups)
  return options
}

/**
 * A group of a baton config file with its `env_<NAME>` blocks taken out (as in PM2, a
 * group may hold several: `env_production`, `env_staging`), and with `--env NAME`,
 * `env_<NAME>` merged over `env` (its variables win). A group without that block keeps
 * its `env`; a file where no group has it is refused by {@link readConfig} (a misspelt
 * `--env` must not start production with the development environment).
 */
function selectEnv(file: string, group: string, g: Record<string, unknown>, envName: string | undefined): GroupOptions {
  const options: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(g)) {
    if (!key.startsWith('env_')) {
      options[key] = value
      continue
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ConfigError(file, `groups.${group}.${key}`, 'expected an object of environment variables, like env')
    }
  }
  const selected = envName === undefined ? undefined : g[`env_${envName}`]
  const base = g.env
  // A malformed env is left as it is, for the group's validation to name it.
  if (
    selected !== undefined &&
    (base === undefined || (typeof base === 'object' && base !== null && !Array.isArray(base)))
  ) {
    options.env = { ...(base as Record<string, unknown> | undefined), ...(selected as Record<string, unknown>) }
  }
  return options as GroupOptions
}

/** The fleet's name when the file gives none: its directory's name (`baton` if unusable). */
function defaultName(file: string): string {
  const dir = basename(dirname(file))
  return isValidName(dir) ? dir : 'baton'
}
