//! Supervisor events: what the `Supervisor` emits (its `SupervisorEvents` map in
//! src/master/supervisor.ts names each event's payload type declared here) and what
//! `baton reload` / `baton scale` clients receive as `{"event": ...}` lines.
//!
//! [`SupervisorEvent`] is the tagged whole (`{"type": "worker:spawn", ...}`); it crosses to
//! JavaScript as one JSON string per event. The payload types are napi objects, so their
//! TypeScript declarations are generated.

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};

use crate::reports::ReloadReport;

/// `worker:spawn` and `worker:ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct WorkerEvent {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Process id.
    pub pid: i32,
    /// Generation.
    pub generation: u32,
    /// A human log line.
    pub message: String,
}

/// `worker:exit`: a worker exited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct WorkerExitEvent {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Process id (null if it never started).
    pub pid: Option<i32>,
    /// Generation.
    pub generation: u32,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal name, when killed by a signal.
    pub signal: Option<String>,
    /// True when baton asked it to stop.
    pub expected: bool,
    /// Decoded reason, e.g. "exited with code 1" or "killed by SIGSEGV".
    pub reason: String,
    /// Milliseconds until the slot is restarted, when it will be.
    pub restart_in_ms: Option<i64>,
    /// A human log line.
    pub message: String,
}

/// `worker:ready-timeout` / `worker:stop-timeout`: a worker is being killed for not being
/// ready, or not stopping, in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct WorkerTimeoutEvent {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Process id.
    pub pid: i32,
    /// The timeout that passed, in milliseconds.
    pub timeout_ms: i64,
    /// A human log line.
    pub message: String,
}

/// `reload:start`: a reload began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadStartEvent {
    /// Generation of the reload.
    pub generation: u32,
    /// The request tickets this reload answers.
    pub tickets: Vec<i64>,
    /// Slots to replace.
    pub due: u32,
    /// A human log line.
    pub message: String,
}

/// `reload:progress`: a slot was replaced during a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadProgressEvent {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Slots replaced so far in this reload.
    pub replaced: u32,
    /// Slots due in this reload.
    pub due: u32,
    /// Generation of the reload.
    pub generation: u32,
    /// A human log line, e.g. "web 2/4 replaced".
    pub message: String,
}

/// `log`, `fleet:ready`, `fleet:stopped`: a message without further structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct LogEvent {
    /// A human log line.
    pub message: String,
}

/// `fleet:start-failed`: the initial start failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct StartFailedEvent {
    /// Why, including the failing worker's stderr tail.
    pub reason: String,
    /// A human log line.
    pub message: String,
}

/// `scale:start`: a scale began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ScaleStartEvent {
    /// Group name.
    pub group: String,
    /// The count before.
    pub from: u32,
    /// The new count.
    pub count: u32,
    /// The request's ticket.
    pub ticket: i64,
    /// A human log line.
    pub message: String,
}

/// `scale:done`: a scale reached its count; `scale:failed`: it did not (`message` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ScaleEvent {
    /// Group name (null when the request named no group and the fleet has several).
    pub group: Option<String>,
    /// The count asked for.
    pub count: u32,
    /// The request's ticket.
    pub ticket: i64,
    /// A human log line; for `scale:failed`, the cause.
    pub message: String,
}

/// `upgrade:start`: the new master was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct UpgradeStartEvent {
    /// The new master's pid.
    pub pid: u32,
}

/// `upgrade:done`: the new master serves (this master's workers drain next, then it
/// stops); `upgrade:failed`: it did not (`message` says why), this master keeps serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct UpgradeEvent {
    /// This master's pid (`upgrade:done` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// The new master's pid (`upgrade:done` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// The `upgrade()` calls it answers.
    pub tickets: Vec<i64>,
    /// A human log line; for `upgrade:failed`, the cause.
    pub message: String,
}

/// `upgrade:takeover`: this master, started by `baton upgrade`, now serves the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct UpgradeTakeoverEvent {
    /// The old master's pid.
    pub from: u32,
    /// A human log line.
    pub message: String,
}

