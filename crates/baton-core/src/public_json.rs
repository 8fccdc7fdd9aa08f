//! The JSON shapes users see: events, reload reports and status (the contract in
//! `docs/design.md#contracts`).
//!
//! One place turns the state machine's index-based values into named, documented JSON, so
//! the JavaScript API, the control socket and the CLI all show the same thing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// JSON values, re-exported so hosts need no serde_json dependency of their own.
pub use serde_json::Value;

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
    fn group(&self, index: usize) -> &str {
        self.groups.get(index).map(String::as_str).unwrap_or("?")
    }
}

fn exit_fields(status: Option<ExitStatus>) -> (Value, Value) {
    match status {
        Some(ExitStatus::Code(c)) => (json!(c), Value::Null),
        Some(ExitStatus::Signal(s)) => (Value::Null, json!(crate::exit_status::signal_name(s))),
        None => (Value::Null, Value::Null),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A reload report as JSON, with a one-line human summary in `message`.
pub fn report(names: &Names, r: &ReloadReport) -> Value {
    let replaced: Vec<Value> = r
        .replaced
        .iter()
        .map(|x| json!({ "group": names.group(x.group), "id": x.slot, "oldPid": x.old_pid, "newPid": x.new_pid }))
        .collect();
    let failure = r.failure.as_ref().map(|f| {
        let (code, signal) = exit_fields(f.status);
        json!({
            "group": names.group(f.group),
            "id": f.slot,
            "pid": f.pid,
            "reason": f.reason,
            "exitCode": code,
            "signal": signal,
            "stderrTail": f.stderr_tail,
        })
    });
    let outcome = match r.outcome {
        ReloadOutcome::Done => "done",
        ReloadOutcome::Failed => "failed",
        ReloadOutcome::Cancelled => "cancelled",
    };
    let message = match (&r.outcome, &r.failure) {
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
    };
    json!({
        "tickets": r.tickets,
        "generation": r.generation,
        "outcome": outcome,
        "replaced": replaced,
        "due": r.due,
        "notified": r.notified,
        "durationMs": ms(r.duration),
        "failure": failure,
        "message": message,
    })
}

/// Config changes picked up by a reload:
/// `[{ "group", "setting", "applied": "new-workers" | "needs-restart", "from"?, "to"?, "keys"? }]`
/// (`group` is null for fleet-level settings; `keys` names changed environment variables).
pub fn changes(changes: &[Change]) -> Value {
    let rows: Vec<Value> = changes
        .iter()
        .map(|c| {
            let mut row = json!({
                "group": c.group,
                "setting": c.setting.key(),
                "applied": match c.effect {
                    Effect::NewWorkers => "new-workers",
                    Effect::NeedsRestart => "needs-restart",
                },
            });
            match &c.detail {
                Detail::Values { from, to } => {
                    row["from"] = json!(from);
                    row["to"] = json!(to);
                }
                Detail::EnvKeys(keys) => row["keys"] = json!(keys),
                Detail::Added => row["added"] = json!(true),
                Detail::Removed => row["removed"] = json!(true),
            }
            row
        })
        .collect();
    Value::Array(rows)
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

/// Add a reload's config changes to its report (or `reload:*` event) JSON: the `changes`
/// array, and the summary appended to `message`.
pub fn add_changes(report: &mut Value, found: &[Change]) {
    report["changes"] = changes(found);
    if let Some(summary) = changes_summary(found) {
        let message = report["message"].as_str().unwrap_or_default().to_string();
        report["message"] = json!(format!("{message}; {summary}"));
    }
}

/// An event as JSON: `type` plus its fields, and a human `message`.
pub fn event(names: &Names, e: &Event) -> Value {
    match e {
        Event::WorkerSpawned {
            group,
            slot,
            pid,
            generation,
        } => json!({
            "type": "worker:spawn", "group": names.group(*group), "id": slot, "pid": pid,
            "generation": generation,
            "message": format!("{}#{} started (pid {pid}, generation {generation})", names.group(*group), slot),
        }),
        Event::WorkerReady {
            group,
            slot,
            pid,
            generation,
        } => json!({
            "type": "worker:ready", "group": names.group(*group), "id": slot, "pid": pid,
            "generation": generation,
            "message": format!("{}#{} ready (pid {pid}, generation {generation})", names.group(*group), slot),
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
            let (code, signal) = exit_fields(*status);
            let who = match pid {
                Some(p) => format!("{}#{} (pid {p})", names.group(*group), slot),
                None => format!("{}#{}", names.group(*group), slot),
            };
            let mut message = format!("{who} {detail}");
            if let Some(d) = restart_in {
                message.push_str(&format!("; restarting in {} ms", ms(*d)));
            }
            json!({
                "type": "worker:exit", "group": names.group(*group), "id": slot, "pid": pid,
                "generation": generation, "exitCode": code, "signal": signal,
                "expected": *cause == ExitCause::Requested, "reason": detail,
                "restartInMs": restart_in.map(ms), "message": message,
            })
        }
        Event::WorkerReadyTimeout {
            group,
            slot,
            pid,
            timeout,
        } => json!({
            "type": "worker:ready-timeout", "group": names.group(*group), "id": slot, "pid": pid,
            "timeoutMs": ms(*timeout),
            "message": format!("{}#{} (pid {pid}) not ready within {} ms: killing it", names.group(*group), slot, ms(*timeout)),
        }),
        Event::WorkerStopTimeout {
            group,
            slot,
            pid,
            timeout,
        } => json!({
            "type": "worker:stop-timeout", "group": names.group(*group), "id": slot, "pid": pid,
            "timeoutMs": ms(*timeout),
            "message": format!("{}#{} (pid {pid}) still running {} ms after stop: sending SIGKILL", names.group(*group), slot, ms(*timeout)),
        }),
        Event::FleetReady => json!({ "type": "fleet:ready", "message": "all workers ready" }),
        Event::StartFailed { reason } => json!({
            "type": "fleet:start-failed", "reason": reason, "message": format!("start failed: {reason}"),
        }),
        Event::ReloadStart {
            generation,
            tickets,
            due,
        } => json!({
            "type": "reload:start", "generation": generation, "tickets": tickets, "due": due,
            "message": format!("reload {generation} started: {due} workers to replace"),
        }),
        Event::ReloadProgress {
            group,
            slot,
            replaced,
            due,
            generation,
        } => json!({
            "type": "reload:progress", "group": names.group(*group), "id": slot, "replaced": replaced,
            "due": due, "generation": generation,
            "message": format!("{} {replaced}/{due} replaced", names.group(*group)),
        }),
        Event::ReloadDone(r) => {
            let mut v = report(names, r);
            v["type"] = json!("reload:done");
            v
        }
        Event::ReloadFailed(r) => {
            let mut v = report(names, r);
            v["type"] = json!("reload:failed");
            v
        }
        Event::Stopped => json!({ "type": "fleet:stopped", "message": "all workers stopped" }),
        Event::ScaleStart {
            group,
            from,
            to,
            ticket,
        } => json!({
            "type": "scale:start", "group": names.group(*group), "from": from, "count": to,
            "ticket": ticket,
            "message": format!("scaling {} from {from} to {to} workers", names.group(*group)),
        }),
        Event::ScaleDone {
            group,
            count,
            ticket,
        } => json!({
            "type": "scale:done", "group": names.group(*group), "count": count, "ticket": ticket,
            "message": format!("{} scaled to {count} workers, all ready", names.group(*group)),
        }),
        Event::ScaleFailed {
            group,
            count,
            ticket,
            error,
        } => {
            let message = scale_error_message(names, *group, *count, error);
            json!({
                "type": "scale:failed", "group": names.group(*group), "count": count,
                "ticket": ticket, "message": message,
            })
        }
    }
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

/// The status JSON (`docs/design.md#contracts`): `{ name, pid, generation, reloading,
/// workers: [...] }` plus additive fields (`stopping`, `ready` and `notReadyReason` (see
/// [`readiness`]), `groups`, `lastReload`, per-worker `lastExit`, `restartInMs`,
/// `connections`).
pub fn status(
    names: &Names,
    fleet_name: &str,
    master_pid: u32,
    groups: Value,
    snap: &FleetSnapshot,
    now: Instant,
    extras: &dyn Fn(Option<u64>, Option<i32>) -> RowExtras,
) -> Value {
    let workers: Vec<Value> = snap
        .workers
        .iter()
        .map(|w| {
            let x = extras(w.key, w.pid);
            let state = match w.state {
                WorkerState::Starting => "starting",
                WorkerState::Ready => "ready",
                WorkerState::Stopping => "stopping",
            };
            json!({
                "group": names.group(w.group),
                "id": w.slot,
                "pid": w.pid,
                "generation": w.generation,
                "state": state,
                "restarts": w.restarts,
                "rssBytes": x.rss_bytes,
                "connections": x.connections,
                "startedAt": x.started_at.map(iso8601),
                "lastExit": w.last_exit,
                "restartInMs": w.restart_at.map(|at| ms(at.saturating_duration_since(now))),
            })
        })
        .collect();
    let readiness = readiness(names, snap);
    json!({
        "name": fleet_name,
        "pid": master_pid,
        "generation": snap.generation,
        "reloading": snap.reloading,
        "stopping": snap.stopping,
        "ready": readiness.is_ok(),
        "notReadyReason": readiness.err(),
        "groups": groups,
        "workers": workers,
        "lastReload": snap.last_reload.as_ref().map(|r| report(names, r)),
    })
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
        let mut report = json!({ "message": "reload 2 done" });
        add_changes(&mut report, &found);
        assert_eq!(
            report["message"],
            "reload 2 done; config changes for the new workers: web.env (GREETING); \
             not applied, these need a new master (baton upgrade, with 0 failed requests; or baton restart): web.count (2 -> 4); \
             a running group's count changes without a restart: baton scale [NAME] [GROUP] N"
        );
        assert_eq!(report["changes"][0]["keys"], json!(["GREETING"]));
        assert_eq!(report["changes"][1]["applied"], "needs-restart");
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
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_316_645_678);
        assert_eq!(iso8601(t), "2026-11-22T03:04:05.678Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
