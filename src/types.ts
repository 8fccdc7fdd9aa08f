/**
 * The shapes baton reports: status (the `baton status --json` contract), reload reports
 * and supervisor events. They mirror what the Rust core emits (crates/baton-core/src/public_json.rs).
 */

/** Lifecycle state of a worker. An empty slot waiting for its restart shows as `starting`. */
export type WorkerState = 'starting' | 'ready' | 'stopping'

/** One row of {@link Status.workers}. */
export interface WorkerStatus {
  /** Group name. */
  group: string
  /** Slot id, 0..count-1; kept across replacements. */
  id: number
  /** Process id; null for a slot waiting to be restarted after a crash. */
  pid: number | null
  /** Generation the worker was started in (grows by one per reload). */
  generation: number
  /** Lifecycle state. */
  state: WorkerState
  /** Crash restarts of this slot. */
  restarts: number
  /** Resident memory in bytes, when known. */
  rssBytes: number | null
  /**
   * CPU use over the last sample interval (about a second), in percent of one core as
   * `pm2 status` and `top` count it (a worker busy on two cores shows 200); null until the
   * worker was sampled twice, and where the OS is not supported.
   */
  cpu: number | null
  /** CPU time (user + system) the worker has used since it started, in seconds; null when unknown. */
  cpuSeconds: number | null
  /** When the worker was started (ISO-8601), null for an empty slot. */
  startedAt: string | null
  /** How the slot's previous worker ended, e.g. "exited with code 1", when it crashed. */
  lastExit: string | null
  /** For an empty slot: milliseconds until its restart. */
  restartInMs: number | null
  /** Open connections on the listen sockets, as baton's runtime in the worker reports them; null otherwise. */
  connections: number | null
}

/** One listen address of a group and where its socket came from. */
export interface SocketStatus {
  /** The address listened on (a real port for `:0`; systemd's socket's address when inherited). */
  address: string
  /** The address as configured. */
  configured: string
  /**
   * `inherited`: systemd passed the socket (socket activation); `bound`: baton bound it
   * from the group's listen addresses; `drop-in`: baton bound it when a worker called
   * plain `listen(port)` (kept across reloads).
   */
  from: 'bound' | 'inherited' | 'drop-in'
  /** The fd number systemd passed it as; null when bound. */
  fd: number | null
  /** Its `LISTEN_FDNAMES` name (`FileDescriptorName=`); null when bound or unnamed. */
  fdName: string | null
}

/** A group as shown in status. */
export interface GroupStatus {
  /** Group name. */
  name: string
  /** Number of slots. */
  count: number
  /** Whether a reload replaces its workers. */
  reloadable: boolean
  /** Reload order. */
  order: 'start-first' | 'stop-first'
  /** Workers a reload replaces at once. */
  parallel: number
  /** Addresses actually bound (a real port for `:0`). */
  listen: string[]
  /** Each listen address and where its socket came from, in the order of `listen`. */
  sockets: SocketStatus[]
  /** How connections are spread across the workers. */
  balance: 'shared' | 'reuseport' | 'sticky'
  /** Milliseconds a stopping worker has before SIGKILL. */
  stopTimeoutMs: number
  /** Milliseconds a new worker has to become ready. */
  readyTimeoutMs: number
  /** How a worker becomes ready (the `readiness` option). */
  readiness: 'listen' | 'message' | 'uptime'
  /** `readiness: 'uptime'`: milliseconds a worker must stay up; null otherwise. */
  minUptimeMs: number | null
  /** The environment variable holding each worker's id (`instanceVar`). */
  instanceVar: string
  /** Where the workers' output goes, and what was lost. */
  logs: GroupLogsStatus
}

/** Where a group's output goes ({@link GroupStatus.logs}). */
export interface GroupLogsStatus {
  /** `inherit` (the master's stdout), `ignore`, or the file's absolute path. */
  stdout: string
  /** `inherit` (the master's stderr), `ignore`, or the file's absolute path. */
  stderr: string
  /** Whether lines are prefixed with `group#id `. */
  prefix: boolean
  /** Bytes of this group's output dropped because its destination did not keep up. */
  droppedBytes: number
}

/** The fleet's output counters ({@link Status.logs}). */
export interface LogsStatus {
  /** Bytes of worker output dropped because a destination did not keep up (every group). */
  droppedBytes: number
  /** Bytes a destination refused (a closed pipe, a full disk). */
  failedBytes: number
  /** The master's own log file (daemon mode, `--log`), or null. */
  file: string | null
}

/** One line of worker output, as `baton logs` receives it. */
export interface OutputLine {
  /** Always `output`. */
  type: 'output'
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** The stream it was written to. */
  stream: 'stdout' | 'stderr'
  /** When the master read it (ISO-8601). */
  time: string
  /** The line, without its newline. */
  text: string
}

