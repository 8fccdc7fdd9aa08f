/**
 * The `baton` command line:
 *
 * ```text
 * baton start <script> [--name N] [--count N] [--listen ADDR]... [--stop-timeout MS]
 *             [--ready-timeout MS] [--readiness listen|message|uptime] [--min-uptime MS]
 *             [--wait-ready] [--instance-var NAME] [--order start-first|stop-first]
 *             [--parallel N] [--backlog N] [--balance MODE] [--no-drop-in] [--uid U] [--gid G]
 *             [--health ADDR [--health-detail]] [--stdout T] [--stderr T] [--log-prefix] [--log-time]
 *             [--log-format text|json] [--log FILE] [--cron-restart EXPR]
 *             [--daemon] [-- script args...]
 * baton start [--config FILE] [flags]   (no script: baton.config.{mjs,js,cjs,json})
 * baton reload [NAME]          baton stop [NAME] [--force]
 * baton restart [NAME]         baton status [NAME] [--json]
 * baton startup [NAME] [--socket] [--out DIR]
 * baton logs [NAME] [-f] [--lines N] [--group G]
 * baton reopen-logs [NAME]
 * baton scale [NAME] [GROUP] N
 * baton upgrade [NAME]
 * baton monit [NAME] [--interval MS]
 * ```
 */
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { basename, extname, isAbsolute, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import {
  CommandError,
  forgetStart,
  locateMaster,
  logsCommand,
  recordStart,
  reloadCommand,
  reopenLogsCommand,
  scaleCommand,
  upgradeCommand,
  restartCommand,
  statusCommand,
  stdio,
  stopCommand,
} from './commands.js'
import type { Balance, GroupOptions, SupervisorOptions } from '../master/options.js'
import { searchDirs } from '../runtime-dir.js'
import { masterLine, masterLineFormat, visible } from '../format.js'
import type { Supervisor } from '../master/supervisor.js'
import { GROUP_FLAGS } from './group-flags.js'

// The client commands (status, reload, stop, logs, scale...) load only commands.js and
// the control client above. `baton start` loads the master API (Supervisor, the config
// file and PM2 readers, the option checks) when it runs: see bench/cli-startup.mjs and
// "Start-up" in docs/benchmarks.md for what that saves.

const USAGE = `baton: graceful sequential reloads for Node.js services

Usage:
  baton start <script> [options] [-- script args...]   run a fleet (in the foreground unless --daemon)
  baton start [--config FILE] [options]
                            no script: run the fleet described by FILE, else by
                            baton.config.mjs|js|cjs|json in this directory (SupervisorOptions:
                            { name, groups: { web: { script, count, listen, env } } }); the
                            options below override it (in every group); baton reload
                            re-reads the file
  baton start [--config FILE] --env NAME [options]
                            env_NAME of each group (beside env, as in PM2) is merged over
                            its env; refused when no group has env_NAME
  baton start ecosystem.config.js [--env NAME] [options]
                            PM2's format (any *.config.js|cjs|mjs or .json file with an
                            "apps" array): each app is a group (instances, env, env_NAME,
                            args, node_args, kill_timeout, listen_timeout, wait_ready,
                            min_uptime, uid, gid, instance_var, cron_restart...); prints
                            how each app becomes ready and the PM2 fields it ignores
      --name N              master name (default: the script's base name)
      --count N             number of workers (default: the number of CPUs)
      --listen ADDR         address the master listens on, repeatable:
                            host:port, :port, tcp://host:port, [::1]:port, unix:/path
      --stop-timeout MS     grace period before SIGKILL (default 2000)
      --ready-timeout MS    time a new worker has to become ready (default 30000)
      --readiness MODE      how a worker becomes ready: listen (default: once it listens),
                            message (only when it says so: process.send('ready'),
                            worker.ready(); PM2's wait_ready) or uptime (once up for
                            --min-uptime MS: for processes that never listen)
      --min-uptime MS       uptime readiness: time a worker must stay up (default 1000)
      --wait-ready          the same as --readiness message (PM2's wait_ready)
      --instance-var NAME   the variable each worker finds its id in (default NODE_APP_INSTANCE)
      --order ORDER         start-first (default) or stop-first
      --parallel N          workers a reload replaces at once (default 1)
      --backlog N           listen backlog (default 511)
      --no-drop-in          load nothing into the workers: a plain listen(port) of an app
                            that does not import baton binds its own socket
      --uid USER, --gid GROUP
                            run the workers as this user / group (a name or a number; the
                            master must be root)
      --balance MODE        reuseport (default on Linux: one SO_REUSEPORT socket per worker
                            slot, new connections only to ready workers), sticky (the same
                            sockets, each client address always to the same worker slot
                            while it serves: Socket.IO long-polling, in-memory sessions;
                            Linux) or shared (one socket, workers race to accept; the
                            default elsewhere)
      --health ADDR         serve a health endpoint for probes (host:port, :port, unix:/path):
                            every GET/HEAD answers 200 while the fleet is ready, 503 while it
                            is not (starting, stopping, a group without a ready worker, a stuck
                            master), with {"ready", "groups": {NAME: {"ready", "count"}}}
      --health-detail       the health endpoint serves the full status JSON (paths, pids,
                            stderr of a failed reload): only where no untrusted client reaches
      --stdout TARGET       where the workers' stdout goes: inherit (default: the master's),
                            ignore, or a FILE (appended to, reopened by baton reopen-logs)
      --stderr TARGET       the same for the workers' stderr
      --log-prefix          prefix every line the workers write with "group#id "
      --log-time            start every line the workers write (and the master's own) with
                            the time it was read, ISO 8601 UTC: 2026-12-07T02:20:00.123Z
      --log-format FORMAT   text (default) or json: one object per line with time, fleet,
                            group, id, pid, stream (out/err/master) and msg
      --cron-restart EXPR   reload on a schedule, as baton reload does (one worker at a
                            time, each new one ready before the old one leaves): a cron
                            expression, 5 fields or 6 with leading seconds, in local time
                            (TZ honoured), e.g. '0 3 * * *' (PM2's cron_restart)
      --log FILE            the master's own output (and inherited worker output) goes to FILE
      --watch [PATH...]     dev mode: reload gracefully when code under PATH (default .)
                            changes: files Node loads (.js .mjs .cjs .ts .mts .cts .jsx
                            .tsx .json; a PATH that is a file counts whatever its name);
                            node_modules, dot files and the fleet's own outputs (log files,
                            the master's redirected stdout/stderr, the runtime dir) never count
      --watch-ignore GLOB   with --watch: also ignore what GLOB matches (repeatable; e.g.
                            'dist/**', '*.generated.ts', tmp)
      --daemon              run in the background; output goes to --log FILE, else to
                            <runtime dir>/<name>.log
  baton reload [NAME]       replace every worker one at a time; exit 1 if the new code fails
  baton stop [NAME] [--force]
  baton restart [NAME]      stop, then start again as it was started
  baton status [NAME] [--json]
  baton logs [NAME] [-f] [--lines N] [--group G]
                            the last N lines the workers wrote (default 15, from the 1 MiB the
                            master keeps), tagged group#id out|err; -f keeps showing new ones
  baton reopen-logs [NAME]  reopen every log file (after logrotate renamed them: postrotate)
  baton scale [NAME] [GROUP] N
                            change a group's worker count without a restart (GROUP may be
                            left out when there is one); exit 0 once the new workers are
                            ready / the removed ones exited, 1 with the cause
  baton upgrade [NAME]      replace the master itself (new baton or Node, new options or
                            listen addresses) with zero failed requests: the new master
                            takes the sockets and starts its workers; once all are ready
                            the old workers drain. Exit 1 with the cause if it fails (the
                            old master keeps serving)
  baton monit [NAME] [--interval MS]
                            live view, refreshed every second (MS): each worker's pid, state,
                            generation, CPU, memory, connections, restarts and uptime, the
                            progress of a reload, scale or upgrade, the latest log lines; keys: r
                            reload, +/- scale the selected group (tab/arrows select), q quit.
                            Not on a terminal: a plain table every second
  baton startup [NAME] [--socket] [--out DIR]
                            print a systemd unit (Type=notify) that runs the fleet as it was
                            started; --socket adds .socket units so systemd holds the
                            listening sockets (a restart then refuses no connection);
                            --out DIR writes the files instead; how to install: on stderr

Under systemd socket activation (LISTEN_FDS) the master takes its listening sockets from
systemd, matched to groups by FileDescriptorName= (the group name) or by address.

The runtime dir (control sockets, pid files, start records, --daemon logs) is
$BATON_RUNTIME_DIR, else /run/baton for root, else ~/.baton (<tmpdir>/baton-<uid> when the
home directory is unusable). The commands also find fleets that older versions started in
$XDG_RUNTIME_DIR/baton or <tmpdir>/baton-<uid>. They refuse a runtime dir, socket, pid
file or start record that is a link, is not yours, or is writable by group or others.`

function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new CommandError(`--${flag} expects a positive whole number, got "${value}"`, 2)
  }
  return Number(value)
}

