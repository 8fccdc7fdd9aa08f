/**
 * `baton startup [NAME] [--socket] [--out DIR]`: a systemd unit for a fleet as it was
 * started, as `pm2 startup` prints an init script. The command line comes from the start
 * record the CLI-started master wrote in the runtime dir (its args and cwd); the groups
 * (listen addresses, timeouts) from the running master's status, else from the record.
 * With `--socket`, one `.socket` unit per group with listen addresses too (systemd gives
 * one `FileDescriptorName=` per socket unit), and the service requires them.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import {
  CommandError,
  locateMaster,
  readStartRecord,
  stdio,
  type Output,
  type RuntimeDirs,
  type StartRecord,
} from './commands.js'
import { listMasters, NotRunningError, request } from './control-client.js'
import { DEFAULT_READY_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS } from '../defaults.js'
import { defaultRuntimeDir, dirOfMaster } from '../runtime-dir.js'
import type { GroupStatus } from '../types.js'

/** A unit to install: its file name and content. */
export interface UnitFile {
  /** File name, e.g. `shop.service`. */
  file: string
  /** The unit's text. */
  text: string
}

/** What a unit is made from. */
export interface UnitInput {
  /** Fleet name. */
  name: string
  /** Absolute path of `node`. */
  node: string
  /** The recorded `baton` arguments: the absolute bin/baton.js, `start`, its flags. */
  args: string[]
  /** The recorded working directory. */
  cwd: string
  /** `BATON_RUNTIME_DIR`, when set. */
  runtimeDir: string | undefined
  /** `User=`; undefined when root. */
  user: string | undefined
  /** The fleet's groups. */
  groups: StartupGroup[]
  /** Also `.socket` units. */
  socket: boolean
}

/** The part of a group a unit needs. */
export type StartupGroup = Pick<GroupStatus, 'name' | 'sockets' | 'stopTimeoutMs' | 'readyTimeoutMs' | 'balance'>

const BARE = /^[A-Za-z0-9_@%+=:,./-]+$/

/**
 * One argument of `ExecStart=` as systemd reads it back (systemd.service, "Command
 * lines"): `%` is a specifier and `$` an environment variable everywhere, so they are
 * doubled; an argument with anything else than `[A-Za-z0-9_@%+=:,./-]` (spaces, quotes,
 * backslashes, `;`, non-ASCII...) goes in double quotes with C escapes.
 */
