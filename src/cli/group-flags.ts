/**
 * Which group or fleet option each `baton start` flag sets, and why the others have none.
 * Every option of the generated `GroupOptions` and `SupervisorOptions`
 * (crates/baton-contract/src/options.rs) is in exactly one of the two tables of its kind:
 * __test__/option-contract.spec.ts checks it, and that each flag is in `baton --help` and
 * reaches the options in the status.
 */
import type { GroupOptions, SupervisorOptions } from '../master/options.js'

/** A `baton start` flag that sets a group option. */
export interface GroupFlag {
  /** The flag, as typed. */
  flag: string
  /** `value`: the flag takes a value; `true`/`false`: a flag without value sets the option to it. */
  takes: 'value' | 'integer' | 'list' | true | false
}

/** The group options `baton start` takes as flags (a config file's groups take them all). */
export const GROUP_FLAGS = {
  count: { flag: '--count', takes: 'integer' },
  listen: { flag: '--listen', takes: 'list' },
  dropIn: { flag: '--no-drop-in', takes: false },
  readiness: { flag: '--readiness', takes: 'value' },
  minUptime: { flag: '--min-uptime', takes: 'integer' },
  waitReady: { flag: '--wait-ready', takes: true },
  instanceVar: { flag: '--instance-var', takes: 'value' },
  readyTimeout: { flag: '--ready-timeout', takes: 'integer' },
  stopTimeout: { flag: '--stop-timeout', takes: 'integer' },
  order: { flag: '--order', takes: 'value' },
  parallel: { flag: '--parallel', takes: 'integer' },
  backlog: { flag: '--backlog', takes: 'integer' },
  balance: { flag: '--balance', takes: 'value' },
  uid: { flag: '--uid', takes: 'value' },
  gid: { flag: '--gid', takes: 'value' },
  stdout: { flag: '--stdout', takes: 'value' },
  stderr: { flag: '--stderr', takes: 'value' },
  logPrefix: { flag: '--log-prefix', takes: true },
  logTime: { flag: '--log-time', takes: true },
  logFormat: { flag: '--log-format', takes: 'value' },
  logMaxSize: { flag: '--log-max-size', takes: 'value' },
  logMaxFiles: { flag: '--log-max-files', takes: 'integer' },
  cronRestart: { flag: '--cron-restart', takes: 'value' },
  maxMemory: { flag: '--max-memory', takes: 'value' },
} as const satisfies Partial<Record<keyof GroupOptions, GroupFlag>>

/** The group options that are no `baton start` flag, each with the reason. */
export const NOT_CLI_OPTIONS = {
  script: 'the positional <script> of baton start',
  args: 'the script arguments after --',
  env: "the workers inherit baton's own environment; --env NAME picks a PM2 ecosystem file's env_NAME",
  execArgv: 'node options go in NODE_OPTIONS or a config file',
  cwd: 'the current directory of baton start (relative paths resolve against it)',
  reloadable:
    'a fleet started from flags is one group, and reloading it is what baton reload is for; a config file mixes groups',
} as const satisfies Partial<Record<keyof GroupOptions, string>>

/** The fleet options `baton start` takes as flags. */
export const FLEET_FLAGS = {
  name: { flag: '--name', takes: 'value' },
  health: { flag: '--health', takes: 'value' },
  healthDetail: { flag: '--health-detail', takes: true },
  logFile: { flag: '--log', takes: 'value' },
} as const satisfies Partial<Record<keyof SupervisorOptions, GroupFlag>>

/** The fleet options that are no `baton start` flag, each with the reason. */
export const NOT_CLI_FLEET_OPTIONS = {
  runtimeDir: 'BATON_RUNTIME_DIR: every baton command looks for the master where it runs',
  groups: 'the positional <script> (one group) or a config file',
  handleSignals: 'baton start always handles signals: they are how a master is stopped and reloaded',
  backoff: 'a config file sets it',
  upgradeCommand: "baton upgrade runs the master's own command line (baton start with the same arguments)",
  logTime: "--log-time sets it for the group, and the master's own lines follow what every group sets",
  logFormat: "--log-format sets it for the group, and the master's own lines follow what every group sets",
  logMaxSize: "--log-max-size sets it for the group, and the master's --log file follows what every group sets",
  logMaxFiles: "--log-max-files sets it for the group, and the master's --log file follows what every group sets",
} as const satisfies Partial<Record<keyof SupervisorOptions, string>>
