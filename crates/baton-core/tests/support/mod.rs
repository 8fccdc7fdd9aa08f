//! The driver the fleet tests share (`fleet_scale.rs`, `fleet_memory.rs`): it plays the
//! processes of a pure [`Fleet`]: every `Spawn` gets a pid at once, a `Stop` or `Kill`
//! marks the process stopping, and what the test does next (ready, exit, time) is an
//! [`Input`]. Each test file adds the helpers of its own rules in its own `impl Sim`.
#![allow(dead_code)] // each test crate uses part of it

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::config::{Backoff, GroupRules};
use baton_core::exit_status::ExitStatus;
use baton_core::fleet::{Action, Event, Fleet, Input, Ticket, WorkerKey};

/// The crash backoff of every simulated fleet: 100 ms doubling to 1.6 s.
pub fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1600),
        reset_after: Duration::from_secs(10),
    }
}

/// One simulated worker process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub group: usize,
    pub slot: u32,
    pub pid: i32,
    pub stopping: bool,
    pub ready: bool,
}

/// A fleet and the processes it asked for.
pub struct Sim {
    pub fleet: Fleet,
    pub now: Instant,
    pub next_pid: i32,
    pub procs: BTreeMap<WorkerKey, Proc>,
    /// Every event the fleet emitted, in order.
    pub events: Vec<Event>,
    /// Every action the fleet asked for, in order.
    pub actions: Vec<Action>,
    pub next_ticket: Ticket,
}

impl Sim {
    /// A fleet of `groups`, not started.
    pub fn with_groups(groups: Vec<GroupRules>) -> Sim {
        Sim {
            fleet: Fleet::new(groups, backoff()),
            now: Instant::now(),
            next_pid: 100,
            procs: BTreeMap::new(),
            events: Vec::new(),
            actions: Vec::new(),
            next_ticket: 1,
        }
    }

    /// A fleet of `groups`, started with every worker ready.
    pub fn started_with(groups: Vec<GroupRules>) -> Sim {
        let mut h = Sim::with_groups(groups);
        h.input(Input::Start);
        h.ready_all();
        assert!(h.events.contains(&Event::FleetReady));
        h
    }

    pub fn input(&mut self, input: Input) {
        self.fleet.handle(self.now, input);
        self.drain();
    }

    /// Carry out every pending action.
    pub fn drain(&mut self) {
        let mut spawned = Vec::new();
        while let Some(a) = self.fleet.poll_action() {
            match &a {
                Action::Spawn {
                    key, group, slot, ..
                } => {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.procs.insert(
                        *key,
                        Proc {
                            group: *group,
                            slot: *slot,
                            pid,
                            stopping: false,
                            ready: false,
                        },
                    );
                    spawned.push((*key, pid));
                }
                Action::Stop { key, .. } | Action::Kill { key, .. } => {
                    if let Some(p) = self.procs.get_mut(key) {
                        p.stopping = true;
                    }
                }
                Action::Emit(e) => self.events.push(e.clone()),
                _ => {}
            }
            self.actions.push(a);
        }
        for (key, pid) in spawned {
            self.fleet.handle(self.now, Input::Spawned { key, pid });
            self.drain();
        }
    }

    pub fn reload(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.input(Input::Reload { ticket });
        ticket
    }

    pub fn ready(&mut self, key: WorkerKey) {
        if let Some(p) = self.procs.get_mut(&key) {
            p.ready = true;
        }
        self.input(Input::Ready { key });
    }

    /// Every starting worker becomes ready, and those started meanwhile too.
    pub fn ready_all(&mut self) {
        loop {
            let starting: Vec<WorkerKey> = self
                .procs
                .iter()
                .filter(|(_, p)| !p.ready && !p.stopping)
                .map(|(k, _)| *k)
                .collect();
            if starting.is_empty() {
                return;
            }
            for k in starting {
                self.ready(k);
            }
        }
    }

    pub fn exit(&mut self, key: WorkerKey, status: ExitStatus) {
        self.procs.remove(&key);
        self.input(Input::Exited {
            key,
            status,
            stderr_tail: String::new(),
        });
    }

    /// Every worker asked to stop exits with 0.
    pub fn exit_stopping(&mut self) {
        let stopping: Vec<WorkerKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.stopping)
            .map(|(k, _)| *k)
            .collect();
        for k in stopping {
            self.exit(k, ExitStatus::Code(0));
        }
    }

    /// Jump to the fleet's next deadline and handle it; false when it has none.
    pub fn advance(&mut self) -> bool {
        let Some(at) = self.fleet.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(at);
        self.fleet.handle_timeout(self.now);
        self.drain();
        true
    }
}
