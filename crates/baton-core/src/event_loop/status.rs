//! The status JSON (`baton status --json`): the state machine's snapshot, the bound
//! addresses, per-worker extras, and the log relay's counters.

use super::*;
use crate::config::LogTarget;
use crate::listen::Origin;

fn target_json(target: &LogTarget) -> Value {
    match target {
        LogTarget::Inherit => json!("inherit"),
        LogTarget::Ignore => json!("ignore"),
        LogTarget::File(path) => json!(path.display().to_string()),
    }
}

/// The master's own resident memory (`rssBytes`) and open file descriptors (`openFds`),
/// top-level additive fields of the status, read fresh (like the workers' `rssBytes`).
pub(super) fn add_master_resources(status: &mut Value) {
    let master = status["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
    status["rssBytes"] = json!(master.and_then(crate::proc_info::rss_bytes));
    status["openFds"] = json!(master.and_then(crate::proc_info::open_fds));
}

impl LoopState {
    /// Publish the status for [`Handle::status`] (without `rssBytes`, read by the reader).
    pub(super) fn publish_status(&self) {
        let status = self.status_json_with(false);
        if let Ok(mut cache) = self.status_cache.lock() {
            *cache = Some(status);
        }
        self.status_published.set(Instant::now());
        self.status_dirty.set(false);
    }

    /// Record that the loop is turning (read by [`Handle::status_age`]).
    pub(super) fn beat(&self) {
        if let Ok(mut at) = self.alive.lock() {
            *at = Instant::now();
        }
    }

    pub(super) fn status_json(&self) -> Value {
        self.status_json_with(true)
    }

    /// The status JSON; `rss`: read each worker's memory use (a /proc read per worker).
    fn status_json_with(&self, rss: bool) -> Value {
        let names = Names {
            groups: &self.group_names,
        };
        let snap = self.fleet.snapshot();
        let mut dropped_total = 0;
        let groups: Vec<Value> = self
            .config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                // No sockets once `shutdown` released them.
                let sockets_of = self.listeners.get(i);
                let mut listen: Vec<String> = sockets_of
                    .map(|l| l.bound().into_iter().map(|(_, local)| local).collect())
                    .unwrap_or_default();
                listen.extend(
                    self.drop_in
                        .iter()
                        .filter(|s| s.group == i)
                        .map(|s| s.listener.local.clone()),
                );
                let mut sockets: Vec<Value> = sockets_of
                    .into_iter()
                    .flat_map(|l| l.first_listeners())
                    .map(|l| match l.origin() {
                        Origin::Bound => json!({
                            "address": l.local, "configured": l.addr.to_string(),
                            "from": "bound", "fd": null, "fdName": null,
                        }),
                        Origin::Inherited { fd, name } => json!({
                            "address": l.local, "configured": l.addr.to_string(),
                            "from": "inherited", "fd": fd, "fdName": name,
                        }),
                    })
                    .collect();
                sockets.extend(self.drop_in_status(i));
                let dropped = self.relay.dropped(i);
                dropped_total += dropped;
                json!({
                    "name": g.rules.name,
                    "count": g.rules.count,
                    "reloadable": g.rules.reloadable,
                    "order": if g.rules.order == Order::StopFirst { "stop-first" } else { "start-first" },
                    "parallel": g.rules.parallel,
                    "listen": listen,
                    "sockets": sockets,
                    "balance": g.balance.name(),
                    "stopTimeoutMs": g.rules.stop_timeout.as_millis() as u64,
                    "readyTimeoutMs": g.rules.ready_timeout.as_millis() as u64,
                    "readiness": g.rules.readiness.as_str(),
                    "minUptimeMs": g.rules.readiness.min_uptime().map(|d| d.as_millis() as u64),
                    "instanceVar": g.instance_var,
                    "options": options_json(&g.options, g.rules.count),
                    "logs": {
                        "stdout": target_json(&g.stdout),
                        "stderr": target_json(&g.stderr),
                        "prefix": g.log_prefix,
                        "droppedBytes": dropped,
                    },
                })
            })
            .collect();
        let extras = |key: Option<WorkerKey>, pid: Option<i32>| RowExtras {
            started_at: key
                .and_then(|k| self.workers.get(&k))
                .map(|io| io.started_at),
            rss_bytes: if rss {
                pid.and_then(crate::proc_info::rss_bytes)
            } else {
                None
            },
            connections: key
                .and_then(|k| self.workers.get(&k))
                .and_then(|io| io.connections),
        };
        let mut status = public_json::status(
            &names,
            &self.config.name,
            self.master_pid,
            Value::Array(groups),
            &snap,
            Instant::now(),
            &extras,
        );
        let last = &mut status["lastReload"];
        if last.is_object() {
            let (generation, found) = &self.last_changes;
            let same = last["generation"].as_u64() == Some(u64::from(*generation));
            public_json::add_changes(last, if same { found } else { &[] });
        }
        self.add_cpu_and_counters(&mut status);
        if rss {
            add_master_resources(&mut status);
        }
        status["reapedOrphans"] = json!(crate::reaper::reaped());
        status["logs"] = json!({
            "droppedBytes": dropped_total,
            "failedBytes": self.relay.failed(),
            "file": self.relay.master_log().map(|p| p.display().to_string()),
        });
        status
    }

    /// Sample the CPU time of every worker and of the master, when a sample is due (about
    /// once a second, on the loop's timer: `run` wakes for `cpu.next_at()`).
    pub(super) fn sample_cpu(&mut self, now: Instant) {
        if now < self.cpu.next_at() {
            return;
        }
        let mut pids: Vec<i32> = self
            .fleet
            .snapshot()
            .workers
            .iter()
            .filter_map(|w| w.pid)
            .collect();
        pids.extend(i32::try_from(self.master_pid).ok());
        if self
            .cpu
            .sample_if_due(now, pids, crate::proc_info::cpu_time)
        {
            self.status_dirty.set(true);
        }
    }

    /// Count what `event` says for the monitoring counters (`counters` in the status).
    pub(super) fn count(&mut self, event: &Event) {
        use crate::metrics::Outcome;
        match event {
            Event::WorkerExit {
                group,
                cause: crate::fleet::ExitCause::Crashed,
                ..
            } => {
                if let Some(name) = self.group_names.get(*group) {
                    self.counters.restart(name);
                }
            }
            Event::ReloadDone(r) | Event::ReloadFailed(r) => {
                let outcome = match r.outcome {
                    ReloadOutcome::Done => Outcome::Done,
                    ReloadOutcome::Failed => Outcome::Failed,
                    ReloadOutcome::Cancelled => Outcome::Cancelled,
                };
                self.counters.reload(outcome, r.duration);
            }
            _ => {}
        }
    }

    /// The CPU figures and the counters of the status JSON (additive fields):
    /// per worker `cpu` (percent of one core over the last sample interval, null until a
    /// worker was sampled twice) and `cpuSeconds` (CPU time since it started); top level
    /// `cpu` (the master's), `cpuSeconds` (the master's) and `counters`
    /// ([`crate::metrics::Counters::json`]). The master's `rssBytes` is read fresh by
    /// [`Handle::status`].
    fn add_cpu_and_counters(&self, status: &mut Value) {
        let round = |p: f64| (p * 10.0).round() / 10.0;
        let cpu = |pid: Option<i64>| {
            pid.and_then(|p| i32::try_from(p).ok())
                .and_then(|p| self.cpu.get(p))
        };
        if let Some(rows) = status["workers"].as_array_mut() {
            for row in rows {
                let c = cpu(row["pid"].as_i64());
                row["cpu"] = json!(c.and_then(|c| c.percent).map(round));
                row["cpuSeconds"] = json!(c.map(|c| c.seconds));
            }
        }
        let master = cpu(Some(i64::from(self.master_pid)));
        status["cpu"] = json!(master.and_then(|c| c.percent).map(round));
        status["cpuSeconds"] = json!(master.map(|c| c.seconds));
        status["counters"] = self.counters.json();
    }
}

/// A group's `options` in its status: as validated (every default filled in), with the
/// live `count` (`baton scale` changes it) and the `env` values hidden (`<hidden>`: the
/// status reaches more readers than the config does).
fn options_json(options: &crate::config::GroupOptions, count: u32) -> Value {
    let mut shown = options.clone();
    shown.count = Some(count);
    if let Some(env) = shown.env.as_mut() {
        env.values_mut().for_each(|v| *v = "<hidden>".to_string());
    }
    serde_json::to_value(shown).unwrap_or(Value::Null)
}