export function systemdQuote(arg: string): string {
  const doubled = arg.replaceAll('%', '%%').replaceAll('$', '$$$$')
  if (doubled !== '' && BARE.test(doubled)) return doubled
  let out = '"'
  for (const ch of doubled) {
    const code = ch.codePointAt(0) ?? 0
    if (ch === '\\') out += '\\\\'
    else if (ch === '"') out += '\\"'
    else if (ch === '\n') out += '\\n'
    else if (ch === '\t') out += '\\t'
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`
    else out += ch
  }
  return `${out}"`
}

/** An `Environment=` assignment, quoted as one word (no `$` expansion there; `%` still is one). */
export function environmentLine(key: string, value: string): string {
  const word = systemdQuote(`${key}=${value}`).replaceAll('$$', '$')
  return `Environment=${word}`
}

/** A path for a directive that takes the rest of the line (`WorkingDirectory=`): `%` doubled, no control characters. */
function pathValue(field: string, path: string): string {
  if (/[\0-\x1f\x7f]/.test(path))
    throw new CommandError(
      `${field}: ${JSON.stringify(path)} contains control characters, which a unit file cannot hold`,
    )
  return path.replaceAll('%', '%%')
}

/**
 * `ListenStream=` for a group address (`configured` as written, `address` as listened
 * on): `:8080` is `8080` (every interface), an IP keeps its form, a host name takes the
 * address it resolved to, `unix:/p` is `/p` (a relative path against `cwd`).
 */
export function listenStream(group: string, configured: string, address: string, cwd: string): string {
  if (configured.startsWith('unix:')) {
    const path = configured.slice('unix:'.length).replace(/^\/\/(?=\/)/, '')
    return pathValue(`group ${group}`, isAbsolute(path) ? path : resolve(cwd, path))
  }
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(configured)
  if (!m) throw new CommandError(`group "${group}": cannot turn the listen address ${configured} into ListenStream=`)
  const port = m[3]
  if (port === '0') {
    throw new CommandError(
      `group "${group}" listens on ${configured}, a port the kernel picks at each start, which a .socket unit cannot hold: start the fleet with a fixed port`,
    )
  }
  const host = m[1] ?? m[2] ?? ''
  if (host === '') return port
  if (m[1] !== undefined) return `[${host}]:${port}`
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return `${host}:${port}`
  // A host name: systemd takes addresses only; use the one the master listens on.
  return address.startsWith('unix:') ? address.slice(5) : address
}

/**
 * The lines that make systemd create the runtime dir when it is under /run (root's
 * default /run/baton, or a `BATON_RUNTIME_DIR` there): mode 0700, owned by the unit's
 * user. `RuntimeDirectoryPreserve=yes` because every fleet's unit shares that directory:
 * without it systemd deletes the directory, with the other fleets' control sockets and pid
 * files, whenever any one of these units stops.
 */
export function runtimeDirectoryLines(runtimeDir: string | undefined, user: string | undefined): string[] {
  const dir = runtimeDir ?? (user === undefined ? '/run/baton' : undefined)
  if (dir === undefined || !dir.startsWith('/run/')) return []
  const rel = dir.slice('/run/'.length).replace(/\/+$/, '')
  if (rel === '' || rel.split('/').some((c) => c === '' || c === '.' || c === '..') || !BARE.test(rel)) return []
  return [
    "# systemd creates the runtime dir (control sockets, pid files) for the unit's user, mode 0700,",
    '# and keeps it when this unit stops: other fleets keep their sockets in it too.',
    `RuntimeDirectory=${rel.replaceAll('%', '%%')}`,
    'RuntimeDirectoryMode=0700',
    'RuntimeDirectoryPreserve=yes',
  ]
}

/** Seconds, rounded up. */
const seconds = (ms: number) => Math.ceil(ms / 1000)

/** The units for a fleet: the service, then (with `socket`) one socket unit per group that listens. */
export function renderUnits(input: UnitInput): UnitFile[] {
  const { name } = input
  const own = input.args.indexOf('--')
  const flags = own >= 0 ? input.args.slice(0, own) : input.args
  const rest = own >= 0 ? input.args.slice(own) : []
  const args = [...flags.filter((a) => a !== '--daemon'), ...rest]
  const listening = input.groups.filter((g) => g.sockets.length > 0)
  if (input.socket && listening.length === 0) {
    throw new CommandError(
      `"${name}" has no listen address, so there is no socket for systemd to hold: run baton startup ${name} without --socket`,
    )
  }
  const socketFile = (g: StartupGroup) => (listening.length === 1 ? `${name}.socket` : `${name}-${g.name}.socket`)
  const sockets = input.socket
    ? listening.map((g) => ({
        file: socketFile(g),
        group: g,
        streams: g.sockets.map((s) => listenStream(g.name, s.configured, s.address, input.cwd)),
      }))
    : []
  const stopMs = Math.max(
    DEFAULT_STOP_TIMEOUT_MS,
    ...input.groups.map((g) => g.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS),
  )
  const readyMs = Math.max(
    DEFAULT_READY_TIMEOUT_MS,
    ...input.groups.map((g) => g.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS),
  )
  const baton = args[0] ?? ''
  const exec = [input.node, ...args].map(systemdQuote).join(' ')
  const reload = [input.node, baton, 'reload', name].map(systemdQuote).join(' ')

  const unit = [
    `# ${name}.service: baton fleet "${name}", as it was started (generated by baton startup)`,
    '[Unit]',
    `Description=baton fleet ${name}`,
    'After=network.target',
    ...(sockets.length
      ? [`Requires=${sockets.map((s) => s.file).join(' ')}`, `After=${sockets.map((s) => s.file).join(' ')}`]
      : []),
    '',
    '[Service]',
    '# The master tells systemd when every worker is ready (READY=1), when a reload runs',
    '# (RELOADING=1, then READY=1) and when it stops (STOPPING=1).',
    'Type=notify',
    'NotifyAccess=main',
    '# systemd >= 253: Type=notify-reload makes `systemctl reload` send SIGHUP and wait for',
    '# RELOADING=1/READY=1 itself; then drop ExecReload=.',
    '#Type=notify-reload',
    `ExecStart=${exec}`,
    '# Waits for the outcome: `systemctl reload` fails when the new code cannot start (the old workers keep serving).',
    `ExecReload=${reload}`,
    `WorkingDirectory=${pathValue('WorkingDirectory', input.cwd)}`,
    ...(input.runtimeDir !== undefined ? [environmentLine('BATON_RUNTIME_DIR', input.runtimeDir)] : []),
    ...runtimeDirectoryLines(input.runtimeDir, input.user),
    ...(input.user !== undefined
      ? [`User=${input.user}`]
      : ['# Runs as root; set User= to run the master (and its workers) as another user.']),
    '# SIGTERM to the master only: it stops the workers gracefully (they drain), then exits;',
    '# whatever is left after TimeoutStopSec is killed.',
    'KillMode=mixed',
    `TimeoutStopSec=${seconds(stopMs) + 5}`,
    `TimeoutStartSec=${seconds(readyMs) + 15}`,
    'Restart=on-failure',
    ...(sockets.length
      ? [
          `Sockets=${sockets.map((s) => s.file).join(' ')}`,
          '# The sockets come from systemd (socket activation): a restart of this service refuses no',
          "# connection, they wait in the kernel queue for the next master's workers.",
        ]
      : []),
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n')
  const out: UnitFile[] = [{ file: `${name}.service`, text: unit }]
  for (const s of sockets) {
    out.push({
      file: s.file,
      text: [
        `# ${s.file}: the listening sockets of group "${s.group.name}" of baton fleet "${name}" (generated by baton startup)`,
        '[Unit]',
        `Description=baton fleet ${name}: sockets of group ${s.group.name}`,
        '',
        '[Socket]',
        ...s.streams.map((l) => `ListenStream=${l}`),
        '# The master matches the socket to its group by this name.',
        `FileDescriptorName=${s.group.name}`,
        `Service=${name}.service`,
        ...(s.group.balance !== 'shared'
          ? [
              `# The workers share this socket (balance ${s.group.balance} needs per-worker sockets, which would not outlive a restart).`,
            ]
          : []),
        '',
        '[Install]',
        'WantedBy=sockets.target',
        '',
      ].join('\n'),
    })
  }
  return out
}

/** Groups from the recorded flags, for a master that is not running (a `baton start <script>` only). */
function groupsFromArgs(name: string, args: string[]): StartupGroup[] | undefined {
  const own = args.indexOf('--')
  const flags = own >= 0 ? args.slice(2, own) : args.slice(2)
  const listen: string[] = []
  let script: string | undefined
  let stop = DEFAULT_STOP_TIMEOUT_MS
  let ready = DEFAULT_READY_TIMEOUT_MS
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i] ?? ''
    const value = (): string => flags[++i] ?? ''
    const [k, inline] =
      f.startsWith('--') && f.includes('=') ? [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] : [f, undefined]
    const get = () => inline ?? value()
    if (k === '--listen') listen.push(get())
    else if (k === '--stop-timeout') stop = Number(get())
    else if (k === '--ready-timeout') ready = Number(get())
    else if (k === '--daemon') continue
    else if (k.startsWith('--')) {
      if (inline === undefined) i++ // every other start flag takes a value
    } else script ??= f
  }
  if (script === undefined) return undefined // a config file: its groups are in the file
  return [
    {
      name,
      sockets: listen.map((a) => ({ address: a, configured: a, from: 'bound', fd: null, fdName: null })),
      stopTimeoutMs: stop,
      readyTimeoutMs: ready,
      balance: process.platform === 'linux' ? 'reuseport' : 'shared',
    },
  ]
}