/** The fleet's status: `baton status --json`. */
export interface Status {
  /** Master name. */
  name: string
  /** Master pid. */
  pid: number
  /** Current generation. */
  generation: number
  /** Whether a reload is running. */
  reloading: boolean
  /** Whether the fleet is stopping. */
  stopping: boolean
  /**
   * Whether the fleet serves: every worker has been ready once, it is not stopping, and
   * every group has a worker in state `ready` (what the health endpoint answers 200 for).
   */
  ready: boolean
  /** Why {@link Status.ready} is false (a sentence); null when ready. */
  notReadyReason: string | null
  /** Orphaned processes reaped so far when the master is PID 1 or a subreaper; null otherwise. */
  reapedOrphans: number | null
  /** Worker output counters and the master's own log file. */
  logs: LogsStatus
  /** Groups in definition order. */
  groups: GroupStatus[]
  /** Workers, in group and slot order. */
  workers: WorkerStatus[]
  /** The last finished reload, if any. */
  lastReload: ReloadReport | null
  /** The master's CPU use over the last sample interval, in percent of one core (see {@link WorkerStatus.cpu}). */
  cpu: number | null
  /** CPU time the master has used since it started, in seconds. */
  cpuSeconds: number | null
  /** The master's resident memory in bytes, when known. */
  rssBytes: number | null
  /** File descriptors the master has open, when known. */
  openFds: number | null
  /** What the master counted since it started (`GET /metrics` on the health endpoint serves them). */
  counters: StatusCounters
}

/** Counters kept by the master since it started ({@link Status.counters}); a new master (`baton upgrade`) starts them again at 0. */
export interface StatusCounters {
  /** Per group: workers that exited without being asked to (a crash, or not ready in time); their slot is refilled unless the fleet is stopping. */
  restarts: Record<string, number>
  /** Reloads by how they ended; `failed` also counts a reload refused before it started (config error). */
  reloads: { done: number; failed: number; cancelled: number }
  /** Histogram of reload durations: cumulative bucket counts by upper bound `le` (seconds), their count and sum. */
  reloadSeconds: { buckets: Array<{ le: number; count: number }>; count: number; sum: number }
}

/** One slot replaced by a reload. */
export interface ReplacedWorker {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Pid of the worker it replaced (null if the slot was empty). */
  oldPid: number | null
  /** Pid of the new worker. */
  newPid: number
}

/** Why a reload was aborted: the replacement that failed. */
export interface ReloadFailure {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Pid of the failed replacement, if it started. */
  pid: number | null
  /** A sentence, e.g. "exited with code 1 before it was ready" or "not ready within 5000 ms". */
  reason: string
  /** Exit code, when it exited normally. */
  exitCode: number | null
  /** Signal name, when it was killed by a signal. */
  signal: string | null
  /** The last bytes the replacement wrote to stderr. */
  stderrTail: string
}

/**
 * A setting that a re-read configuration changed (`beforeReload`, or `baton reload` of a
 * fleet started from a config file). Environment changes name the variables, never their
 * values.
 */
export interface ConfigChange {
  /** The group, or null for a fleet-level setting (`backoff`, `name`, `runtimeDir`). */
  group: string | null
  /** The option's name as written in the config (`env`, `script`, `count`, `group`, ...). */
  setting: string
  /** `new-workers`: the workers this reload starts use it; `needs-restart`: kept as it was until a new master (`baton upgrade` or `baton restart`). */
  applied: 'new-workers' | 'needs-restart'
  /** The old value, rendered (not for `env`). */
  from?: string
  /** The new value, rendered (not for `env`). */
  to?: string
  /** For `env`: the variables added, removed or changed. */
  keys?: string[]
  /** For `group`: the re-read config adds this group. */
  added?: boolean
  /** For `group`: the re-read config no longer has this group. */
  removed?: boolean
}

/** The outcome of a reload. */
export interface ReloadReport {
  /** `done`: every worker replaced; `failed`: aborted, old workers still serving; `cancelled`: the fleet stopped. */
  outcome: 'done' | 'failed' | 'cancelled'
  /** Generation of this reload. */
  generation: number
  /** Replaced slots, in order. */
  replaced: ReplacedWorker[]
  /** Number of slots that were due for replacement. */
  due: number
  /** Workers of non-reloadable groups that were sent a `reload` message. */
  notified: number
  /** Duration of the reload in milliseconds. */
  durationMs: number
  /** Set when the outcome is `failed`. */
  failure: ReloadFailure | null
  /** A one-line human summary (it lists the config changes, if any). */
  message: string
  /** Config changes this reload picked up (empty unless the config was re-read and differed). */
  changes: ConfigChange[]
  /** Internal request tickets this reload answered. */
  tickets: number[]
}

