//! Tests of the pure fleet state machine (`baton_core::fleet`), through its public API only.
//!
//! A small deterministic simulator drives a [`Fleet`]: it owns a fake clock (an `Instant`
//! base plus an offset; the machine never reads a clock) and a model of the world. Every
//! `Action::Spawn` is answered at once with `Input::Spawned` (a fresh fake pid) or
//! `Input::SpawnFailed`, the way the event loop does; `Action::Stop`/`Action::Kill` mark the
//! process as asked to stop / killed, and the world delivers `Input::Exited` later (code 0
//! after a graceful stop, `Signal(9)` after a kill). Time moves only through
//! `handle_timeout(now)`, normally at `poll_timeout()`.
//!
//! The simulator also keeps a *model* of what the module documentation promises and checks
//! every action, every event and a status snapshot after every step (see `Sim::on_action`,
//! `Sim::on_event` and `Sim::after_step`). The property tests feed it random sequences of
//! "world moves"; the unit tests at the end script precise scenarios.
//!
//! Where the reload properties are checked, with their precise definitions:
//! 1. start-first capacity (`after_step`): while the fleet runs and no ready worker has
//!    crashed, every start-first group has at least `count` rows in state `Ready`;
//! 2. `parallel` replacements at a time (`on_spawn`): a *replacement* is a `Spawn` caused by
//!    an input (not by `handle_timeout`, which only does crash restarts) while a pass runs;
//!    when one is spawned, fewer than its group's `parallel` other replacements may be alive
//!    and not ready yet, and all of them in the same group (groups go one after another);
//! 3. old workers stopped once (`on_report`): on `ReloadDone`, every worker of a reloadable
//!    group alive at pass start and spawned before the pass's (newest) request received
//!    exactly one `Stop` (unless it died on its own) and has exited, and no live worker of a
//!    reloadable group predates that request; after a pass started directly by a request no
//!    older generation is left (a coalesced pass keeps workers its predecessor spawned after
//!    the newest request: they count as fresh, see the module doc);
//! 4. after a failure (`on_action`): no `Stop` between the failing replacement's exit and
//!    the end of its pass, except for a fleet stop and for the other replacements still
//!    booting (`adopted`: stopped where their slot's old worker serves, else kept); the report carries that replacement's
//!    pid, status and stderr tail; capacity (1, 7) keeps holding;
//! 5. non-reloadable groups (`on_action`, `on_reload_start`): `Stop`/`Kill` only by a fleet
//!    stop (or a ready timeout); each pass notifies exactly the live, unstopped workers, once;
//! 6. coalescing (`on_reload_start`, `on_report`, `finish`): a pass starts only for a request
//!    at idle, or once for all requests queued behind a finished pass; each ticket is answered
//!    exactly once;
//! 7. stop-first (`on_spawn`, `after_step`): a stop-first slot never has two live processes
//!    (the old worker has exited before its replacement is spawned), and a group keeps at
//!    least `count - parallel` ready workers;
//! 8. steering (`on_action`, `after_step`): when a worker gets `Stop` or `Kill`, the last
//!    `Steer` of its group names no slot without a ready, unstopped worker (the driver can
//!    steer away before the worker stops accepting); after every step the steered slots are
//!    exactly the serving ones;
//! 9. process bound (`after_step`): a group never has more than `count + 2 x parallel` live
//!    processes in start-first (booting, serving, draining), nor more than `count` in
//!    stop-first.
//!
//! Property tests use a fixed RNG seed, so runs are reproducible; set `PROPTEST_RNG_SEED`
//! (and `PROPTEST_CASES`) to explore other sequences. `FLEET_TRACE=1` prints every move and
//! action; `FLEET_STATS=1` prints what each case exercised.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use baton_core::config::{Backoff, GroupRules, Order};
use baton_core::exit_status::ExitStatus;
use baton_core::fleet::{
    Action, Event, ExitCause, Fleet, FleetSnapshot, Input, ReloadOutcome, ReloadReport, Ticket,
    WorkerKey, WorkerState,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

// ----- configuration helpers -----------------------------------------------------------------

const READY_TIMEOUT: Duration = Duration::from_millis(1000);
const STOP_TIMEOUT: Duration = Duration::from_millis(2000);
const SIGKILL: i32 = 9;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rules(name: &str, count: u32, reloadable: bool, order: Order) -> GroupRules {
    GroupRules {
        name: name.to_string(),
        count,
        reloadable,
        order,
        parallel: 1,
        ready_timeout: READY_TIMEOUT,
        stop_timeout: STOP_TIMEOUT,
        readiness: Default::default(),
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: ms(100),
        max: ms(1600),
        reset_after: Duration::from_secs(10),
    }
}

// ----- the simulator -------------------------------------------------------------------------

/// The model's view of the fleet phase, derived from inputs and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MPhase {
    Idle,
    Starting,
    Running,
    Stopping,
    Stopped,
}

/// One worker process of the fake world.
#[derive(Debug, Clone)]
struct W {
    group: usize,
    slot: u32,
    generation: u32,
    pid: Option<i32>,
    /// Started (Spawned) and not exited yet.
    alive: bool,
    /// The world reported `Input::Ready` for it.
    ready: bool,
    spawned_at: Duration,
    /// When it received `Action::Stop`.
    stop_at: Option<Duration>,
    /// It received `Action::Kill`.
    killed: bool,
    /// Killed by a forced fleet stop (the machine then shows it as stopping).
    force_killed: bool,
    stops: u32,
    kills: u32,
    notifies: u32,
    /// Spawned by a reload pass (not a crash restart, not the initial start).
    replacement: bool,
    /// Exited without having been asked to (crash, spawn failure, ready timeout).
    died_unasked: bool,
    /// A replacement still booting when another replacement of its pass failed: the abort
    /// either stops it (its slot's old worker still serves) or keeps it as the slot's worker.
    adopted: bool,
    /// Exit status (None for a spawn failure) and stderr tail, once exited.
    exit: Option<(Option<ExitStatus>, String)>,
}

/// The model of one running reload pass.
#[derive(Debug, Clone)]
struct PassModel {
    generation: u32,
    tickets: Vec<Ticket>,
    /// Workers with a key below this were spawned before the (newest) request.
    cutoff: WorkerKey,
    /// Started directly by a request (not a coalesced follow-up pass).
    fresh: bool,
    /// The replacement whose exit aborted the pass.
    failed: Option<WorkerKey>,
    /// Live workers of reloadable groups spawned before the request, at pass start.
    old: BTreeSet<WorkerKey>,
    /// Live workers of non-reloadable groups at pass start.
    notified: BTreeSet<WorkerKey>,
}

struct Sim {
    fleet: Fleet,
    rules: Vec<GroupRules>,
    base: Instant,
    now: Duration,
    next_pid: i32,
    /// Bit n set: the n-th spawn (mod 64) fails with SpawnFailed.
    fail_mask: u64,
    /// The next this-many spawns fail (unit tests).
    fail_next: u32,
    spawn_index: u32,
    w: BTreeMap<WorkerKey, W>,
    /// Every action, with the time it was polled.
    log: Vec<(Duration, Action)>,

    // The model.
    phase: MPhase,
    generation: u32,
    pass: Option<PassModel>,
    pending: Vec<Ticket>,
    pending_cutoff: WorkerKey,
    /// A pass just ended with queued requests: the follow-up pass must start in this drain.
    expect_start: Option<(Vec<Ticket>, WorkerKey)>,
    /// The request of the current input, when it must be answered (started or cancelled)
    /// within this drain.
    fresh_request: Option<(Ticket, WorkerKey)>,
    answers: BTreeMap<Ticket, u32>,
    requested: Vec<Ticket>,
    next_ticket: Ticket,
    notify_batch: Vec<WorkerKey>,
    /// A ready worker exited on its own at some point (capacity rules do not hold then).
    ready_crash: bool,
    /// The current step is `handle_timeout` (spawns there are crash restarts).
    in_timeout: bool,
    force: bool,
    drain_id: u64,
    stopping_drain: Option<u64>,
    next_key: WorkerKey,
    fleet_ready_events: u32,
    stopped_events: u32,
    reload_starts: u32,
    reports: Vec<ReloadReport>,
    /// Per group, the serving slots of the last `Action::Steer`.
    steered: Vec<Vec<u32>>,
    /// `FLEET_TRACE=1`: print every step and action (to debug a failing case).
    trace: bool,
}

impl Sim {
    fn new(rules: Vec<GroupRules>, backoff: Backoff) -> Sim {
        let fleet_groups = rules.len();
        let fleet = Fleet::new(rules.clone(), backoff);
        assert_eq!(fleet.generation(), 1);
        Sim {
            fleet,
            rules,
            base: Instant::now(),
            now: Duration::ZERO,
            next_pid: 1000,
            fail_mask: 0,
            fail_next: 0,
            spawn_index: 0,
            w: BTreeMap::new(),
            log: Vec::new(),
            phase: MPhase::Idle,
            generation: 1,
            pass: None,
            pending: Vec::new(),
            pending_cutoff: 0,
            expect_start: None,
            fresh_request: None,
            answers: BTreeMap::new(),
            requested: Vec::new(),
            next_ticket: 1,
            notify_batch: Vec::new(),
            ready_crash: false,
            in_timeout: false,
            force: false,
            drain_id: 0,
            stopping_drain: None,
            next_key: 1,
            fleet_ready_events: 0,
            stopped_events: 0,
            reload_starts: 0,
            reports: Vec::new(),
            steered: vec![Vec::new(); fleet_groups],
            trace: std::env::var_os("FLEET_TRACE").is_some(),
        }
    }

    fn t(&self) -> Instant {
        self.base + self.now
    }

    fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    // ----- driving ---------------------------------------------------------------------------

    fn handle(&mut self, input: Input) {
        self.drain_id += 1;
        self.in_timeout = false;
        match &input {
            // Scales have their own tests and properties (fleet_scale.rs).
            Input::Scale { .. } => panic!("the reload simulator does not scale"),
            // Memory samples have their own tests and properties (fleet_memory.rs).
            Input::MemorySample { .. } => panic!("the reload simulator samples no memory"),
            Input::Start => {
                if self.phase == MPhase::Idle {
                    self.phase = MPhase::Starting;
                }
            }
            Input::Reload { ticket } => {
                self.requested.push(*ticket);
                let cutoff = self.next_key;
                if self.phase == MPhase::Running && self.pass.is_some() {
                    self.pending.push(*ticket);
                    self.pending_cutoff = cutoff;
                } else {
                    self.fresh_request = Some((*ticket, cutoff));
                }
            }
            Input::Stop { force } => {
                if matches!(
                    self.phase,
                    MPhase::Idle | MPhase::Starting | MPhase::Running
                ) {
                    self.phase = MPhase::Stopping;
                    self.stopping_drain = Some(self.drain_id);
                }
                if *force && self.phase == MPhase::Stopping {
                    self.force = true;
                }
            }
            Input::Exited {
                key,
                status,
                stderr_tail,
            } => {
                self.note_exit(*key, Some(*status), stderr_tail.clone());
            }
            Input::Ready { key } => {
                if let Some(w) = self.w.get_mut(key) {
                    if w.alive && w.stop_at.is_none() && !w.killed {
                        w.ready = true;
                    }
                }
            }
            Input::Spawned { .. } | Input::SpawnFailed { .. } => {
                panic!("the simulator answers spawns itself")
            }
        }
        let now = self.t();
        self.fleet.handle(now, input);
        self.drain();
        self.after_step();
    }

    fn timeout(&mut self) {
        self.drain_id += 1;
        self.in_timeout = true;
        let now = self.t();
        self.fleet.handle_timeout(now);
        self.drain();
        self.in_timeout = false;
        self.after_step();
        // Every deadline that has passed was handled: nothing is due any more.
        if let Some(next) = self.fleet.poll_timeout() {
            assert!(
                next > now,
                "poll_timeout {:?} not after handled time {:?}",
                next - self.base,
                self.now
            );
        }
    }