/** `--stdout` / `--stderr`: inherit, ignore, or a file path made absolute against the current directory. */
function outputFlag(value: string | undefined): string | undefined {
  if (value === undefined || value === 'inherit' || value === 'ignore') return value
  return resolve(value)
}

function linesFlag(value: string | undefined): number {
  if (value === undefined) return 15
  if (!/^\d+$/.test(value) || Number(value) > 1_000_000) {
    throw new CommandError(`--lines expects a whole number from 0 to 1000000, got "${value}"`, 2)
  }
  return Number(value)
}

function balanceFlag(value: string | undefined): Balance | undefined {
  if (value === undefined || value === 'shared' || value === 'reuseport' || value === 'sticky') return value
  throw new CommandError(`--balance expects shared, reuseport or sticky, got "${value}"`, 2)
}

function version(): string {
  const pkg = fileURLToPath(new URL('../../package.json', import.meta.url))
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (e) {
    throw new CommandError(`${(e as Error).message}\nRun "baton --help" for usage.`, 2)
  }
}

async function start(args: string[]): Promise<number> {
  const [{ CONFIG_NAMES, findConfig, readConfig }, { resolveRuntimeDir }, { isEcosystemFile }, { takeWatchFlag }] =
    await Promise.all([
      import('../master/config-file.js'),
      import('../master/options.js'),
      import('../master/pm2-ecosystem.js'),
      import('./watch.js'),
    ])
  const { Supervisor, socketActivated } = await import('../master/supervisor.js')
  const dash = args.indexOf('--')
  const own = dash >= 0 ? args.slice(0, dash) : args
  const scriptArgs = dash >= 0 ? args.slice(dash + 1) : []
  const { rest: ownFlags, paths: watched } = takeWatchFlag(own)
  const groupFlags: NonNullable<ParseArgsConfig['options']> = {}
  for (const { flag, takes } of Object.values(GROUP_FLAGS))
    groupFlags[flag.slice(2)] =
      typeof takes === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: takes === 'list' }
  const { values, positionals } = parse(ownFlags, {
    config: { type: 'string' },
    name: { type: 'string' },
    ...groupFlags,
    health: { type: 'string' },
    'health-detail': { type: 'boolean' },
    env: { type: 'string' },
    log: { type: 'string' },
    daemon: { type: 'boolean' },
    'watch-ignore': { type: 'string', multiple: true },
  })
  const watchIgnore = (values['watch-ignore'] as string[] | undefined) ?? []
  if (watchIgnore.length > 0 && watched === undefined) {
    throw new CommandError('--watch-ignore GLOB only applies with --watch: add --watch [PATH...]', 2)
  }
  if (positionals.length > 1) {
    throw new CommandError(`unexpected arguments: ${positionals.slice(1).join(' ')} (script arguments go after --)`, 2)
  }
  // `baton start ecosystem.config.js`: PM2's file, read like a config file.
  const ecosystem = positionals[0] !== undefined && isEcosystemFile(positionals[0]) ? positionals[0] : undefined
  const script = ecosystem === undefined ? positionals[0] : undefined
  if (values.env !== undefined && script !== undefined) {
    throw new CommandError(
      `--env NAME selects the env_NAME blocks of a config file (baton.config.*, --config FILE or a PM2 ecosystem file), not of a script: set variables for ${script} in its environment`,
      2,
    )
  }
  if (positionals[0] !== undefined && values.config !== undefined) {
    throw new CommandError('baton start takes a script or --config FILE, not both', 2)
  }
  const order = values.order as string | undefined
  if (order !== undefined && order !== 'start-first' && order !== 'stop-first') {
    throw new CommandError(`--order expects start-first or stop-first, got "${order}"`, 2)
  }
  const readiness = values.readiness as string | undefined
  if (readiness !== undefined && readiness !== 'listen' && readiness !== 'message' && readiness !== 'uptime') {
    throw new CommandError(`--readiness expects listen, message or uptime, got "${readiness}"`, 2)
  }
  balanceFlag(values.balance as string | undefined)
  // Group options given as flags (the table in group-flags.ts): only those present, so a
  // config file keeps the rest. Their values are checked with the group's options.
  const flags: Record<string, unknown> & GroupOptions = {}
  for (const [option, { flag, takes }] of Object.entries(GROUP_FLAGS)) {
    const value = values[flag.slice(2)] as string | string[] | boolean | undefined
    if (value === undefined || value === false) continue
    if (typeof takes === 'boolean') flags[option] = takes
    else if (takes === 'integer') flags[option] = positiveInt(flag.slice(2), value as string, 0)
    else if (option === 'stdout' || option === 'stderr') flags[option] = outputFlag(value as string)
    else flags[option] = value
  }
  const runtimeDir = resolveRuntimeDir()
  let options: SupervisorOptions
  if (script !== undefined) {
    const name = (values.name as string | undefined) ?? basename(script, extname(script))
    options = {
      name,
      runtimeDir,
      groups: {
        [name]: {
          ...flags,
          script,
          count: flags.count ?? availableParallelism(),
          listen: flags.listen ?? [],
          args: scriptArgs,
        },
      },
    }
  } else {
    if (scriptArgs.length > 0)
      throw new CommandError('script arguments (after --) need a script; put args in the config file', 2)
    const given = ecosystem ?? (values.config as string | undefined)
    const found = given !== undefined ? resolve(given) : findConfig(process.cwd())
    if (!found) {
      throw new CommandError(
        `baton start needs a script (baton start app.mjs) or a config file: none of ${CONFIG_NAMES.join(', ')} is in ${process.cwd()} (or give --config FILE)`,
        2,
      )
    }
    const file = found
    const overrides = { name: values.name as string | undefined, group: flags, env: values.env as string | undefined }
    const notes: string[] = []
    options = { ...(await readConfig(file, overrides, notes)), runtimeDir }
    for (const note of notes) stdio.err(masterSay(options, '[baton]', note))
    // Every reload (baton reload, SIGHUP, SIGUSR2) re-reads the file first. A root master
    // checks it against the users of every group read so far before loading it.
    const seen: Record<string, GroupOptions> = { ...options.groups }
    options.beforeReload = async () => {
      const reread = { ...(await readConfig(file, { ...overrides, running: seen })), runtimeDir }
      for (const [n, g] of Object.entries(reread.groups ?? {})) {
        const had = seen[n]
        if (had === undefined) seen[n] = g
        else if (had.uid !== g.uid || had.gid !== g.gid) seen[`${n} (as read before)`] = had
        if (had !== undefined) seen[n] = g
      }
      return reread
    }
  }
  if (values.health !== undefined) options.health = values.health as string
  if (values['health-detail'] === true) options.healthDetail = true
  if (values.log !== undefined) {
    if (values.log === '') throw new CommandError('--log expects a file path', 2)
    options.logFile = resolve(values.log as string)
  }
  const name = options.name as string
  const supervisor = new Supervisor(options)
  if (values.daemon && socketActivated()) {
    throw new CommandError(
      'systemd passed this master its listening sockets (LISTEN_FDS), which a --daemon child could not take: run baton start in the foreground under systemd (Type=notify, without --daemon)',
      2,
    )
  }
  if (values.daemon) {
    const { logPath, startDaemon } = await import('./daemon.js')
    const again = ['start', ...own.filter((a) => a !== '--daemon'), ...(dash >= 0 ? ['--', ...scriptArgs] : [])]
    const log = options.logFile ?? logPath(runtimeDir, name)
    const pid = await startDaemon(
      [fileURLToPath(new URL('../../bin/baton.js', import.meta.url)), ...again],
      name,
      runtimeDir,
      log,
    )
    stdio.out(`baton "${name}" started in the background (master pid ${pid}); logs: ${log}`)
    return 0
  }
  await supervisor.start()
  if (watched !== undefined)
    await watchAndReload(supervisor, watched, watchIgnore, (text) => masterSay(options, `[baton ${name}]`, text))
  const groups = supervisor.status().groups.map(({ name, sockets, stopTimeoutMs, readyTimeoutMs, balance }) => ({
    name,
    sockets,
    stopTimeoutMs,
    readyTimeoutMs,
    balance,
  }))
  const daemonLog = process.env.BATON_DAEMONIZED === '1' ? process.env.BATON_LOG_FILE : undefined
  const log = options.logFile ?? daemonLog
  recordStart(runtimeDir, name, [fileURLToPath(new URL('../../bin/baton.js', import.meta.url)), 'start', ...args], {
    groups,
    log,
  })
  for (const a of supervisor.addresses()) {
    const from = a.from === 'inherited' ? ` (socket from systemd, fd ${a.fd}${a.fdName ? ` "${a.fdName}"` : ''})` : ''
    stdio.err(masterSay(options, `[baton ${name}]`, `listening on ${a.bound}${from}`))
  }
  await supervisor.stopped
  // After `baton upgrade` the record is the new master's.
  if (supervisor.successor === undefined) forgetStart(runtimeDir, name)
  return 0
}

