//! The scale rules of `fleet.rs` (`Input::Scale`): unit tests of each rule, and properties
//! over random interleavings of scales, readiness, crashes, exits, reloads and time.
//! Kept apart from `fleet.rs`'s reload simulator, whose model covers fixed counts.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_core::config::{GroupRules, Order};
use baton_core::exit_status::ExitStatus;
use baton_core::fleet::{
    Action, Event, Input, ReloadOutcome, ReloadReport, ScaleError, Ticket, WorkerKey, WorkerState,
};
use proptest::prelude::*;

fn rules(count: u32, order: Order, parallel: u32) -> GroupRules {
    GroupRules {
        name: "web".to_string(),
        count,
        reloadable: true,
        order,
        parallel,
        ready_timeout: Duration::from_millis(1000),
        stop_timeout: Duration::from_millis(2000),
        readiness: Default::default(),
    }
}

mod support;

use support::Sim as H;

impl H {
    /// The `reload:done` report that answered ticket `r`.
    fn reload_report(&self, r: Ticket) -> ReloadReport {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::ReloadDone(rep) if rep.tickets.contains(&r) => Some(rep.clone()),
                _ => None,
            })
            .expect("reload done")
    }

    fn new(count: u32, order: Order, parallel: u32) -> H {
        H::with_groups(vec![rules(count, order, parallel)])
    }

    fn started(count: u32, order: Order) -> H {
        H::started_with(vec![rules(count, order, 1)])
    }

    fn scale(&mut self, count: u32) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.input(Input::Scale {
            group: 0,
            count,
            ticket,
        });
        ticket
    }

    /// Cooperative processes from now on: ready when started, gone when asked to stop,
    /// until nothing is left to do.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.ready_all();
            self.exit_stopping();
            let busy = self.procs.values().any(|p| p.stopping || !p.ready);
            if !busy && !self.fleet.snapshot().reloading && !self.advance_restarts() {
                return;
            }
        }
        panic!("the fleet did not settle: {:?}", self.fleet.snapshot());
    }

    /// Run pending restarts (empty slots); false when there are none.
    fn advance_restarts(&mut self) -> bool {
        let empty = self
            .fleet
            .snapshot()
            .workers
            .iter()
            .any(|r| r.key.is_none());
        empty && self.advance()
    }

    fn answers(&self, ticket: Ticket) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| match e {
                Event::ScaleDone { ticket: t, .. } | Event::ScaleFailed { ticket: t, .. } => {
                    *t == ticket
                }
                _ => false,
            })
            .cloned()
            .collect()
    }

    fn live_slots(&self) -> Vec<u32> {
        self.procs.values().map(|p| p.slot).collect()
    }
}

fn ready_rows(h: &H) -> Vec<u32> {
    h.fleet
        .snapshot()
        .workers
        .iter()
        .filter(|r| r.state == WorkerState::Ready)
        .map(|r| r.slot)
        .collect()
}

#[test]
fn growing_spawns_the_new_slots_and_answers_once_they_are_ready() {
    let mut h = H::started(2, Order::StartFirst);
    let mark = h.actions.len();
    let t = h.scale(4);
    let spawned: Vec<u32> = h.actions[mark..]
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect();
    assert_eq!(spawned, vec![2, 3]);
    assert!(
        h.answers(t).is_empty(),
        "not answered before the new slots are ready"
    );
    let snap = h.fleet.snapshot();
    assert_eq!(snap.workers.len(), 4);
    assert_eq!(snap.workers[2].state, WorkerState::Starting);
    // Not steered to before they are ready.
    let steers: Vec<Vec<u32>> = h.actions[mark..]
        .iter()
        .filter_map(|a| match a {
            Action::Steer { serving, .. } => Some(serving.clone()),
            _ => None,
        })
        .collect();
    assert!(steers.iter().all(|s| !s.contains(&2) && !s.contains(&3)));
    h.ready_all();
    assert_eq!(
        h.answers(t),
        vec![Event::ScaleDone {
            group: 0,
            count: 4,
            ticket: t
        }]
    );
    assert_eq!(ready_rows(&h), vec![0, 1, 2, 3]);
    assert_eq!(h.fleet.group_rules(0).map(|r| r.count), Some(4));
}