    /// Advances the clock by `d` and lets the machine handle the passage of time.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.timeout();
    }

    /// Moves the clock to the next deadline and handles it. False when there is none.
    fn advance_to_deadline(&mut self) -> bool {
        match self.fleet.poll_timeout() {
            Some(at) => {
                let off = at.duration_since(self.base);
                assert!(off >= self.now, "deadline in the past");
                self.now = off;
                self.timeout();
                true
            }
            None => false,
        }
    }

    fn start(&mut self) {
        self.handle(Input::Start);
    }

    fn reload(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.handle(Input::Reload { ticket });
        ticket
    }

    fn stop(&mut self, force: bool) {
        self.handle(Input::Stop { force });
    }

    fn ready(&mut self, key: WorkerKey) {
        self.handle(Input::Ready { key });
    }

    fn exit(&mut self, key: WorkerKey, status: ExitStatus, stderr: &str) {
        self.handle(Input::Exited {
            key,
            status,
            stderr_tail: stderr.to_string(),
        });
    }

    /// Graceful exit after a stop request.
    fn exit_ok(&mut self, key: WorkerKey) {
        self.exit(key, ExitStatus::Code(0), "");
    }

    fn crash(&mut self, key: WorkerKey) {
        self.exit(key, ExitStatus::Code(1), "Error: boom\n");
    }

    fn drain(&mut self) {
        while let Some(action) = self.fleet.poll_action() {
            if self.trace {
                eprintln!("    {:>6?} {action:?}", self.now);
            }
            self.log.push((self.now, action.clone()));
            self.on_action(action);
        }
    }

    // ----- queries ---------------------------------------------------------------------------

    fn mark(&self) -> usize {
        self.log.len()
    }

    fn actions_since(&self, mark: usize) -> Vec<Action> {
        self.log[mark..].iter().map(|(_, a)| a.clone()).collect()
    }

    /// What `pick` extracts from every action logged since `mark`.
    fn since<T>(&self, mark: usize, pick: impl Fn(&Action) -> Option<T>) -> Vec<T> {
        self.log[mark..]
            .iter()
            .filter_map(|(_, a)| pick(a))
            .collect()
    }

    fn events_since(&self, mark: usize) -> Vec<Event> {
        self.since(mark, |a| match a {
            Action::Emit(e) => Some(e.clone()),
            _ => None,
        })
    }

    fn spawns_since(&self, mark: usize) -> Vec<WorkerKey> {
        self.since(mark, |a| match a {
            Action::Spawn { key, .. } => Some(*key),
            _ => None,
        })
    }

    fn stops_since(&self, mark: usize) -> Vec<WorkerKey> {
        self.since(mark, |a| match a {
            Action::Stop { key, .. } => Some(*key),
            _ => None,
        })
    }

    fn kills_since(&self, mark: usize) -> Vec<WorkerKey> {
        self.since(mark, |a| match a {
            Action::Kill { key, .. } => Some(*key),
            _ => None,
        })
    }

    fn pid(&self, key: WorkerKey) -> i32 {
        self.w[&key].pid.expect("worker has a pid")
    }

    fn alive(&self) -> Vec<WorkerKey> {
        self.w
            .iter()
            .filter(|(_, w)| w.alive)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Live workers that have not been asked to stop and are not ready (nor killed).
    fn pending_workers(&self) -> Vec<WorkerKey> {
        self.w
            .iter()
            .filter(|(_, w)| w.alive && !w.ready && w.stop_at.is_none() && !w.killed)
            .map(|(k, _)| *k)
            .collect()
    }

    fn ready_all(&mut self) {
        for key in self.pending_workers() {
            self.ready(key);
        }
    }

    /// A well-behaved world: every starting worker becomes ready and every worker asked to
    /// stop exits, until neither is left.
    fn cooperate(&mut self) {
        loop {
            if let Some(&k) = self.pending_workers().first() {
                self.ready(k);
            } else if !self.stopping_workers().is_empty() {
                self.exit_all_stopping();
            } else {
                break;
            }
        }
    }

    /// Live workers asked to stop (or killed), not exited yet.
    fn stopping_workers(&self) -> Vec<WorkerKey> {
        self.w
            .iter()
            .filter(|(_, w)| w.alive && (w.stop_at.is_some() || w.killed))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every worker asked to stop exits: gracefully, or by SIGKILL when it was killed.
    fn exit_all_stopping(&mut self) {
        for key in self.stopping_workers() {
            if self.w[&key].killed {
                self.exit(key, ExitStatus::Signal(SIGKILL), "");
            } else {
                self.exit_ok(key);
            }
        }
    }

    /// The serving worker of a slot: live, not asked to stop.
    fn serving(&self, group: usize, slot: u32) -> Vec<WorkerKey> {
        self.w
            .iter()
            .filter(|(_, w)| {
                w.alive && w.group == group && w.slot == slot && w.stop_at.is_none() && !w.killed
            })
            .map(|(k, _)| *k)
            .collect()
    }

    fn snapshot(&self) -> FleetSnapshot {
        self.fleet.snapshot()
    }

    fn report_for(&self, ticket: Ticket) -> ReloadReport {
        self.reports
            .iter()
            .find(|r| r.tickets.contains(&ticket))
            .cloned()
            .expect("a report for the ticket")
    }

    // ----- the world answering actions, and the model checking them ---------------------------

    fn note_exit(&mut self, key: WorkerKey, status: Option<ExitStatus>, stderr: String) {
        let phase = self.phase;
        let w = self.w.get_mut(&key).expect("exit of a known worker");
        assert!(w.alive || w.pid.is_none(), "worker {key} exits twice");
        w.alive = false;
        w.exit = Some((status, stderr));
        let asked = w.stop_at.is_some() || w.force_killed;
        if !asked {
            w.died_unasked = true;
            if w.ready {
                self.ready_crash = true;
            }
        }
        // A replacement that dies before it is ready aborts its pass (the failure point).
        if w.replacement && !w.ready && !asked && phase == MPhase::Running {
            let generation = w.generation;
            let pass = self
                .pass
                .as_mut()
                .expect("a replacement fails only during a pass");
            assert_eq!(pass.generation, generation, "replacement of another pass");
            assert!(
                pass.failed.is_none(),
                "a second replacement failed in one pass"
            );
            pass.failed = Some(key);
            // The abort deals with every other replacement still booting (see `adopted`).
            for w in self.w.values_mut() {
                if w.alive && w.replacement && !w.ready && w.stop_at.is_none() {
                    w.replacement = false;
                    w.adopted = true;
                }
            }
        }
    }

    /// The model's serving slots of `group`: a live worker that is ready and was not asked
    /// to stop.
    fn model_serving(&self, group: usize) -> Vec<u32> {
        let slots: BTreeSet<u32> = self
            .w
            .values()
            .filter(|w| w.group == group && w.alive && w.ready)
            .filter(|w| w.stop_at.is_none() && !w.killed)
            .map(|w| w.slot)
            .collect();
        slots.into_iter().collect()
    }

    /// Property 8 (steering): when a worker is asked to stop or killed, its slot has
    /// already been steered away from, unless another worker serves it.
    fn assert_steered_only_to_serving(&self, group: usize, why: &str) {
        let serving = self.model_serving(group);
        let stray: Vec<u32> = self.steered[group]
            .iter()
            .copied()
            .filter(|s| !serving.contains(s))
            .collect();
        assert!(
            stray.is_empty(),
            "{why}: group {group} still steered to slots {stray:?} without a serving worker (serving {serving:?})"
        );
    }

    fn should_fail_spawn(&mut self) -> bool {
        let index = self.spawn_index;
        self.spawn_index += 1;
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return true;
        }
        (self.fail_mask >> (index % 64)) & 1 == 1
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Spawn {
                key,
                group,
                slot,
                generation,
            } => self.on_spawn(key, group, slot, generation),
            Action::Stop { key, pid } => {
                let phase = self.phase;
                let now = self.now;
                let reloadable = self.rules[self.w[&key].group].reloadable;
                let adopted = self.w[&key].adopted && !self.w[&key].ready;
                let legit = phase == MPhase::Stopping
                    || self.pass.as_ref().is_some_and(|p| {
                        // Rule 4: after a failure, no further old worker is stopped; only
                        // the other replacements still booting are.
                        (p.failed.is_none() && reloadable && p.old.contains(&key))
                            || (p.failed.is_some() && adopted)
                    });
                let w = self.w.get_mut(&key).expect("stop of a known worker");
                assert!(w.alive, "Stop for dead worker {key}");
                assert_eq!(w.pid, Some(pid), "Stop with a wrong pid");
                assert_eq!(w.stops, 0, "second Stop for worker {key}");
                assert!(!w.killed, "Stop after Kill for worker {key}");
                assert!(legit, "Stop of worker {key} outside a reload of its group or a fleet stop ({phase:?}; pass {:?})", self.pass);
                w.stops += 1;
                w.stop_at = Some(now);
                let group = w.group;
                self.assert_steered_only_to_serving(group, "Stop");
            }
            Action::Kill { key, pid } => {
                let force = self.force && self.phase == MPhase::Stopping;
                let now = self.now;
                let w = self.w.get_mut(&key).expect("kill of a known worker");
                assert!(w.alive, "Kill for dead worker {key}");
                assert_eq!(w.pid, Some(pid), "Kill with a wrong pid");
                assert!(!w.killed, "second Kill for worker {key}");
                let after_stop_timeout = w.stop_at.is_some_and(|s| now >= s + STOP_TIMEOUT);
                let after_ready_timeout =
                    !w.ready && w.stop_at.is_none() && now >= w.spawned_at + READY_TIMEOUT;
                assert!(
                    force || after_stop_timeout || after_ready_timeout,
                    "Kill of worker {key} without a reason (now {now:?}, {w:?})"
                );
                w.killed = true;
                w.kills += 1;
                if force {
                    w.force_killed = true;
                }
                let group = w.group;
                self.assert_steered_only_to_serving(group, "Kill");
            }
            Action::Steer { group, serving } => {
                assert!(group < self.rules.len(), "Steer of an unknown group");
                assert_ne!(self.steered[group], serving, "Steer without a change");
                assert!(
                    serving.windows(2).all(|p| p[0] < p[1])
                        && serving.iter().all(|s| *s < self.rules[group].count),
                    "Steer {serving:?}: slots must be sorted, unique and in range"
                );
                self.steered[group] = serving;
            }
            Action::NotifyReload { key, pid } => {
                assert_eq!(self.phase, MPhase::Running);
                let w = self.w.get_mut(&key).expect("notify of a known worker");
                assert!(w.alive, "NotifyReload for dead worker {key}");
                assert_eq!(w.pid, Some(pid));
                assert!(
                    !self.rules[w.group].reloadable,
                    "NotifyReload for a reloadable worker"
                );
                assert!(
                    !self.notify_batch.contains(&key),
                    "two NotifyReload in one pass"
                );
                w.notifies += 1;
                self.notify_batch.push(key);
            }
            Action::Emit(event) => self.on_event(event),
        }
    }

    fn on_spawn(&mut self, key: WorkerKey, group: usize, slot: u32, generation: u32) {
        assert!(key >= self.next_key, "worker keys must grow");
        self.next_key = key + 1;
        assert!(
            group < self.rules.len() && slot < self.rules[group].count,
            "spawn of a bad slot"
        );
        assert_eq!(generation, self.generation, "spawn with a stale generation");
        match self.phase {
            MPhase::Idle | MPhase::Stopped => panic!("spawn while {:?}", self.phase),
            // Only spawns decided before the stop (same drain) may still come out.
            MPhase::Stopping => {
                assert_eq!(self.stopping_drain, Some(self.drain_id), "spawn after stop")
            }
            MPhase::Starting | MPhase::Running => {}
        }
        // stop-first (rule 3) and crash restarts: at most one process per stop-first slot.
        if self.rules[group].order == Order::StopFirst {
            let others: Vec<_> = self
                .w
                .iter()
                .filter(|(_, w)| w.alive && w.group == group && w.slot == slot)
                .map(|(k, _)| *k)
                .collect();
            assert!(
                others.is_empty(),
                "stop-first slot {group}/{slot} spawns {key} while {others:?} live"
            );
        }
        // Replacement spawns come from inputs during a pass; crash restarts from timeouts.
        // After a failure, the only spawn from an input refills a stop-first slot whose old
        // worker had been asked to leave before the abort, once it has exited.
        let mut replacement = !self.in_timeout && self.phase == MPhase::Running;
        let refill = replacement && self.pass.as_ref().is_some_and(|p| p.failed.is_some());
        if refill {
            assert_eq!(
                self.rules[group].order,
                Order::StopFirst,
                "spawn after the pass failed in a start-first group"
            );
            let old = &self.pass.as_ref().expect("a failed pass").old;
            let left = self
                .w
                .iter()
                .any(|(k, w)| w.group == group && w.slot == slot && !w.alive && old.contains(k));
            assert!(
                left,
                "refill of slot {group}/{slot} that no old worker left"
            );
            replacement = false;
        }
        if replacement {
            let pass = self
                .pass
                .as_ref()
                .expect("spawn while running needs a pass (restarts come from timeouts)");
            assert!(
                pass.failed.is_none(),
                "replacement spawned after the pass failed"
            );
            assert!(
                self.rules[group].reloadable,
                "replacement for a non-reloadable group"
            );
            assert_eq!(generation, pass.generation);
            // Property 2: at most `parallel` replacements are starting at any time, all of
            // the same group.
            let starting: Vec<_> = self
                .w
                .iter()
                .filter(|(_, w)| w.alive && w.replacement && !w.ready && w.stop_at.is_none())
                .map(|(k, w)| (*k, w.group))
                .collect();
            let parallel = self.rules[group].parallel.clamp(1, self.rules[group].count) as usize;
            assert!(
                starting.len() < parallel && starting.iter().all(|(_, g)| *g == group),
                "replacement {key} (group {group}, parallel {parallel}) spawned while {starting:?} still starting"
            );
        }
        self.w.insert(
            key,
            W {
                group,
                slot,
                generation,
                pid: None,
                alive: false,
                ready: false,
                spawned_at: self.now,
                stop_at: None,
                killed: false,
                force_killed: false,
                stops: 0,
                kills: 0,
                notifies: 0,
                replacement,
                died_unasked: false,
                adopted: false,
                exit: None,
            },
        );
        let now = self.t();
        if self.should_fail_spawn() {
            self.note_exit(key, None, String::new());
            self.fleet.handle(
                now,
                Input::SpawnFailed {
                    key,
                    error: "spawn node ENOENT".to_string(),
                },
            );
        } else {
            let pid = self.next_pid;
            self.next_pid += 1;
            let w = self.w.get_mut(&key).unwrap();
            w.pid = Some(pid);
            w.alive = true;
            self.fleet.handle(now, Input::Spawned { key, pid });
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::MemoryOverLimit { .. } => panic!("no memory samples in the reload simulator"),
            Event::FleetReady => {
                assert_eq!(self.phase, MPhase::Starting, "FleetReady outside start");
                assert_eq!(self.fleet_ready_events, 0);
                self.fleet_ready_events += 1;
                for (g, r) in self.rules.iter().enumerate() {
                    for s in 0..r.count {
                        let ok = self.w.values().any(|w| {
                            w.alive
                                && w.group == g
                                && w.slot == s
                                && w.ready
                                && w.stop_at.is_none()
                                && !w.killed
                        });
                        assert!(ok, "FleetReady while slot {g}/{s} has no ready worker");
                    }
                }
                self.phase = MPhase::Running;
            }
            Event::StartFailed { reason } => {
                assert_eq!(self.phase, MPhase::Starting, "StartFailed outside start");
                assert!(!reason.is_empty());
                self.phase = MPhase::Stopping;
                self.stopping_drain = Some(self.drain_id);
            }
            Event::Stopped => {
                assert_eq!(self.phase, MPhase::Stopping, "Stopped while not stopping");
                assert_eq!(self.stopped_events, 0);
                assert!(
                    self.alive().is_empty(),
                    "Stopped with live workers {:?}",
                    self.alive()
                );
                self.stopped_events += 1;
                self.phase = MPhase::Stopped;
            }
            Event::ReloadStart {
                generation,
                tickets,
                due,
            } => self.on_reload_start(generation, tickets, due),
            Event::ReloadProgress {
                generation,
                replaced,
                due,
                group,
                ..
            } => {
                let pass = self.pass.as_ref().expect("progress outside a pass");
                assert_eq!(generation, pass.generation);
                assert!(replaced >= 1);
                assert!(replaced <= due, "progress {replaced}/{due}");
                assert!(self.rules[group].reloadable);
            }
            Event::ReloadDone(report) => {
                assert_eq!(report.outcome, ReloadOutcome::Done);
                self.on_report(report);
            }
            Event::ReloadFailed(report) => {
                assert_ne!(report.outcome, ReloadOutcome::Done);
                self.on_report(report);
            }
            Event::WorkerExit { restart_in, .. } => {
                if restart_in.is_some() {
                    assert!(
                        matches!(self.phase, MPhase::Starting | MPhase::Running),
                        "restart while stopping"
                    );
                }
            }
            Event::WorkerSpawned { .. }
            | Event::WorkerReady { .. }
            | Event::WorkerReadyTimeout { .. }
            | Event::WorkerStopTimeout { .. } => {}
            Event::ScaleStart { .. } | Event::ScaleDone { .. } | Event::ScaleFailed { .. } => {
                panic!("the reload simulator does not scale")
            }
        }
    }

    fn on_reload_start(&mut self, generation: u32, tickets: Vec<Ticket>, due: u32) {
        assert_eq!(
            self.phase,
            MPhase::Running,
            "ReloadStart while {:?}",
            self.phase
        );
        assert!(self.pass.is_none(), "ReloadStart while a pass runs");
        // Property 6: a pass starts for a request at idle, or once for all queued requests.
        let (expected, cutoff, fresh) = if let Some((expected, cutoff)) = self.expect_start.take() {
            (expected, cutoff, false)
        } else if let Some((ticket, cutoff)) = self.fresh_request.take() {
            (vec![ticket], cutoff, true)
        } else {
            panic!("ReloadStart {tickets:?} without a request");
        };
        assert_eq!(tickets, expected, "the pass answers the wrong tickets");
        assert_eq!(
            generation,
            self.generation + 1,
            "generation must grow by one per pass"
        );
        self.generation = generation;
        self.reload_starts += 1;
        let slots: u32 = self
            .rules
            .iter()
            .filter(|r| r.reloadable)
            .map(|r| r.count)
            .sum();
        assert!(due <= slots);
        // Property 5: every live worker of a non-reloadable group is told, exactly once.
        let batch: BTreeSet<WorkerKey> = self.notify_batch.drain(..).collect();
        let expected_notify: BTreeSet<WorkerKey> = self
            .w
            .iter()
            .filter(|(_, w)| {
                w.alive && !self.rules[w.group].reloadable && w.stop_at.is_none() && !w.force_killed
            })
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(batch, expected_notify, "NotifyReload set of the pass");
        let old: BTreeSet<WorkerKey> = self
            .w
            .iter()
            .filter(|(k, w)| w.alive && self.rules[w.group].reloadable && **k < cutoff)
            .map(|(k, _)| *k)
            .collect();
        for k in &old {
            assert_eq!(
                self.w[k].stops, 0,
                "a worker from an earlier pass is still retiring at pass start"
            );
        }
        self.pass = Some(PassModel {
            generation,
            tickets,
            cutoff,
            fresh,
            failed: None,
            old,
            notified: batch,
        });
    }

    fn on_report(&mut self, report: ReloadReport) {
        assert!(!report.tickets.is_empty(), "report without tickets");
        for t in &report.tickets {
            assert!(self.requested.contains(t), "report for unknown ticket {t}");
            let n = self.answers.entry(*t).or_insert(0);
            *n += 1;
            assert_eq!(*n, 1, "ticket {t} answered twice");
        }
        match report.outcome {
            ReloadOutcome::Done | ReloadOutcome::Failed => {
                let pass = self.pass.take().expect("Done/Failed report outside a pass");
                assert_eq!(report.tickets, pass.tickets);
                assert_eq!(report.generation, pass.generation);
                assert!(report.cancel_reason.is_none());
                assert_eq!(report.notified as usize, pass.notified.len());
                let slots: BTreeSet<(usize, u32)> =
                    report.replaced.iter().map(|r| (r.group, r.slot)).collect();
                // (With crashes of ready workers, a slot emptied again is filled again.)
                if !self.ready_crash {
                    assert_eq!(
                        slots.len(),
                        report.replaced.len(),
                        "a slot replaced twice in one pass"
                    );
                }
                for r in &report.replaced {
                    let (nk, nw) = self
                        .w
                        .iter()
                        .find(|(_, w)| w.pid == Some(r.new_pid))
                        .expect("replacement pid");
                    assert_eq!(
                        (nw.group, nw.slot, nw.generation),
                        (r.group, r.slot, pass.generation)
                    );
                    assert!(*nk >= pass.cutoff);
                    if let Some(old_pid) = r.old_pid {
                        let ok = pass.old.iter().any(|k| {
                            let w = &self.w[k];
                            w.pid == Some(old_pid) && (w.group, w.slot) == (r.group, r.slot)
                        });
                        assert!(ok, "replaced entry {r:?} names a pid that is not an old worker of its slot");
                    }
                }
                for k in &pass.old {
                    let w = &self.w[k];
                    assert!(w.stops <= 1 && w.kills <= 1);
                    // (A stop ends a failed pass at once; its workers exit during the stop.)
                    if w.stops == 1 && self.phase != MPhase::Stopping {
                        assert!(!w.alive, "pass ended before stopped worker {k} exited");
                    }
                }
                if report.outcome == ReloadOutcome::Done {
                    assert!(report.failure.is_none());
                    assert!(
                        pass.failed.is_none(),
                        "ReloadDone although a replacement failed"
                    );
                    // Property 3: every old worker was stopped exactly once (unless it died
                    // on its own first), and none of them is left.
                    for k in &pass.old {
                        let w = &self.w[k];
                        assert!(!w.alive, "old worker {k} still alive after ReloadDone");
                        assert!(
                            w.stops == 1 || w.died_unasked,
                            "old worker {k} not stopped exactly once: {w:?}"
                        );
                        // Every worker the pass stopped is named as the old pid of its slot.
                        if w.stops == 1 {
                            assert!(
                                report
                                    .replaced
                                    .iter()
                                    .any(|r| r.old_pid.is_some() && r.old_pid == w.pid),
                                "stopped worker {k} missing from the report's replaced list: {:?}",
                                report.replaced
                            );
                        }
                    }
                    for (k, w) in &self.w {
                        if w.alive && self.rules[w.group].reloadable {
                            assert!(
                                *k >= pass.cutoff,
                                "worker {k} from before the request survives ReloadDone"
                            );
                            if pass.fresh {
                                assert!(
                                    w.generation >= pass.generation,
                                    "worker {k} of an old generation survives"
                                );
                            }
                        }
                    }
                } else {
                    // Property 4: the failure is reported with the replacement's details.
                    let key = pass
                        .failed
                        .expect("ReloadFailed(Failed) without a failed replacement");
                    let failure = report.failure.as_ref().expect("failure details");
                    let w = &self.w[&key];
                    let (status, stderr) = w.exit.clone().unwrap();
                    assert_eq!((failure.group, failure.slot), (w.group, w.slot));
                    assert_eq!(failure.pid, w.pid);
                    assert_eq!(failure.status, status);
                    assert_eq!(failure.stderr_tail, stderr);
                    assert!(!failure.reason.is_empty());
                }
                if !self.pending.is_empty() && self.phase == MPhase::Running {
                    self.expect_start =
                        Some((std::mem::take(&mut self.pending), self.pending_cutoff));
                }
            }
            ReloadOutcome::Cancelled => {
                assert!(report.cancel_reason.is_some());
                assert!(report.failure.is_none());
                if let Some(pass) = self.pass.take() {
                    assert_eq!(
                        self.phase,
                        MPhase::Stopping,
                        "a running pass is only cancelled by a stop"
                    );
                    assert_eq!(report.tickets, pass.tickets);
                } else if !self.pending.is_empty() {
                    assert_eq!(
                        self.phase,
                        MPhase::Stopping,
                        "queued requests are only cancelled by a stop"
                    );
                    assert_eq!(report.tickets, std::mem::take(&mut self.pending));
                } else {
                    let (ticket, _) = self
                        .fresh_request
                        .take()
                        .expect("cancelled report without a request");
                    assert_ne!(
                        self.phase,
                        MPhase::Running,
                        "a reload while running was cancelled"
                    );
                    assert_eq!(report.tickets, vec![ticket]);
                }
            }
        }
        self.reports.push(report);
    }

    /// Checks after every input or timeout, once its actions have been drained.
    fn after_step(&mut self) {
        assert!(
            self.fresh_request.is_none(),
            "a reload request was neither started nor answered"
        );
        assert!(
            self.expect_start.is_none(),
            "queued reload requests did not start their pass"
        );
        assert!(
            self.notify_batch.is_empty(),
            "NotifyReload outside a pass start"
        );
        assert_eq!(self.fleet.is_stopped(), self.phase == MPhase::Stopped);
        assert_eq!(self.fleet.generation(), self.generation);

        let snap = self.fleet.snapshot();
        assert_eq!(snap.generation, self.generation);
        assert_eq!(snap.reloading, self.pass.is_some(), "snapshot.reloading");
        assert_eq!(
            snap.stopping,
            matches!(self.phase, MPhase::Stopping | MPhase::Stopped)
        );
        let mut seen = BTreeSet::new();
        for row in &snap.workers {
            match row.key {
                Some(k) => {
                    assert!(seen.insert(k), "worker {k} listed twice");
                    let w = self
                        .w
                        .get(&k)
                        .unwrap_or_else(|| panic!("unknown worker {k} in snapshot"));
                    assert!(w.alive, "dead worker {k} in snapshot");
                    assert_eq!(
                        (row.group, row.slot, row.pid, row.generation),
                        (w.group, w.slot, w.pid, w.generation)
                    );
                    let expected = if w.stop_at.is_some() || w.force_killed {
                        WorkerState::Stopping
                    } else if w.ready {
                        WorkerState::Ready
                    } else {
                        WorkerState::Starting
                    };
                    assert_eq!(row.state, expected, "state of worker {k}");
                    assert_eq!(row.spawned_at, Some(self.at(w.spawned_at)));
                }
                None => {
                    assert_eq!(row.state, WorkerState::Starting);
                    assert_ne!(self.phase, MPhase::Stopped);
                }
            }
        }
        let alive: BTreeSet<WorkerKey> = self.alive().into_iter().collect();
        assert_eq!(seen, alive, "snapshot rows vs live workers");

        // Properties 1 and 7: capacity while running, unless a ready worker crashed.
        if self.phase == MPhase::Running && !self.ready_crash {
            for (g, r) in self.rules.iter().enumerate() {
                let ready = snap
                    .workers
                    .iter()
                    .filter(|w| w.group == g && w.state == WorkerState::Ready)
                    .count() as u32;
                let parallel = r.parallel.clamp(1, r.count);
                let min = match r.order {
                    Order::StartFirst => r.count,
                    Order::StopFirst => r.count - parallel,
                };
                assert!(
                    ready >= min,
                    "group {g} ({:?}) has {ready} ready workers, needs {min}",
                    r.order
                );
            }
        }

        for (g, r) in self.rules.iter().enumerate() {
            // Property 8: after every step, new connections go exactly to the serving slots.
            assert_eq!(
                self.steered[g],
                self.model_serving(g),
                "group {g}: steered slots vs serving slots"
            );
            // Property 9: the peak number of processes of a group (booting, serving,
            // draining): count + 2 x parallel for start-first, count for stop-first.
            let parallel = r.parallel.clamp(1, r.count);
            let alive = self.w.values().filter(|w| w.group == g && w.alive).count() as u32;
            let max = match r.order {
                Order::StartFirst => r.count + 2 * parallel,
                Order::StopFirst => r.count,
            };
            assert!(
                alive <= max,
                "group {g} ({:?}, count {}, parallel {parallel}) has {alive} processes, at most {max}",
                r.order,
                r.count
            );
        }
    }

    // ----- the end of a scenario -------------------------------------------------------------

    /// Lets the world behave well until nothing is left to do, then stops the fleet and
    /// checks that everything was answered and every process exited.
    fn finish(&mut self) {
        for _ in 0..10_000 {
            if let Some(&k) = self.pending_workers().first() {
                self.ready(k);
            } else if let Some(&k) = self.stopping_workers().first() {
                if self.w[&k].killed {
                    self.exit(k, ExitStatus::Signal(SIGKILL), "");
                } else {
                    self.exit_ok(k);
                }
            } else if self.phase == MPhase::Stopped || !self.advance_to_deadline() {
                break;
            }
        }
        assert!(self.pass.is_none(), "a pass is stuck");
        assert!(self.pending.is_empty());
        if self.phase == MPhase::Running {
            let snap = self.snapshot();
            let total: u32 = self.rules.iter().map(|r| r.count).sum();
            assert_eq!(snap.workers.len() as u32, total);
            assert!(
                snap.workers.iter().all(|w| w.state == WorkerState::Ready),
                "not all ready at rest"
            );
            self.stop(false);
            for _ in 0..1000 {
                if self.phase == MPhase::Stopped {
                    break;
                }
                if let Some(&k) = self.stopping_workers().first() {
                    self.exit_ok(k);
                } else {
                    panic!("stopping without workers to wait for");
                }
            }
        }
        assert_eq!(self.phase, MPhase::Stopped);
        assert_eq!(self.stopped_events, 1);
        assert!(self.fleet.is_stopped());
        assert_eq!(self.fleet.poll_timeout(), None);
        assert!(self.snapshot().workers.is_empty());
        // Property 6: every ticket got exactly one answer.
        for t in &self.requested {
            assert_eq!(
                self.answers.get(t),
                Some(&1),
                "ticket {t} answered {:?} times",
                self.answers.get(t)
            );
        }
        // No worker got more than one Stop or Kill, and every one exited.
        for (k, w) in &self.w {
            assert!(w.stops <= 1 && w.kills <= 1, "worker {k}: {w:?}");
            assert!(!w.alive);
        }
    }
}

