//! The memory rules of `fleet.rs` (`Input::MemorySample`, `maxMemory`): unit tests of each
//! rule (the 3 s window, one replacement per group at a time, reload precedence, the order,
//! non-reloadable groups), and properties over random interleavings of samples, time,
//! readiness, exits, crashes and reloads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::config::{Backoff, GroupRules, Order};
use baton_core::exit_status::ExitStatus;
use baton_core::fleet::{Action, Event, Input, WorkerKey, WorkerState, MEMORY_WINDOW};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 80 * MIB;
const SECOND: Duration = Duration::from_secs(1);

fn rules(name: &str, count: u32, reloadable: bool, order: Order) -> GroupRules {
    GroupRules {
        name: name.to_string(),
        count,
        reloadable,
        order,
        parallel: 1,
        ready_timeout: Duration::from_millis(5000),
        stop_timeout: Duration::from_millis(2000),
        readiness: Default::default(),
    }
}

mod support;

use support::Sim as H;

impl H {
    /// The key of the worker serving `slot` of `group` (ready, not stopping).
    fn serving(&self, group: usize, slot: u32) -> Option<WorkerKey> {
        self.procs
            .iter()
            .find(|(_, p)| p.group == group && p.slot == slot && p.ready && !p.stopping)
            .map(|(k, _)| *k)
    }

    /// One sample of `key` at `rss` bytes.
    fn sample(&mut self, key: WorkerKey, rss: u64) {
        self.input(Input::MemorySample {
            key,
            rss,
            limit: LIMIT,
        });
    }

    /// One second passes (deadlines included), then every live worker is sampled: those
    /// of `over` above the limit, the others below.
    fn second(&mut self, over: &[WorkerKey]) {
        self.now += SECOND;
        self.fleet.handle_timeout(self.now);
        self.drain();
        let keys: Vec<WorkerKey> = self.procs.keys().copied().collect();
        for key in keys {
            let rss = if over.contains(&key) {
                LIMIT + 10 * MIB
            } else {
                LIMIT / 2
            };
            self.sample(key, rss);
        }
    }

    fn replacing(&self) -> Vec<(usize, u32, i32)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::MemoryOverLimit {
                    group,
                    slot,
                    pid,
                    replacing: true,
                    ..
                } => Some((*group, *slot, *pid)),
                _ => None,
            })
            .collect()
    }

    fn logged_only(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::MemoryOverLimit {
                        replacing: false,
                        ..
                    }
                )
            })
            .count()
    }

    fn spawns_since(&self, mark: usize) -> Vec<(usize, u32)> {
        self.actions[mark..]
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { group, slot, .. } => Some((*group, *slot)),
                _ => None,
            })
            .collect()
    }

    fn stops_since(&self, mark: usize) -> Vec<WorkerKey> {
        self.actions[mark..]
            .iter()
            .filter_map(|a| match a {
                Action::Stop { key, .. } | Action::Kill { key, .. } => Some(*key),
                _ => None,
            })
            .collect()
    }

    fn pid(&self, key: WorkerKey) -> i32 {
        self.procs[&key].pid
    }
}

fn web(count: u32, order: Order) -> H {
    H::started_with(vec![rules("web", count, true, order)])
}

#[test]
fn a_worker_above_the_limit_for_3_s_is_replaced_start_first() {
    let mut h = web(2, Order::StartFirst);
    let old = h.serving(0, 1).unwrap();
    let mark = h.actions.len();
    // Above at 1, 2, 3 s: 2 s above, not yet.
    for _ in 0..3 {
        h.second(&[old]);
    }
    assert!(h.replacing().is_empty());
    assert!(h.spawns_since(mark).is_empty());
    // At 4 s it has been above for 3 s: its successor starts in the same slot.
    h.second(&[old]);
    assert_eq!(h.replacing(), vec![(0, 1, h.pid(old))]);
    assert_eq!(h.spawns_since(mark), vec![(0, 1)]);
    // The old worker serves until the successor is ready.
    assert!(h.stops_since(mark).is_empty());
    let new = *h.procs.keys().max().unwrap();
    let mark = h.actions.len();
    h.ready(new);
    assert_eq!(h.stops_since(mark), vec![old]);
    h.exit_stopping();
    let snap = h.fleet.snapshot();
    let row = snap.workers.iter().find(|r| r.slot == 1).unwrap();
    assert_eq!(row.key, Some(new));
    assert_eq!(row.state, WorkerState::Ready);
    assert_eq!(
        row.last_replaced.as_deref(),
        Some("RSS 90 MiB above maxMemory 80 MiB for 3 s (pid 101)")
    );
    // A memory replacement is not a crash: the slot's restarts stay 0.
    assert_eq!(row.restarts, 0);
    assert!(!snap.reloading);
}

