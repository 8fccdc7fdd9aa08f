/**
 * PM2's `ecosystem.config.js` format, read as baton groups: `baton start
 * ecosystem.config.js [--env production]` runs each app of `apps` as a group. The fields
 * that map are translated (see {@link MAPPED_FIELDS}); the others are listed in the notes
 * `baton start` prints, never dropped silently. See docs/migrating-from-pm2.md.
 */
import { existsSync, readFileSync, statSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { basename, resolve } from 'node:path'
import type { GroupOptions } from './options.js'

/** Names PM2 gives its files (`ecosystem.config.js`, `ecosystem.json`, ...): always PM2 files. */
const ECOSYSTEM_NAME = /^ecosystem([.-][\w.-]*)?\.(c?js|mjs|json|ya?ml)$/
/** Names PM2 also takes: `*.config.{js,cjs,mjs}`, `*.json`, `*.yml`/`*.yaml`, when they hold `apps`. */
const PM2_CANDIDATE = /(\.config\.(c?js|mjs)|\.json|\.ya?ml)$/

/** Whether `path` is a YAML file (`.yml`, `.yaml`). */
export function isYamlFile(path: string): boolean {
  return /\.ya?ml$/.test(path)
}

/**
 * Whether `path`, given to `baton start` in place of a script, is a PM2 file: named
 * `ecosystem*`, or any `*.config.{js,cjs,mjs}`, `.json` or `.yml`/`.yaml` file with an
 * `apps` array, as PM2 takes them. JSON is parsed; YAML and JavaScript are not run here,
 * their text must have an `apps` key (a script that merely ends in `.config.js` and
 * never says `apps` still runs as a script).
 */
export function isEcosystemFile(path: string): boolean {
  const name = basename(path)
  if (ECOSYSTEM_NAME.test(name)) return true
  if (!PM2_CANDIDATE.test(name) || !existsSync(path) || !statSync(path).isFile()) return false
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return false
  }
  if (name.endsWith('.json')) {
    try {
      const value = JSON.parse(text) as unknown
      return isEcosystem(value) && Array.isArray(value.apps)
    } catch {
      return false
    }
  }
  if (isYamlFile(name)) return /^apps\s*:/m.test(text)
  return /\bapps\s*:|\.apps\s*=|["']apps["']\s*:/.test(text)
}

/** Whether a loaded config value is in PM2's shape (`{ apps: [...] }`). */
export function isEcosystem(value: unknown): value is { apps: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'apps' in value
}

/** PM2 app fields baton translates. */
export const MAPPED_FIELDS = [
  'name',
  'script',
  'args',
  'instances',
  'exec_mode',
  'env',
  'cwd',
  'node_args',
  'interpreter_args',
  'interpreter',
  'kill_timeout',
  'listen_timeout',
  'wait_ready',
  'min_uptime',
  'uid',
  'gid',
  'instance_var',
  'out_file',
  'error_file',
  'time',
  'log_date_format',
  'cron_restart',
  'max_memory_restart',
] as const

/** A field of an ecosystem file that cannot be used: the key (`apps[1].instances`) and why. */
export class EcosystemError extends Error {
  readonly key: string
  constructor(key: string, message: string) {
    super(message)
    this.name = 'EcosystemError'
    this.key = key
  }
}

/** The groups of an ecosystem file, and what `baton start` should tell the user. */
export interface Ecosystem {
  groups: Record<string, GroupOptions>
  /** One line per translation worth knowing and per ignored field. */
  notes: string[]
}

/** PM2's argument strings: split on spaces, keeping quoted parts together. */
function splitArgs(key: string, value: unknown): string[] {
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[]
  if (typeof value !== 'string') throw new EcosystemError(key, 'expected a string or an array of strings')
  const out: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g
  for (let m = re.exec(value); m !== null; m = re.exec(value)) {
    out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? ''))
  }
  return out
}

/** `instances`: a count, `'max'` / 0 (one per CPU), or -N (CPUs minus N, at least 1). */
function instances(key: string, value: unknown): number {
  const cpus = availableParallelism()
  if (value === undefined) return 1
  if (value === 'max' || value === 0 || value === '0') return cpus
  const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value
  if (typeof n !== 'number' || !Number.isInteger(n))
    throw new EcosystemError(key, `expected a number or "max", got ${JSON.stringify(value)}`)
  return n < 0 ? Math.max(1, cpus + n) : n
}