// ----- random scenarios ----------------------------------------------------------------------

/// One thing the world can do next.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// A starting worker reports ready.
    Ready(WorkerKey),
    /// A starting worker dies before it is ready (a bad deploy).
    CrashPending(WorkerKey),
    /// A worker asked to stop exits gracefully (otherwise it ignores SIGTERM until killed).
    ExitGraceful(WorkerKey),
    /// A killed worker's exit is reported.
    ExitKilled(WorkerKey),
    /// A ready worker crashes (only in scenarios with `crash_ready`).
    CrashReady(WorkerKey),
    /// A reload request arrives.
    Reload,
    /// Time jumps to the next deadline (ready or stop timeouts, restarts).
    Advance,
    /// Some time passes, maybe before any deadline.
    Tick,
}

#[derive(Debug, Clone)]
struct Scenario {
    groups: Vec<GroupRules>,
    /// Ready workers may crash.
    crash_ready: bool,
    /// The initial start is not disturbed (no crash, timeout or spawn failure before
    /// FleetReady); otherwise starts fail often.
    boot_ok: bool,
    /// Weight of "dies before ready" against 4 for "becomes ready".
    crash_weight: usize,
    /// Bit n set: the n-th spawn (mod 64) fails.
    fail_mask: u64,
    max_reloads: u32,
    reload_weight: usize,
    /// Stop the fleet at this step (and force it `force_after` steps later).
    stop_at: Option<usize>,
    force_after: Option<usize>,
    choices: Vec<u16>,
}