#[test]
fn a_sample_below_the_limit_starts_the_window_again() {
    let mut h = web(1, Order::StartFirst);
    let old = h.serving(0, 0).unwrap();
    for _ in 0..3 {
        h.second(&[old]);
    }
    h.second(&[]);
    for _ in 0..3 {
        h.second(&[old]);
    }
    assert!(h.replacing().is_empty());
    h.second(&[old]);
    assert_eq!(h.replacing().len(), 1);
}

#[test]
fn one_replacement_per_group_at_a_time() {
    let mut h = H::started_with(vec![
        rules("web", 3, true, Order::StartFirst),
        rules("api", 1, true, Order::StartFirst),
    ]);
    let (a, b) = (h.serving(0, 0).unwrap(), h.serving(0, 2).unwrap());
    let c = h.serving(1, 0).unwrap();
    for _ in 0..4 {
        h.second(&[a, b, c]);
    }
    // One of web's, and api's at the same time (another group).
    assert_eq!(h.replacing(), vec![(0, 0, h.pid(a)), (1, 0, h.pid(c))]);
    // web#2 waits while web#0's successor boots ...
    for _ in 0..3 {
        h.second(&[a, b]);
    }
    assert_eq!(h.replacing().len(), 2);
    // ... and while web#0 drains.
    let new = h
        .procs
        .iter()
        .find(|(_, p)| p.group == 0 && p.slot == 0 && !p.ready)
        .map(|(k, _)| *k)
        .unwrap();
    h.ready(new);
    h.second(&[b]);
    assert_eq!(h.replacing().len(), 2);
    // Once web#0 has exited, web#2 is replaced at its next sample.
    h.exit_stopping();
    h.second(&[b]);
    let replaced = h.replacing();
    assert_eq!(replaced.len(), 3);
    assert_eq!(replaced[2].1, 2);
}

#[test]
fn a_reload_takes_precedence() {
    let mut h = web(2, Order::StartFirst);
    let old = h.serving(0, 0).unwrap();
    h.second(&[old]);
    h.second(&[old]);
    let ticket = h.reload();
    assert!(h.fleet.snapshot().reloading);
    // Samples during the pass do not count and start nothing.
    for _ in 0..4 {
        h.second(&[old]);
    }
    assert!(h.replacing().is_empty());
    // The reload replaces the worker anyway; once done, the new one is measured afresh.
    for _ in 0..10 {
        h.ready_all();
        h.exit_stopping();
    }
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::ReloadDone(r) if r.tickets.contains(&ticket))));
    assert!(h.replacing().is_empty());
}

#[test]
fn a_sample_above_the_limit_during_a_reload_is_re_evaluated_after() {
    let mut h = web(1, Order::StartFirst);
    let old = h.serving(0, 0).unwrap();
    h.reload();
    // The successor of the reload is over the limit while the pass still runs.
    h.ready_all();
    let new = h.serving(0, 0).unwrap();
    assert_ne!(new, old);
    assert!(h.fleet.snapshot().reloading); // the old worker still drains
    for _ in 0..4 {
        h.second(&[new]);
    }
    assert!(h.replacing().is_empty());
    h.exit_stopping();
    assert!(!h.fleet.snapshot().reloading);
    // Counted from the first sample after the pass.
    for _ in 0..3 {
        h.second(&[new]);
    }
    assert!(h.replacing().is_empty());
    h.second(&[new]);
    assert_eq!(h.replacing(), vec![(0, 0, h.pid(new))]);
}