function env(key: string, value: unknown): Record<string, string> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new EcosystemError(key, 'expected an object of variables')
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, String(v)]))
}

function ms(key: string, value: unknown): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
    throw new EcosystemError(key, `expected milliseconds, got ${JSON.stringify(value)}`)
  return value
}

/** A duration as PM2 takes it: milliseconds, or a string `1000`, `500ms`, `5s`, `2m`, `1h`. */
function duration(key: string, value: unknown): number | undefined {
  if (typeof value !== 'string') return ms(key, value)
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim())
  if (m === null)
    throw new EcosystemError(key, `expected milliseconds or a duration like "5s", got ${JSON.stringify(value)}`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h']
  return Math.round(Number(m[1]) * unit)
}

/** A user or group as PM2 takes it: a name or a numeric id. */
function userOrGroup(key: string, value: unknown): string | number | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'number' || (typeof value === 'string' && value !== '')) return value
  throw new EcosystemError(key, `expected a user or group name or id, got ${JSON.stringify(value)}`)
}

/** The default of PM2's `min_uptime`, and baton's `minUptime`. */
const MIN_UPTIME = 1000

/**
 * Translate PM2 `apps` into baton groups. `base` is the file's directory (relative
 * `cwd` and `script` resolve against it, as PM2 does); `envName` selects `env_<name>`,
 * merged over `env`.
 */