fn possible_moves(sim: &Sim, sc: &Scenario, reloads: u32) -> Vec<Move> {
    let booting = sc.boot_ok && sim.phase == MPhase::Starting;
    let mut moves = Vec::new();
    for (k, w) in &sim.w {
        if !w.alive {
            continue;
        }
        if w.killed {
            moves.push(Move::ExitKilled(*k));
        } else if w.stop_at.is_some() {
            moves.extend([Move::ExitGraceful(*k); 2]);
        } else if !w.ready {
            moves.extend([Move::Ready(*k); 4]);
            if !booting {
                moves.extend(std::iter::repeat_n(Move::CrashPending(*k), sc.crash_weight));
            }
        } else if sc.crash_ready {
            moves.push(Move::CrashReady(*k));
        }
    }
    if reloads < sc.max_reloads {
        moves.extend(std::iter::repeat_n(Move::Reload, sc.reload_weight));
    }
    if !booting {
        if sim.fleet.poll_timeout().is_some() {
            moves.push(Move::Advance);
        }
        moves.push(Move::Tick);
    }
    moves
}

fn run_scenario(sc: &Scenario) -> Sim {
    let mut sim = Sim::new(sc.groups.clone(), backoff());
    if !sc.boot_ok {
        sim.fail_mask = sc.fail_mask;
    }
    sim.start();
    let mut reloads = 0;
    for (step, &c) in sc.choices.iter().enumerate() {
        if sim.phase == MPhase::Running {
            sim.fail_mask = sc.fail_mask;
        }
        if sc.stop_at == Some(step) {
            if sim.trace {
                eprintln!("{:>6?} move Stop", sim.now);
            }
            sim.stop(false);
        }
        if sc
            .stop_at
            .zip(sc.force_after)
            .is_some_and(|(s, f)| step == s + f)
        {
            if sim.trace {
                eprintln!("{:>6?} move Stop(force)", sim.now);
            }
            sim.stop(true);
        }
        let moves = possible_moves(&sim, sc, reloads);
        if moves.is_empty() {
            break;
        }
        let m = moves[c as usize % moves.len()];
        if sim.trace {
            eprintln!("{:>6?} move {m:?}", sim.now);
        }
        match m {
            Move::Ready(k) => sim.ready(k),
            Move::CrashPending(k) => sim.exit(k, ExitStatus::Code(1), "TypeError: bad deploy\n"),
            Move::ExitGraceful(k) => sim.exit_ok(k),
            Move::ExitKilled(k) => sim.exit(k, ExitStatus::Signal(SIGKILL), ""),
            Move::CrashReady(k) => sim.exit(k, ExitStatus::Signal(11), "segfault\n"),
            Move::Reload => {
                reloads += 1;
                sim.reload();
            }
            Move::Advance => {
                sim.advance_to_deadline();
            }
            Move::Tick => sim.advance(ms(300)),
        }
    }
    sim.finish();
    if std::env::var_os("FLEET_STATS").is_some() {
        print_stats(&sim);
    }
    sim
}

/// `FLEET_STATS=1`: one line per case, to check what the random scenarios exercise.
fn print_stats(sim: &Sim) {
    let ev = sim.events_since(0);
    let count = |f: &dyn Fn(&Event) -> bool| ev.iter().filter(|e| f(e)).count();
    let outcome = |o: ReloadOutcome| move |e: &Event| matches!(e, Event::ReloadDone(r) | Event::ReloadFailed(r) if r.outcome == o);
    let replaced: usize = ev
        .iter()
        .map(|e| match e {
            Event::ReloadDone(r) | Event::ReloadFailed(r) => r.replaced.len(),
            _ => 0,
        })
        .sum();
    let stats = [
        ("ready", count(&|e| matches!(e, Event::FleetReady))),
        (
            "startfailed",
            count(&|e| matches!(e, Event::StartFailed { .. })),
        ),
        ("done", count(&outcome(ReloadOutcome::Done))),
        ("failed", count(&outcome(ReloadOutcome::Failed))),
        ("cancelled", count(&outcome(ReloadOutcome::Cancelled))),
        (
            "coalesced",
            count(&|e| matches!(e, Event::ReloadStart { tickets, .. } if tickets.len() > 1)),
        ),
        ("replaced", replaced),
        (
            "stoptimeout",
            count(&|e| matches!(e, Event::WorkerStopTimeout { .. })),
        ),
        (
            "readytimeout",
            count(&|e| matches!(e, Event::WorkerReadyTimeout { .. })),
        ),
        (
            "restarts",
            count(&|e| {
                matches!(
                    e,
                    Event::WorkerExit {
                        restart_in: Some(_),
                        ..
                    }
                )
            }),
        ),
        (
            "notified",
            sim.w.values().map(|w| w.notifies as usize).sum(),
        ),
    ];
    let line: Vec<String> = stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("STATS {}", line.join(" "));
}

