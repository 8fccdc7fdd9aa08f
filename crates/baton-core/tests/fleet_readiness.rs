//! The readiness rules of `fleet.rs` (`GroupRules::readiness`): unit tests of each mode,
//! and properties over random interleavings of ready messages, exits, reloads and time for
//! `uptime` groups. Kept apart from `fleet.rs`'s reload simulator, whose model marks a
//! worker ready on its ready message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::config::{Backoff, GroupRules, Order, Readiness};
use baton_core::exit_status::ExitStatus;
use baton_core::fleet::{
    Action, Event, Fleet, Input, ReloadOutcome, Ticket, WorkerKey, WorkerState,
};
use proptest::prelude::*;

const MIN_UPTIME: Duration = Duration::from_millis(1000);

fn rules(count: u32, readiness: Readiness, ready_timeout: Duration) -> GroupRules {
    GroupRules {
        name: "consumer".to_string(),
        count,
        reloadable: true,
        order: Order::StartFirst,
        parallel: 1,
        ready_timeout,
        stop_timeout: Duration::from_millis(2000),
        readiness,
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1600),
        reset_after: Duration::from_secs(10),
    }
}

#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    spawned: Instant,
    stopping: bool,
    exited: bool,
}

/// A driver that plays the processes: every Spawn gets a pid at once.
struct H {
    fleet: Fleet,
    base: Instant,
    now: Instant,
    next_pid: i32,
    procs: BTreeMap<WorkerKey, Proc>,
    /// Every event, with the time it was emitted.
    events: Vec<(Instant, Event)>,
    next_ticket: Ticket,
    min_uptime: Option<Duration>,
}

impl H {
    fn new(count: u32, readiness: Readiness, ready_timeout: Duration) -> H {
        let now = Instant::now();
        H {
            fleet: Fleet::new(vec![rules(count, readiness, ready_timeout)], backoff()),
            base: now,
            now,
            next_pid: 100,
            procs: BTreeMap::new(),
            events: Vec::new(),
            next_ticket: 1,
            min_uptime: readiness.min_uptime(),
        }
    }

    fn input(&mut self, input: Input) {
        self.fleet.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        let mut spawned = Vec::new();
        while let Some(a) = self.fleet.poll_action() {
            match &a {
                Action::Spawn { key, .. } => {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.procs.insert(
                        *key,
                        Proc {
                            pid,
                            spawned: self.now,
                            stopping: false,
                            exited: false,
                        },
                    );
                    spawned.push((*key, pid));
                }
                Action::Stop { key, .. } | Action::Kill { key, .. } => {
                    if let Some(p) = self.procs.get_mut(key) {
                        p.stopping = true;
                    }
                }
                Action::Emit(e) => {
                    self.check_ready_event(e);
                    self.events.push((self.now, e.clone()));
                }
                _ => {}
            }
        }
        for (key, pid) in spawned {
            self.fleet.handle(self.now, Input::Spawned { key, pid });
            self.drain();
        }
    }

    /// The property every uptime group keeps: no worker is ready before it has been up
    /// for `min_uptime`, nor after it exited.
    fn check_ready_event(&self, e: &Event) {
        let Event::WorkerReady { pid, .. } = e else {
            return;
        };
        let p = self
            .procs
            .values()
            .find(|p| p.pid == *pid)
            .expect("a ready worker was spawned");
        assert!(!p.exited, "pid {pid} ready after its exit");
        if let Some(min) = self.min_uptime {
            assert!(
                self.now >= p.spawned + min,
                "pid {pid} ready after {:?}, before its minimum uptime {min:?}",
                self.now - p.spawned
            );
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        // Handle every deadline on the way, at its own instant.
        while let Some(at) = self.fleet.poll_timeout().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.fleet.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.fleet.handle_timeout(self.now);
        self.drain();
    }

    fn ready(&mut self, key: WorkerKey) {
        self.input(Input::Ready { key });
    }

    fn exit(&mut self, key: WorkerKey, code: i32) {
        if let Some(p) = self.procs.get_mut(&key) {
            if p.exited {
                return;
            }
            p.exited = true;
        }
        self.input(Input::Exited {
            key,
            status: ExitStatus::Code(code),
            stderr_tail: String::new(),
        });
    }

    /// Let every worker asked to stop exit.
    fn exit_stopping(&mut self) {
        let keys: Vec<_> = self
            .procs
            .iter()
            .filter(|(_, p)| p.stopping && !p.exited)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.exit(k, 0);
        }
    }

