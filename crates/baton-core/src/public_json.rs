//! The values users see: events, reload reports, status and control answers, as the
//! contract types of crates/baton-contract, and their one serialization to JSON lines.
//!
//! One place turns the state machine's index-based values into named, documented values,
//! so the JavaScript API, the control socket and the CLI all show the same thing. Nothing
//! else in the core writes JSON by hand: it builds a contract value and calls [`line`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use baton_contract::control::ControlAnswer;
pub use baton_contract::events::{
    LogEvent, ReloadProgressEvent, ReloadStartEvent, ScaleEvent, ScaleStartEvent, StartFailedEvent,
    SupervisorEvent, UpgradeEvent, UpgradeStartEvent, UpgradeTakeoverEvent, WorkerEvent,
    WorkerExitEvent, WorkerTimeoutEvent,
};
pub use baton_contract::reports::{ChangeApplied, ConfigChange, ReloadFailure, ReplacedWorker};
pub use baton_contract::status::{
    Counters, GroupLogsStatus, GroupStatus, LogsStatus, SocketOrigin, SocketStatus, Status,
    WorkerStatus,
};

use crate::config::SupervisorOptions;
use crate::exit_status::ExitStatus;
use crate::fleet::{
    Event, ExitCause, FleetSnapshot, ReloadOutcome, ReloadReport, ScaleError, WorkerState,
};
use crate::reconfigure::{Change, Detail, Effect};

/// What a conversion needs to know besides the value itself.
pub struct Names<'a> {
    /// Group names by index.
    pub groups: &'a [String],
}

impl Names<'_> {
    fn group(&self, index: usize) -> String {
        self.groups
            .get(index)
            .map(String::as_str)
            .unwrap_or("?")
            .to_string()
    }
}

/// One protocol line (the control socket, a worker's control channel, the upgrade
/// channel): the value as JSON, then a newline.
pub fn line<T: Serialize + ?Sized>(value: &T) -> String {
    // Contract types have string keys and no maps of other keys: this cannot fail.
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    s.push('\n');
    s
}

/// The value as one JSON string (no newline): what the binding hands to JavaScript.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// An `{"event": ...}` line of the control socket (reload and scale progress, `baton logs`).
pub fn event_line<T: Serialize + ?Sized>(event: &T) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T: ?Sized> {
        event: &'a T,
    }
    line(&Frame { event })
}

fn exit_fields(status: Option<ExitStatus>) -> (Option<i32>, Option<String>) {
    match status {
        Some(ExitStatus::Code(c)) => (Some(c), None),
        Some(ExitStatus::Signal(s)) => (None, Some(crate::exit_status::signal_name(s))),
        None => (None, None),
    }
}

/// Milliseconds, as the contract's integer.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn tickets(t: &[u64]) -> Vec<i64> {
    t.iter()
        .map(|t| i64::try_from(*t).unwrap_or(i64::MAX))
        .collect()
}

/// The human summary of a reload, without its config changes.
fn report_message(names: &Names, r: &ReloadReport) -> String {
    match (&r.outcome, &r.failure) {
        (ReloadOutcome::Done, _) => format!(
            "reload {} done: {} of {} workers replaced in {} ms",
            r.generation,
            r.replaced.len(),
            r.due,
            ms(r.duration)
        ),
        (ReloadOutcome::Failed, Some(f)) => format!(
            "reload {} aborted: new worker {}#{} {}; {} of {} workers replaced, the others keep serving the previous version",
            r.generation,
            names.group(f.group),
            f.slot,
            f.reason,
            r.replaced.len(),
            r.due
        ),
        (ReloadOutcome::Failed, None) => format!("reload {} aborted", r.generation),
        (ReloadOutcome::Cancelled, _) => format!(
            "reload cancelled: {}",
            r.cancel_reason.as_deref().unwrap_or("the fleet is stopping")
        ),
    }
}