/** Fields shared by worker events. */
export interface WorkerEvent {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Process id. */
  pid: number
  /** Generation. */
  generation: number
  /** A human log line. */
  message: string
}

/** A worker exited. */
export interface WorkerExitEvent {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Process id (null if it never started). */
  pid: number | null
  /** Generation. */
  generation: number
  /** Exit code, when it exited normally. */
  exitCode: number | null
  /** Signal name, when killed by a signal. */
  signal: string | null
  /** True when baton asked it to stop. */
  expected: boolean
  /** Decoded reason, e.g. "exited with code 1" or "killed by SIGSEGV". */
  reason: string
  /** Milliseconds until the slot is restarted, when it will be. */
  restartInMs: number | null
  /** A human log line. */
  message: string
}

/** A worker is being killed for not being ready, or not stopping, in time. */
export interface WorkerTimeoutEvent {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Process id. */
  pid: number
  /** The timeout that passed, in milliseconds. */
  timeoutMs: number
  /** A human log line. */
  message: string
}

/** A reload began. */
export interface ReloadStartEvent {
  /** Generation of the reload. */
  generation: number
  /** Slots to replace. */
  due: number
  /** A human log line. */
  message: string
}

/** A slot was replaced during a reload. */
export interface ReloadProgressEvent {
  /** Group name. */
  group: string
  /** Slot id. */
  id: number
  /** Slots replaced so far in this reload. */
  replaced: number
  /** Slots due in this reload. */
  due: number
  /** Generation of the reload. */
  generation: number
  /** A human log line, e.g. "web 2/4 replaced". */
  message: string
}

/** A message without further structure. */
export interface LogEvent {
  /** A human log line. */
  message: string
}

/** The initial start failed. */
export interface StartFailedEvent {
  /** Why, including the failing worker's stderr tail. */
  reason: string
  /** A human log line. */
  message: string
}

/** A scale began (`scale:start`). */
export interface ScaleStartEvent {
  /** Group name. */
  group: string
  /** The count before. */
  from: number
  /** The new count. */
  count: number
  /** The request's ticket. */
  ticket: number
  /** A human log line. */
  message: string
}

/** A scale reached its count (`scale:done`) or did not (`scale:failed`, `message` says why). */
export interface ScaleEvent {
  /** Group name (null when the request named no group and the fleet has several). */
  group: string | null
  /** The count asked for. */
  count: number
  /** The request's ticket. */
  ticket: number
  /** A human log line; for `scale:failed`, the cause. */
  message: string
}

/** `upgrade:start`: the new master was started. */
export interface UpgradeStartEvent {
  /** The new master's pid. */
  pid: number
}

/**
 * `upgrade:done`: the new master serves (this master's workers drain next, then it stops);
 * `upgrade:failed`: it did not (`message` says why), this master keeps serving.
 */
export interface UpgradeEvent {
  /** This master's pid (`upgrade:done`). */
  from?: number
  /** The new master's pid (`upgrade:done`). */
  to?: number
  /** The `upgrade()` calls it answers. */
  tickets: number[]
  /** A human log line; for `upgrade:failed`, the cause. */
  message: string
}

/** `upgrade:takeover`: this master, started by `baton upgrade`, now serves the fleet. */
export interface UpgradeTakeoverEvent {
  /** The old master's pid. */
  from: number
  /** A human log line. */
  message: string
}

/** Every event a {@link Supervisor} emits, with its argument. */
export interface SupervisorEvents {
  'worker:spawn': [WorkerEvent]
  'worker:ready': [WorkerEvent]
  'worker:exit': [WorkerExitEvent]
  'worker:ready-timeout': [WorkerTimeoutEvent]
  'worker:stop-timeout': [WorkerTimeoutEvent]
  'fleet:ready': [LogEvent]
  'fleet:start-failed': [StartFailedEvent]
  'fleet:stopped': [LogEvent]
  'reload:start': [ReloadStartEvent]
  'reload:progress': [ReloadProgressEvent]
  'reload:done': [ReloadReport]
  'reload:failed': [ReloadReport]
  'scale:start': [ScaleStartEvent]
  'scale:done': [ScaleEvent]
  'scale:failed': [ScaleEvent]
  'upgrade:start': [UpgradeStartEvent]
  'upgrade:done': [UpgradeEvent]
  'upgrade:failed': [UpgradeEvent]
  'upgrade:takeover': [UpgradeTakeoverEvent]
  log: [LogEvent]
}

/** The name of a supervisor event. */
export type SupervisorEventName = keyof SupervisorEvents