/// Groups for a scenario: group 0 is always reloadable; `order` forces every group's order.
fn scenario(
    order: Option<Order>,
    counts: std::ops::RangeInclusive<u32>,
    parallel: std::ops::RangeInclusive<u32>,
    crash_ready: bool,
    allow_stop: bool,
    max_reloads: std::ops::RangeInclusive<u32>,
    reload_weight: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(
            (counts, parallel, prop::bool::weighted(0.75), any::<bool>()),
            1..=3,
        ),
        (
            prop::bool::weighted(0.85),
            prop::sample::select(vec![0usize, 0, 1, 2]),
            any::<[u64; 3]>(),
        ),
        (max_reloads, reload_weight),
        prop::option::weighted(0.3, (0usize..150, prop::option::of(0usize..40))),
        prop::collection::vec(any::<u16>(), 20..150),
    )
        .prop_map(
            move |(
                groups,
                (boot_ok, crash_weight, [a, b, c]),
                (max_reloads, reload_weight),
                stop,
                choices,
            )| {
                let stop = stop.filter(|_| allow_stop);
                let groups = groups
                    .into_iter()
                    .enumerate()
                    .map(|(i, (count, parallel, reloadable, stop_first))| {
                        let order = order.unwrap_or(if stop_first {
                            Order::StopFirst
                        } else {
                            Order::StartFirst
                        });
                        GroupRules {
                            parallel,
                            ..rules(&format!("g{i}"), count, reloadable || i == 0, order)
                        }
                    })
                    .collect();
                Scenario {
                    groups,
                    crash_ready,
                    boot_ok,
                    crash_weight,
                    // About one spawn in eight fails to start.
                    fail_mask: a & b & c,
                    max_reloads,
                    reload_weight,
                    stop_at: stop.map(|(at, _)| at),
                    force_after: stop.and_then(|(_, force)| force),
                    choices,
                }
            },
        )
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(256);
    // Reproducible by default; `PROPTEST_RNG_SEED=<n>` explores other sequences.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0xBA70_F1EE);
    }
    if let Some(cases) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        config.cases = cases;
    }
    // Only this file may be written by these tests: no regression files.
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config())]

    /// Properties 1-6 with start-first groups and no crash of a ready worker: capacity
    /// never dips, one replacement at a time, every old worker stopped exactly once per
    /// completed pass, nothing stopped after a failure, non-reloadable workers only notified,
    /// coalesced requests answered by one extra pass.
    #[test]
    fn start_first_reloads(sc in scenario(Some(Order::StartFirst), 1..=3, 1..=1, false, true, 1..=4, 1..=2)) {
        run_scenario(&sc);
    }

    /// Properties 2-7 with stop-first groups: the old worker exits before its replacement is
    /// spawned, and at most one worker of a group is missing at any time.
    #[test]
    fn stop_first_reloads(sc in scenario(Some(Order::StopFirst), 1..=3, 1..=1, false, true, 1..=4, 1..=2)) {
        run_scenario(&sc);
    }

    /// Mixed orders with crashes of ready workers, spawn failures and stops: every ordering
    /// rule that does not depend on capacity, and every ticket answered once.
    #[test]
    fn mixed_with_crashes(sc in scenario(None, 1..=3, 1..=1, true, true, 1..=4, 1..=2)) {
        run_scenario(&sc);
    }

    /// Properties 1-9 with `parallel` above 1: at most `parallel` replacements at once,
    /// capacity at least `count` (start-first) or `count - parallel` (stop-first), the
    /// process bound, an abort that stops the replacements still booting, and steering.
    #[test]
    fn parallel_reloads(sc in scenario(None, 1..=5, 2..=4, false, true, 1..=4, 1..=2)) {
        run_scenario(&sc);
    }

    /// Parallel reloads with crashes of ready workers, spawn failures and stops.
    #[test]
    fn parallel_with_crashes(sc in scenario(None, 1..=5, 1..=4, true, true, 1..=4, 1..=2)) {
        run_scenario(&sc);
    }

    /// Property 6 under pressure: many requests, most of them during a running pass.
    #[test]
    fn coalesced_requests(sc in scenario(None, 1..=3, 1..=1, false, false, 2..=8, 3..=6)) {
        run_scenario(&sc);
    }
}

// ----- deterministic unit tests --------------------------------------------------------------

fn started(groups: Vec<GroupRules>) -> Sim {
    let mut sim = Sim::new(groups, backoff());
    sim.start();
    sim.ready_all();
    assert_eq!(sim.fleet_ready_events, 1);
    sim
}

fn web(count: u32, order: Order) -> Vec<GroupRules> {
    vec![rules("web", count, true, order)]
}

#[test]
fn start_spawns_every_slot_and_is_ready_only_when_all_are() {
    let mut sim = Sim::new(
        vec![
            rules("web", 2, true, Order::StartFirst),
            rules("bg", 1, false, Order::StartFirst),
        ],
        backoff(),
    );
    sim.start();
    let spawns: Vec<_> = sim
        .actions_since(0)
        .into_iter()
        .filter(|a| matches!(a, Action::Spawn { .. }))
        .collect();
    assert_eq!(
        spawns,
        vec![
            Action::Spawn {
                key: 1,
                group: 0,
                slot: 0,
                generation: 1
            },
            Action::Spawn {
                key: 2,
                group: 0,
                slot: 1,
                generation: 1
            },
            Action::Spawn {
                key: 3,
                group: 1,
                slot: 0,
                generation: 1
            },
        ]
    );
    let spawned = sim
        .events_since(0)
        .iter()
        .filter(|e| matches!(e, Event::WorkerSpawned { .. }))
        .count();
    assert_eq!(spawned, 3);
    assert!(sim
        .snapshot()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Starting));
    // A second Start does nothing.
    let m = sim.mark();
    sim.start();
    assert!(sim.actions_since(m).is_empty());

    sim.ready(1);
    sim.ready(3);
    assert!(!sim.events_since(0).contains(&Event::FleetReady));
    // Readiness reported twice does not count twice.
    sim.ready(1);
    assert!(!sim.events_since(0).contains(&Event::FleetReady));
    let m = sim.mark();
    sim.ready(2);
    let events = sim.events_since(m);
    assert_eq!(events.last(), Some(&Event::FleetReady));
    let snap = sim.snapshot();
    assert_eq!(snap.generation, 1);
    assert!(!snap.reloading && !snap.stopping);
    assert_eq!(snap.workers.len(), 3);
    assert!(snap
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Ready && w.restarts == 0));
    assert_eq!(
        sim.fleet.poll_timeout(),
        None,
        "nothing to wait for once all are ready"
    );
}

#[test]
fn crash_before_ready_during_start_fails_the_start_and_stops_the_fleet() {
    let mut sim = Sim::new(web(3, Order::StartFirst), backoff());
    sim.start();
    sim.ready(1);
    let m = sim.mark();
    sim.exit(2, ExitStatus::Code(1), "Error: Cannot find module 'x'\n");
    let events = sim.events_since(m);
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::StartFailed { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("StartFailed");
    assert!(
        reason.contains("web#1 exited with code 1 before it was ready"),
        "{reason}"
    );
    assert!(reason.contains("Cannot find module"), "{reason}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::WorkerExit {
            slot: 1,
            cause: ExitCause::Crashed,
            restart_in: None,
            ..
        }
    )));
    let mut stops = sim.stops_since(m);
    stops.sort();
    assert_eq!(stops, vec![1, 3]);
    assert!(
        sim.spawns_since(m).is_empty(),
        "no restart after a failed start"
    );
    assert!(sim.snapshot().stopping);
    // A reload now is refused.
    let t = sim.reload();
    assert_eq!(sim.report_for(t).outcome, ReloadOutcome::Cancelled);
    assert_eq!(
        sim.report_for(t).cancel_reason.as_deref(),
        Some("the fleet is stopping")
    );
    sim.exit_ok(1);
    assert!(!sim.fleet.is_stopped());
    let m = sim.mark();
    sim.exit_ok(3);
    assert_eq!(sim.events_since(m).last(), Some(&Event::Stopped));
    assert!(sim.fleet.is_stopped());
    assert!(sim.snapshot().workers.is_empty());
    assert_eq!(sim.fleet.poll_timeout(), None);
}

#[test]
fn spawn_failure_during_start_stops_the_others_once_they_have_pids() {
    let mut sim = Sim::new(web(3, Order::StartFirst), backoff());
    sim.fail_next = 1;
    sim.start();
    let events = sim.events_since(0);
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::StartFailed { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("StartFailed");
    assert!(
        reason.contains("could not be started: spawn node ENOENT"),
        "{reason}"
    );
    // Workers 2 and 3 were being spawned when the start failed: each is asked to stop as
    // soon as its pid is known.
    let acts = sim.actions_since(0);
    let pos = |a: &Action| acts.iter().position(|x| x == a).unwrap();
    let pid2 = sim.pid(2);
    let pid3 = sim.pid(3);
    assert!(
        pos(&Action::Stop { key: 2, pid: pid2 })
            > pos(&Action::Spawn {
                key: 2,
                group: 0,
                slot: 1,
                generation: 1
            })
    );
    assert!(
        pos(&Action::Stop { key: 3, pid: pid3 })
            > pos(&Action::Spawn {
                key: 3,
                group: 0,
                slot: 2,
                generation: 1
            })
    );
    sim.exit_ok(2);
    sim.exit_ok(3);
    assert!(sim.fleet.is_stopped());
}

#[test]
fn ready_timeout_during_start_fails_the_start() {
    let mut sim = Sim::new(web(2, Order::StartFirst), backoff());
    sim.start();
    sim.ready(1);
    sim.advance(READY_TIMEOUT - ms(1));
    assert!(sim.kills_since(0).is_empty());
    let m = sim.mark();
    sim.advance(ms(1));
    assert_eq!(sim.kills_since(m), vec![2]);
    assert!(sim
        .events_since(m)
        .iter()
        .any(|e| matches!(e, Event::WorkerReadyTimeout { slot: 1, timeout, .. } if *timeout == READY_TIMEOUT)));
    let m = sim.mark();
    sim.exit(2, ExitStatus::Signal(SIGKILL), "");
    let events = sim.events_since(m);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StartFailed { reason } if reason.contains("not ready within 1000 ms"))));
    assert_eq!(sim.stops_since(m), vec![1]);
    sim.exit_ok(1);
    assert!(sim.fleet.is_stopped());
}

#[test]
fn crash_while_running_restarts_with_doubling_backoff_and_resets() {
    let mut sim = started(web(2, Order::StartFirst));
    sim.advance(Duration::from_secs(1));

    // First crash: restart after backoff.delay(1).
    let m = sim.mark();
    sim.exit(1, ExitStatus::Code(1), "oops\n");
    let events = sim.events_since(m);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::WorkerExit { slot: 0, cause: ExitCause::Crashed, status: Some(ExitStatus::Code(1)), restart_in: Some(d), detail, .. }
            if *d == backoff().delay(1) && detail == "exited with code 1"
    )), "{events:?}");
    let row = sim
        .snapshot()
        .workers
        .into_iter()
        .find(|w| w.slot == 0)
        .unwrap();
    assert_eq!(row.key, None);
    assert_eq!(row.state, WorkerState::Starting);
    assert_eq!(row.restarts, 1);
    assert_eq!(row.last_exit.as_deref(), Some("exited with code 1"));
    let crash_at = sim.now;
    assert_eq!(row.restart_at, Some(sim.at(crash_at + ms(100))));
    assert_eq!(sim.fleet.poll_timeout(), Some(sim.at(crash_at + ms(100))));
    sim.advance(ms(99));
    assert!(
        sim.spawns_since(m).is_empty(),
        "no restart before the backoff"
    );
    sim.advance(ms(1));
    assert_eq!(sim.spawns_since(m), vec![3]);
    assert_eq!(sim.w[&3].slot, 0);
    assert_eq!(sim.w[&3].generation, 1);

    // Quick crashes double the delay: 200 ms, then 400 ms.
    let mut key = 3;
    for n in 2..=3u32 {
        sim.ready(key);
        sim.advance(ms(50));
        let m = sim.mark();
        sim.crash(key);
        let d = backoff().delay(n);
        assert_eq!(d, ms(100) * (1 << (n - 1)));
        assert!(sim
            .events_since(m)
            .iter()
            .any(|e| matches!(e, Event::WorkerExit { restart_in: Some(x), .. } if *x == d)));
        sim.advance(d - ms(1));
        assert!(sim.spawns_since(m).is_empty());
        sim.advance(ms(1));
        let spawns = sim.spawns_since(m);
        assert_eq!(spawns.len(), 1);
        key = spawns[0];
    }
    // A crash before ready is a quick failure too: 800 ms.
    let m = sim.mark();
    sim.advance(ms(10));
    sim.crash(key);
    assert!(sim.events_since(m).iter().any(|e| matches!(
        e,
        Event::WorkerExit { restart_in: Some(x), detail, .. } if *x == ms(800) && detail == "exited with code 1 before it was ready"
    )));
    let row = sim
        .snapshot()
        .workers
        .into_iter()
        .find(|w| w.slot == 0)
        .unwrap();
    assert_eq!(row.restarts, 4);
    assert_eq!(
        row.last_exit.as_deref(),
        Some("exited with code 1 before it was ready")
    );
    sim.advance(ms(800));
    let key = *sim.spawns_since(m).last().unwrap();
    sim.ready(key);

    // Up for reset_after: the count starts over.
    sim.advance(backoff().reset_after);
    let m = sim.mark();
    sim.crash(key);
    assert!(sim
        .events_since(m)
        .iter()
        .any(|e| matches!(e, Event::WorkerExit { restart_in: Some(x), .. } if *x == ms(100))));
    assert_eq!(
        sim.snapshot()
            .workers
            .iter()
            .find(|w| w.slot == 0)
            .unwrap()
            .restarts,
        5
    );
    // The other slot was never touched.
    let other = sim
        .snapshot()
        .workers
        .into_iter()
        .find(|w| w.slot == 1)
        .unwrap();
    assert_eq!(
        (other.key, other.restarts, other.last_exit),
        (Some(2), 0, None)
    );
    sim.finish();
}

#[test]
fn backoff_is_capped() {
    let mut sim = started(web(1, Order::StartFirst));
    let mut key = 1;
    let mut delays = Vec::new();
    for _ in 0..7 {
        let m = sim.mark();
        sim.crash(key);
        let d = sim
            .events_since(m)
            .iter()
            .find_map(|e| match e {
                Event::WorkerExit { restart_in, .. } => *restart_in,
                _ => None,
            })
            .unwrap();
        delays.push(d.as_millis() as u64);
        sim.advance(d);
        key = sim.spawns_since(m)[0];
        sim.ready(key);
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1600, 1600, 1600]);
    sim.finish();
}