/// A reload report with the config changes it picked up (`found`, empty when none): the
/// one-line human summary in `message` lists them.
pub fn report(
    names: &Names,
    r: &ReloadReport,
    found: &[Change],
) -> baton_contract::reports::ReloadReport {
    let replaced = r
        .replaced
        .iter()
        .map(|x| ReplacedWorker {
            group: names.group(x.group),
            id: x.slot,
            old_pid: x.old_pid,
            new_pid: x.new_pid,
        })
        .collect();
    let failure = r.failure.as_ref().map(|f| {
        let (exit_code, signal) = exit_fields(f.status);
        ReloadFailure {
            group: names.group(f.group),
            id: f.slot,
            pid: f.pid,
            reason: f.reason.clone(),
            exit_code,
            signal,
            stderr_tail: f.stderr_tail.clone(),
        }
    });
    let mut message = report_message(names, r);
    if let Some(summary) = changes_summary(found) {
        message = format!("{message}; {summary}");
    }
    baton_contract::reports::ReloadReport {
        tickets: tickets(&r.tickets),
        generation: r.generation,
        outcome: r.outcome,
        replaced,
        due: r.due,
        notified: r.notified,
        duration_ms: ms(r.duration),
        failure,
        message,
        changes: changes(found),
    }
}

/// Config changes picked up by a reload (`group` is null for fleet-level settings; `keys`
/// names changed environment variables).
pub fn changes(changes: &[Change]) -> Vec<ConfigChange> {
    changes
        .iter()
        .map(|c| {
            let mut row = ConfigChange {
                group: c.group.clone(),
                setting: c.setting.key().to_string(),
                applied: match c.effect {
                    Effect::NewWorkers => ChangeApplied::NewWorkers,
                    Effect::NeedsRestart => ChangeApplied::NeedsRestart,
                },
                from: None,
                to: None,
                keys: None,
                added: None,
                removed: None,
            };
            match &c.detail {
                Detail::Values { from, to } => {
                    row.from = Some(from.clone());
                    row.to = Some(to.clone());
                }
                Detail::EnvKeys(keys) => row.keys = Some(keys.clone()),
                Detail::Added => row.added = Some(true),
                Detail::Removed => row.removed = Some(true),
            }
            row
        })
        .collect()
}

/// `web.env (GREETING)`, `web.count (2 -> 4)`, `group jobs (removed)`.
fn change_phrase(c: &Change) -> String {
    let key = match &c.group {
        Some(g) if c.setting == crate::reconfigure::Setting::Group => format!("group {g}"),
        Some(g) => format!("{g}.{}", c.setting.key()),
        None => c.setting.key().to_string(),
    };
    match &c.detail {
        Detail::Values { from, to } => format!("{key} ({from} -> {to})"),
        Detail::EnvKeys(keys) => format!("{key} ({})", keys.join(", ")),
        Detail::Added => format!("{key} (added)"),
        Detail::Removed => format!("{key} (removed)"),
    }
}