/// Every event, tagged by its name in `type` (the payload's fields beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SupervisorEvent {
    /// A worker was started.
    #[serde(rename = "worker:spawn")]
    WorkerSpawn(WorkerEvent),
    /// A worker became ready.
    #[serde(rename = "worker:ready")]
    WorkerReady(WorkerEvent),
    /// A worker exited.
    #[serde(rename = "worker:exit")]
    WorkerExit(WorkerExitEvent),
    /// A worker was not ready in time: it is killed.
    #[serde(rename = "worker:ready-timeout")]
    WorkerReadyTimeout(WorkerTimeoutEvent),
    /// A worker did not stop in time: it is killed.
    #[serde(rename = "worker:stop-timeout")]
    WorkerStopTimeout(WorkerTimeoutEvent),
    /// Every worker has been ready.
    #[serde(rename = "fleet:ready")]
    FleetReady(LogEvent),
    /// The initial start failed.
    #[serde(rename = "fleet:start-failed")]
    StartFailed(StartFailedEvent),
    /// Every worker stopped and the sockets are released.
    #[serde(rename = "fleet:stopped")]
    Stopped(LogEvent),
    /// A reload began.
    #[serde(rename = "reload:start")]
    ReloadStart(ReloadStartEvent),
    /// A slot was replaced.
    #[serde(rename = "reload:progress")]
    ReloadProgress(ReloadProgressEvent),
    /// A reload replaced every worker due.
    #[serde(rename = "reload:done")]
    ReloadDone(ReloadReport),
    /// A reload was aborted or cancelled.
    #[serde(rename = "reload:failed")]
    ReloadFailed(ReloadReport),
    /// A scale began.
    #[serde(rename = "scale:start")]
    ScaleStart(ScaleStartEvent),
    /// A scale reached its count.
    #[serde(rename = "scale:done")]
    ScaleDone(ScaleEvent),
    /// A scale did not reach its count.
    #[serde(rename = "scale:failed")]
    ScaleFailed(ScaleEvent),
    /// `baton upgrade` started a new master.
    #[serde(rename = "upgrade:start")]
    UpgradeStart(UpgradeStartEvent),
    /// The new master serves.
    #[serde(rename = "upgrade:done")]
    UpgradeDone(UpgradeEvent),
    /// The upgrade did not happen; this master keeps serving.
    #[serde(rename = "upgrade:failed")]
    UpgradeFailed(UpgradeEvent),
    /// This master took over from the one it replaces.
    #[serde(rename = "upgrade:takeover")]
    UpgradeTakeover(UpgradeTakeoverEvent),
    /// A line for the master's log.
    #[serde(rename = "log")]
    Log(LogEvent),
}

impl SupervisorEvent {
    /// A `log` event.
    pub fn log(message: impl Into<String>) -> SupervisorEvent {
        SupervisorEvent::Log(LogEvent {
            message: message.into(),
        })
    }

    /// The human log line every event but `upgrade:start` carries.
    pub fn message(&self) -> Option<&str> {
        use SupervisorEvent as E;
        Some(match self {
            E::WorkerSpawn(e) | E::WorkerReady(e) => &e.message,
            E::WorkerExit(e) => &e.message,
            E::WorkerReadyTimeout(e) | E::WorkerStopTimeout(e) => &e.message,
            E::FleetReady(e) | E::Stopped(e) | E::Log(e) => &e.message,
            E::StartFailed(e) => &e.message,
            E::ReloadStart(e) => &e.message,
            E::ReloadProgress(e) => &e.message,
            E::ReloadDone(r) | E::ReloadFailed(r) => &r.message,
            E::ScaleStart(e) => &e.message,
            E::ScaleDone(e) | E::ScaleFailed(e) => &e.message,
            E::UpgradeStart(_) => return None,
            E::UpgradeDone(e) | E::UpgradeFailed(e) => &e.message,
            E::UpgradeTakeover(e) => &e.message,
        })
    }
}

/// One line of worker output, as `baton logs` receives it (in an `{"event": ...}` line of
/// the control socket). The core writes it without copying the line
/// (crates/baton-core/src/log_ring.rs, `OutputEvent`); a test there checks that what it
/// writes reads back as this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "napi", napi(object))]
pub struct OutputLine {
    /// Always `output`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "napi", napi(js_name = "type", ts_type = "'output'"))]
    pub kind: String,
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// The stream it was written to.
    #[cfg_attr(feature = "napi", napi(ts_type = "'stdout' | 'stderr'"))]
    pub stream: String,
    /// When the master read it (ISO-8601).
    pub time: String,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}