#[test]
fn ready_timeout_while_running_kills_and_counts_as_failure() {
    let mut sim = started(web(1, Order::StartFirst));
    sim.crash(1);
    sim.advance(ms(100));
    let key = 2;
    assert!(sim.w[&key].alive);
    let spawned_at = sim.now;
    assert_eq!(
        sim.fleet.poll_timeout(),
        Some(sim.at(spawned_at + READY_TIMEOUT))
    );
    let m = sim.mark();
    sim.advance(READY_TIMEOUT - ms(1));
    assert!(sim.kills_since(m).is_empty());
    sim.advance(ms(1));
    assert_eq!(sim.kills_since(m), vec![key]);
    assert!(sim
        .events_since(m)
        .iter()
        .any(|e| matches!(e, Event::WorkerReadyTimeout { .. })));
    // Still shown as starting (it was not asked to stop), and no deadline until it exits.
    assert_eq!(sim.fleet.poll_timeout(), None);
    // Ready after the kill is ignored.
    let m = sim.mark();
    sim.fleet.handle(sim.t(), Input::Ready { key });
    assert!(sim.fleet.poll_action().is_none());
    sim.exit(key, ExitStatus::Signal(SIGKILL), "");
    let events = sim.events_since(m);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::WorkerExit { cause: ExitCause::Crashed, detail, restart_in: Some(d), .. }
                if detail == "not ready within 1000 ms" && *d == ms(200)
        )),
        "{events:?}"
    );
    let row = &sim.snapshot().workers[0];
    assert_eq!(row.restarts, 2);
    assert_eq!(row.last_exit.as_deref(), Some("not ready within 1000 ms"));
    sim.finish();
}

#[test]
fn stop_kills_after_stop_timeout() {
    let mut sim = started(web(2, Order::StartFirst));
    sim.advance(ms(500));
    let m = sim.mark();
    sim.stop(false);
    let mut stops = sim.stops_since(m);
    stops.sort();
    assert_eq!(stops, vec![1, 2]);
    assert!(sim
        .snapshot()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Stopping));
    let stop_at = sim.now;
    assert_eq!(
        sim.fleet.poll_timeout(),
        Some(sim.at(stop_at + STOP_TIMEOUT))
    );
    sim.exit_ok(1);
    sim.advance(STOP_TIMEOUT - ms(1));
    assert!(sim.kills_since(m).is_empty());
    sim.advance(ms(1));
    assert_eq!(sim.kills_since(m), vec![2]);
    assert!(sim.events_since(m).iter().any(|e| matches!(
        e,
        Event::WorkerStopTimeout { slot: 1, timeout, .. } if *timeout == STOP_TIMEOUT
    )));
    // A second graceful stop changes nothing.
    let m2 = sim.mark();
    sim.stop(false);
    assert!(sim.actions_since(m2).is_empty());
    sim.exit(2, ExitStatus::Signal(SIGKILL), "");
    let events = sim.events_since(m);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::WorkerExit {
            slot: 1,
            cause: ExitCause::Requested,
            status: Some(ExitStatus::Signal(9)),
            restart_in: None,
            ..
        }
    )));
    assert_eq!(events.last(), Some(&Event::Stopped));
    assert!(sim.spawns_since(m).is_empty());
    sim.finish();
}

#[test]
fn forced_stop_kills_everything_at_once() {
    let mut sim = started(vec![
        rules("web", 2, true, Order::StartFirst),
        rules("gw", 1, false, Order::StartFirst),
    ]);
    let m = sim.mark();
    sim.stop(true);
    let mut kills = sim.kills_since(m);
    kills.sort();
    assert_eq!(kills, vec![1, 2, 3]);
    assert!(sim.stops_since(m).is_empty());
    assert!(sim
        .snapshot()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Stopping));
    assert_eq!(sim.fleet.poll_timeout(), None);
    for k in [1, 2, 3] {
        sim.exit(k, ExitStatus::Signal(SIGKILL), "");
    }
    assert_eq!(sim.events_since(m).last(), Some(&Event::Stopped));
    sim.finish();
}

#[test]
fn forced_stop_after_a_graceful_one_kills_the_rest() {
    let mut sim = started(web(3, Order::StartFirst));
    sim.stop(false);
    sim.exit_ok(1);
    let m = sim.mark();
    sim.stop(true);
    let mut kills = sim.kills_since(m);
    kills.sort();
    assert_eq!(kills, vec![2, 3]);
    sim.exit(2, ExitStatus::Signal(SIGKILL), "");
    sim.exit(3, ExitStatus::Signal(SIGKILL), "");
    assert!(sim.fleet.is_stopped());
    // Stopping a stopped fleet does nothing.
    let m = sim.mark();
    sim.stop(true);
    assert!(sim.actions_since(m).is_empty());
    sim.finish();
}

#[test]
fn stop_during_a_reload_cancels_it_and_spawns_nothing_more() {
    let mut sim = started(web(3, Order::StartFirst));
    let t1 = sim.reload();
    let r1 = 4;
    sim.ready(r1); // slot 0 replaced, old worker 1 retiring
    let t2 = sim.reload(); // queued behind the running pass
    let t3 = sim.reload();
    assert_eq!(sim.reload_starts, 1);
    let m = sim.mark();
    sim.stop(false);
    let report = sim.report_for(t1);
    assert_eq!(report.outcome, ReloadOutcome::Cancelled);
    assert_eq!(report.tickets, vec![t1]);
    assert_eq!(
        report.cancel_reason.as_deref(),
        Some("the fleet is stopping")
    );
    assert_eq!(report.replaced.len(), 1);
    // The queued requests are answered too, without becoming the status's last reload.
    let queued = sim.report_for(t2);
    assert_eq!(queued.tickets, vec![t2, t3]);
    assert_eq!(queued.outcome, ReloadOutcome::Cancelled);
    assert_eq!(sim.snapshot().last_reload, Some(report));
    // Everybody is asked to stop, the starting replacement of slot 1 included.
    let mut stops = sim.stops_since(m);
    stops.sort();
    assert_eq!(stops, vec![2, 3, 4, 5]);
    // The replacement reporting ready now is ignored: nothing is promoted or stopped.
    let m2 = sim.mark();
    sim.fleet.handle(sim.t(), Input::Ready { key: 5 });
    assert!(sim.fleet.poll_action().is_none());
    sim.exit_all_stopping();
    sim.advance(Duration::from_secs(60));
    assert!(sim.spawns_since(m).is_empty(), "no spawn after the stop");
    assert!(sim.events_since(m2).contains(&Event::Stopped));
    assert_eq!(sim.reload_starts, 1);
    sim.finish();
}

#[test]
fn stop_during_a_stop_first_reload_does_not_spawn_the_replacement() {
    let mut sim = started(web(2, Order::StopFirst));
    let t = sim.reload();
    assert_eq!(sim.stops_since(0), vec![1]);
    let m = sim.mark();
    sim.stop(false);
    assert_eq!(sim.report_for(t).outcome, ReloadOutcome::Cancelled);
    assert_eq!(sim.stops_since(m), vec![2]);
    sim.exit_ok(1);
    sim.exit_ok(2);
    assert!(sim.spawns_since(m).is_empty());
    assert!(sim.fleet.is_stopped());
    sim.finish();
}

#[test]
fn reload_while_starting_is_cancelled() {
    let mut sim = Sim::new(web(2, Order::StartFirst), backoff());
    sim.start();
    let m = sim.mark();
    let t = sim.reload();
    let events = sim.events_since(m);
    assert_eq!(events.len(), 1);
    let Event::ReloadFailed(report) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(report.outcome, ReloadOutcome::Cancelled);
    assert_eq!(report.tickets, vec![t]);
    assert_eq!(
        report.cancel_reason.as_deref(),
        Some("the fleet is still starting")
    );
    assert_eq!(report.generation, 1);
    // Not queued: nothing happens once the fleet is ready.
    sim.ready_all();
    assert_eq!(sim.reload_starts, 0);
    assert_eq!(sim.fleet.generation(), 1);
    assert!(!sim.snapshot().reloading);
    sim.finish();
}

#[test]
fn start_first_reload_replaces_one_slot_at_a_time() {
    let mut sim = started(web(3, Order::StartFirst));
    let m = sim.mark();
    let t = sim.reload();
    assert!(sim.events_since(m).contains(&Event::ReloadStart {
        generation: 2,
        tickets: vec![t],
        due: 3
    }));
    assert_eq!(sim.spawns_since(m), vec![4]);
    assert_eq!(sim.w[&4].generation, 2);
    assert!(
        sim.stops_since(m).is_empty(),
        "nothing stopped before the replacement is ready"
    );
    assert!(sim.snapshot().reloading);
    sim.ready(4);
    assert_eq!(sim.stops_since(m), vec![1]);
    assert_eq!(
        sim.spawns_since(m),
        vec![4, 5],
        "next slot starts while the old worker drains"
    );
    assert!(sim.events_since(m).iter().any(|e| matches!(
        e,
        Event::ReloadProgress {
            slot: 0,
            replaced: 1,
            due: 3,
            generation: 2,
            ..
        }
    )));
    sim.ready(5);
    assert_eq!(sim.stops_since(m), vec![1, 2]);
    // Two old workers draining and parallel 1: at most count + 2 processes, so slot 2
    // waits until one of them has exited.
    assert_eq!(
        sim.spawns_since(m),
        vec![4, 5],
        "bounded by count + 2 x parallel"
    );
    sim.exit_ok(1);
    assert_eq!(sim.spawns_since(m), vec![4, 5, 6]);
    sim.ready(6);
    assert_eq!(sim.stops_since(m), vec![1, 2, 3]);
    // The pass ends only when the retiring workers have exited.
    sim.exit_ok(3);
    assert!(sim.snapshot().reloading);
    sim.exit_ok(2);
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Done);
    assert_eq!(report.due, 3);
    let pairs: Vec<_> = report
        .replaced
        .iter()
        .map(|r| (r.slot, r.old_pid, r.new_pid))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (0, Some(sim.pid(1)), sim.pid(4)),
            (1, Some(sim.pid(2)), sim.pid(5)),
            (2, Some(sim.pid(3)), sim.pid(6)),
        ]
    );
    let snap = sim.snapshot();
    assert!(!snap.reloading);
    assert_eq!(snap.generation, 2);
    assert!(snap
        .workers
        .iter()
        .all(|w| w.generation == 2 && w.state == WorkerState::Ready));
    assert_eq!(snap.last_reload, Some(report));
    sim.finish();
}

#[test]
fn stop_first_reload_stops_before_it_spawns() {
    let mut sim = started(web(2, Order::StopFirst));
    let m = sim.mark();
    let t = sim.reload();
    assert_eq!(sim.stops_since(m), vec![1]);
    assert!(
        sim.spawns_since(m).is_empty(),
        "no replacement before the old worker exits"
    );
    // The old worker ignores SIGTERM: killed after stop_timeout, then replaced.
    sim.advance(STOP_TIMEOUT);
    assert_eq!(sim.kills_since(m), vec![1]);
    assert!(sim.spawns_since(m).is_empty());
    sim.exit(1, ExitStatus::Signal(SIGKILL), "");
    assert_eq!(sim.spawns_since(m), vec![3]);
    assert_eq!(sim.w[&3].slot, 0);
    assert_eq!(
        sim.stops_since(m),
        vec![1],
        "slot 1 waits for slot 0's replacement"
    );
    sim.ready(3);
    assert_eq!(sim.stops_since(m), vec![1, 2]);
    sim.exit_ok(2);
    sim.ready(4);
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Done);
    let pairs: Vec<_> = report
        .replaced
        .iter()
        .map(|r| (r.slot, r.old_pid, r.new_pid))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (0, Some(sim.pid(1)), sim.pid(3)),
            (1, Some(sim.pid(2)), sim.pid(4))
        ]
    );
    sim.finish();
}