export function fromEcosystem(value: { apps: unknown }, base: string, envName: string | undefined): Ecosystem {
  const apps = Array.isArray(value.apps) ? (value.apps as unknown[]) : [value.apps]
  if (apps.length === 0) throw new EcosystemError('apps', 'has no app')
  const groups: Record<string, GroupOptions> = {}
  const notes: string[] = []
  const ignored = new Map<string, string[]>()
  let envUsed = envName === undefined
  apps.forEach((app, i) => {
    const at = `apps[${i}]`
    if (typeof app !== 'object' || app === null || Array.isArray(app))
      throw new EcosystemError(at, 'expected an app object')
    const a = app as Record<string, unknown>
    if (typeof a.script !== 'string' || a.script === '')
      throw new EcosystemError(`${at}.script`, 'is required (the file to run)')
    const name = typeof a.name === 'string' && a.name !== '' ? a.name : basename(a.script).replace(/\.[^.]*$/, '')
    if (groups[name] !== undefined) throw new EcosystemError(`${at}.name`, `"${name}" is used by two apps`)
    if (a.interpreter !== undefined && !/(^|\/)node(js)?$/.test(String(a.interpreter))) {
      throw new EcosystemError(`${at}.interpreter`, `baton runs Node.js apps; "${String(a.interpreter)}" is not node`)
    }
    const cwd = typeof a.cwd === 'string' ? resolve(base, a.cwd) : base
    const vars = { ...env(`${at}.env`, a.env) }
    if (envName !== undefined && a[`env_${envName}`] !== undefined) {
      Object.assign(vars, env(`${at}.env_${envName}`, a[`env_${envName}`]))
      envUsed = true
    }
    const group: GroupOptions = {
      script: resolve(cwd, a.script),
      cwd,
      count: instances(`${at}.instances`, a.instances),
      env: vars,
    }
    if (a.args !== undefined) group.args = splitArgs(`${at}.args`, a.args)
    const nodeArgs = a.node_args ?? a.interpreter_args
    if (nodeArgs !== undefined)
      group.execArgv = splitArgs(`${at}.${a.node_args !== undefined ? 'node_args' : 'interpreter_args'}`, nodeArgs)
    for (const key of ['uid', 'gid'] as const) {
      const who = userOrGroup(`${at}.${key}`, a[key])
      if (who !== undefined) group[key] = who
    }
    if (a.instance_var !== undefined) {
      if (typeof a.instance_var !== 'string' || a.instance_var === '')
        throw new EcosystemError(`${at}.instance_var`, 'expected the name of an environment variable')
      group.instanceVar = a.instance_var
    }
    for (const [key, stream] of [
      ['out_file', 'stdout'],
      ['error_file', 'stderr'],
    ] as const) {
      const file = a[key]
      if (file === undefined) continue
      if (typeof file !== 'string' || file === '') throw new EcosystemError(`${at}.${key}`, 'expected a file path')
      group[stream] = file === '/dev/null' ? 'ignore' : resolve(cwd, file)
    }
    // PM2's `time: true` and `log_date_format` time-stamp every line: baton's `logTime`
    // (always ISO 8601 UTC with milliseconds, whatever format PM2 was given).
    if (a.time !== undefined && typeof a.time !== 'boolean')
      throw new EcosystemError(`${at}.time`, 'expected true or false')
    if (a.time === true || (typeof a.log_date_format === 'string' && a.log_date_format !== '')) {
      group.logTime = true
      if (typeof a.log_date_format === 'string' && a.log_date_format !== '')
        notes.push(
          `${name}: log_date_format "${a.log_date_format}": baton stamps lines in ISO 8601 UTC (2026-12-07T02:20:00.123Z)`,
        )
    }
    // PM2 restarts hard on its schedule; baton runs a rolling reload (the expression is
    // checked with the group's options: groups.NAME.cronRestart).
    if (a.cron_restart !== undefined) {
      if (typeof a.cron_restart !== 'string' || a.cron_restart.trim() === '')
        throw new EcosystemError(`${at}.cron_restart`, 'expected a cron expression such as "0 3 * * *"')
      group.cronRestart = a.cron_restart
    }
    // PM2 restarts hard over the limit; baton replaces the worker gracefully (the size is
    // checked with the group's options: groups.NAME.maxMemory). A number is bytes.
    if (a.max_memory_restart !== undefined) {
      const limit = a.max_memory_restart
      if (typeof limit === 'number' && Number.isSafeInteger(limit) && limit > 0) group.maxMemory = String(limit)
      else if (typeof limit === 'string' && limit.trim() !== '') group.maxMemory = limit.trim()
      else
        throw new EcosystemError(
          `${at}.max_memory_restart`,
          'expected a size such as "300M" or "1G", or a number of bytes',
        )
    }
    const stop = ms(`${at}.kill_timeout`, a.kill_timeout)
    if (stop !== undefined) group.stopTimeout = stop
    const ready = ms(`${at}.listen_timeout`, a.listen_timeout)
    if (ready !== undefined) group.readyTimeout = ready
    // baton's own keys, for apps written for both.
    if (a.listen !== undefined) group.listen = a.listen as GroupOptions['listen']
    // How each app becomes ready, as PM2 would count it started. A port in env.PORT is
    // not turned into a listen address: the app's own listen(PORT[, host]) gets its
    // socket from the master (drop-in), on the host it asks for, so an app meant for
    // 127.0.0.1 stays on 127.0.0.1 as under PM2.
    const port = vars.PORT !== undefined && /^\d+$/.test(vars.PORT) ? vars.PORT : undefined
    const cluster = typeof a.exec_mode === 'string' && /^cluster(_mode)?$/.test(a.exec_mode)
    const minUptime = duration(`${at}.min_uptime`, a.min_uptime)
    let how: string
    if (a.wait_ready === true) {
      group.readiness = 'message'
      how = "message: ready when it sends process.send('ready') (wait_ready)"
    } else if (port !== undefined || a.listen !== undefined || (group.count ?? 1) > 1 || cluster) {
      group.readiness = 'listen'
      const why =
        port !== undefined
          ? `env.PORT ${port}`
          : a.listen !== undefined
            ? 'listen'
            : cluster
              ? 'cluster mode'
              : `instances ${group.count}`
      how = `listen: ready once it listens (${why})`
    } else {
      group.readiness = 'uptime'
      group.minUptime = minUptime ?? MIN_UPTIME
      how = `uptime: ready once up for ${group.minUptime} ms (fork mode, no port${minUptime !== undefined ? ', min_uptime' : ''})`
      if (group.readyTimeout !== undefined && group.readyTimeout <= group.minUptime)
        group.readyTimeout = group.minUptime + 30_000
    }
    notes.push(`${name}: readiness ${how}`)
    if (minUptime !== undefined && group.readiness !== 'uptime')
      notes.push(`${name}: min_uptime not used: it counts only for apps made ready by uptime (fork mode, no port)`)
    for (const key of Object.keys(a)) {
      if ((MAPPED_FIELDS as readonly string[]).includes(key) || key === 'listen' || key.startsWith('env_')) continue
      const list = ignored.get(key) ?? []
      list.push(name)
      ignored.set(key, list)
    }
    groups[name] = group
  })
  if (!envUsed) notes.push(`--env ${envName}: no app has env_${envName}`)
  for (const [key, names] of ignored)
    notes.push(
      `ignored PM2 field ${key} (${names.join(', ')}): baton has no equivalent or does it differently (docs/migrating-from-pm2.md)`,
    )
  return { groups, notes }
}
