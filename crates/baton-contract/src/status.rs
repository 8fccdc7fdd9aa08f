//! The fleet's status: what `baton status --json`, `supervisor.status()` and the health
//! endpoint's detailed body show. The core builds it in one place
//! (crates/baton-core/src/event_loop/status.rs); every field here is in the JSON, with
//! `null` for a value that is not known (never left out).

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::options::{GroupOptions, Order, SupervisorOptions};
use crate::reports::ReloadReport;

/// Lifecycle state of a worker. An empty slot waiting for its restart shows as `starting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]
pub enum WorkerState {
    /// Spawned (or being spawned), not ready yet; also an empty slot waiting to restart.
    Starting,
    /// Ready and serving.
    Ready,
    /// Asked to stop, not exited yet.
    Stopping,
}

/// Where a listening socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]
pub enum SocketOrigin {
    /// baton bound it from the group's listen addresses.
    Bound,
    /// systemd passed it (socket activation).
    Inherited,
    /// baton bound it when a worker called plain `listen(port)` (kept across reloads).
    DropIn,
}

/// The fleet's status: `baton status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct Status {
    /// Master name.
    pub name: String,
    /// Master pid.
    pub pid: u32,
    /// Current generation.
    pub generation: u32,
    /// Whether a reload is running.
    pub reloading: bool,
    /// Whether the fleet is stopping.
    pub stopping: bool,
    /// Whether the fleet serves: every worker has been ready once, it is not stopping, and
    /// every group has a worker in state `ready` (what the health endpoint answers 200 for).
    pub ready: bool,
    /// Why `ready` is false (a sentence); null when ready.
    pub not_ready_reason: Option<String>,
    /// Groups in definition order.
    pub groups: Vec<GroupStatus>,
    /// Workers, in group and slot order.
    pub workers: Vec<WorkerStatus>,
    /// The last finished reload, if any.
    pub last_reload: Option<ReloadReport>,
    /// Orphaned processes reaped so far when the master is PID 1 or a subreaper; null otherwise.
    pub reaped_orphans: Option<i64>,
    /// Worker output counters and the master's own log file.
    pub logs: LogsStatus,
    /// The master's CPU use: percent of one core over the last sample interval (about a
    /// second; can exceed 100 as PM2 counts it); null until it was sampled twice.
    pub cpu: Option<f64>,
    /// The master's CPU time in seconds since it started (user + system).
    pub cpu_seconds: Option<f64>,
    /// The master's resident memory in bytes, read when the status is asked for.
    pub rss_bytes: Option<i64>,
    /// The master's open file descriptors, read when the status is asked for.
    pub open_fds: Option<i64>,
    /// Monitoring counters since the master started (served as `GET /metrics`).
    pub counters: Counters,
    /// The fleet's options as checked (`validate_supervisor`,
    /// crates/baton-contract/src/options.rs), with what the host resolved filled in: the
    /// name, the absolute `runtimeDir` and `logFile`, the `upgradeCommand`, `backoff` with
    /// its defaults (as a re-read configuration changed it). An option the fleet does not
    /// set and that has no value of its own (`health`, `logTime`) is left out; so is
    /// `groups`: each group's options are its `groups[].options`.
    #[serde(default)]
    pub options: SupervisorOptions,
}

/// Counters the master keeps for monitoring, from its start (a `baton upgrade` starts them
/// again from 0, which Prometheus reads as a counter reset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct Counters {
    /// Crash restarts per group (a worker that exited without being asked to), every
    /// group listed.
    pub restarts: BTreeMap<String, i64>,
    /// Workers replaced for staying above `maxMemory`, per group, every group listed.
    pub memory_replacements: BTreeMap<String, i64>,
    /// Reload passes by how they ended.
    pub reloads: ReloadCounts,
    /// The reload durations, as a Prometheus histogram.
    pub reload_seconds: ReloadSeconds,
}

/// Reload passes by outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadCounts {
    /// Every due worker was replaced.
    pub done: i64,
    /// A new worker failed (the old ones kept serving), or the reload was refused before it
    /// started.
    pub failed: i64,
    /// The fleet began stopping during the reload.
    pub cancelled: i64,
}

/// A histogram of reload durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadSeconds {
    /// Cumulative buckets: reloads that took at most `le` seconds.
    pub buckets: Vec<HistogramBucket>,
    /// Reloads observed (the `+Inf` bucket).
    pub count: i64,
    /// Their durations added up, in seconds.
    pub sum: f64,
}

/// One bucket of [`ReloadSeconds`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct HistogramBucket {
    /// The bucket's upper bound in seconds.
    pub le: f64,
    /// Reloads that took at most `le` seconds.
    pub count: i64,
}

