//! Counters the master keeps for monitoring (`GET /metrics` on the health endpoint,
//! src/master/health.ts): crash restarts per group, reloads by outcome and a histogram of
//! reload durations. They count from the master's start (a `baton upgrade` starts a new
//! master, so they start again from 0, which Prometheus reads as a counter reset), and
//! are published in the status JSON under `counters` ([`Counters::snapshot`]).
//!
//! Pure: the event loop calls [`Counters::restart`], [`Counters::reload`] and
//! [`Counters::reload_refused`] as the events happen.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_contract::status::{
    Counters as StatusCounters, HistogramBucket, ReloadCounts, ReloadSeconds,
};

/// Upper bounds (seconds) of the reload-duration histogram's buckets. A reload takes about
/// a worker's start time per batch of `parallel` workers: from under a second (one small
/// worker) to minutes (many workers, slow readiness).
pub const RELOAD_BUCKETS: [f64; 11] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How a reload ended, as `baton_reloads_total{outcome}` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every due worker was replaced.
    Done,
    /// A new worker failed (the others keep serving), or the reload was refused before it
    /// started (the config file had an error).
    Failed,
    /// The fleet began stopping during the reload.
    Cancelled,
}

/// The counters (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    restarts: BTreeMap<String, u64>,
    memory: BTreeMap<String, u64>,
    done: u64,
    failed: u64,
    cancelled: u64,
    /// Per bucket of [`RELOAD_BUCKETS`], reloads that took at most that long (not
    /// cumulative here; [`Counters::json`] accumulates).
    buckets: [u64; RELOAD_BUCKETS.len()],
    /// Reloads observed by the histogram (outcome done, failed or cancelled, with a
    /// duration), and the sum of their durations in seconds.
    observed: u64,
    seconds: f64,
}

impl Counters {
    /// Counters for a fleet with these groups (every group shows, with 0).
    pub fn new(groups: &[String]) -> Self {
        Counters {
            restarts: groups.iter().map(|g| (g.clone(), 0)).collect(),
            memory: groups.iter().map(|g| (g.clone(), 0)).collect(),
            ..Counters::default()
        }
    }

    /// A worker of `group` exited without being asked to (a crash, or not ready in time).
    /// Counted in every phase, so it can exceed the sum of the status's per-worker
    /// `restarts` (which a crash during a reload or a stop does not raise).
    pub fn restart(&mut self, group: &str) {
        *self.restarts.entry(group.to_string()).or_default() += 1;
    }

    /// A worker of `group` is being replaced for staying above `maxMemory`.
    pub fn memory_replacement(&mut self, group: &str) {
        *self.memory.entry(group.to_string()).or_default() += 1;
    }

    /// A reload pass ended after `duration`.
    pub fn reload(&mut self, outcome: Outcome, duration: Duration) {
        self.count(outcome);
        let secs = duration.as_secs_f64();
        if let Some(i) = RELOAD_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i] += 1;
        }
        self.observed += 1;
        self.seconds += secs;
    }

    /// A requested reload failed before it started (no duration to observe).
    pub fn reload_refused(&mut self) {
        self.count(Outcome::Failed);
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done => self.done += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
    }

    /// The counters as the status shows them (`counters`): bucket counts are cumulative
    /// (reloads that took at most `le` seconds), as Prometheus histograms are; `count` is
    /// the `+Inf` bucket.
    pub fn snapshot(&self) -> StatusCounters {
        let mut cumulative = 0;
        let buckets = RELOAD_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(&le, n)| {
                cumulative += n;
                HistogramBucket {
                    le,
                    count: count(cumulative),
                }
            })
            .collect();
        StatusCounters {
            restarts: self
                .restarts
                .iter()
                .map(|(g, n)| (g.clone(), count(*n)))
                .collect(),
            memory_replacements: self
                .memory
                .iter()
                .map(|(g, n)| (g.clone(), count(*n)))
                .collect(),
            reloads: ReloadCounts {
                done: count(self.done),
                failed: count(self.failed),
                cancelled: count(self.cancelled),
            },
            reload_seconds: ReloadSeconds {
                buckets,
                count: count(self.observed),
                sum: self.seconds,
            },
        }
    }
}

/// A counter as the contract's integer.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    impl Counters {
        fn json(&self) -> Value {
            serde_json::to_value(self.snapshot()).unwrap_or(Value::Null)
        }
    }

    #[test]
    fn counts_restarts_per_group_and_reloads_per_outcome() {
        let mut c = Counters::new(&["web".to_string(), "jobs".to_string()]);
        c.restart("web");
        c.restart("web");
        c.memory_replacement("jobs");
        c.reload(Outcome::Done, Duration::from_millis(700));
        c.reload(Outcome::Failed, Duration::from_secs(20));
        c.reload(Outcome::Cancelled, Duration::from_secs(1000));
        c.reload_refused();
        let j = c.json();
        assert_eq!(j["restarts"], json!({ "web": 2, "jobs": 0 }));
        assert_eq!(j["memoryReplacements"], json!({ "web": 0, "jobs": 1 }));
        assert_eq!(
            j["reloads"],
            json!({ "done": 1, "failed": 2, "cancelled": 1 })
        );
        let h = &j["reloadSeconds"];
        assert_eq!(h["count"], 3);
        assert_eq!(h["sum"], 1020.7);
        let count_at = |le: f64| {
            h["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["le"] == le)
                .unwrap()["count"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(count_at(0.5), 0);
        assert_eq!(count_at(1.0), 1); // 0.7 s
        assert_eq!(count_at(10.0), 1);
        assert_eq!(count_at(30.0), 2); // 20 s
        assert_eq!(count_at(600.0), 2); // 1000 s is only in +Inf (count)
    }

    #[test]
    fn a_bucket_bound_is_inclusive() {
        let mut c = Counters::new(&[]);
        c.reload(Outcome::Done, Duration::from_secs(1));
        assert_eq!(
            c.json()["reloadSeconds"]["buckets"][2],
            json!({ "le": 1.0, "count": 1 })
        );
    }
}