#[test]
fn stop_first_failure_refills_the_emptied_slot_with_backoff() {
    let mut sim = started(web(2, Order::StopFirst));
    let t = sim.reload();
    sim.exit_ok(1);
    let replacement = 3;
    assert_eq!(sim.w[&replacement].slot, 0);
    let m = sim.mark();
    sim.exit(
        replacement,
        ExitStatus::Code(1),
        "SyntaxError: Unexpected token\n",
    );
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Failed);
    let failure = report.failure.as_ref().unwrap();
    assert_eq!(
        (failure.group, failure.slot, failure.pid),
        (0, 0, Some(sim.pid(replacement)))
    );
    assert!(sim.events_since(m).iter().any(|e| matches!(
        e,
        Event::WorkerExit { slot: 0, cause: ExitCause::Crashed, restart_in: Some(d), .. } if *d == ms(100)
    )));
    assert!(
        sim.stops_since(m).is_empty(),
        "the other old worker keeps serving"
    );
    let snap = sim.snapshot();
    assert!(!snap.reloading);
    let empty = snap.workers.iter().find(|w| w.slot == 0).unwrap();
    assert_eq!((empty.key, empty.state), (None, WorkerState::Starting));
    assert_eq!(empty.restart_at, Some(sim.at(sim.now + ms(100))));
    sim.advance(ms(100));
    assert_eq!(sim.spawns_since(m), vec![4]);
    assert_eq!((sim.w[&4].slot, sim.w[&4].generation), (0, 2));
    // The refill fails too: the next delay doubles.
    let m = sim.mark();
    sim.crash(4);
    assert!(sim
        .events_since(m)
        .iter()
        .any(|e| matches!(e, Event::WorkerExit { restart_in: Some(d), .. } if *d == ms(200))));
    sim.advance(ms(200));
    let k = sim.spawns_since(m)[0];
    sim.ready(k);
    assert!(
        sim.w[&2].alive && sim.w[&2].stops == 0,
        "worker 2 was never stopped"
    );
    sim.finish();
}

#[test]
fn failed_replacement_aborts_and_the_report_carries_status_and_stderr() {
    let mut sim = started(web(3, Order::StartFirst));
    let t = sim.reload();
    sim.ready(4); // slot 0 done
    sim.exit_ok(1);
    let m = sim.mark();
    let stderr = "at Object.<anonymous> (/srv/app.js:3:7)\nTypeError: x is not a function\n";
    sim.exit(5, ExitStatus::Code(3), stderr);
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Failed);
    let failure = report.failure.clone().unwrap();
    assert_eq!(failure.group, 0);
    assert_eq!(failure.slot, 1);
    assert_eq!(failure.pid, Some(sim.pid(5)));
    assert_eq!(failure.status, Some(ExitStatus::Code(3)));
    assert_eq!(failure.stderr_tail, stderr);
    assert_eq!(failure.reason, "exited with code 3 before it was ready");
    assert_eq!(report.replaced.len(), 1);
    assert_eq!(report.due, 3);
    // Nothing else is stopped or spawned; workers 2 and 3 keep serving the old code.
    assert!(sim.stops_since(m).is_empty());
    assert!(sim.spawns_since(m).is_empty());
    assert_eq!(sim.snapshot().last_reload, Some(report));
    assert_eq!(sim.serving(0, 1), vec![2]);
    assert_eq!(sim.serving(0, 2), vec![3]);
    sim.advance(Duration::from_secs(60));
    assert!(sim.stops_since(m).is_empty() && sim.spawns_since(m).is_empty());
    // The next reload retries them.
    // (Worker 4 of slot 0 was spawned before this request too: the cutoff is by spawn order.)
    let t2 = sim.reload();
    sim.cooperate();
    assert_eq!(sim.report_for(t2).outcome, ReloadOutcome::Done);
    assert_eq!(sim.report_for(t2).due, 3);
    sim.finish();
}

#[test]
fn failure_waits_for_retiring_workers_before_reporting() {
    let mut sim = started(web(2, Order::StartFirst));
    let t = sim.reload();
    sim.ready(3); // worker 1 retiring
    sim.crash(4);
    assert!(
        !sim.answers.contains_key(&t),
        "report only when worker 1 has exited"
    );
    assert!(sim.snapshot().reloading);
    sim.exit_ok(1);
    assert_eq!(sim.report_for(t).outcome, ReloadOutcome::Failed);
    sim.finish();
}

#[test]
fn a_stop_after_a_failure_keeps_the_failure_in_the_report() {
    let mut sim = started(web(2, Order::StartFirst));
    let t = sim.reload();
    sim.ready(3); // worker 1 retiring
    sim.crash(4); // the pass has failed, waiting for worker 1
    sim.stop(false);
    sim.finish();
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Failed);
    assert!(report.failure.is_some());
    assert!(report.cancel_reason.is_none());
}

#[test]
fn ready_timeout_and_spawn_failure_of_a_replacement_are_failures() {
    let mut sim = started(web(2, Order::StartFirst));
    let t = sim.reload();
    sim.advance(READY_TIMEOUT);
    assert_eq!(sim.kills_since(0), vec![3]);
    sim.exit(3, ExitStatus::Signal(SIGKILL), "still booting\n");
    let failure = sim.report_for(t).failure.unwrap();
    assert_eq!(failure.reason, "not ready within 1000 ms");
    assert_eq!(failure.status, Some(ExitStatus::Signal(SIGKILL)));
    assert_eq!(failure.stderr_tail, "still booting\n");

    sim.fail_next = 1;
    let t = sim.reload();
    let failure = sim.report_for(t).failure.unwrap();
    assert_eq!(failure.pid, None);
    assert_eq!(failure.status, None);
    assert_eq!(
        failure.reason,
        "could not be started: spawn node ENOENT before it was ready"
    );
    assert!(
        sim.stops_since(0).is_empty(),
        "no old worker was ever stopped"
    );
    sim.finish();
}

#[test]
fn non_reloadable_groups_are_notified_once_per_pass_and_never_stopped() {
    let mut sim = started(vec![
        rules("gw", 2, false, Order::StartFirst),
        rules("web", 1, true, Order::StartFirst),
    ]);
    for pass in 0..2u32 {
        let m = sim.mark();
        let t = sim.reload();
        let notified: Vec<_> = sim
            .actions_since(m)
            .into_iter()
            .filter_map(|a| match a {
                Action::NotifyReload { key, pid } => Some((key, pid)),
                _ => None,
            })
            .collect();
        assert_eq!(notified, vec![(1, sim.pid(1)), (2, sim.pid(2))]);
        sim.ready_all();
        sim.exit_all_stopping();
        let report = sim.report_for(t);
        assert_eq!(report.outcome, ReloadOutcome::Done);
        assert_eq!(
            (report.notified, report.due, report.replaced.len()),
            (2, 1, 1)
        );
        assert_eq!(report.generation, 2 + pass);
    }
    for k in [1, 2] {
        assert_eq!(
            (
                sim.w[&k].stops,
                sim.w[&k].kills,
                sim.w[&k].notifies,
                sim.w[&k].generation
            ),
            (0, 0, 2, 1)
        );
    }
    sim.finish();
}

#[test]
fn coalesced_requests_share_exactly_one_more_pass() {
    let mut sim = started(web(2, Order::StartFirst));
    let t1 = sim.reload();
    let t2 = sim.reload();
    let t3 = sim.reload();
    let t4 = sim.reload();
    assert_eq!(sim.reload_starts, 1);
    sim.ready(3);
    sim.ready(4);
    let m = sim.mark();
    sim.exit_ok(1);
    sim.exit_ok(2);
    let events = sim.events_since(m);
    let starts: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::ReloadStart { .. }))
        .collect();
    // The cutoff is the newest request (t4, before worker 4 was spawned): only slot 0 is due.
    assert_eq!(
        starts,
        vec![&Event::ReloadStart {
            generation: 3,
            tickets: vec![t2, t3, t4],
            due: 1
        }]
    );
    assert_eq!(sim.report_for(t1).tickets, vec![t1]);
    sim.cooperate();
    let r = sim.report_for(t2);
    assert_eq!(
        (r.outcome, r.generation, r.tickets.clone()),
        (ReloadOutcome::Done, 3, vec![t2, t3, t4])
    );
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.reload_starts, 2, "no further pass");
    sim.finish();
}

#[test]
fn a_later_request_only_replaces_workers_spawned_before_it() {
    let mut sim = started(web(2, Order::StartFirst));
    let t1 = sim.reload();
    assert_eq!(sim.spawns_since(0), vec![1, 2, 3]); // replacement for slot 0 is key 3
    let t2 = sim.reload(); // cutoff: keys below 4
    sim.ready(3); // slot 0 replaced; replacement for slot 1 is key 4, after t2
    sim.exit_ok(1);
    let m = sim.mark();
    sim.ready(4);
    sim.exit_ok(2);
    assert_eq!(sim.report_for(t1).outcome, ReloadOutcome::Done);
    assert!(sim.events_since(m).contains(&Event::ReloadStart {
        generation: 3,
        tickets: vec![t2],
        due: 1
    }));
    // Pass 2 replaces only worker 3 (slot 0); worker 4 is fresh.
    assert_eq!(sim.spawns_since(m), vec![5]);
    assert_eq!(sim.w[&5].slot, 0);
    sim.ready(5);
    sim.exit_ok(3);
    let r2 = sim.report_for(t2);
    assert_eq!(r2.outcome, ReloadOutcome::Done);
    assert_eq!(r2.replaced.len(), 1);
    assert_eq!(
        (r2.replaced[0].slot, r2.replaced[0].old_pid),
        (0, Some(sim.pid(3)))
    );
    assert!(sim.w[&4].alive && sim.w[&4].stops == 0);
    assert_eq!(sim.w[&4].generation, 2);
    // A request made once both replacements of a pass exist: both predate it, so the extra
    // pass replaces both again.
    let t3 = sim.reload();
    sim.ready(6); // slot 0; slot 1's replacement 7 is spawned
    let t4 = sim.reload();
    sim.cooperate();
    assert_eq!(sim.report_for(t3).outcome, ReloadOutcome::Done);
    assert_eq!(sim.report_for(t3).replaced.len(), 2);
    let r4 = sim.report_for(t4);
    assert_eq!(
        (r4.outcome, r4.due, r4.replaced.len()),
        (ReloadOutcome::Done, 2, 2)
    );
    assert_eq!(sim.reload_starts, 4);
    sim.finish();
}

#[test]
fn an_extra_pass_may_find_nothing_to_do() {
    // stop-first: the request arrives while the pass waits for the old worker's exit, before
    // the replacement is spawned. The replacement is fresh for the extra pass.
    let mut sim = started(web(1, Order::StopFirst));
    let t1 = sim.reload();
    let t2 = sim.reload();
    let m = sim.mark();
    sim.exit_ok(1);
    sim.ready(2);
    let events = sim.events_since(m);
    assert!(
        events.contains(&Event::ReloadStart {
            generation: 3,
            tickets: vec![t2],
            due: 0
        }),
        "{events:?}"
    );
    assert_eq!(sim.report_for(t1).outcome, ReloadOutcome::Done);
    let r2 = sim.report_for(t2);
    assert_eq!(
        (r2.outcome, r2.due, r2.replaced.len(), r2.generation),
        (ReloadOutcome::Done, 0, 0, 3)
    );
    assert_eq!(sim.spawns_since(m), vec![2]);
    assert!(sim.stops_since(m).is_empty());
    assert_eq!(sim.snapshot().generation, 3);
    sim.finish();
}

#[test]
fn crash_of_the_old_worker_during_its_replacement_is_not_refilled_twice() {
    let mut sim = started(web(1, Order::StartFirst));
    let t = sim.reload();
    let m = sim.mark();
    sim.crash(1);
    assert!(sim.events_since(m).iter().any(|e| matches!(
        e,
        Event::WorkerExit {
            restart_in: None,
            ..
        }
    )));
    assert_eq!(sim.snapshot().workers[0].restarts, 1);
    sim.advance(ms(500));
    sim.ready(2);
    assert!(
        sim.spawns_since(m).is_empty(),
        "the replacement fills the slot"
    );
    let r = sim.report_for(t);
    assert_eq!(r.outcome, ReloadOutcome::Done);
    assert_eq!(r.replaced[0].old_pid, None);
    sim.finish();
}

#[test]
fn reload_fills_a_slot_waiting_for_its_restart() {
    // A slot waiting for its crash restart is due: the pass spawns its replacement
    // instead, and the pending restart is dropped.
    let mut sim = started(web(2, Order::StartFirst));
    sim.crash(1);
    let m = sim.mark();
    let t = sim.reload();
    assert_eq!(sim.spawns_since(m), vec![3]);
    assert_eq!(sim.w[&3].slot, 0);
    sim.ready(3);
    sim.ready(4);
    sim.exit_ok(2);
    assert_eq!(sim.report_for(t).outcome, ReloadOutcome::Done);
    sim.advance(Duration::from_secs(10));
    assert_eq!(
        sim.spawns_since(m),
        vec![3, 4],
        "no restart after the reload filled the slot"
    );
    sim.finish();
}

// Regressions found by the property tests (see the fixes marked "Fix" in fleet.rs).