/** `--watch`: reload on file changes, printing what changed and how the reload ended. */
async function watchAndReload(
  supervisor: Supervisor,
  paths: string[],
  ignore: string[],
  say: (text: string) => string,
): Promise<void> {
  const [{ ownOutputs, SOURCE_EXTENSIONS, WATCH_DEBOUNCE_MS, watchPaths }, { ReloadError }] = await Promise.all([
    import('./watch.js'),
    import('../master/supervisor.js'),
  ])
  // The fleet's own outputs never count as a change (else each reload's log lines would
  // trigger the next): the groups' log files, the master's log file, the runtime dir and
  // wherever this process's stdout and stderr are redirected.
  // Taken from the status at most once a second (a log file in the watched folder changes
  // with every line; a reload of a config file may change the targets).
  const own = ownOutputs()
  let cached: { at: number; paths: string[] } | undefined
  const outputs = (): string[] => {
    if (cached && Date.now() - cached.at < 1000) return cached.paths
    let files: string[]
    try {
      const status = supervisor.status()
      files = status.groups.flatMap((g) => [g.logs.stdout, g.logs.stderr])
      if (status.logs.file) files.push(status.logs.file)
    } catch {
      // the fleet stopping: its files as last seen
      files = cached?.paths ?? []
    }
    cached = { at: Date.now(), paths: [...files.filter((f) => isAbsolute(f)), supervisor.runtimeDir, ...own.paths] }
    return cached.paths
  }
  const filter = { ignore, outputs, inodes: own.inodes }
  const watcher = watchPaths(
    paths,
    (files) => {
      const shown = files.length > 5 ? `${files.slice(0, 5).join(', ')} and ${files.length - 5} more` : files.join(', ')
      stdio.err(say(`changed: ${shown}; reloading`))
      supervisor.reload().then(
        (report) => stdio.err(say(report.message)),
        (e: Error) => {
          stdio.err(say(`the new code failed, the old workers keep serving: ${e.message}`))
          const f = e instanceof ReloadError ? e.report.failure : undefined
          if (f?.stderrTail.trim()) stdio.err(visible(f.stderrTail.trimEnd()))
        },
      )
    },
    WATCH_DEBOUNCE_MS,
    filter,
  )
  const ignoring = ignore.length > 0 ? `, ${ignore.join(', ')}` : ''
  stdio.err(
    say(
      `watching ${paths.join(', ')} for changes to ${SOURCE_EXTENSIONS.join(' ')} files (ignored: node_modules, dot files, the fleet's own logs${ignoring})`,
    ),
  )
  void supervisor.stopped.then(() => watcher.close())
}