#[test]
fn shrinking_steers_away_then_stops_the_highest_slots_and_answers_once_they_exited() {
    let mut h = H::started(4, Order::StartFirst);
    let mark = h.actions.len();
    let t = h.scale(1);
    let after = &h.actions[mark..];
    let steer_at = after
        .iter()
        .position(|a| matches!(a, Action::Steer { serving, .. } if serving == &vec![0]))
        .expect("steered to slot 0 only");
    let stopped: Vec<u32> = after
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Action::Stop { key, .. } => {
                assert!(i > steer_at, "steer comes before the stops");
                Some(h.procs[key].slot)
            }
            _ => None,
        })
        .collect();
    assert_eq!(stopped, vec![1, 2, 3]);
    assert!(h.answers(t).is_empty());
    // The leaving workers show as stopping.
    let snap = h.fleet.snapshot();
    assert_eq!(
        snap.workers
            .iter()
            .filter(|r| r.state == WorkerState::Stopping)
            .count(),
        3
    );
    // A removed worker that does not exit is killed after stop_timeout, never restarted.
    h.advance();
    assert!(h.actions.iter().any(|a| matches!(a, Action::Kill { .. })));
    h.exit_stopping();
    assert_eq!(
        h.answers(t),
        vec![Event::ScaleDone {
            group: 0,
            count: 1,
            ticket: t
        }]
    );
    assert_eq!(h.fleet.snapshot().workers.len(), 1);
    assert_eq!(h.live_slots(), vec![0]);
    assert_eq!(h.fleet.poll_timeout(), None, "no restart was scheduled");
}

#[test]
fn refusals_are_answered_at_once() {
    let mut h = H::new(2, Order::StartFirst, 1);
    let t = h.scale(3);
    assert!(matches!(
        h.answers(t)[..],
        [Event::ScaleFailed {
            error: ScaleError::NotStarted,
            ..
        }]
    ));
    h.input(Input::Start);
    h.ready_all();
    let t = h.scale(0);
    assert!(matches!(
        h.answers(t)[..],
        [Event::ScaleFailed {
            error: ScaleError::ZeroCount,
            ..
        }]
    ));
    let t = h.next_ticket;
    h.next_ticket += 1;
    h.input(Input::Scale {
        group: 7,
        count: 2,
        ticket: t,
    });
    assert!(matches!(
        h.answers(t)[..],
        [Event::ScaleFailed {
            error: ScaleError::UnknownGroup,
            ..
        }]
    ));
    h.reload();
    let t = h.scale(3);
    assert!(matches!(
        h.answers(t)[..],
        [Event::ScaleFailed {
            error: ScaleError::Reloading,
            ..
        }]
    ));
    assert_eq!(h.fleet.group_rules(0).map(|r| r.count), Some(2));
}

#[test]
fn a_reload_after_a_scale_replaces_the_new_count() {
    let mut h = H::started(2, Order::StartFirst);
    h.scale(4);
    h.settle();
    let r = h.reload();
    h.settle();
    let report = h.reload_report(r);
    assert_eq!(report.replaced.len(), 4);
    assert_eq!(report.outcome, ReloadOutcome::Done);
    h.scale(1);
    h.settle();
    let r = h.reload();
    h.settle();
    let report = h.reload_report(r);
    assert_eq!(report.replaced.len(), 1);
}

#[test]
fn a_reload_requested_during_a_scale_waits_for_it() {
    let mut h = H::started(1, Order::StartFirst);
    let s = h.scale(3);
    let r = h.reload();
    assert!(!h.fleet.snapshot().reloading, "the reload waits");
    h.ready_all();
    assert!(matches!(h.answers(s)[..], [Event::ScaleDone { .. }]));
    assert!(h.fleet.snapshot().reloading, "then it runs");
    h.settle();
    let report = h.reload_report(r);
    assert_eq!(report.replaced.len(), 3);
}