    fn reload(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.input(Input::Reload { ticket });
        ticket
    }

    fn fleet_ready(&self) -> bool {
        self.events.iter().any(|(_, e)| *e == Event::FleetReady)
    }

    fn ready_times(&self) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::WorkerReady { .. }))
            .map(|(t, _)| *t - self.base)
            .collect()
    }

    fn report(&self, t: Ticket) -> Option<(ReloadOutcome, usize)> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::ReloadDone(r) | Event::ReloadFailed(r) if r.tickets.contains(&t) => {
                Some((r.outcome, r.replaced.len()))
            }
            _ => None,
        })
    }

    fn live(&self) -> Vec<WorkerKey> {
        self.procs
            .iter()
            .filter(|(_, p)| !p.exited)
            .map(|(k, _)| *k)
            .collect()
    }
}

#[test]
fn uptime_workers_are_ready_after_min_uptime_and_ignore_ready_messages() {
    let mut h = H::new(2, Readiness::Uptime(MIN_UPTIME), Duration::from_secs(30));
    h.input(Input::Start);
    // A ready message (the drop-in preload after a listen) does not count.
    h.ready(1);
    h.ready(2);
    assert!(h.ready_times().is_empty());
    assert!(h
        .fleet
        .snapshot()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Starting));
    assert_eq!(h.fleet.poll_timeout(), Some(h.base + MIN_UPTIME));
    h.advance(Duration::from_millis(999));
    assert!(!h.fleet_ready());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.ready_times(), vec![MIN_UPTIME, MIN_UPTIME]);
    assert!(h.fleet_ready());
    assert!(h
        .fleet
        .snapshot()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Ready));
}

#[test]
fn uptime_longer_than_the_ready_timeout_still_makes_workers_ready() {
    let mut h = H::new(
        1,
        Readiness::Uptime(Duration::from_secs(5)),
        Duration::from_secs(1),
    );
    h.input(Input::Start);
    h.advance(Duration::from_secs(5));
    assert!(h.fleet_ready());
    assert!(!h
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::WorkerReadyTimeout { .. })));
}

#[test]
fn uptime_worker_that_exits_early_during_start_fails_the_start() {
    let mut h = H::new(2, Readiness::Uptime(MIN_UPTIME), Duration::from_secs(30));
    h.input(Input::Start);
    h.advance(Duration::from_millis(500));
    h.exit(1, 1);
    assert!(h
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::StartFailed { .. })));
    assert!(!h.fleet_ready());
}

#[test]
fn uptime_reload_replaces_one_slot_at_a_time_each_after_min_uptime() {
    let mut h = H::new(2, Readiness::Uptime(MIN_UPTIME), Duration::from_secs(30));
    h.input(Input::Start);
    h.advance(MIN_UPTIME);
    assert!(h.fleet_ready());
    let t = h.reload();
    // One replacement at a time; its ready message is ignored.
    assert_eq!(h.live(), vec![1, 2, 3]);
    h.ready(3);
    h.advance(Duration::from_millis(999));
    assert!(
        !h.procs[&1].stopping,
        "old worker kept until its replacement is up"
    );
    h.advance(Duration::from_millis(1));
    assert!(h.procs[&1].stopping);
    assert_eq!(h.live(), vec![1, 2, 3, 4], "the next slot starts only now");
    h.exit_stopping();
    h.advance(MIN_UPTIME);
    assert!(h.procs[&2].stopping);
    h.exit_stopping();
    assert_eq!(h.report(t), Some((ReloadOutcome::Done, 2)));
    // Replacements were ready MIN_UPTIME apart: sequential.
    let times = h.ready_times();
    assert_eq!(times[2..], [MIN_UPTIME * 2, MIN_UPTIME * 3]);
}

