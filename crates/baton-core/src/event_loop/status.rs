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
                    self.listeners
                        .get(i)
                        .into_iter()
                        .flat_map(|s| s.drop_in_first())
                        .map(|l| l.local.clone()),
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
        status["reapedOrphans"] = json!(crate::reaper::reaped());
        status["logs"] = json!({
            "droppedBytes": dropped_total,
            "failedBytes": self.relay.failed(),
            "file": self.relay.master_log().map(|p| p.display().to_string()),
        });
        status
    }
}