#[test]
fn a_new_worker_failing_before_ready_fails_the_scale_and_is_restarted() {
    let mut h = H::started(1, Order::StartFirst);
    let t = h.scale(2);
    let key = *h
        .procs
        .iter()
        .find(|(_, p)| p.slot == 1)
        .map(|(k, _)| k)
        .expect("slot 1 spawned");
    h.exit(key, ExitStatus::Code(1));
    match &h.answers(t)[..] {
        [Event::ScaleFailed {
            error: ScaleError::WorkerFailed { slot: 1, reason },
            count: 2,
            ..
        }] => assert!(reason.contains("before it was ready"), "{reason}"),
        other => panic!("unexpected answer {other:?}"),
    }
    h.settle();
    assert_eq!(ready_rows(&h), vec![0, 1]);
}

#[test]
fn a_newer_scale_supersedes_and_a_stop_answers_the_running_one() {
    let mut h = H::started(1, Order::StartFirst);
    let a = h.scale(3);
    let b = h.scale(2);
    assert!(matches!(
        h.answers(a)[..],
        [Event::ScaleFailed {
            error: ScaleError::Superseded,
            ..
        }]
    ));
    h.settle();
    assert!(matches!(
        h.answers(b)[..],
        [Event::ScaleDone { count: 2, .. }]
    ));
    assert_eq!(ready_rows(&h), vec![0, 1]);
    let c = h.scale(5);
    h.input(Input::Stop { force: false });
    assert!(matches!(
        h.answers(c)[..],
        [Event::ScaleFailed {
            error: ScaleError::Stopping,
            ..
        }]
    ));
}

// ----- properties -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Move {
    Scale(u32),
    ReadyOne(usize),
    ExitStopping(usize),
    Crash(usize),
    Reload,
    Advance,
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let m = prop_oneof![
        3 => (0u32..=5).prop_map(Move::Scale),
        4 => any::<usize>().prop_map(Move::ReadyOne),
        3 => any::<usize>().prop_map(Move::ExitStopping),
        1 => any::<usize>().prop_map(Move::Crash),
        1 => Just(Move::Reload),
        2 => Just(Move::Advance),
    ];
    prop::collection::vec(m, 1..40)
}

fn pick(keys: Vec<WorkerKey>, i: usize) -> Option<WorkerKey> {
    (!keys.is_empty()).then(|| keys[i % keys.len()])
}

/// Checks after every step: steering never names a slot at or past the count; a scale's
/// own stops only take slots at or past its count; the live processes stay within
/// `count + parallel` processes not asked to stop (a reload's replacements booting).
fn check_step(h: &H, mark: usize, scaled_to: Option<u32>, parallel: u32) {
    let count = h.fleet.group_rules(0).map_or(0, |r| r.count);
    // Only an accepted scale's own stops count: a refused one (a reload runs) may see
    // the pass advance, and a reload waiting for the scale may begin right after it.
    let accepted = h.actions[mark..]
        .iter()
        .any(|a| matches!(a, Action::Emit(Event::ScaleStart { .. })));
    let scaled_to = scaled_to.filter(|_| accepted);
    for a in &h.actions[mark..] {
        match a {
            Action::Emit(Event::ReloadStart { .. }) => break,
            Action::Steer { serving, .. } => {
                assert!(serving.iter().all(|s| *s < count), "steered to {serving:?}");
            }
            Action::Stop { key, .. } => {
                if let Some(n) = scaled_to {
                    let slot = h.procs.get(key).map(|p| p.slot);
                    assert!(
                        slot.is_none_or(|s| s >= n),
                        "scale to {n} stopped slot {slot:?}"
                    );
                }
            }
            _ => {}
        }
    }
    let serving_or_starting = h.procs.values().filter(|p| !p.stopping).count() as u32;
    assert!(
        serving_or_starting <= count + parallel,
        "{serving_or_starting} processes not asked to stop for count {count}"
    );
}