/**
 * One of the master's own lines in the fleet's log format (`logTime`, `logFormat`): text
 * (control bytes made visible) after `tag`, or a JSON object with `stream: "master"`.
 */
function masterSay(options: SupervisorOptions, tag: string, text: string): string {
  const format = masterLineFormat(options, Object.values(options.groups ?? {}))
  return masterLine(format, options.name ?? tag, tag, format.json ? text : visible(text))
}

/** Run the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  // Started by `baton upgrade`: the addon seals the inherited fds as it loads (native.ts),
  // before a config file's JavaScript runs.
  if (process.env.BATON_UPGRADE) (await import('../native.js')).native()
  try {
    switch (command) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        stdio.out(USAGE)
        return command === undefined ? 2 : 0
      case '-v':
      case '--version':
        stdio.out(version())
        return 0
      case 'start':
        return await start(rest)
      case 'reload': {
        const { positionals } = parse(rest, {})
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        return await reloadCommand(dir, name)
      }
      case 'stop': {
        const { values, positionals } = parse(rest, { force: { type: 'boolean' } })
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        return await stopCommand(dir, name, values.force === true)
      }
      case 'restart': {
        const { positionals } = parse(rest, {})
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        return await restartCommand(dir, name)
      }
      case 'startup': {
        const { values, positionals } = parse(rest, { socket: { type: 'boolean' }, out: { type: 'string' } })
        if (positionals.length > 1) throw new CommandError(`unexpected arguments: ${positionals.slice(1).join(' ')}`, 2)
        const { startupCommand } = await import('./startup.js')
        return await startupCommand(searchDirs(stdio.err), positionals[0], {
          socket: values.socket === true,
          out: values.out as string | undefined,
        })
      }
      case 'logs': {
        const { values, positionals } = parse(rest, {
          follow: { type: 'boolean', short: 'f' },
          lines: { type: 'string', short: 'n' },
          group: { type: 'string' },
        })
        const lines = linesFlag(values.lines as string | undefined)
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        const options = { lines, follow: values.follow === true, group: values.group as string | undefined }
        return await logsCommand(dir, name, options)
      }
      case 'upgrade': {
        const { positionals } = parse(rest, {})
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        return await upgradeCommand(dir, name)
      }
      case 'monit': {
        const { values, positionals } = parse(rest, { interval: { type: 'string' } })
        if (positionals.length > 1) throw new CommandError(`unexpected arguments: ${positionals.slice(1).join(' ')}`, 2)
        const interval = values.interval as string | undefined
        if (interval !== undefined && (!/^[0-9]+$/.test(interval) || Number(interval) < 100)) {
          throw new CommandError(`--interval expects milliseconds, 100 or more, got "${interval}"`, 2)
        }
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        const { monitCommand } = await import('./monit.js')
        return await monitCommand(dir, name, { intervalMs: interval === undefined ? undefined : Number(interval) })
      }
      case 'reopen-logs': {
        const { positionals } = parse(rest, {})
        const { dir, name } = locateMaster(searchDirs(stdio.err), positionals[0])
        return await reopenLogsCommand(dir, name)
      }
      case 'scale': {
        // Positionals only (a "-1" is a bad count, not an option).
        const args = rest.filter((a) => a !== '--')
        const flag = args.find((a) => a.startsWith('-') && !/^-[0-9]/.test(a))
        if (flag) throw new CommandError(`scale: unknown option ${flag}\nRun "baton --help" for usage.`, 2)
        return await scaleCommand(searchDirs(stdio.err), args)
      }
      case 'status': {
        const { values, positionals } = parse(rest, { json: { type: 'boolean' } })
        return await statusCommand(searchDirs(stdio.err), positionals[0], values.json === true)
      }
      default:
        throw new CommandError(`unknown command "${command}"\nRun "baton --help" for usage.`, 2)
    }
  } catch (e) {
    const err = e as Error
    stdio.err(`baton: ${visible(err.message)}`)
    if (e instanceof CommandError) return e.exitCode
    // Refused options or config file (src/master/options.ts, src/master/config-file.ts),
    // told apart by name: the client commands do not load those modules.
    if (err.name === 'OptionsError' || err.name === 'ConfigError') return 2
    return 1
  }
}
