/**
 * The shapes baton reports: status (the `baton status --json` contract), reload reports,
 * control answers and supervisor events. They are declared once, in Rust
 * (crates/baton-contract), and these are napi's generated TypeScript declarations of them
 * (native/index.d.cts); only the event map, which types the `Supervisor`'s EventEmitter,
 * is written here.
 */
import type {
  LogEvent,
  ReloadProgressEvent,
  ReloadReport,
  ReloadStartEvent,
  ScaleEvent,
  ScaleStartEvent,
  StartFailedEvent,
  UpgradeEvent,
  UpgradeStartEvent,
  UpgradeTakeoverEvent,
  WorkerEvent,
  WorkerExitEvent,
  WorkerTimeoutEvent,
} from '../native/index.cjs'

export type {
  ChangeApplied,
  ConfigChange,
  ControlAnswer,
  Counters,
  GroupLogsStatus,
  GroupStatus,
  HistogramBucket,
  LogEvent,
  LogsStatus,
  OutputLine,
  ReloadCounts,
  ReloadFailure,
  ReloadOutcome,
  ReloadProgressEvent,
  ReloadReport,
  ReloadSeconds,
  ReloadStartEvent,
  ReplacedWorker,
  ScaleEvent,
  ScaleStartEvent,
  SocketOrigin,
  SocketStatus,
  StartFailedEvent,
  Status,
  UpgradeEvent,
  UpgradeStartEvent,
  UpgradeTakeoverEvent,
  WorkerEvent,
  WorkerExitEvent,
  WorkerState,
  WorkerStatus,
  WorkerTimeoutEvent,
} from '../native/index.cjs'

/** Every event a {@link Supervisor} emits, with its argument (the payload, plus its `type`). */
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

/**
 * One event as the core sends it (a JSON `SupervisorEvent` of crates/baton-contract):
 * its name in `type`, its payload's fields beside it.
 */
export type SupervisorEvent = {
  [K in SupervisorEventName]: { type: K } & SupervisorEvents[K][0]
}[SupervisorEventName]