fn run(order: Order, parallel: u32, initial: u32, moves: Vec<Move>) {
    let mut h = H::new(initial, order, parallel);
    h.input(Input::Start);
    h.ready_all();
    let mut tickets: BTreeSet<Ticket> = BTreeSet::new();
    for m in moves {
        let mark = h.actions.len();
        let mut scaled_to = None;
        match m {
            Move::Scale(n) => {
                tickets.insert(h.scale(n));
                scaled_to = Some(n);
            }
            Move::ReadyOne(i) => {
                let keys = h
                    .procs
                    .iter()
                    .filter(|(_, p)| !p.ready && !p.stopping)
                    .map(|(k, _)| *k)
                    .collect();
                if let Some(k) = pick(keys, i) {
                    h.ready(k);
                }
            }
            Move::ExitStopping(i) => {
                let keys = h
                    .procs
                    .iter()
                    .filter(|(_, p)| p.stopping)
                    .map(|(k, _)| *k)
                    .collect();
                if let Some(k) = pick(keys, i) {
                    h.exit(k, ExitStatus::Code(0));
                }
            }
            Move::Crash(i) => {
                if let Some(k) = pick(h.procs.keys().copied().collect(), i) {
                    h.exit(k, ExitStatus::Code(1));
                }
            }
            Move::Reload => {
                h.reload();
            }
            Move::Advance => {
                h.advance();
            }
        }
        check_step(&h, mark, scaled_to, parallel);
    }
    h.settle();
    let count = h.fleet.group_rules(0).map_or(0, |r| r.count);
    // Settled: exactly one ready worker per slot 0..count, nothing else.
    let mut slots = h.live_slots();
    slots.sort();
    assert_eq!(slots, (0..count).collect::<Vec<_>>());
    assert_eq!(ready_rows(&h), (0..count).collect::<Vec<_>>());
    assert_eq!(h.fleet.snapshot().workers.len() as u32, count);
    // Every scale request was answered exactly once.
    for t in tickets {
        assert_eq!(h.answers(t).len(), 1, "ticket {t}: {:?}", h.answers(t));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scales_settle_start_first(initial in 1u32..=4, parallel in 1u32..=2, m in moves()) {
        run(Order::StartFirst, parallel, initial, m);
    }

    #[test]
    fn scales_settle_stop_first(initial in 1u32..=4, parallel in 1u32..=2, m in moves()) {
        run(Order::StopFirst, parallel, initial, m);
    }
}

#[test]
fn a_scale_up_does_not_wait_for_an_older_slot_in_a_crash_loop() {
    let mut h = H::started(2, Order::StartFirst);
    let key = *h
        .procs
        .iter()
        .find(|(_, p)| p.slot == 0)
        .map(|(k, _)| k)
        .expect("slot 0");
    h.exit(key, ExitStatus::Code(1)); // slot 0 waits out its backoff
    let t = h.scale(3);
    let new = *h
        .procs
        .iter()
        .find(|(_, p)| p.slot == 2)
        .map(|(k, _)| k)
        .expect("slot 2 spawned");
    h.ready(new);
    assert!(
        matches!(h.answers(t)[..], [Event::ScaleDone { count: 3, .. }]),
        "answered while slot 0 is still down"
    );
    // A superseding scale still waits for the first one's new slots.
    let a = h.scale(5);
    let b = h.scale(6);
    assert!(matches!(
        h.answers(a)[..],
        [Event::ScaleFailed {
            error: ScaleError::Superseded,
            ..
        }]
    ));
    let slot3 = *h
        .procs
        .iter()
        .find(|(_, p)| p.slot == 3)
        .map(|(k, _)| k)
        .expect("slot 3");
    let others: Vec<WorkerKey> = h
        .procs
        .iter()
        .filter(|(k, p)| p.slot >= 4 && !p.ready && **k != slot3)
        .map(|(k, _)| *k)
        .collect();
    for k in others {
        h.ready(k);
    }
    assert!(
        h.answers(b).is_empty(),
        "slot 3 (from the superseded scale) is not ready"
    );
    h.ready(slot3);
    assert!(matches!(
        h.answers(b)[..],
        [Event::ScaleDone { count: 6, .. }]
    ));
}