#[test]
fn uptime_replacement_that_exits_before_min_uptime_fails_the_reload() {
    let mut h = H::new(2, Readiness::Uptime(MIN_UPTIME), Duration::from_secs(30));
    h.input(Input::Start);
    h.advance(MIN_UPTIME);
    let t = h.reload();
    h.advance(Duration::from_millis(900));
    h.exit(3, 1);
    h.exit_stopping();
    assert_eq!(h.report(t), Some((ReloadOutcome::Failed, 0)));
    assert!(!h.procs[&1].stopping && !h.procs[&2].stopping);
    // Nothing more was started for the aborted pass.
    assert_eq!(h.live(), vec![1, 2]);
}

#[test]
fn message_and_listen_workers_are_ready_on_their_ready_message_only() {
    for readiness in [Readiness::Listen, Readiness::Message] {
        let mut h = H::new(1, readiness, Duration::from_secs(30));
        h.input(Input::Start);
        h.advance(Duration::from_secs(10));
        assert!(!h.fleet_ready(), "{readiness:?}: no time-based readiness");
        h.ready(1);
        assert!(h.fleet_ready(), "{readiness:?}");
    }
}

#[test]
fn readiness_names() {
    assert_eq!(Readiness::Listen.as_str(), "listen");
    assert_eq!(Readiness::Message.as_str(), "message");
    assert_eq!(Readiness::Uptime(MIN_UPTIME).as_str(), "uptime");
    assert_eq!(Readiness::Uptime(MIN_UPTIME).min_uptime(), Some(MIN_UPTIME));
    assert_eq!(Readiness::Message.min_uptime(), None);
    assert_eq!(Readiness::default(), Readiness::Listen);
}

#[derive(Debug, Clone)]
enum Step {
    /// Let this much time pass (ms).
    Wait(u64),
    /// The n-th live worker (mod) sends a ready message.
    Ready(usize),
    /// The n-th live worker (mod) exits with code 1.
    Crash(usize),
    /// Every worker asked to stop exits.
    ExitStopping,
    Reload,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..1500).prop_map(Step::Wait),
        2 => (0usize..8).prop_map(Step::Ready),
        1 => (0usize..8).prop_map(Step::Crash),
        2 => Just(Step::ExitStopping),
        1 => Just(Step::Reload),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `uptime` groups, under any interleaving: no worker is ready before it has been up
    /// for `min_uptime` (checked on every `WorkerReady`, see `check_ready_event`), a
    /// worker up that long and not asked to stop is ready, a reload never has more than
    /// one replacement starting at once (count + 1 workers not asked to stop), and every
    /// reload is answered.
    #[test]
    fn uptime_rules_hold(
        count in 1u32..=3,
        min_uptime in 1u64..3000,
        ready_timeout in 1u64..5000,
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let min = Duration::from_millis(min_uptime);
        let mut h = H::new(count, Readiness::Uptime(min), Duration::from_millis(ready_timeout));
        h.input(Input::Start);
        let mut tickets = Vec::new();
        for s in steps {
            match s {
                Step::Wait(ms) => h.advance(Duration::from_millis(ms)),
                Step::Ready(n) => {
                    let live = h.live();
                    if !live.is_empty() {
                        h.ready(live[n % live.len()]);
                    }
                }
                Step::Crash(n) => {
                    let live = h.live();
                    if !live.is_empty() {
                        h.exit(live[n % live.len()], 1);
                    }
                }
                Step::ExitStopping => h.exit_stopping(),
                Step::Reload => tickets.push(h.reload()),
            }
            // A live worker up for min_uptime and not asked to stop is ready.
            let snap = h.fleet.snapshot();
            for w in &snap.workers {
                let Some(key) = w.key else { continue };
                let p = &h.procs[&key];
                if !p.exited && !p.stopping && h.now >= p.spawned + min {
                    prop_assert_eq!(w.state, WorkerState::Ready, "worker {} up {:?}", key, h.now - p.spawned);
                }
            }
            // One replacement at a time: besides the count serving or restarting slots,
            // at most one worker that was not asked to stop (parallel 1).
            let running = h.procs.values().filter(|p| !p.exited && !p.stopping).count();
            prop_assert!(running as u32 <= count + 1, "{} workers not stopping for {} slots", running, count);
        }
        // Let everything settle: every reload is answered.
        for _ in 0..40 {
            h.exit_stopping();
            h.advance(Duration::from_millis(2000));
        }
        for t in tickets {
            prop_assert!(h.report(t).is_some() || !h.fleet_ready(), "reload {} never answered", t);
        }
    }
}