/// A group as shown in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// Number of slots.
    pub count: u32,
    /// Whether a reload replaces its workers.
    pub reloadable: bool,
    /// Reload order.
    pub order: Order,
    /// Workers a reload replaces at once.
    pub parallel: u32,
    /// Addresses actually bound (a real port for `:0`).
    pub listen: Vec<String>,
    /// Each listen address and where its socket came from, in the order of `listen`.
    pub sockets: Vec<SocketStatus>,
    /// How connections are spread across the workers.
    #[cfg_attr(feature = "napi", napi(ts_type = "'shared' | 'reuseport' | 'sticky'"))]
    pub balance: String,
    /// Milliseconds a stopping worker has before SIGKILL.
    pub stop_timeout_ms: i64,
    /// Milliseconds a new worker has to become ready.
    pub ready_timeout_ms: i64,
    /// How a worker becomes ready (the `readiness` option).
    #[cfg_attr(feature = "napi", napi(ts_type = "'listen' | 'message' | 'uptime'"))]
    pub readiness: String,
    /// `readiness: 'uptime'`: milliseconds a worker must stay up; null otherwise.
    pub min_uptime_ms: Option<i64>,
    /// The environment variable holding each worker's id (`instanceVar`).
    pub instance_var: String,
    /// Where the workers' output goes, and what was lost.
    pub logs: GroupLogsStatus,
    /// The group's options as validated, every default filled in (an option with no value
    /// and no default, like an unset `uid`, is left out), with the live `count` (`baton
    /// scale` changes it) and the values of `env` hidden (`<hidden>`: the status reaches
    /// more readers than the config does).
    pub options: GroupOptions,
}

/// One listen address of a group and where its socket came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct SocketStatus {
    /// The address listened on (a real port for `:0`; systemd's socket's address when inherited).
    pub address: String,
    /// The address as configured.
    pub configured: String,
    /// Where the socket came from.
    pub from: SocketOrigin,
    /// The fd number systemd passed it as; null unless inherited.
    pub fd: Option<i32>,
    /// Its `LISTEN_FDNAMES` name (`FileDescriptorName=`); null unless inherited and named.
    pub fd_name: Option<String>,
}

/// Where a group's output goes (`GroupStatus.logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct GroupLogsStatus {
    /// `inherit` (the master's stdout), `ignore`, or the file's absolute path.
    pub stdout: String,
    /// `inherit` (the master's stderr), `ignore`, or the file's absolute path.
    pub stderr: String,
    /// Whether lines are prefixed with `group#id `.
    pub prefix: bool,
    /// Bytes of this group's output dropped because its destination did not keep up.
    pub dropped_bytes: i64,
}

/// The fleet's output counters (`Status.logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct LogsStatus {
    /// Bytes of worker output dropped because a destination did not keep up (every group).
    pub dropped_bytes: i64,
    /// Bytes a destination refused (a closed pipe, a full disk).
    pub failed_bytes: i64,
    /// The master's own log file (daemon mode, `--log`), or null.
    pub file: Option<String>,
}

/// One row of `Status.workers`: a worker, or an empty slot waiting for its restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct WorkerStatus {
    /// Group name.
    pub group: String,
    /// Slot id, 0..count-1; kept across replacements.
    pub id: u32,
    /// Process id; null for a slot waiting to be restarted after a crash.
    pub pid: Option<i32>,
    /// Generation the worker was started in (grows by one per reload).
    pub generation: u32,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Crash restarts of this slot.
    pub restarts: u32,
    /// Resident memory in bytes, when known.
    pub rss_bytes: Option<i64>,
    /// CPU use: percent of one core over the last sample interval (about a second; can
    /// exceed 100); null until the worker was sampled twice.
    pub cpu: Option<f64>,
    /// CPU time in seconds since the worker started (user + system).
    pub cpu_seconds: Option<f64>,
    /// Open connections on the listen sockets, as baton's runtime in the worker reports
    /// them; null otherwise.
    pub connections: Option<u32>,
    /// When the worker was started (ISO-8601), null for an empty slot.
    pub started_at: Option<String>,
    /// How the slot's previous worker ended, e.g. "exited with code 1", when it crashed.
    pub last_exit: Option<String>,
    /// Why the slot's last worker replaced while it ran was replaced, e.g. "RSS 612 MiB
    /// above maxMemory 512 MiB for 3 s (pid 41)" (`maxMemory`); null if none was.
    pub last_replaced: Option<String>,
    /// For an empty slot: milliseconds until its restart.
    pub restart_in_ms: Option<i64>,
}
