//! The status JSON (`baton status --json`): the state machine's snapshot, the bound
//! addresses, per-worker extras, and the log relay's counters.

use super::*;
use crate::config::LogTarget;

fn target_json(target: &LogTarget) -> Value {
    match target {
        LogTarget::Inherit => json!("inherit"),
        LogTarget::Ignore => json!("ignore"),
        LogTarget::File(path) => json!(path.display().to_string()),
    }
}

impl LoopState {
    pub(super) fn status_json(&self) -> Value {
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
                let listen: Vec<String> = self.listeners[i]
                    .bound()
                    .into_iter()
                    .map(|(_, local)| local)
                    .collect();
                let dropped = self.relay.dropped(i);
                dropped_total += dropped;
                json!({
                    "name": g.rules.name,
                    "count": g.rules.count,
                    "reloadable": g.rules.reloadable,
                    "order": if g.rules.order == Order::StopFirst { "stop-first" } else { "start-first" },
                    "parallel": g.rules.parallel,
                    "listen": listen,
                    "balance": if g.balance == Balance::ReusePort { "reuseport" } else { "shared" },
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
            rss_bytes: pid.and_then(crate::proc_info::rss_bytes),
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