#[test]
fn a_reload_requested_during_a_memory_replacement_waits_for_it() {
    let mut h = web(2, Order::StartFirst);
    let old = h.serving(0, 0).unwrap();
    for _ in 0..4 {
        h.second(&[old]);
    }
    assert_eq!(h.replacing().len(), 1);
    let ticket = h.reload();
    assert!(!h.fleet.snapshot().reloading);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::ReloadStart { .. })));
    h.ready_all();
    assert!(!h.fleet.snapshot().reloading);
    h.exit_stopping();
    // Memory replacement over: the reload runs, and replaces every worker.
    assert!(h.fleet.snapshot().reloading);
    for _ in 0..10 {
        h.ready_all();
        h.exit_stopping();
    }
    let done = h.events.iter().find_map(|e| match e {
        Event::ReloadDone(r) if r.tickets.contains(&ticket) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(done.map(|r| r.replaced.len()), Some(2));
}

#[test]
fn stop_first_stops_the_worker_then_starts_its_successor() {
    let mut h = web(2, Order::StopFirst);
    let old = h.serving(0, 1).unwrap();
    let mark = h.actions.len();
    for _ in 0..4 {
        h.second(&[old]);
    }
    assert_eq!(h.stops_since(mark), vec![old]);
    assert!(h.spawns_since(mark).is_empty());
    h.exit_stopping();
    assert_eq!(h.spawns_since(mark), vec![(0, 1)]);
    h.ready_all();
    assert!(h.serving(0, 1).is_some_and(|k| k != old));
}

#[test]
fn a_successor_that_fails_leaves_the_old_worker_serving() {
    let mut h = web(1, Order::StartFirst);
    let old = h.serving(0, 0).unwrap();
    for _ in 0..4 {
        h.second(&[old]);
    }
    let new = *h.procs.keys().max().unwrap();
    assert_ne!(new, old);
    h.exit(new, ExitStatus::Code(1));
    assert_eq!(h.serving(0, 0), Some(old));
    assert!(!h.procs[&old].stopping);
    // Its window starts again: 3 s more above the limit before the next try.
    for _ in 0..3 {
        h.second(&[old]);
    }
    assert_eq!(h.replacing().len(), 1);
    h.second(&[old]);
    assert_eq!(h.replacing().len(), 2);
}

/// Runs `h` one second at a time, the worker of slot 0 above the limit, for `seconds`;
/// each memory successor that starts fails at once unless `ready` says it gets ready. The
/// seconds at which a replacement began.
fn attempts(h: &mut H, seconds: u32, ready: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut at = Vec::new();
    for t in 1..=seconds {
        let old = h.serving(0, 0).unwrap();
        let before = h.replacing().len();
        h.second(&[old]);
        if h.replacing().len() > before {
            at.push(t);
            let new = *h.procs.keys().max().unwrap();
            if ready(at.len()) {
                h.ready(new);
                h.exit_stopping();
            } else {
                h.exit(new, ExitStatus::Code(1));
            }
        }
    }
    at
}

#[test]
fn successors_that_keep_failing_back_off_and_a_ready_one_ends_the_count() {
    let mut h = web(1, Order::StartFirst);
    h.fleet.set_backoff(Backoff {
        initial: 4 * SECOND,
        max: 16 * SECOND,
        reset_after: 10 * SECOND,
    });
    // Every successor fails: without a backoff a try would come every 4 s (the 3 s window
    // plus the sample that fails); here the gaps grow with the backoff, 4, 8, 16, 16 s.
    let tries = attempts(&mut h, 60, |_| false);
    let gaps: Vec<u32> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(tries[0], 4);
    assert!(
        gaps.len() >= 3 && gaps[0] >= 4 && gaps[1] >= 8 && gaps[2] >= 16,
        "tries at {tries:?}"
    );
    assert!(gaps.iter().all(|&g| g <= 17), "tries at {tries:?}");
    // The old worker served throughout.
    assert!(!h.procs[&h.serving(0, 0).unwrap()].stopping);

    // A successor that gets ready ends the count: the next replacement needs only the
    // window again.
    let mut h = web(1, Order::StartFirst);
    h.fleet.set_backoff(Backoff {
        initial: 4 * SECOND,
        max: 16 * SECOND,
        reset_after: 10 * SECOND,
    });
    let tries = attempts(&mut h, 40, |n| n == 3);
    let gaps: Vec<u32> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    // Two failures (gaps of at least 4 and 8 s), a ready successor, then every 4 s again.
    assert!(gaps.len() >= 4, "tries at {tries:?}");
    assert!(gaps[0] >= 4 && gaps[1] >= 8, "tries at {tries:?}");
    assert_eq!(gaps[2], 4, "tries at {tries:?}");
}

#[test]
fn a_non_reloadable_group_is_logged_once_per_crossing_never_replaced() {
    let mut h = H::started_with(vec![rules("gw", 1, false, Order::StartFirst)]);
    let w = h.serving(0, 0).unwrap();
    let mark = h.actions.len();
    for _ in 0..10 {
        h.second(&[w]);
    }
    assert_eq!(h.logged_only(), 1);
    assert!(h.replacing().is_empty());
    assert!(h.spawns_since(mark).is_empty());
    assert!(h.stops_since(mark).is_empty());
    // Below, then above again for 3 s: logged again.
    h.second(&[]);
    for _ in 0..4 {
        h.second(&[w]);
    }
    assert_eq!(h.logged_only(), 2);
    assert!(h.spawns_since(mark).is_empty());
    // A reload does not hold its logging back (a reload never replaces it).
    h.reload();
    h.second(&[]);
    for _ in 0..4 {
        h.second(&[w]);
    }
    assert_eq!(h.logged_only(), 3);
    assert!(h.stops_since(mark).is_empty());
}

#[test]
fn the_window_is_the_fleets_constant() {
    assert_eq!(MEMORY_WINDOW, Duration::from_secs(3));
}

#[derive(Debug, Clone)]
enum Op {
    /// One second passes; workers whose bit is set in the mask are above the limit.
    Second(u8),
    /// Every starting worker becomes ready.
    ReadyAll,
    /// Every stopping worker exits.
    ExitStopping,
    /// The n-th live worker crashes.
    Crash(u8),
    /// `baton reload`.
    Reload,
}

fn op(reloads: bool) -> impl Strategy<Value = Op> {
    let reload_weight = if reloads { 1 } else { 0 };
    prop_oneof![
        8 => prop_oneof![3 => Just(0xffu8), 1 => Just(0u8), 1 => any::<u8>()].prop_map(Op::Second),
        3 => Just(Op::ReadyAll),
        3 => Just(Op::ExitStopping),
        1 => any::<u8>().prop_map(Op::Crash),
        reload_weight => Just(Op::Reload),
    ]
}

/// Plays `ops`; checks after each one that a memory replacement started only after 3 s of
/// samples above the limit and never during a reload, and returns the harness.
fn play(h: &mut H, ops: &[Op], check: &mut dyn FnMut(&H)) {
    // Per worker: since when the driver has sampled it above the limit.
    let mut above: BTreeMap<WorkerKey, Instant> = BTreeMap::new();
    for o in ops {
        let reloading_before = h.fleet.snapshot().reloading;
        let before = h.replacing().len();
        match o {
            Op::Second(mask) => {
                h.now += SECOND;
                h.fleet.handle_timeout(h.now);
                h.drain();
                let keys: Vec<WorkerKey> = h.procs.keys().copied().collect();
                for (i, key) in keys.into_iter().enumerate() {
                    let over = mask & (1 << (i % 8)) != 0;
                    if over {
                        above.entry(key).or_insert(h.now);
                    } else {
                        above.remove(&key);
                    }
                    let n = h.replacing().len();
                    h.sample(key, if over { LIMIT + 1 } else { LIMIT });
                    if h.replacing().len() > n {
                        let since = above[&key];
                        assert!(h.now - since >= MEMORY_WINDOW, "replaced too early");
                        // Its next stay above starts from scratch.
                        above.remove(&key);
                    }
                }
            }
            Op::ReadyAll => h.ready_all(),
            Op::ExitStopping => h.exit_stopping(),
            Op::Crash(n) => {
                let keys: Vec<WorkerKey> = h.procs.keys().copied().collect();
                if !keys.is_empty() {
                    let key = keys[*n as usize % keys.len()];
                    h.exit(key, ExitStatus::Code(1));
                }
            }
            Op::Reload => {
                h.reload();
            }
        }
        if reloading_before && h.fleet.snapshot().reloading {
            assert_eq!(
                h.replacing().len(),
                before,
                "a memory replacement during a reload"
            );
        }
        check(h);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Without reloads or crashes a start-first group never has fewer than `count` serving
    /// workers once started (the successor is ready before the old worker is stopped), and
    /// never more than `count + 1` processes (one replacement at a time).
    #[test]
    fn start_first_keeps_capacity_and_replaces_one_at_a_time(
        count in 1u32..4,
        ops in prop::collection::vec(op(false), 1..120),
    ) {
        let mut h = web(count, Order::StartFirst);
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Crash(_))).collect();
        play(&mut h, &ops, &mut |h: &H| {
            let serving = (0..count).filter(|&s| h.serving(0, s).is_some()).count() as u32;
            assert_eq!(serving, count, "a slot stopped serving");
            assert!(h.procs.len() as u32 <= count + 1, "{} processes", h.procs.len());
        });
    }

    /// With crashes and reloads mixed in: never a replacement during a reload or before
    /// 3 s above the limit (checked in `play`), never more processes than a reload alone
    /// needs, and the fleet settles with every slot served and no reload left running.
    #[test]
    fn memory_replacements_interleave_with_reloads_and_crashes(
        order in prop_oneof![Just(Order::StartFirst), Just(Order::StopFirst)],
        ops in prop::collection::vec(op(true), 1..120),
    ) {
        let mut h = web(3, order);
        play(&mut h, &ops, &mut |h: &H| {
            // `count + 2` at most (a reload's replacement booting and an old worker
            // draining): a memory replacement and a reload pass never overlap.
            assert!(h.procs.len() <= 3 + 2, "{} processes", h.procs.len());
        });
        // Cooperative from now on: everything settles, every slot serves.
        for _ in 0..50 {
            h.ready_all();
            h.exit_stopping();
            h.now += Duration::from_secs(2);
            h.fleet.handle_timeout(h.now);
            h.drain();
        }
        h.ready_all();
        let snap = h.fleet.snapshot();
        prop_assert!(!snap.reloading);
        for s in 0..3 {
            prop_assert!(h.serving(0, s).is_some(), "slot {} not served: {:?}", s, snap);
        }
    }
}
