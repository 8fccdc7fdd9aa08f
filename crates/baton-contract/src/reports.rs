//! Reload reports: what `reload()` resolves with, the `reload:done` / `reload:failed`
//! events, `baton reload`'s answer and `Status.lastReload`.

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]
pub enum ReloadOutcome {
    /// Every worker due was replaced.
    Done,
    /// Aborted: a replacement failed; the old workers still serve.
    Failed,
    /// The fleet stopped during the reload.
    Cancelled,
}

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadReport {
    /// Internal request tickets this reload answered.
    pub tickets: Vec<i64>,
    /// Generation of this reload.
    pub generation: u32,
    /// `done`: every worker replaced; `failed`: aborted, old workers still serving;
    /// `cancelled`: the fleet stopped.
    pub outcome: ReloadOutcome,
    /// Replaced slots, in order.
    pub replaced: Vec<ReplacedWorker>,
    /// Number of slots that were due for replacement.
    pub due: u32,
    /// Workers of non-reloadable groups that were sent a `reload` message.
    pub notified: u32,
    /// Duration of the reload in milliseconds.
    pub duration_ms: i64,
    /// Set when the outcome is `failed`.
    pub failure: Option<ReloadFailure>,
    /// A one-line human summary (it lists the config changes, if any).
    pub message: String,
    /// Config changes this reload picked up (empty unless the config was re-read and differed).
    pub changes: Vec<ConfigChange>,
}

/// One slot replaced by a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReplacedWorker {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Pid of the worker it replaced (null if the slot was empty).
    pub old_pid: Option<i32>,
    /// Pid of the new worker.
    pub new_pid: i32,
}

/// Why a reload was aborted: the replacement that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object, use_nullable = true))]
pub struct ReloadFailure {
    /// Group name.
    pub group: String,
    /// Slot id.
    pub id: u32,
    /// Pid of the failed replacement, if it started.
    pub pid: Option<i32>,
    /// A sentence, e.g. "exited with code 1 before it was ready" or "not ready within 5000 ms".
    pub reason: String,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal name, when it was killed by a signal.
    pub signal: Option<String>,
    /// The last bytes the replacement wrote to stderr.
    pub stderr_tail: String,
}

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]
pub enum ChangeApplied {
    /// The workers this reload starts use it.
    NewWorkers,
    /// Kept as it was until a new master (`baton upgrade` or `baton restart`).
    NeedsRestart,
}

/// A setting that a re-read configuration changed (`beforeReload`, or `baton reload` of a
/// fleet started from a config file). Environment changes name the variables, never their
/// values. The optional fields are left out when they do not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct ConfigChange {
    /// The group, or null for a fleet-level setting (`backoff`, `name`, `runtimeDir`).
    /// Always present in the JSON.
    #[cfg_attr(feature = "napi", napi(ts_type = "string | null"))]
    pub group: Option<String>,
    /// The option's name as written in the config (`env`, `script`, `count`, `group`, ...).
    pub setting: String,
    /// `new-workers`: the workers this reload starts use it; `needs-restart`: kept as it
    /// was until a new master (`baton upgrade` or `baton restart`).
    pub applied: ChangeApplied,
    /// The old value, rendered (not for `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new value, rendered (not for `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// For `env`: the variables added, removed or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// For `group`: the re-read config adds this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    /// For `group`: the re-read config no longer has this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
}