#[test]
fn stop_first_follow_up_pass_refills_the_emptied_slot_before_stopping_a_serving_worker() {
    // count 2, stop-first: pass 1 replaces slot 0, then slot 1's replacement fails; a
    // request queued meanwhile starts pass 2 at once. Stopping slot 0's worker now would
    // leave no ready worker at all (slot 1 is empty): pass 2 refills slot 1 first.
    let mut sim = started(web(2, Order::StopFirst));
    let t1 = sim.reload();
    sim.exit_ok(1);
    sim.ready(3);
    assert_eq!(sim.stops_since(0), vec![1, 2]);
    let t2 = sim.reload();
    sim.exit_ok(2);
    assert_eq!(sim.w[&4].slot, 1);
    let m = sim.mark();
    sim.exit(4, ExitStatus::Code(1), "boom\n");
    assert_eq!(sim.report_for(t1).outcome, ReloadOutcome::Failed);
    assert!(sim.events_since(m).contains(&Event::ReloadStart {
        generation: 3,
        tickets: vec![t2],
        due: 2
    }));
    assert!(
        sim.stops_since(m).is_empty(),
        "worker 3 is the only ready worker: not stopped"
    );
    assert_eq!(sim.spawns_since(m), vec![5]);
    assert_eq!((sim.w[&5].slot, sim.w[&5].generation), (1, 3));
    // The pass took the slot over: its pending crash restart is dropped.
    sim.advance(ms(100));
    assert_eq!(sim.spawns_since(m), vec![5]);
    sim.ready(5);
    assert_eq!(sim.stops_since(m), vec![3]);
    sim.exit_ok(3);
    sim.ready(6);
    let r2 = sim.report_for(t2);
    assert_eq!(r2.outcome, ReloadOutcome::Done);
    let pairs: Vec<_> = r2
        .replaced
        .iter()
        .map(|r| (r.slot, r.old_pid, r.new_pid))
        .collect();
    assert_eq!(
        pairs,
        vec![(1, None, sim.pid(5)), (0, Some(sim.pid(3)), sim.pid(6))]
    );
    sim.finish();
}

/// A stop-first fleet whose group `web` (2 slots, after group `a`) lost slot 1 in a failed
/// pass; a new pass is busy with group `a` while slot 1's crash restart is spawned.
/// Returns the sim and the restart's key, with the new pass about to visit `web`.
fn stop_first_with_a_starting_restart() -> (Sim, Ticket, WorkerKey) {
    let groups = vec![
        rules("a", 1, true, Order::StopFirst),
        rules("web", 2, true, Order::StopFirst),
    ];
    let mut sim = started(groups); // a#0: 1, web#0: 2, web#1: 3
    let t1 = sim.reload();
    sim.exit_ok(1);
    sim.ready(4); // a#0
    sim.exit_ok(2);
    sim.ready(5); // web#0
    sim.exit_ok(3);
    sim.crash(6); // web#1's replacement fails
    assert_eq!(sim.report_for(t1).outcome, ReloadOutcome::Failed);
    let t2 = sim.reload();
    assert_eq!(
        sim.stops_since(0).last(),
        Some(&4),
        "pass 2 starts with group a"
    );
    sim.advance(ms(100));
    let restart = 7;
    assert_eq!(
        (sim.w[&restart].group, sim.w[&restart].slot),
        (1, 1),
        "web#1's crash restart"
    );
    sim.exit_ok(4);
    let m = sim.mark();
    sim.ready(8); // a#0 replaced: the pass moves on to web
    assert!(
        sim.stops_since(m).is_empty(),
        "web#0 is the group's only ready worker: not stopped"
    );
    assert!(sim.spawns_since(m).is_empty());
    assert!(sim.snapshot().reloading);
    (sim, t2, restart)
}

#[test]
fn stop_first_waits_for_a_starting_restart_before_stopping_a_serving_worker() {
    let (mut sim, t2, restart) = stop_first_with_a_starting_restart();
    let m = sim.mark();
    sim.ready(restart);
    assert_eq!(sim.stops_since(m), vec![5]);
    sim.exit_ok(5);
    sim.ready(9);
    // web#1's restart was spawned after the request: fresh, not replaced.
    let r2 = sim.report_for(t2);
    assert_eq!(r2.outcome, ReloadOutcome::Done);
    assert_eq!(
        r2.replaced
            .iter()
            .map(|r| (r.group, r.slot))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 0)]
    );
    assert!(sim.w[&restart].alive && sim.w[&restart].stops == 0);
    sim.finish();
}

#[test]
fn stop_first_refills_a_slot_whose_restart_never_became_ready() {
    let (mut sim, t2, restart) = stop_first_with_a_starting_restart();
    let m = sim.mark();
    sim.advance_to_deadline();
    assert_eq!(sim.kills_since(m), vec![restart]);
    sim.exit(restart, ExitStatus::Signal(SIGKILL), "");
    // The slot is empty: the pass refills it itself, still without stopping web#0.
    assert!(sim.stops_since(m).is_empty());
    assert_eq!(sim.spawns_since(m), vec![9]);
    assert_eq!((sim.w[&9].group, sim.w[&9].slot), (1, 1));
    sim.ready(9);
    assert_eq!(sim.stops_since(m), vec![5]);
    sim.exit_ok(5);
    sim.ready(10);
    let r2 = sim.report_for(t2);
    assert_eq!(r2.outcome, ReloadOutcome::Done);
    assert_eq!(r2.replaced.len(), 3);
    sim.finish();
}

fn parallel_web(count: u32, parallel: u32, order: Order) -> Vec<GroupRules> {
    vec![GroupRules {
        parallel,
        ..rules("web", count, true, order)
    }]
}

fn steers_since(sim: &Sim, mark: usize) -> Vec<Vec<u32>> {
    sim.since(mark, |a| match a {
        Action::Steer { serving, .. } => Some(serving.clone()),
        _ => None,
    })
}

#[test]
fn start_first_parallel_replaces_that_many_slots_at_once() {
    let mut sim = started(parallel_web(4, 2, Order::StartFirst));
    let m = sim.mark();
    let t = sim.reload();
    assert_eq!(sim.spawns_since(m), vec![5, 6], "two replacements at once");
    assert!(sim.stops_since(m).is_empty());
    sim.ready(6);
    assert_eq!(
        sim.stops_since(m),
        vec![2],
        "slot 1's old worker leaves once 6 is ready"
    );
    assert_eq!(
        sim.spawns_since(m),
        vec![5, 6, 7],
        "slot 2 takes the free place"
    );
    sim.ready(5);
    sim.exit_ok(2);
    assert_eq!(sim.stops_since(m), vec![2, 1]);
    assert_eq!(sim.spawns_since(m), vec![5, 6, 7, 8]);
    assert!(steers_since(&sim, m).is_empty(), "every slot kept serving");
    sim.exit_ok(1);
    sim.ready(7);
    sim.ready(8);
    sim.exit_ok(3);
    sim.exit_ok(4);
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Done);
    assert_eq!(report.replaced.len(), 4);
    sim.finish();
}

#[test]
fn start_first_parallel_abort_stops_the_other_booting_replacement() {
    let mut sim = started(parallel_web(4, 2, Order::StartFirst));
    let m = sim.mark();
    let t = sim.reload();
    assert_eq!(sim.spawns_since(m), vec![5, 6]);
    sim.exit(5, ExitStatus::Code(1), "Error: bad deploy\n");
    assert_eq!(
        sim.stops_since(m),
        vec![6],
        "only the other replacement is stopped"
    );
    assert_eq!(sim.spawns_since(m), vec![5, 6], "nothing more is started");
    sim.exit_ok(6);
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Failed);
    assert_eq!(report.failure.as_ref().map(|f| f.slot), Some(0));
    assert!(report.replaced.is_empty());
    let serving: Vec<_> = (0..4).flat_map(|s| sim.serving(0, s)).collect();
    assert_eq!(serving, vec![1, 2, 3, 4], "the old workers keep serving");
    sim.finish();
}

#[test]
fn stop_first_parallel_steers_away_before_each_stop() {
    let mut sim = started(parallel_web(4, 2, Order::StopFirst));
    let m = sim.mark();
    let t = sim.reload();
    let order: Vec<String> = sim
        .actions_since(m)
        .iter()
        .filter_map(|a| match a {
            Action::Steer { serving, .. } => Some(format!("steer {serving:?}")),
            Action::Stop { key, .. } => Some(format!("stop {key}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec!["steer [1, 2, 3]", "stop 1", "steer [2, 3]", "stop 2"],
        "a slot is steered away from before its worker is asked to stop"
    );
    assert!(sim.spawns_since(m).is_empty());
    sim.exit_ok(2);
    assert_eq!(sim.spawns_since(m), vec![5]);
    assert_eq!(sim.stops_since(m), vec![1, 2], "two slots down at most");
    sim.ready(5);
    // Slot 1 serves again, and slot 2 is steered away from before its worker stops.
    assert_eq!(steers_since(&sim, m).last(), Some(&vec![1, 3]));
    assert_eq!(sim.stops_since(m), vec![1, 2, 3]);
    sim.exit_ok(1);
    sim.exit_ok(3);
    sim.ready(6);
    sim.ready(7);
    assert_eq!(sim.stops_since(m), vec![1, 2, 3, 4]);
    sim.exit_ok(4);
    sim.ready(8);
    assert_eq!(sim.report_for(t).outcome, ReloadOutcome::Done);
    assert_eq!(steers_since(&sim, m).last(), Some(&vec![0, 1, 2, 3]));
    sim.finish();
}

#[test]
fn stop_first_parallel_abort_keeps_the_booting_worker_of_an_empty_slot() {
    let mut sim = started(parallel_web(4, 2, Order::StopFirst));
    let m = sim.mark();
    let t = sim.reload();
    sim.exit_ok(1);
    sim.exit_ok(2);
    assert_eq!(sim.spawns_since(m), vec![5, 6]);
    sim.exit(5, ExitStatus::Code(1), "Error: bad deploy\n");
    assert!(
        sim.stops_since(m) == vec![1, 2],
        "no further old worker, and not the booting worker of the empty slot 1"
    );
    let report = sim.report_for(t);
    assert_eq!(report.outcome, ReloadOutcome::Failed);
    // Slot 1's worker still boots as the slot's worker; slot 0 restarts with backoff.
    sim.ready(6);
    assert_eq!(sim.serving(0, 1), vec![6]);
    assert_eq!(steers_since(&sim, m).last(), Some(&vec![1, 2, 3]));
    sim.finish();
}

#[test]
fn a_crashed_worker_is_steered_away_from_and_back_to_when_refilled() {
    let mut sim = started(web(3, Order::StartFirst));
    let m = sim.mark();
    sim.crash(2);
    assert_eq!(steers_since(&sim, m), vec![vec![0, 2]]);
    sim.advance_to_deadline();
    let refill = *sim.spawns_since(m).first().expect("the slot is refilled");
    assert_eq!(
        steers_since(&sim, m),
        vec![vec![0, 2]],
        "not before it is ready"
    );
    sim.ready(refill);
    assert_eq!(steers_since(&sim, m), vec![vec![0, 2], vec![0, 1, 2]]);
    sim.finish();
}

#[test]
fn rules_updated_during_a_pass_wait_for_the_next_pass() {
    let mut sim = started(web(3, Order::StartFirst));
    let first = sim.reload();
    // A re-read config asks for parallel 3, a longer stop timeout, and (ignored: those need
    // a restart) another name, count and reloadable.
    let mut reread = rules("other", 9, false, Order::StartFirst);
    reread.parallel = 3;
    reread.stop_timeout = ms(5000);
    sim.fleet.update_rules(0, reread);
    // The model still holds parallel 1: the running pass must keep to it (property 2).
    sim.cooperate();
    assert_eq!(sim.report_for(first).outcome, ReloadOutcome::Done);
    let applied = sim.fleet.group_rules(0).unwrap().clone();
    assert_eq!((applied.parallel, applied.stop_timeout), (3, ms(5000)));
    assert_eq!(
        (applied.name.as_str(), applied.count, applied.reloadable),
        ("web", 3, true)
    );
    sim.rules[0] = applied;
    // The next pass replaces all three at once.
    let mark = sim.mark();
    let second = sim.reload();
    assert_eq!(sim.spawns_since(mark).len(), 3);
    sim.cooperate();
    assert_eq!(sim.report_for(second).outcome, ReloadOutcome::Done);
}

#[test]
fn rules_updated_at_idle_apply_at_once() {
    let mut sim = started(web(2, Order::StartFirst));
    let mut reread = rules("web", 2, true, Order::StartFirst);
    reread.parallel = 2;
    sim.fleet.update_rules(0, reread.clone());
    sim.rules[0] = reread;
    let mark = sim.mark();
    let ticket = sim.reload();
    assert_eq!(sim.spawns_since(mark).len(), 2);
    sim.cooperate();
    assert_eq!(sim.report_for(ticket).outcome, ReloadOutcome::Done);
}