/// What a reload applied and what it could not, as one readable sentence; `None` when
/// nothing changed.
pub fn changes_summary(changes: &[Change]) -> Option<String> {
    let list = |effect: Effect| {
        changes
            .iter()
            .filter(|c| c.effect == effect)
            .map(change_phrase)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let applied = list(Effect::NewWorkers);
    let restart = list(Effect::NeedsRestart);
    let mut parts = Vec::new();
    if !applied.is_empty() {
        parts.push(format!("config changes for the new workers: {applied}"));
    }
    if !restart.is_empty() {
        parts.push(format!(
            "not applied, these need a new master (baton upgrade, with 0 failed requests; or baton restart): {restart}"
        ));
    }
    let count_changed = changes.iter().any(|c| {
        c.effect == Effect::NeedsRestart && c.setting == crate::reconfigure::Setting::Count
    });
    if count_changed {
        parts.push(
            "a running group's count changes without a restart: baton scale [NAME] [GROUP] N"
                .to_string(),
        );
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// An event as users see it: its fields and a human `message`. A reload's report carries
/// the config changes `found` for it (ignored by the other events).
pub fn event(names: &Names, e: &Event, found: &[Change]) -> SupervisorEvent {
    use SupervisorEvent as E;
    match e {
        Event::WorkerSpawned {
            group,
            slot,
            pid,
            generation,
        } => E::WorkerSpawn(WorkerEvent {
            group: names.group(*group),
            id: *slot,
            pid: *pid,
            generation: *generation,
            message: format!(
                "{}#{} started (pid {pid}, generation {generation})",
                names.group(*group),
                slot
            ),
        }),
        Event::WorkerReady {
            group,
            slot,
            pid,
            generation,
        } => E::WorkerReady(WorkerEvent {
            group: names.group(*group),
            id: *slot,
            pid: *pid,
            generation: *generation,
            message: format!(
                "{}#{} ready (pid {pid}, generation {generation})",
                names.group(*group),
                slot
            ),
        }),
        Event::WorkerExit {
            group,
            slot,
            pid,
            generation,
            status,
            cause,
            detail,
            restart_in,
        } => {
            let (exit_code, signal) = exit_fields(*status);
            let who = match pid {
                Some(p) => format!("{}#{} (pid {p})", names.group(*group), slot),
                None => format!("{}#{}", names.group(*group), slot),
            };
            let mut message = format!("{who} {detail}");
            if let Some(d) = restart_in {
                message.push_str(&format!("; restarting in {} ms", ms(*d)));
            }
            E::WorkerExit(WorkerExitEvent {
                group: names.group(*group),
                id: *slot,
                pid: *pid,
                generation: *generation,
                exit_code,
                signal,
                expected: *cause == ExitCause::Requested,
                reason: detail.clone(),
                restart_in_ms: restart_in.map(ms),
                message,
            })
        }
        Event::WorkerReadyTimeout {
            group,
            slot,
            pid,
            timeout,
        } => E::WorkerReadyTimeout(WorkerTimeoutEvent {
            group: names.group(*group),
            id: *slot,
            pid: *pid,
            timeout_ms: ms(*timeout),
            message: format!(
                "{}#{} (pid {pid}) not ready within {} ms: killing it",
                names.group(*group),
                slot,
                ms(*timeout)
            ),
        }),
        Event::WorkerStopTimeout {
            group,
            slot,
            pid,
            timeout,
        } => E::WorkerStopTimeout(WorkerTimeoutEvent {
            group: names.group(*group),
            id: *slot,
            pid: *pid,
            timeout_ms: ms(*timeout),
            message: format!(
                "{}#{} (pid {pid}) still running {} ms after stop: sending SIGKILL",
                names.group(*group),
                slot,
                ms(*timeout)
            ),
        }),
        Event::FleetReady => E::FleetReady(LogEvent {
            message: "all workers ready".into(),
        }),
        Event::StartFailed { reason } => E::StartFailed(StartFailedEvent {
            reason: reason.clone(),
            message: format!("start failed: {reason}"),
        }),
        Event::ReloadStart {
            generation,
            tickets: t,
            due,
        } => E::ReloadStart(ReloadStartEvent {
            generation: *generation,
            tickets: tickets(t),
            due: *due,
            message: format!("reload {generation} started: {due} workers to replace"),
        }),
        Event::ReloadProgress {
            group,
            slot,
            replaced,
            due,
            generation,
        } => E::ReloadProgress(ReloadProgressEvent {
            group: names.group(*group),
            id: *slot,
            replaced: *replaced,
            due: *due,
            generation: *generation,
            message: format!("{} {replaced}/{due} replaced", names.group(*group)),
        }),
        Event::MemoryOverLimit {
            group,
            slot,
            pid,
            rss,
            limit,
            over,
            replacing,
        } => {
            let name = names.group(*group);
            let what = if *replacing {
                "replacing it gracefully".to_string()
            } else {
                format!("not replaced: group {name} is not reloadable (reloadable: false); restart it yourself or raise maxMemory")
            };
            E::log(format!(
                "worker {name}#{slot} (pid {pid}) RSS {} above maxMemory {} for {} s: {what}",
                baton_contract::size::format_size(*rss),
                baton_contract::size::format_size(*limit),
                over.as_secs()
            ))
        }
        Event::ReloadDone(r) => E::ReloadDone(report(names, r, found)),
        Event::ReloadFailed(r) => E::ReloadFailed(report(names, r, found)),
        Event::Stopped => E::Stopped(LogEvent {
            message: "all workers stopped".into(),
        }),
        Event::ScaleStart {
            group,
            from,
            to,
            ticket,
        } => E::ScaleStart(ScaleStartEvent {
            group: names.group(*group),
            from: *from,
            count: *to,
            ticket: tickets(&[*ticket])[0],
            message: format!(
                "scaling {} from {from} to {to} workers",
                names.group(*group)
            ),
        }),
        Event::ScaleDone {
            group,
            count,
            ticket,
        } => E::ScaleDone(ScaleEvent {
            group: Some(names.group(*group)),
            count: *count,
            ticket: tickets(&[*ticket])[0],
            message: format!(
                "{} scaled to {count} workers, all ready",
                names.group(*group)
            ),
        }),
        Event::ScaleFailed {
            group,
            count,
            ticket,
            error,
        } => E::ScaleFailed(ScaleEvent {
            group: Some(names.group(*group)),
            count: *count,
            ticket: tickets(&[*ticket])[0],
            message: scale_error_message(names, *group, *count, error),
        }),
    }
}

/// A scale refused before it started: `scale:failed` (`group` as the request named it).
pub fn scale_refused(
    group: Option<String>,
    count: u32,
    ticket: u64,
    message: String,
) -> SupervisorEvent {
    SupervisorEvent::ScaleFailed(ScaleEvent {
        group,
        count,
        ticket: tickets(&[ticket])[0],
        message,
    })
}

/// The sentence for a scale that was refused or did not complete.
pub fn scale_error_message(names: &Names, group: usize, count: u32, error: &ScaleError) -> String {
    let name = names.group(group);
    match error {
        ScaleError::UnknownGroup => format!("group: no group number {group} in this fleet"),
        ScaleError::ZeroCount => {
            "count: expected a whole number of workers of at least 1, got 0".to_string()
        }
        ScaleError::NotStarted => {
            "the fleet is still starting: scale once it is ready".to_string()
        }
        ScaleError::Reloading => {
            "a reload is running: scale once it has ended (baton status shows it)".to_string()
        }
        ScaleError::Superseded => {
            format!("a newer scale of group \"{name}\" replaced this one (to {count} workers)")
        }
        ScaleError::Stopping => "the fleet is stopping".to_string(),
        ScaleError::WorkerFailed { slot, reason } => format!(
            "{name}#{slot} {reason}; group \"{name}\" keeps {count} workers and restarts it with backoff (see baton logs)"
        ),
    }
}

/// Milliseconds since the Unix epoch, as an ISO-8601 UTC string (`2026-11-22T03:04:05.678Z`).
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let millis = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Per-row facts the state machine does not hold.
pub struct RowExtras {
    /// Wall-clock spawn time.
    pub started_at: Option<SystemTime>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Open connections, as baton's runtime in the worker last reported them.
    pub connections: Option<u32>,
    /// CPU figures, once sampled.
    pub cpu: Option<CpuFigures>,
}

/// Whether the fleet serves: it has been ready (`fleet:ready`), is not stopping, and every
/// group has at least one worker in state `ready`. `Err` says why not, for humans.
///
/// A start-first reload keeps it ready (the old worker serves until its replacement is
/// ready); a stop-first reload of a group of one worker makes it not ready while the slot
/// is empty. This is what `--health` answers (200 or 503) and `ready` in the status.
pub fn readiness(names: &Names, snap: &FleetSnapshot) -> Result<(), String> {
    if snap.stopping {
        return Err("the fleet is stopping".into());
    }
    if !snap.running {
        return Err("the fleet is starting: not every worker has been ready yet".into());
    }
    for (g, name) in names.groups.iter().enumerate() {
        let serving = snap
            .workers
            .iter()
            .any(|w| w.group == g && w.state == WorkerState::Ready);
        if !serving {
            return Err(format!("group \"{name}\" has no ready worker"));
        }
    }
    Ok(())
}

/// What the status shows besides the state machine's snapshot: the loop's own parts.
pub struct StatusParts<'a> {
    /// The fleet's name.
    pub fleet_name: &'a str,
    /// The master's pid.
    pub master_pid: u32,
    /// Every group, in definition order.
    pub groups: Vec<GroupStatus>,
    /// Orphans reaped by the master (`None` unless it is PID 1 or a subreaper).
    pub reaped_orphans: Option<u64>,
    /// The fleet's output counters.
    pub logs: LogsStatus,
    /// The config changes the last finished reload picked up.
    pub last_changes: &'a [Change],
    /// The master's CPU figures, once sampled.
    pub master_cpu: Option<CpuFigures>,
    /// The monitoring counters.
    pub counters: Counters,
    /// The fleet's options (`FleetConfig::options`).
    pub options: &'a SupervisorOptions,
}

/// A process's CPU figures as the status shows them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuFigures {
    /// Percent of one core over the last sample interval (`None` until sampled twice).
    pub percent: Option<f64>,
    /// CPU seconds since the process started.
    pub seconds: f64,
}

/// The status (`docs/design.md#contracts`): `{ name, pid, generation, reloading,
/// workers: [...] }` plus additive fields (`stopping`, `ready` and `notReadyReason` (see
/// [`readiness`]), `groups`, `lastReload`, `reapedOrphans`, `logs`, per-worker
/// `lastExit`, `restartInMs`, `connections`). The one place a status is put together.
pub fn status(
    names: &Names,
    parts: StatusParts,
    snap: &FleetSnapshot,
    now: Instant,
    extras: &dyn Fn(Option<u64>, Option<i32>) -> RowExtras,
) -> Status {
    let workers = snap
        .workers
        .iter()
        .map(|w| {
            let x = extras(w.key, w.pid);
            WorkerStatus {
                group: names.group(w.group),
                id: w.slot,
                pid: w.pid,
                generation: w.generation,
                state: w.state,
                restarts: w.restarts,
                rss_bytes: x.rss_bytes.map(bytes),
                cpu: x.cpu.and_then(|c| c.percent),
                cpu_seconds: x.cpu.map(|c| c.seconds),
                connections: x.connections,
                started_at: x.started_at.map(iso8601),
                last_exit: w.last_exit.clone(),
                last_replaced: w.last_replaced.clone(),
                restart_in_ms: w.restart_at.map(|at| ms(at.saturating_duration_since(now))),
            }
        })
        .collect();
    let readiness = readiness(names, snap);
    Status {
        name: parts.fleet_name.to_string(),
        pid: parts.master_pid,
        generation: snap.generation,
        reloading: snap.reloading,
        stopping: snap.stopping,
        ready: readiness.is_ok(),
        not_ready_reason: readiness.err(),
        groups: parts.groups,
        workers,
        last_reload: snap
            .last_reload
            .as_ref()
            .map(|r| report(names, r, parts.last_changes)),
        reaped_orphans: parts.reaped_orphans.map(bytes),
        logs: parts.logs,
        cpu: parts.master_cpu.and_then(|c| c.percent),
        cpu_seconds: parts.master_cpu.map(|c| c.seconds),
        // Read when the status is asked for (`Handle::status`), not when it is published.
        rss_bytes: None,
        open_fds: None,
        counters: parts.counters,
        options: SupervisorOptions {
            groups: None,
            ..parts.options.clone()
        },
    }
}

/// A count of bytes (or anything else counted in `u64`), as the contract's integer.
pub fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconfigure::Setting;

    #[test]
    fn changes_render_without_values_of_env() {
        let found = vec![
            Change {
                group: Some("web".into()),
                setting: Setting::Env,
                effect: Effect::NewWorkers,
                detail: Detail::EnvKeys(vec!["GREETING".into()]),
            },
            Change {
                group: Some("web".into()),
                setting: Setting::Count,
                effect: Effect::NeedsRestart,
                detail: Detail::Values {
                    from: "2".into(),
                    to: "4".into(),
                },
            },
        ];
        let groups = ["web".to_string()];
        let names = Names { groups: &groups };
        let done = ReloadReport {
            tickets: vec![7],
            generation: 2,
            outcome: ReloadOutcome::Done,
            replaced: vec![],
            due: 0,
            notified: 0,
            duration: Duration::from_millis(5),
            failure: None,
            cancel_reason: None,
        };
        let report = serde_json::to_value(report(&names, &done, &found)).unwrap();
        assert_eq!(
            report["message"],
            "reload 2 done: 0 of 0 workers replaced in 5 ms; config changes for the new workers: web.env (GREETING); \
             not applied, these need a new master (baton upgrade, with 0 failed requests; or baton restart): web.count (2 -> 4); \
             a running group's count changes without a restart: baton scale [NAME] [GROUP] N"
        );
        assert_eq!(
            report["changes"][0]["keys"],
            serde_json::json!(["GREETING"])
        );
        assert_eq!(report["changes"][0]["group"], "web");
        assert!(report["changes"][0].get("from").is_none());
        assert_eq!(report["changes"][1]["applied"], "needs-restart");
        assert_eq!(report["changes"][1]["from"], "2");
        // Every field of the report is present; unknown values are null.
        let mut keys: Vec<&str> = report
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "changes",
                "due",
                "durationMs",
                "failure",
                "generation",
                "message",
                "notified",
                "outcome",
                "replaced",
                "tickets"
            ]
        );
        assert!(report["failure"].is_null());
        assert_eq!(changes_summary(&[]), None);
    }

    use crate::fleet::WorkerSnapshot;

    fn row(group: usize, slot: u32, state: WorkerState) -> WorkerSnapshot {
        WorkerSnapshot {
            key: Some(u64::from(slot) + 1),
            group,
            slot,
            pid: Some(100 + slot as i32),
            generation: 1,
            state,
            restarts: 0,
            last_exit: None,
            restart_at: None,
            spawned_at: None,
            last_replaced: None,
        }
    }

    fn snap(running: bool, stopping: bool, workers: Vec<WorkerSnapshot>) -> FleetSnapshot {
        FleetSnapshot {
            generation: 1,
            reloading: false,
            stopping,
            running,
            workers,
            last_reload: None,
        }
    }

    #[test]
    fn ready_needs_a_started_fleet_not_stopping_with_a_ready_worker_per_group() {
        let groups = ["web".to_string(), "jobs".to_string()];
        let names = Names { groups: &groups };
        let serving = vec![
            row(0, 0, WorkerState::Ready),
            row(0, 0, WorkerState::Starting), // a start-first replacement booting
            row(1, 0, WorkerState::Stopping),
            row(1, 0, WorkerState::Ready),
        ];
        assert_eq!(
            readiness(&names, &snap(true, false, serving.clone())),
            Ok(())
        );
        assert!(readiness(&names, &snap(false, false, serving.clone()))
            .unwrap_err()
            .contains("starting"));
        assert!(readiness(&names, &snap(false, true, serving))
            .unwrap_err()
            .contains("stopping"));
        // stop-first with one worker: the slot's old worker stops, its successor boots.
        let emptied = vec![
            row(0, 0, WorkerState::Ready),
            row(1, 0, WorkerState::Starting),
            row(1, 0, WorkerState::Stopping),
        ];
        assert_eq!(
            readiness(&names, &snap(true, false, emptied)),
            Err("group \"jobs\" has no ready worker".to_string())
        );
    }

    #[test]
    fn the_status_json_has_every_contract_field_with_null_for_unknowns() {
        let groups = ["web".to_string()];
        let names = Names { groups: &groups };
        let mut empty = row(0, 1, WorkerState::Starting);
        empty.key = None;
        empty.pid = None;
        let snapshot = snap(true, false, vec![row(0, 0, WorkerState::Ready), empty]);
        let parts = StatusParts {
            fleet_name: "fleet",
            master_pid: 7,
            groups: vec![],
            reaped_orphans: None,
            logs: LogsStatus {
                dropped_bytes: 0,
                failed_bytes: 0,
                file: None,
            },
            last_changes: &[],
            master_cpu: None,
            counters: crate::metrics::Counters::new(&groups).snapshot(),
            options: &SupervisorOptions::default(),
        };
        let extras = |_: Option<u64>, _: Option<i32>| RowExtras {
            started_at: None,
            rss_bytes: None,
            connections: None,
            cpu: None,
        };
        let value = serde_json::to_value(status(&names, parts, &snapshot, Instant::now(), &extras))
            .unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort_unstable();
            k
        };
        assert_eq!(
            keys(&value),
            [
                "counters",
                "cpu",
                "cpuSeconds",
                "generation",
                "groups",
                "lastReload",
                "logs",
                "name",
                "notReadyReason",
                "openFds",
                "options",
                "pid",
                "ready",
                "reapedOrphans",
                "reloading",
                "rssBytes",
                "stopping",
                "workers"
            ]
        );
        assert!(value["lastReload"].is_null() && value["reapedOrphans"].is_null());
        assert_eq!(value["ready"], true);
        let worker = &value["workers"][1];
        assert_eq!(
            keys(worker),
            [
                "connections",
                "cpu",
                "cpuSeconds",
                "generation",
                "group",
                "id",
                "lastExit",
                "lastReplaced",
                "pid",
                "restartInMs",
                "restarts",
                "rssBytes",
                "startedAt",
                "state"
            ]
        );
        assert!(worker["pid"].is_null() && worker["rssBytes"].is_null());
        assert!(worker["lastReplaced"].is_null());
        assert_eq!(worker["state"], "starting");
        assert_eq!(
            keys(&value["logs"]),
            ["droppedBytes", "failedBytes", "file"]
        );
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_316_645_678);
        assert_eq!(iso8601(t), "2026-11-22T03:04:05.678Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