/** The user to put in `User=`: undefined for root; the name, else the uid. */
function currentUser(): string | undefined {
  const uid = process.getuid?.() ?? 0
  if (uid === 0) return undefined
  try {
    return userInfo().username
  } catch {
    return String(uid)
  }
}

/** `baton startup [NAME] [--socket] [--out DIR]`: print (or write) the units, and say on stderr how to install them. */
export async function startupCommand(
  dirs: RuntimeDirs,
  name: string | undefined,
  options: { socket: boolean; out?: string },
  io: Output = stdio,
): Promise<number> {
  const list = typeof dirs === 'string' ? [dirs] : dirs
  let fleet = name
  let runtimeDir = list[0] ?? defaultRuntimeDir()
  if (fleet === undefined) {
    if (!list.some((dir) => listMasters(dir).length > 0))
      throw new CommandError(
        `no baton master is running (runtime dir ${runtimeDir}): start the fleet with baton start, then run baton startup NAME`,
      )
    ;({ dir: runtimeDir, name: fleet } = locateMaster(list, undefined))
  } else {
    runtimeDir = dirOfMaster(list, fleet)
  }
  const record: StartRecord | undefined = readStartRecord(runtimeDir, fleet)
  let groups: StartupGroup[] | undefined
  try {
    groups = (await request(runtimeDir, fleet, { cmd: 'status' })).status?.groups
  } catch (e) {
    if (!(e instanceof NotRunningError)) throw e
  }
  if (!record) {
    throw new CommandError(
      groups
        ? `"${fleet}" was not started by the baton CLI (no start record in ${runtimeDir}), so there is no command line to put in a unit: write ExecStart= by hand (see examples/systemd)`
        : `no fleet "${fleet}" is running and none was started with the baton CLI in ${runtimeDir}: start it with baton start (e.g. baton start app.mjs --name ${fleet} --listen :8080), then run baton startup ${fleet}`,
    )
  }
  groups ??= record.groups ?? groupsFromArgs(fleet, record.args)
  if (!groups) {
    throw new CommandError(
      `"${fleet}" is not running and was started from a config file: start it again (baton start), then run baton startup ${fleet}`,
    )
  }
  const units = renderUnits({
    name: fleet,
    node: process.execPath,
    args: record.args,
    cwd: record.cwd,
    runtimeDir: process.env.BATON_RUNTIME_DIR || undefined,
    user: currentUser(),
    groups,
    socket: options.socket,
  })
  const files = units.map((u) => u.file)
  const enable = options.socket
    ? files.filter((f) => f.endsWith('.socket')).concat(`${fleet}.service`)
    : [`${fleet}.service`]
  if (options.out !== undefined) {
    mkdirSync(options.out, { recursive: true })
    for (const u of units) writeFileSync(join(options.out, u.file), u.text)
    io.err(`baton startup: wrote ${files.map((f) => join(options.out ?? '', f)).join(', ')}`)
  } else {
    io.out(units.map((u) => u.text).join('\n'))
  }
  const where = options.out ?? '/etc/systemd/system'
  const hints = [
    options.out === undefined
      ? `baton startup: to install, save ${files.length === 1 ? 'this unit' : 'these units (each starts with a "# <file>:" line)'} in /etc/systemd/system/ (or run baton startup ${fleet}${options.socket ? ' --socket' : ''} --out /etc/systemd/system), then:`
      : 'baton startup: to install, then:',
    ...(where === '/etc/systemd/system'
      ? []
      : [`  sudo cp ${files.map((f) => join(where, f)).join(' ')} /etc/systemd/system/`]),
    '  sudo systemctl daemon-reload',
    `  baton stop ${fleet}            # the fleet started by hand, so the unit can take its place`,
    `  sudo systemctl enable --now ${enable.join(' ')}`,
    `  sudo systemctl reload ${fleet}  # a graceful reload (baton reload ${fleet} does the same)`,
  ]
  if (!process.env.BATON_RUNTIME_DIR) {
    hints.push(
      `Under systemd the master keeps its control socket in ${defaultRuntimeDir()} (/run/baton for root, ~/.baton for another user), where baton status, reload and stop find it`,
    )
  }
  io.err(hints.join('\n'))
  return 0
}
