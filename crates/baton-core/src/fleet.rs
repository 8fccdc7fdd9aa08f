//! The supervision and reload rules of a fleet, as a pure state machine.
//!
//! This module performs no I/O and reads no clock. Its shape follows quinn-proto's
//! `Connection`: the driver feeds [`Input`]s with [`Fleet::handle`] and the passage of time
//! with [`Fleet::handle_timeout`], asks [`Fleet::poll_timeout`] when to call back, and
//! drains [`Action`]s with [`Fleet::poll_action`] (spawn this, stop that, emit an event).
//! Every ordering rule below can therefore be replayed deterministically in tests.
//!
//! # The rules, top to bottom
//!
//! **Slots.** A group has `count` slots (ids `0..count`). Each slot has at most one
//! *current* worker (the one serving), and during a reload at most one *replacement*.
//! Workers asked to stop leave their slot and are *retiring* until they exit.
//!
//! **Start.** [`Input::Start`] spawns one worker per slot. When every slot has a ready
//! worker, [`Event::FleetReady`] is emitted. If a worker exits or times out before its
//! first readiness during start, the start has failed ([`Event::StartFailed`]) and the
//! fleet stops: a service that cannot boot is not left half up.
//!
//! **Readiness.** How a worker becomes ready is its group's [`Readiness`]: with `Listen`
//! and `Message` when it says so ([`Input::Ready`]; the two differ in the worker, which
//! sends no ready of its own after a drop-in listen under `Message`); with `Uptime(d)` once
//! it has been running for `d` since [`Input::Spawned`] (its ready messages are ignored), so
//! a process that never listens can be supervised and reloaded one slot at a time. A worker
//! not ready within its group's `ready_timeout` is killed and counts as failed; one that
//! exits before it is ready has failed, whatever the mode (a reload pass aborts).
//!
//! **Crashes.** A worker that exits without being asked to leaves its slot empty; the slot
//! is refilled after the backoff delay ([`crate::config::Backoff`]), the slot's `restarts`
//! grows by one and its last exit is kept for status. A slot whose replacement is already
//! starting (start-first reload) is not refilled twice.
//!
//! **Stopping a worker.** [`Action::Stop`] asks for a graceful exit; if the worker is still
//! alive after the group's `stop_timeout`, [`Action::Kill`] follows.
//!
//! **Reload.** [`Input::Reload`] starts a *pass* (or joins the next one, see coalescing):
//! 1. the fleet generation grows by one; workers of `reloadable: false` groups get
//!    [`Action::NotifyReload`] and keep running;
//! 2. the slots of reloadable groups are visited in group definition order, up to the
//!    group's `parallel` slots at a time (default 1); the next group starts when every slot
//!    of this one is done. A slot is *due* when its current worker was spawned before the
//!    request (its key is below the pass's cutoff); fresh slots are skipped. A further slot
//!    is taken only once every replacement started so far has a pid (a spawn failure
//!    aborts before anything else moves);
//! 3. `start-first`: spawn the replacement; when it is ready it becomes current and the old
//!    worker is stopped (it retires while the pass moves on: capacity never dips below
//!    `count`). A new replacement waits while `parallel` are booting, or while booting ones
//!    and old ones still draining reach `2 x parallel`: at most `count + 2 x parallel`
//!    processes.
//!    `stop-first`: stop the old worker; when it has exited, spawn the replacement; wait
//!    until it is ready. A serving worker is not stopped while `parallel` other slots of
//!    its group have no ready worker: the pass first waits for their starting workers, or
//!    refills an empty one itself (at least `count - parallel` ready, at most `count`
//!    processes);
//! 4. a replacement that exits or times out before ready **aborts** the pass: no further
//!    old worker is stopped, the remaining old workers keep serving. Other replacements
//!    still booting are stopped where their slot's old worker still serves; in an emptied
//!    (stop-first) slot the booting worker stays as the slot's worker. An emptied slot
//!    without a worker is refilled: with backoff for the failed one, at once for one whose
//!    old worker was still leaving;
//! 5. the pass ends when no slot is left and every retiring worker has exited:
//!    [`Event::ReloadDone`] or [`Event::ReloadFailed`], carrying a [`ReloadReport`].
//!
//! **Coalescing.** A reload requested while a pass runs does not interrupt it: it is
//! queued, and any number of queued requests share exactly one further pass, whose
//! cutoff is the newest request. Workers spawned after that request count as fresh, so
//! the extra pass may find nothing left to do.
//!
//! **Steering.** A slot is *serving* while its current worker is ready and not asked to
//! stop. Whenever a group's serving set changes, [`Action::Steer`] names the new set, and it
//! comes before the [`Action::Stop`]/[`Action::Kill`] that takes a slot out. The driver uses
//! it to send new connections only to slots with a ready worker (per-slot sockets).
//!
//! **Scale.** [`Input::Scale`] changes a group's `count` while the fleet runs. Growing
//! spawns slots `count..n` like crash restarts (readiness-gated, not serving before they
//! are ready). Shrinking takes slots `n..count` out: they are steered away from first, then
//! their workers are stopped like a reload stops an old worker (stop, then kill after
//! `stop_timeout`); they are never restarted. The request is answered with
//! [`Event::ScaleDone`] once every new slot serves and no worker of a removed slot is
//! left (older slots are not waited for), or [`Event::ScaleFailed`]: refused at once while a reload pass runs or the fleet
//! is not running, for a count of 0 or an unknown group; superseded by a newer scale of the
//! same group; when a worker of a new slot fails before its first readiness (the count stays
//! `n`, the slot is restarted with backoff like any crash); or when the fleet stops. A
//! reload requested while a scale runs waits for it to end, then replaces the new count.
//!
//! **Memory.** [`Input::MemorySample`] gives a worker's resident memory and its group's
//! `maxMemory`, about once a second. A ready, current worker whose samples stay above the
//! limit for [`MEMORY_WINDOW`] (every sample in between above it) is replaced gracefully,
//! as one slot of a reload is, in the group's order: `start-first` spawns its successor in
//! the same slot, promotes it once ready and only then stops the old worker (which drains);
//! `stop-first` stops it first and spawns the successor once it has exited. At most one
//! such replacement per group at a time (it lasts until the successor is ready and the old
//! worker has exited; another worker over the limit meanwhile is replaced next, at its next
//! sample). A reload takes precedence: while a pass runs or is queued, no memory
//! replacement starts and samples of reloadable groups do not count (their window starts
//! again afterwards); a reload requested during a memory replacement waits for it to end,
//! like one requested during a scale. A successor that fails before it is ready leaves the
//! old worker serving (its window starts again), and the slot's next memory replacement
//! waits out the crash backoff ([`crate::config::Backoff`]) counted over the successors
//! that failed in a row, so a successor that cannot start is not retried at every window;
//! a successor that gets ready ends the count. A worker of a `reloadable: false` group is
//! never replaced: [`Event::MemoryOverLimit`] (`replacing: false`) is emitted once per
//! crossing of the limit.
//!
//! **Stop.** [`Input::Stop`] cancels a running pass (its requests are answered with a
//! cancelled report), stops every worker gracefully (or kills them all when forced),
//! drops pending restarts and emits [`Event::Stopped`] once the last worker has exited.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{Backoff, GroupRules, Order, Readiness};
use crate::exit_status::ExitStatus;

/// How long a worker's samples must stay above its group's `maxMemory` before it is
/// replaced (see **Memory** in the module documentation).
pub const MEMORY_WINDOW: Duration = Duration::from_secs(3);

/// Identifies one worker process for its whole life, before and after it has a pid.
/// Keys grow monotonically: a larger key was spawned later.
pub type WorkerKey = u64;

/// A caller's handle on a reload request; reports name the tickets they answer.
pub type Ticket = u64;

/// What happens to the fleet, fed by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Spawn every slot (once, at the beginning).
    Start,
    /// The worker of an [`Action::Spawn`] is running with this pid.
    Spawned { key: WorkerKey, pid: i32 },
    /// The worker of an [`Action::Spawn`] could not be started at all.
    SpawnFailed { key: WorkerKey, error: String },
    /// The worker reported readiness.
    Ready { key: WorkerKey },
    /// The worker's process has exited; `stderr_tail` is the end of what it wrote to stderr.
    Exited {
        key: WorkerKey,
        status: ExitStatus,
        stderr_tail: String,
    },
    /// Reload the fleet; the report will name `ticket`.
    Reload { ticket: Ticket },
    /// Stop the fleet; `force` kills every worker at once.
    Stop { force: bool },
    /// Change group `group`'s worker count to `count`; the answer names `ticket`.
    Scale {
        group: usize,
        count: u32,
        ticket: Ticket,
    },
    /// The worker's resident memory is `rss` bytes; its group's `maxMemory` is `limit`
    /// bytes (see **Memory** in the module documentation).
    MemorySample {
        key: WorkerKey,
        rss: u64,
        limit: u64,
    },
}

/// Why a scale request was not carried out, as reported in [`Event::ScaleFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleError {
    /// No group has this index.
    UnknownGroup,
    /// A group needs at least one worker.
    ZeroCount,
    /// The fleet has not finished starting.
    NotStarted,
    /// A reload pass runs; scale once it has ended.
    Reloading,
    /// A newer scale of the same group replaced this one.
    Superseded,
    /// The fleet is stopping.
    Stopping,
    /// The worker of new slot `slot` ended before its first readiness; `reason` is how
    /// (as in [`ReloadFailure::reason`]).
    WorkerFailed { slot: u32, reason: String },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker process for `group`/`slot` and answer with Spawned or SpawnFailed.
    Spawn {
        key: WorkerKey,
        group: usize,
        slot: u32,
        generation: u32,
    },
    /// Ask a worker to exit gracefully (stop message and SIGTERM).
    Stop { key: WorkerKey, pid: i32 },
    /// Kill a worker (SIGKILL).
    Kill { key: WorkerKey, pid: i32 },
    /// Tell a worker of a non-reloadable group that a reload happened.
    NotifyReload { key: WorkerKey, pid: i32 },
    /// The set of `group`'s slots that have a ready worker which was not asked to stop
    /// changed: new connections must reach only these slots (see **Steering** in the
    /// module documentation). Emitted before the [`Action::Stop`] or [`Action::Kill`] that
    /// takes a slot out, so the driver can steer away first.
    Steer { group: usize, serving: Vec<u32> },
    /// Report something to the host.
    Emit(Event),
}

/// Why a worker left, as reported in [`Event::WorkerExit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    /// It was asked to stop (reload, stop, or it was killed after the stop timeout).
    Requested,
    /// It exited on its own, or failed to become ready.
    Crashed,
}

/// Events for the host (logs, JavaScript events, control-socket progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker process was started.
    WorkerSpawned {
        group: usize,
        slot: u32,
        pid: i32,
        generation: u32,
    },
    /// A worker reported ready.
    WorkerReady {
        group: usize,
        slot: u32,
        pid: i32,
        generation: u32,
    },
    /// A worker exited. `restart_in` is set when its slot will be refilled after that delay.
    WorkerExit {
        group: usize,
        slot: u32,
        pid: Option<i32>,
        generation: u32,
        status: Option<ExitStatus>,
        cause: ExitCause,
        detail: String,
        restart_in: Option<Duration>,
    },
    /// A worker that did not become ready in time is being killed.
    WorkerReadyTimeout {
        group: usize,
        slot: u32,
        pid: i32,
        timeout: Duration,
    },
    /// A worker that did not stop in time is being killed.
    WorkerStopTimeout {
        group: usize,
        slot: u32,
        pid: i32,
        timeout: Duration,
    },
    /// Every slot had a ready worker for the first time.
    FleetReady,
    /// The initial start failed; the fleet is stopping.
    StartFailed { reason: String },
    /// A reload pass began.
    ReloadStart {
        generation: u32,
        tickets: Vec<Ticket>,
        due: u32,
    },
    /// A slot was replaced during a reload.
    ReloadProgress {
        group: usize,
        slot: u32,
        replaced: u32,
        due: u32,
        generation: u32,
    },
    /// A reload pass completed: every due slot was replaced.
    ReloadDone(ReloadReport),
    /// A reload pass was aborted (bad deploy) or cancelled (stop).
    ReloadFailed(ReloadReport),
    /// Every worker has exited after a stop.
    Stopped,
    /// A scale began: `group` goes from `from` to `to` workers.
    ScaleStart {
        group: usize,
        from: u32,
        to: u32,
        ticket: Ticket,
    },
    /// A scale reached its count: every new slot serves, removed workers have exited.
    ScaleDone {
        group: usize,
        count: u32,
        ticket: Ticket,
    },
    /// A worker's resident memory stayed above its group's `maxMemory` for `over`:
    /// `replacing` when it is being replaced now; otherwise its group is not reloadable and
    /// it keeps running (emitted once per crossing of the limit).
    MemoryOverLimit {
        group: usize,
        slot: u32,
        pid: i32,
        rss: u64,
        limit: u64,
        over: Duration,
        replacing: bool,
    },
    /// A scale was refused or did not complete.
    ScaleFailed {
        group: usize,
        count: u32,
        ticket: Ticket,
        error: ScaleError,
    },
}

/// How a reload pass ended (`done`, `failed`: the remaining old workers keep serving,
/// `cancelled`: the fleet was stopped during the pass).
pub use baton_contract::reports::ReloadOutcome;

/// One replaced slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// Group index.
    pub group: usize,
    /// Slot id.
    pub slot: u32,
    /// Pid of the old worker, if the slot had one.
    pub old_pid: Option<i32>,
    /// Pid of the new worker.
    pub new_pid: i32,
}

/// Why a reload was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Group index of the failed replacement.
    pub group: usize,
    /// Slot id of the failed replacement.
    pub slot: u32,
    /// Pid of the failed replacement, if it started.
    pub pid: Option<i32>,
    /// A sentence: "exited with code 1 before it was ready", "not ready within 5000 ms".
    pub reason: String,
    /// The replacement's exit status, when it exited.
    pub status: Option<ExitStatus>,
    /// The end of the replacement's stderr.
    pub stderr_tail: String,
}

/// The outcome of one reload pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The requests this pass answers.
    pub tickets: Vec<Ticket>,
    /// The fleet generation of this pass.
    pub generation: u32,
    /// How it ended.
    pub outcome: ReloadOutcome,
    /// Slots replaced, in order.
    pub replaced: Vec<Replaced>,
    /// Slots that were due.
    pub due: u32,
    /// Workers of non-reloadable groups told about the reload.
    pub notified: u32,
    /// Time from the start of the pass to its end.
    pub duration: Duration,
    /// Set when the outcome is `Failed`.
    pub failure: Option<ReloadFailure>,
    /// Set when the outcome is `Cancelled`.
    pub cancel_reason: Option<String>,
}

/// Lifecycle state of a worker, as shown in status.
pub use baton_contract::status::WorkerState;

/// One row of the fleet's status: a worker, or an empty slot waiting for its restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Worker key (None for an empty slot).
    pub key: Option<WorkerKey>,
    /// Group index.
    pub group: usize,
    /// Slot id.
    pub slot: u32,
    /// Process id, once started.
    pub pid: Option<i32>,
    /// Generation the worker was started in.
    pub generation: u32,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Crash restarts of this slot so far.
    pub restarts: u32,
    /// How the slot's previous worker ended, decoded ("exited with code 1").
    pub last_exit: Option<String>,
    /// For an empty slot: when it will be restarted.
    pub restart_at: Option<Instant>,
    /// When the worker was spawned.
    pub spawned_at: Option<Instant>,
    /// Why the slot's last worker replaced while it ran was replaced ("RSS 612 MiB above
    /// maxMemory 512 MiB for 3 s (pid 41)"), if one was.
    pub last_replaced: Option<String>,
}

/// A whole-fleet status snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// Current fleet generation (grows by one per reload pass).
    pub generation: u32,
    /// Whether a reload pass is running.
    pub reloading: bool,
    /// Whether the fleet is stopping.
    pub stopping: bool,
    /// Whether the fleet has been ready ([`Event::FleetReady`]) and is not stopping.
    pub running: bool,
    /// Rows in group, slot order; retiring workers follow their slot's current worker.
    pub workers: Vec<WorkerSnapshot>,
    /// The last finished reload.
    pub last_reload: Option<ReloadReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serving (or about to serve) its slot.
    Current,
    /// Started by a reload pass, not ready yet.
    Replacement,
    /// Asked to stop; no longer in its slot.
    Retiring,
}

#[derive(Debug, Clone)]
struct Worker {
    group: usize,
    slot: u32,
    generation: u32,
    pid: Option<i32>,
    role: Role,
    ready: bool,
    spawned_at: Instant,
    ready_deadline: Option<Instant>,
    /// `Uptime` groups: the instant the worker counts as ready (set once it is running).
    uptime_at: Option<Instant>,
    stop_requested: bool,
    stop_deadline: Option<Instant>,
    killed: bool,
    /// Set when the worker was killed for not becoming ready in time.
    ready_timed_out: bool,
    /// Since when its memory samples have been above `maxMemory` (see **Memory**).
    over_since: Option<Instant>,
    /// Its stay above `maxMemory` was reported (non-reloadable groups: once per crossing).
    over_reported: bool,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    current: Option<WorkerKey>,
    replacement: Option<WorkerKey>,
    respawn_at: Option<Instant>,
    failures: u32,
    restarts: u32,
    last_exit: Option<String>,
    /// Why its last worker replaced for memory was replaced.
    last_replaced: Option<String>,
    /// Successors of a memory replacement that failed before they were ready, in a row.
    memory_failures: u32,
    /// No memory replacement of this slot before this time (after a failed successor).
    memory_retry_at: Option<Instant>,
}

/// A replacement of one worker for its memory (see **Memory**): `old` is the worker over
/// the limit, `new` its successor (`None` while a stop-first slot waits for `old` to exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoryStep {
    old: WorkerKey,
    new: Option<WorkerKey>,
}

#[derive(Debug, Clone)]
struct Group {
    rules: GroupRules,
    slots: Vec<Slot>,
    /// The serving slots last announced with [`Action::Steer`].
    steered: Vec<u32>,
    /// Rules of a re-read configuration, waiting for the running pass to end.
    next_rules: Option<GroupRules>,
    /// The scale in progress: its ticket and its first new slot (the count it grew from).
    scaling: Option<(Ticket, u32)>,
    /// The replacement of a worker over `maxMemory` in progress (one per group at a time).
    memory: Option<MemoryStep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// start-first: waiting for the replacement to be ready.
    /// `old_pid` (fix): in stop-first, the pid of the old worker that already left the slot,
    /// so the report can still name it.
    AwaitReplacement {
        group: usize,
        slot: u32,
        replacement: WorkerKey,
        old_pid: Option<i32>,
    },
    /// stop-first: waiting for the old worker to exit.
    AwaitOldExit {
        group: usize,
        slot: u32,
        old: WorkerKey,
    },
}

impl Step {
    fn group(&self) -> usize {
        match *self {
            Step::AwaitReplacement { group, .. } | Step::AwaitOldExit { group, .. } => group,
        }
    }
}

#[derive(Debug, Clone)]
struct Pass {
    tickets: Vec<Ticket>,
    cutoff: WorkerKey,
    generation: u32,
    started_at: Instant,
    queue: VecDeque<(usize, u32)>,
    /// Slots being replaced now (at most the group's `parallel`, all of one group).
    steps: Vec<Step>,
    /// Old workers stopped by this pass that have not exited yet.
    retiring: Vec<WorkerKey>,
    replaced: Vec<Replaced>,
    due: u32,
    notified: u32,
    failure: Option<ReloadFailure>,
}

#[derive(Debug, Clone)]
struct Pending {
    tickets: Vec<Ticket>,
    cutoff: WorkerKey,
}

/// The fleet state machine. See the module documentation for its rules.
#[derive(Debug, Clone)]
pub struct Fleet {
    groups: Vec<Group>,
    backoff: Backoff,
    workers: BTreeMap<WorkerKey, Worker>,
    next_key: WorkerKey,
    generation: u32,
    phase: Phase,
    pass: Option<Pass>,
    pending: Option<Pending>,
    last_reload: Option<ReloadReport>,
    actions: VecDeque<Action>,
}

impl Fleet {
    /// A fleet of these groups, not started yet.
    pub fn new(groups: Vec<GroupRules>, backoff: Backoff) -> Fleet {
        let groups = groups
            .into_iter()
            .map(|rules| Group {
                slots: vec![Slot::default(); rules.count as usize],
                steered: Vec::new(),
                next_rules: None,
                scaling: None,
                memory: None,
                rules,
            })
            .collect();
        Fleet {
            groups,
            backoff,
            workers: BTreeMap::new(),
            next_key: 1,
            generation: 1,
            phase: Phase::Idle,
            pass: None,
            pending: None,
            last_reload: None,
            actions: VecDeque::new(),
        }
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// True once every slot has been ready (`fleet:ready`) and until a stop: a reload
    /// requested now runs (or queues behind the running pass) instead of being refused.
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// True once the fleet has stopped and every worker has exited.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// The current fleet generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Take group `index`'s per-worker rules (timeouts, order, parallel) from a re-read
    /// configuration; its name, count and reloadable stay as they are (those need a
    /// restart, see `reconfigure.rs`). While a pass runs, the new rules wait until it has
    /// ended, so one pass never mixes two sets of rules.
    pub fn update_rules(&mut self, index: usize, rules: GroupRules) {
        let Some(group) = self.groups.get_mut(index) else {
            return;
        };
        let rules = GroupRules {
            name: group.rules.name.clone(),
            count: group.rules.count,
            reloadable: group.rules.reloadable,
            ..rules
        };
        if self.pass.is_some() {
            group.next_rules = Some(rules);
        } else {
            group.rules = rules;
            group.next_rules = None;
        }
    }

    /// Use this crash-restart backoff for the restarts scheduled from now on.
    pub fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
    }

    /// Apply rules that waited for the pass to end.
    fn apply_next_rules(&mut self) {
        for group in &mut self.groups {
            if let Some(rules) = group.next_rules.take() {
                group.rules = rules;
            }
        }
    }

    /// The rules of group `index`.
    pub fn group_rules(&self, index: usize) -> Option<&GroupRules> {
        self.groups.get(index).map(|g| &g.rules)
    }

    /// The earliest instant at which [`Fleet::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let worker_deadlines = self.workers.values().flat_map(|w| {
            let (ready, uptime) = if w.ready || w.killed {
                (None, None)
            } else if w.stop_requested {
                (w.ready_deadline, None)
            } else {
                (w.ready_deadline, w.uptime_at)
            };
            let stop = if w.killed { None } else { w.stop_deadline };
            ready.into_iter().chain(uptime).chain(stop)
        });
        let respawns = self
            .groups
            .iter()
            .flat_map(|g| g.slots.iter().filter_map(|s| s.respawn_at));
        worker_deadlines.chain(respawns).min()
    }

    /// Process every deadline that has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<WorkerKey> = self.workers.keys().copied().collect();
        for key in keys {
            let Some(w) = self.workers.get(&key) else {
                continue;
            };
            if w.killed {
                continue;
            }
            if let Some(deadline) = w.stop_deadline {
                if now >= deadline {
                    self.kill_after_stop_timeout(key);
                    continue;
                }
            }
            // Up long enough counts before the ready deadline: when both have passed (a
            // late tick), the worker did stay up.
            if !w.ready && !w.stop_requested && w.uptime_at.is_some_and(|at| now >= at) {
                self.mark_ready(now, key);
                continue;
            }
            if !w.ready && w.ready_deadline.is_some_and(|d| now >= d) {
                self.kill_after_ready_timeout(key);
            }
        }
        for g in 0..self.groups.len() {
            for s in 0..self.groups[g].slots.len() {
                if self.groups[g].slots[s]
                    .respawn_at
                    .is_some_and(|at| now >= at)
                {
                    self.groups[g].slots[s].respawn_at = None;
                    if self.phase == Phase::Running || self.phase == Phase::Starting {
                        self.spawn_current(now, g, s as u32);
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Feed one input at time `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Start => self.start(now),
            Input::Spawned { key, pid } => self.on_spawned(now, key, pid),
            Input::SpawnFailed { key, error } => self.on_exit(
                now,
                key,
                None,
                format!("could not be started: {error}"),
                String::new(),
            ),
            Input::Ready { key } => self.on_ready(now, key),
            Input::Exited {
                key,
                status,
                stderr_tail,
            } => self.on_exit(now, key, Some(status), status.to_string(), stderr_tail),
            Input::Reload { ticket } => self.request_reload(now, ticket),
            Input::Stop { force } => self.stop(now, force),
            Input::Scale {
                group,
                count,
                ticket,
            } => self.scale(now, group, count, ticket),
            Input::MemorySample { key, rss, limit } => self.memory_sample(now, key, rss, limit),
        }
        self.settle(now);
    }

    /// A status snapshot.
    pub fn snapshot(&self) -> FleetSnapshot {
        let mut rows = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for (s, slot) in group.slots.iter().enumerate() {
                let s = s as u32;
                let mut any = false;
                for key in [slot.current, slot.replacement].into_iter().flatten() {
                    if let Some(w) = self.workers.get(&key) {
                        rows.push(self.row(key, w, slot));
                        any = true;
                    }
                }
                for (key, w) in self.workers.iter() {
                    if w.group == g && w.slot == s && w.role == Role::Retiring {
                        rows.push(self.row(*key, w, slot));
                        any = true;
                    }
                }
                // A removed slot (scale down) whose workers have gone has no row.
                if !any && self.phase != Phase::Stopped && s < group.rules.count {
                    rows.push(WorkerSnapshot {
                        key: None,
                        group: g,
                        slot: s,
                        pid: None,
                        generation: self.generation,
                        state: WorkerState::Starting,
                        restarts: slot.restarts,
                        last_exit: slot.last_exit.clone(),
                        restart_at: slot.respawn_at,
                        spawned_at: None,
                        last_replaced: slot.last_replaced.clone(),
                    });
                }
            }
        }
        FleetSnapshot {
            generation: self.generation,
            reloading: self.pass.is_some(),
            stopping: matches!(self.phase, Phase::Stopping | Phase::Stopped),
            running: self.phase == Phase::Running,
            workers: rows,
            last_reload: self.last_reload.clone(),
        }
    }

    fn row(&self, key: WorkerKey, w: &Worker, slot: &Slot) -> WorkerSnapshot {
        let state = if w.stop_requested {
            WorkerState::Stopping
        } else if w.ready {
            WorkerState::Ready
        } else {
            WorkerState::Starting
        };
        WorkerSnapshot {
            key: Some(key),
            group: w.group,
            slot: w.slot,
            pid: w.pid,
            generation: w.generation,
            state,
            restarts: slot.restarts,
            last_exit: slot.last_exit.clone(),
            restart_at: None,
            spawned_at: Some(w.spawned_at),
            last_replaced: slot.last_replaced.clone(),
        }
    }

    // ----- start and spawn -------------------------------------------------------------

    fn start(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Starting;
        for g in 0..self.groups.len() {
            for s in 0..self.groups[g].rules.count {
                self.spawn_current(now, g, s);
            }
        }
    }

    fn spawn_worker(&mut self, now: Instant, group: usize, slot: u32, role: Role) -> WorkerKey {
        let key = self.next_key;
        self.next_key += 1;
        let rules = &self.groups[group].rules;
        // An uptime group's workers get at least `min_uptime` (the edge also refuses a
        // `ready_timeout` below it).
        let ready_timeout = rules
            .ready_timeout
            .max(rules.readiness.min_uptime().unwrap_or_default());
        self.workers.insert(
            key,
            Worker {
                group,
                slot,
                generation: self.generation,
                pid: None,
                role,
                ready: false,
                spawned_at: now,
                ready_deadline: Some(now + ready_timeout),
                uptime_at: None,
                stop_requested: false,
                stop_deadline: None,
                killed: false,
                ready_timed_out: false,
                over_since: None,
                over_reported: false,
            },
        );
        self.actions.push_back(Action::Spawn {
            key,
            group,
            slot,
            generation: self.generation,
        });
        key
    }

    fn spawn_current(&mut self, now: Instant, group: usize, slot: u32) {
        let key = self.spawn_worker(now, group, slot, Role::Current);
        let s = &mut self.groups[group].slots[slot as usize];
        s.respawn_at = None;
        s.current = Some(key);
    }

    fn on_spawned(&mut self, now: Instant, key: WorkerKey, pid: i32) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        w.pid = Some(pid);
        if let Some(min_uptime) = self.groups[w.group].rules.readiness.min_uptime() {
            if w.uptime_at.is_none() {
                w.uptime_at = Some(now + min_uptime);
            }
        }
        let (group, slot, generation) = (w.group, w.slot, w.generation);
        let stop_requested = w.stop_requested;
        let killed = w.killed;
        self.actions.push_back(Action::Emit(Event::WorkerSpawned {
            group,
            slot,
            pid,
            generation,
        }));
        // A stop or kill decided before the pid was known is carried out now.
        if killed {
            self.actions.push_back(Action::Kill { key, pid });
        } else if stop_requested {
            self.actions.push_back(Action::Stop { key, pid });
        }
    }

    // ----- readiness ------------------------------------------------------------------

    /// A ready message from the worker: counts unless its group waits for uptime.
    fn on_ready(&mut self, now: Instant, key: WorkerKey) {
        let Some(w) = self.workers.get(&key) else {
            return;
        };
        if matches!(self.groups[w.group].rules.readiness, Readiness::Uptime(_)) {
            return;
        }
        self.mark_ready(now, key);
    }

    fn mark_ready(&mut self, now: Instant, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.ready || w.stop_requested || w.killed {
            return;
        }
        w.ready = true;
        w.ready_deadline = None;
        w.uptime_at = None;
        let (group, slot, generation, role, pid) = (w.group, w.slot, w.generation, w.role, w.pid);
        self.actions.push_back(Action::Emit(Event::WorkerReady {
            group,
            slot,
            pid: pid.unwrap_or(0),
            generation,
        }));
        if role == Role::Replacement {
            self.promote_replacement(now, key);
        }
        self.steer(group);
        if self.phase == Phase::Starting && self.all_slots_ready() {
            self.phase = Phase::Running;
            self.actions.push_back(Action::Emit(Event::FleetReady));
        }
    }

    fn all_slots_ready(&self) -> bool {
        self.groups.iter().all(|g| {
            g.slots.iter().all(|s| {
                s.current
                    .and_then(|k| self.workers.get(&k))
                    .is_some_and(|w| w.ready && !w.stop_requested)
            })
        })
    }

    fn kill_after_ready_timeout(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        w.killed = true;
        w.ready_timed_out = true;
        let timeout = self.groups[w.group].rules.ready_timeout;
        let (group, slot, pid) = (w.group, w.slot, w.pid);
        if let Some(pid) = pid {
            self.actions
                .push_back(Action::Emit(Event::WorkerReadyTimeout {
                    group,
                    slot,
                    pid,
                    timeout,
                }));
            self.actions.push_back(Action::Kill { key, pid });
        }
    }

    // ----- stopping one worker ----------------------------------------------------------

    fn request_stop(&mut self, now: Instant, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.stop_requested || w.killed {
            return;
        }
        w.stop_requested = true;
        w.ready_deadline = None;
        w.stop_deadline = Some(now + self.groups[w.group].rules.stop_timeout);
        let (group, pid) = (w.group, w.pid);
        self.steer(group);
        if let Some(pid) = pid {
            self.actions.push_back(Action::Stop { key, pid });
        }
    }

    fn kill_now(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.killed {
            return;
        }
        w.killed = true;
        w.stop_requested = true;
        let (group, pid) = (w.group, w.pid);
        self.steer(group);
        if let Some(pid) = pid {
            self.actions.push_back(Action::Kill { key, pid });
        }
    }

    fn kill_after_stop_timeout(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get(&key) else {
            return;
        };
        let timeout = self.groups[w.group].rules.stop_timeout;
        if let Some(pid) = w.pid {
            self.actions
                .push_back(Action::Emit(Event::WorkerStopTimeout {
                    group: w.group,
                    slot: w.slot,
                    pid,
                    timeout,
                }));
        }
        self.kill_now(key);
    }

    // ----- exits ------------------------------------------------------------------------

    fn on_exit(
        &mut self,
        now: Instant,
        key: WorkerKey,
        status: Option<ExitStatus>,
        detail: String,
        stderr_tail: String,
    ) {
        let Some(w) = self.workers.remove(&key) else {
            return;
        };
        let requested = w.stop_requested && !w.ready_timed_out;
        let (group, slot) = (w.group, w.slot);
        let uptime = now.duration_since(w.spawned_at);
        let slot_state = &mut self.groups[group].slots[slot as usize];
        if slot_state.current == Some(key) {
            slot_state.current = None;
        }
        if slot_state.replacement == Some(key) {
            slot_state.replacement = None;
        }
        if let Some(pass) = self.pass.as_mut() {
            pass.retiring.retain(|k| *k != key);
        }

        let why = if w.ready_timed_out {
            format!(
                "not ready within {} ms",
                self.groups[group].rules.ready_timeout.as_millis()
            )
        } else if w.ready || requested {
            detail.clone()
        } else {
            format!("{detail} before it was ready")
        };

        let mut restart_in = None;
        if !requested {
            let slot_state = &mut self.groups[group].slots[slot as usize];
            slot_state.last_exit = Some(why.clone());
        }

        let failed_before_ready = !w.ready && !requested;
        match w.role {
            Role::Replacement if failed_before_ready => {
                let memory_step = self.groups[group]
                    .memory
                    .is_some_and(|m| m.new == Some(key));
                if memory_step {
                    self.memory_successor_failed(now, group, slot);
                }
                self.abort_pass(now, group, slot, w.pid, why.clone(), status, stderr_tail);
                // A stop-first slot was emptied for this replacement: refill it with backoff.
                if self.groups[group].slots[slot as usize].current.is_none() {
                    restart_in = self.schedule_restart(now, group, slot, uptime);
                }
            }
            Role::Current if !requested => {
                if self.phase == Phase::Starting && !w.ready {
                    let name = self.groups[group].rules.name.clone();
                    let mut reason = format!("worker {name}#{slot} {why}");
                    if !stderr_tail.trim().is_empty() {
                        reason.push_str(&format!(
                            "; its stderr ended with:\n{}",
                            stderr_tail.trim_end()
                        ));
                    }
                    self.actions.push_back(Action::Emit(Event::WorkerExit {
                        group,
                        slot,
                        pid: w.pid,
                        generation: w.generation,
                        status,
                        cause: ExitCause::Crashed,
                        detail: why,
                        restart_in: None,
                    }));
                    self.actions
                        .push_back(Action::Emit(Event::StartFailed { reason }));
                    self.stop(now, false);
                    return;
                }
                if !w.ready {
                    if let Some((_, from)) = self.groups[group].scaling {
                        if slot >= from {
                            let error = ScaleError::WorkerFailed {
                                slot,
                                reason: why.clone(),
                            };
                            self.fail_scale(group, error);
                        }
                    }
                }
                let has_replacement = self.groups[group].slots[slot as usize]
                    .replacement
                    .is_some();
                if self.phase == Phase::Running || self.phase == Phase::Starting {
                    let slot_state = &mut self.groups[group].slots[slot as usize];
                    slot_state.restarts += 1;
                    if !has_replacement {
                        restart_in = self.schedule_restart(now, group, slot, uptime);
                    }
                }
            }
            _ => {}
        }

        self.actions.push_back(Action::Emit(Event::WorkerExit {
            group,
            slot,
            pid: w.pid,
            generation: w.generation,
            status,
            cause: if requested {
                ExitCause::Requested
            } else {
                ExitCause::Crashed
            },
            detail: why,
            restart_in,
        }));

        self.steer(group);

        // stop-first: the old worker has exited, start its replacement; after an abort,
        // refill its slot with a plain worker instead (it is not part of the pass any more).
        let awaited = self.pass.as_mut().and_then(|pass| {
            let at = pass
                .steps
                .iter()
                .position(|st| matches!(st, Step::AwaitOldExit { old, .. } if *old == key))?;
            Some((pass.steps.remove(at), pass.failure.is_some()))
        });
        if let Some((
            Step::AwaitOldExit {
                group: g, slot: s, ..
            },
            failed,
        )) = awaited
        {
            if failed {
                self.spawn_current(now, g, s);
            } else {
                self.start_replacement(now, g, s, w.pid);
            }
        }
        // stop-first memory replacement: the old worker has exited, start its successor
        // (unless the slot was scaled away or the fleet is stopping meanwhile).
        let successor_due = self.groups[group]
            .memory
            .is_some_and(|m| m.old == key && m.new.is_none());
        if successor_due {
            let slot_empty = self.groups[group]
                .slots
                .get(slot as usize)
                .is_some_and(|st| {
                    st.current.is_none() && st.replacement.is_none() && st.respawn_at.is_none()
                });
            if self.phase == Phase::Running && slot < self.groups[group].rules.count && slot_empty {
                self.spawn_current(now, group, slot);
                let new = self.groups[group].slots[slot as usize].current;
                if let Some(m) = self.groups[group].memory.as_mut() {
                    m.new = new;
                }
            } else {
                self.groups[group].memory = None;
            }
        }
    }

    fn schedule_restart(
        &mut self,
        now: Instant,
        group: usize,
        slot: u32,
        uptime: Duration,
    ) -> Option<Duration> {
        if !matches!(self.phase, Phase::Running | Phase::Starting) {
            return None;
        }
        let backoff = self.backoff;
        let st = &mut self.groups[group].slots[slot as usize];
        if uptime >= backoff.reset_after {
            st.failures = 0;
        }
        st.failures = st.failures.saturating_add(1);
        let delay = backoff.delay(st.failures);
        st.respawn_at = Some(now + delay);
        Some(delay)
    }

    // ----- reload ------------------------------------------------------------------------

    fn request_reload(&mut self, now: Instant, ticket: Ticket) {
        match self.phase {
            Phase::Running => {}
            Phase::Idle | Phase::Starting | Phase::Stopping | Phase::Stopped => {
                let reason = match self.phase {
                    Phase::Idle | Phase::Starting => "the fleet is still starting",
                    _ => "the fleet is stopping",
                };
                self.cancel_unrun(vec![ticket], reason);
                return;
            }
        }
        let cutoff = self.next_key;
        if self.pass.is_some() || self.scaling() || self.memory_replacing() {
            let pending = self.pending.get_or_insert(Pending {
                tickets: Vec::new(),
                cutoff,
            });
            pending.tickets.push(ticket);
            pending.cutoff = cutoff;
            return;
        }
        self.begin_pass(now, vec![ticket], cutoff);
    }

    fn begin_pass(&mut self, now: Instant, tickets: Vec<Ticket>, cutoff: WorkerKey) {
        self.generation += 1;
        let mut queue = VecDeque::new();
        let mut notified = 0;
        for (g, group) in self.groups.iter().enumerate() {
            if group.rules.reloadable {
                for s in 0..group.rules.count {
                    queue.push_back((g, s));
                }
            }
        }
        // Non-reloadable groups: tell their workers, never restart them.
        let notify: Vec<(WorkerKey, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| !self.groups[w.group].rules.reloadable && !w.stop_requested)
            .filter_map(|(k, w)| w.pid.map(|p| (*k, p)))
            .collect();
        for (key, pid) in notify {
            notified += 1;
            self.actions.push_back(Action::NotifyReload { key, pid });
        }
        let due = queue
            .iter()
            .filter(|(g, s)| self.slot_is_due(*g, *s, cutoff))
            .count() as u32;
        self.actions.push_back(Action::Emit(Event::ReloadStart {
            generation: self.generation,
            tickets: tickets.clone(),
            due,
        }));
        self.pass = Some(Pass {
            tickets,
            cutoff,
            generation: self.generation,
            started_at: now,
            queue,
            steps: Vec::new(),
            retiring: Vec::new(),
            replaced: Vec::new(),
            due,
            notified,
            failure: None,
        });
    }

    /// A slot is due when its current worker was spawned before the request, or it has none.
    fn slot_is_due(&self, group: usize, slot: u32, cutoff: WorkerKey) -> bool {
        match self.groups[group].slots[slot as usize].current {
            Some(key) => key < cutoff,
            None => true,
        }
    }

    /// The group's `parallel` (validated `>= 1`), at most `count`.
    fn parallel(&self, group: usize) -> usize {
        let rules = &self.groups[group].rules;
        rules.parallel.min(rules.count) as usize
    }

    /// Whether `slot` of `group` has a ready worker that was not asked to stop.
    fn serving(&self, group: usize, slot: u32) -> bool {
        self.groups[group].slots[slot as usize]
            .current
            .and_then(|k| self.workers.get(&k))
            .is_some_and(|w| w.ready && !w.stop_requested)
    }

    /// Start due slots of the running pass while its group has room for them.
    fn advance_pass(&mut self, now: Instant) {
        loop {
            let Some(pass) = self.pass.as_ref() else {
                return;
            };
            if pass.failure.is_some() {
                return;
            }
            let Some(&(g, s)) = pass.queue.front() else {
                return;
            };
            // Groups are replaced one after the other: the next group waits for this one.
            if pass.steps.iter().any(|st| st.group() != g) {
                return;
            }
            // Decide the next slot only once every replacement started so far is running
            // (or has failed to start): a spawn failure aborts before anything else moves.
            let unspawned = pass.steps.iter().any(|st| {
                matches!(*st, Step::AwaitReplacement { replacement, .. }
                    if self.workers.get(&replacement).is_some_and(|w| w.pid.is_none()))
            });
            if unspawned {
                return;
            }
            let parallel = self.parallel(g);
            let in_flight = pass.steps.len();
            if in_flight >= parallel {
                return;
            }
            let order = self.groups[g].rules.order;
            // start-first: at most `parallel` replacements booting and, with the old workers
            // of this group still draining, at most 2 x `parallel` processes beyond `count`.
            if order == Order::StartFirst {
                let draining = pass
                    .retiring
                    .iter()
                    .filter(|k| self.workers.get(k).is_some_and(|w| w.group == g))
                    .count();
                if in_flight + draining >= 2 * parallel {
                    return;
                }
            }
            let cutoff = pass.cutoff;
            if let Some(pass) = self.pass.as_mut() {
                pass.queue.pop_front();
            }
            // A slot already being replaced (its refill started early, see below) is done
            // by that step.
            let in_step = self.pass.as_ref().is_some_and(|p| {
                p.steps.iter().any(|st| match *st {
                    Step::AwaitReplacement { group, slot, .. }
                    | Step::AwaitOldExit { group, slot, .. } => group == g && slot == s,
                })
            });
            if in_step || !self.slot_is_due(g, s, cutoff) {
                continue;
            }
            let old = self.groups[g].slots[s as usize].current;
            // stop-first never stops a serving worker while `parallel` other slots of its
            // group are down (being replaced, emptied by a failed replacement, or a crash
            // restart still starting): at most `parallel` slots are missing at a time. The
            // pass waits for a starting worker (ready or gone within ready_timeout) and
            // refills an empty slot itself, then comes back here.
            if order == Order::StopFirst && self.serving(g, s) {
                let count = self.groups[g].rules.count;
                let down: Vec<u32> = (0..count)
                    .filter(|&o| o != s && !self.serving(g, o))
                    .collect();
                if down.len() >= parallel {
                    if let Some(pass) = self.pass.as_mut() {
                        pass.queue.push_front((g, s));
                    }
                    let refill = down.into_iter().find(|&o| self.slot_is_empty(g, o));
                    if let Some(empty) = refill {
                        self.start_replacement(now, g, empty, None);
                        continue;
                    }
                    return;
                }
            }
            match (order, old) {
                (Order::StopFirst, Some(old)) => {
                    self.groups[g].slots[s as usize].current = None;
                    if let Some(w) = self.workers.get_mut(&old) {
                        w.role = Role::Retiring;
                    }
                    if let Some(pass) = self.pass.as_mut() {
                        pass.steps.push(Step::AwaitOldExit {
                            group: g,
                            slot: s,
                            old,
                        });
                    }
                    self.request_stop(now, old);
                }
                _ => {
                    self.start_replacement(now, g, s, None);
                }
            }
        }
    }

    /// A slot with no worker at all: no current one, no replacement booting, and no old
    /// worker of the pass still exiting from it.
    fn slot_is_empty(&self, group: usize, slot: u32) -> bool {
        let st = &self.groups[group].slots[slot as usize];
        let leaving = self.pass.as_ref().is_some_and(|p| {
            p.steps.iter().any(|step| {
                matches!(*step, Step::AwaitOldExit { group: g, slot: s, .. } if g == group && s == slot)
            })
        });
        st.current.is_none() && st.replacement.is_none() && !leaving
    }

    /// Spawn the running pass's replacement for `slot` and wait for it to be ready.
    /// `old_pid`: the worker it replaces, when that one already left the slot (stop-first).
    fn start_replacement(&mut self, now: Instant, group: usize, slot: u32, old_pid: Option<i32>) {
        let replacement = self.spawn_worker(now, group, slot, Role::Replacement);
        let st = &mut self.groups[group].slots[slot as usize];
        st.replacement = Some(replacement);
        st.respawn_at = None;
        if let Some(pass) = self.pass.as_mut() {
            pass.steps.push(Step::AwaitReplacement {
                group,
                slot,
                replacement,
                old_pid,
            });
        }
    }

    fn promote_replacement(&mut self, now: Instant, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        w.role = Role::Current;
        let (g, s, new_pid) = (w.group, w.slot, w.pid.unwrap_or(0));
        let st = &mut self.groups[g].slots[s as usize];
        st.replacement = None;
        st.respawn_at = None;
        let old = st.current.replace(key);
        let mut old_pid = None;
        if let Some(old) = old {
            if let Some(ow) = self.workers.get_mut(&old) {
                ow.role = Role::Retiring;
                old_pid = ow.pid;
            }
            self.request_stop(now, old);
        }
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        if let Some(old) = old {
            pass.retiring.push(old);
        }
        // This slot's step ends here. A stop-first slot is already empty: its old worker's
        // pid is in the step.
        let step = pass.steps.iter().position(
            |st| matches!(st, Step::AwaitReplacement { replacement, .. } if *replacement == key),
        );
        if let Some(Step::AwaitReplacement {
            old_pid: stopped, ..
        }) = step.map(|at| pass.steps.remove(at))
        {
            if old_pid.is_none() {
                old_pid = stopped;
            }
        }
        pass.replaced.push(Replaced {
            group: g,
            slot: s,
            old_pid,
            new_pid,
        });
        // A slot emptied during the pass (its new worker died) is refilled by the pass too:
        // count it as due, so progress never reads "3/2".
        pass.due = pass.due.max(pass.replaced.len() as u32);
        let event = Event::ReloadProgress {
            group: g,
            slot: s,
            replaced: pass.replaced.len() as u32,
            due: pass.due,
            generation: pass.generation,
        };
        self.actions.push_back(Action::Emit(event));
    }

    /// A replacement failed: stop the rollout. No further old worker is touched. The
    /// other replacements still booting are stopped where their slot's old worker still
    /// serves (start-first); where the slot is already empty (stop-first), the booting
    /// worker is kept as the slot's worker, since stopping it would only leave the slot
    /// empty longer. Old workers already leaving (stop-first) finish leaving and their slot
    /// is then refilled (see `on_exit`).
    #[allow(clippy::too_many_arguments)]
    fn abort_pass(
        &mut self,
        now: Instant,
        group: usize,
        slot: u32,
        pid: Option<i32>,
        reason: String,
        status: Option<ExitStatus>,
        stderr_tail: String,
    ) {
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        pass.queue.clear();
        let booting: Vec<(usize, u32, WorkerKey)> = pass
            .steps
            .iter()
            .filter_map(|st| match *st {
                Step::AwaitReplacement {
                    group,
                    slot,
                    replacement,
                    ..
                } => Some((group, slot, replacement)),
                Step::AwaitOldExit { .. } => None,
            })
            .collect();
        pass.steps
            .retain(|st| matches!(st, Step::AwaitOldExit { .. }));
        for (g, s, key) in booting {
            if !self.workers.contains_key(&key) {
                continue; // the replacement that failed
            }
            let st = &mut self.groups[g].slots[s as usize];
            st.replacement = None;
            if st.current.is_none() {
                st.current = Some(key);
                if let Some(w) = self.workers.get_mut(&key) {
                    w.role = Role::Current;
                }
            } else {
                if let Some(w) = self.workers.get_mut(&key) {
                    w.role = Role::Retiring;
                }
                if let Some(pass) = self.pass.as_mut() {
                    pass.retiring.push(key);
                }
                self.request_stop(now, key);
            }
        }
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        if pass.failure.is_none() {
            pass.failure = Some(ReloadFailure {
                group,
                slot,
                pid,
                reason,
                status,
                stderr_tail,
            });
        }
    }

    /// End the pass when nothing is left to do, then start a coalesced one if queued.
    fn finish_pass_if_done(&mut self, now: Instant) {
        let Some(pass) = self.pass.as_ref() else {
            return;
        };
        if !pass.steps.is_empty() || !pass.queue.is_empty() || !pass.retiring.is_empty() {
            return;
        }
        let Some(pass) = self.pass.take() else { return };
        self.apply_next_rules();
        let outcome = if pass.failure.is_some() {
            ReloadOutcome::Failed
        } else {
            ReloadOutcome::Done
        };
        self.finish_report(
            ReloadReport {
                tickets: pass.tickets,
                generation: pass.generation,
                outcome,
                replaced: pass.replaced,
                due: pass.due,
                notified: pass.notified,
                duration: now.duration_since(pass.started_at),
                failure: pass.failure,
                cancel_reason: None,
            },
            true,
        );
        if let Some(pending) = self.pending.take() {
            if self.phase == Phase::Running {
                self.begin_pass(now, pending.tickets, pending.cutoff);
            }
        }
    }

    /// Answer the report's tickets. Only a pass that ran becomes the status's last reload;
    /// requests answered without a pass (fleet starting or stopping) do not.
    fn finish_report(&mut self, report: ReloadReport, pass_ran: bool) {
        let event = match report.outcome {
            ReloadOutcome::Done => Event::ReloadDone(report.clone()),
            ReloadOutcome::Failed | ReloadOutcome::Cancelled => Event::ReloadFailed(report.clone()),
        };
        if pass_ran {
            self.last_reload = Some(report);
        }
        self.actions.push_back(Action::Emit(event));
    }

    // ----- stop ---------------------------------------------------------------------------

    fn stop(&mut self, now: Instant, force: bool) {
        match self.phase {
            Phase::Stopped => return,
            Phase::Stopping if !force => return,
            _ => {}
        }
        let was_stopping = self.phase == Phase::Stopping;
        self.phase = Phase::Stopping;
        for group in &mut self.groups {
            group.memory = None;
        }
        if !was_stopping {
            self.cancel_reloads(now, "the fleet is stopping");
            for g in 0..self.groups.len() {
                self.fail_scale(g, ScaleError::Stopping);
            }
        }
        for group in &mut self.groups {
            for slot in &mut group.slots {
                slot.respawn_at = None;
            }
        }
        let keys: Vec<WorkerKey> = self.workers.keys().copied().collect();
        for key in keys {
            if force {
                self.kill_now(key);
            } else {
                self.request_stop(now, key);
            }
        }
    }

    /// End the running pass and any queued requests because the fleet is stopping. A pass
    /// that had already failed stays a failure (its cause is what users need); the rest is
    /// answered as cancelled.
    fn cancel_reloads(&mut self, now: Instant, reason: &str) {
        if let Some(pass) = self.pass.take() {
            self.apply_next_rules();
            let failed = pass.failure.is_some();
            self.finish_report(
                ReloadReport {
                    tickets: pass.tickets,
                    generation: pass.generation,
                    outcome: if failed {
                        ReloadOutcome::Failed
                    } else {
                        ReloadOutcome::Cancelled
                    },
                    replaced: pass.replaced,
                    due: pass.due,
                    notified: pass.notified,
                    duration: now.duration_since(pass.started_at),
                    failure: pass.failure,
                    cancel_reason: (!failed).then(|| reason.to_string()),
                },
                true,
            );
        }
        if let Some(pending) = self.pending.take() {
            self.cancel_unrun(pending.tickets, reason);
        }
    }

    /// Answer requests that never got a pass (fleet starting or stopping) as cancelled.
    fn cancel_unrun(&mut self, tickets: Vec<Ticket>, reason: &str) {
        let report = ReloadReport {
            tickets,
            generation: self.generation,
            outcome: ReloadOutcome::Cancelled,
            replaced: Vec::new(),
            due: 0,
            notified: 0,
            duration: Duration::ZERO,
            failure: None,
            cancel_reason: Some(reason.to_string()),
        };
        self.finish_report(report, false);
    }

    // ----- scale ---------------------------------------------------------------------------

    /// Whether some group has a scale in progress.
    fn scaling(&self) -> bool {
        self.groups.iter().any(|g| g.scaling.is_some())
    }

    fn scale(&mut self, now: Instant, group: usize, count: u32, ticket: Ticket) {
        let refused = if group >= self.groups.len() {
            Some(ScaleError::UnknownGroup)
        } else if count == 0 {
            Some(ScaleError::ZeroCount)
        } else {
            match self.phase {
                Phase::Idle | Phase::Starting => Some(ScaleError::NotStarted),
                Phase::Stopping | Phase::Stopped => Some(ScaleError::Stopping),
                Phase::Running if self.pass.is_some() => Some(ScaleError::Reloading),
                Phase::Running => None,
            }
        };
        if let Some(error) = refused {
            self.actions.push_back(Action::Emit(Event::ScaleFailed {
                group,
                count,
                ticket,
                error,
            }));
            return;
        }
        // A superseded scale's new slots still count as new for this one.
        let earlier = self.groups[group].scaling.map(|(_, from)| from);
        self.fail_scale(group, ScaleError::Superseded);
        let from = self.groups[group].rules.count;
        let first_new = earlier.map_or(from, |e| e.min(from));
        self.actions.push_back(Action::Emit(Event::ScaleStart {
            group,
            from,
            to: count,
            ticket,
        }));
        let g = &mut self.groups[group];
        g.scaling = Some((ticket, first_new));
        g.rules.count = count;
        if let Some(next) = g.next_rules.as_mut() {
            next.count = count;
        }
        if g.slots.len() < count as usize {
            g.slots.resize(count as usize, Slot::default());
        }
        // Grow: empty slots below the new count get a worker now (a slot left by an
        // earlier shrink may still have its old worker leaving: that one keeps leaving).
        for s in 0..count {
            let st = &self.groups[group].slots[s as usize];
            if st.current.is_none() && st.replacement.is_none() && st.respawn_at.is_none() {
                self.groups[group].slots[s as usize] = Slot::default();
                self.spawn_current(now, group, s);
            }
        }
        // Shrink: steer away from the removed slots, then stop their workers for good.
        let removed: Vec<WorkerKey> = self.groups[group]
            .slots
            .iter_mut()
            .skip(count as usize)
            .flat_map(|st| {
                st.respawn_at = None;
                [st.current.take(), st.replacement.take()]
            })
            .flatten()
            .collect();
        for key in &removed {
            if let Some(w) = self.workers.get_mut(key) {
                w.role = Role::Retiring;
            }
        }
        self.steer(group);
        for key in removed {
            self.request_stop(now, key);
        }
    }

    /// Answer `group`'s scale in progress, if any, with `error`.
    fn fail_scale(&mut self, group: usize, error: ScaleError) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if let Some((ticket, _)) = g.scaling.take() {
            let count = g.rules.count;
            self.actions.push_back(Action::Emit(Event::ScaleFailed {
                group,
                count,
                ticket,
                error,
            }));
        }
    }

    /// Answer `group`'s scale once every new slot serves and no removed slot has a worker
    /// left; the removed slots are forgotten then. Older slots are not waited for: one in a
    /// crash loop must not hold the scale (and a reload queued behind it) forever.
    fn finish_scale_if_done(&mut self, group: usize) {
        let count = self.groups[group].rules.count;
        let leftover = self
            .workers
            .values()
            .any(|w| w.group == group && w.slot >= count);
        if leftover {
            return;
        }
        self.groups[group].slots.truncate(count as usize);
        let Some((ticket, first_new)) = self.groups[group].scaling else {
            return;
        };
        if (first_new..count).all(|s| self.serving(group, s)) {
            self.groups[group].scaling = None;
            self.actions.push_back(Action::Emit(Event::ScaleDone {
                group,
                count,
                ticket,
            }));
        }
    }

    // ----- memory ---------------------------------------------------------------------------

    /// Whether some group has a memory replacement in progress.
    fn memory_replacing(&self) -> bool {
        self.groups.iter().any(|g| g.memory.is_some())
    }

    /// One memory sample of worker `key` (see **Memory** in the module documentation).
    fn memory_sample(&mut self, now: Instant, key: WorkerKey, rss: u64, limit: u64) {
        let reload_first = self.pass.is_some() || self.pending.is_some();
        let running = self.phase == Phase::Running;
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if rss <= limit {
            w.over_since = None;
            w.over_reported = false;
            return;
        }
        // Only a serving worker is measured: a booting successor or a draining worker is
        // not replaced (again).
        let serving = w.role == Role::Current && w.ready && !w.stop_requested && !w.killed;
        let group = &self.groups[w.group];
        if !running || !serving || (group.rules.reloadable && reload_first) {
            w.over_since = None;
            return;
        }
        let since = *w.over_since.get_or_insert(now);
        let over = now.saturating_duration_since(since);
        if over < MEMORY_WINDOW {
            return;
        }
        let (g, slot, pid) = (w.group, w.slot, w.pid.unwrap_or(0));
        // A group that is not reloadable is only logged, once per crossing.
        let replacing = group.rules.reloadable;
        if replacing {
            // One at a time per group, not while the group scales, and not before the slot's
            // backoff after a failed successor: re-evaluated at the next sample.
            let backing_off = group.slots[slot as usize]
                .memory_retry_at
                .is_some_and(|at| now < at);
            if group.memory.is_some() || group.scaling.is_some() || backing_off {
                return;
            }
            w.over_since = None;
        } else if w.over_reported {
            return;
        }
        w.over_reported = true;
        self.actions.push_back(Action::Emit(Event::MemoryOverLimit {
            group: g,
            slot,
            pid,
            rss,
            limit,
            over,
            replacing,
        }));
        if !replacing {
            return;
        }
        self.groups[g].slots[slot as usize].last_replaced = Some(format!(
            "RSS {} above maxMemory {} for {} s (pid {pid})",
            baton_contract::size::format_size(rss),
            baton_contract::size::format_size(limit),
            over.as_secs()
        ));
        match self.groups[g].rules.order {
            Order::StartFirst => {
                let new = self.spawn_worker(now, g, slot, Role::Replacement);
                let st = &mut self.groups[g].slots[slot as usize];
                st.replacement = Some(new);
                st.respawn_at = None;
                self.groups[g].memory = Some(MemoryStep {
                    old: key,
                    new: Some(new),
                });
            }
            Order::StopFirst => {
                self.groups[g].slots[slot as usize].current = None;
                if let Some(w) = self.workers.get_mut(&key) {
                    w.role = Role::Retiring;
                }
                self.groups[g].memory = Some(MemoryStep {
                    old: key,
                    new: None,
                });
                self.request_stop(now, key);
            }
        }
    }

    /// End `group`'s memory replacement once its old worker is no longer leaving and its
    /// successor no longer booting (ready, or failed: the old worker then keeps serving).
    fn finish_memory_if_done(&mut self, group: usize) {
        let Some(step) = self.groups[group].memory else {
            return;
        };
        let old_leaving = self
            .workers
            .get(&step.old)
            .is_some_and(|w| w.role == Role::Retiring);
        let new_booting = step
            .new
            .and_then(|k| self.workers.get(&k))
            .is_some_and(|w| !w.ready);
        if !old_leaving && !new_booting {
            self.groups[group].memory = None;
            let ready_slot = step
                .new
                .and_then(|k| self.workers.get(&k))
                .filter(|w| w.ready)
                .map(|w| w.slot);
            if let Some(slot) = ready_slot {
                let st = &mut self.groups[group].slots[slot as usize];
                st.memory_failures = 0;
                st.memory_retry_at = None;
            }
        }
    }

    /// A memory successor of `group`'s `slot` failed before it was ready: back off before
    /// the slot's next memory replacement (see **Memory** in the module documentation).
    fn memory_successor_failed(&mut self, now: Instant, group: usize, slot: u32) {
        let backoff = self.backoff;
        let st = &mut self.groups[group].slots[slot as usize];
        st.memory_failures = st.memory_failures.saturating_add(1);
        st.memory_retry_at = Some(now + backoff.delay(st.memory_failures));
    }

    // ----- steering ---------------------------------------------------------------------------

    /// Announce `group`'s serving slots if they changed since the last announcement.
    fn steer(&mut self, group: usize) {
        let serving: Vec<u32> = (0..self.groups[group].rules.count)
            .filter(|&s| self.serving(group, s))
            .collect();
        if serving != self.groups[group].steered {
            self.groups[group].steered = serving.clone();
            self.actions.push_back(Action::Steer { group, serving });
        }
    }

    // ----- bookkeeping after every input ---------------------------------------------------

    fn settle(&mut self, now: Instant) {
        for g in 0..self.groups.len() {
            self.steer(g);
            self.finish_scale_if_done(g);
            self.finish_memory_if_done(g);
        }
        if self.phase == Phase::Running
            && self.pass.is_none()
            && !self.scaling()
            && !self.memory_replacing()
        {
            if let Some(pending) = self.pending.take() {
                self.begin_pass(now, pending.tickets, pending.cutoff);
            }
        }
        if self.phase == Phase::Running {
            // Finishing a pass can begin a coalesced one, which then needs advancing.
            loop {
                self.advance_pass(now);
                let before = self.pass.as_ref().map(|p| p.generation);
                self.finish_pass_if_done(now);
                let after = self.pass.as_ref().map(|p| p.generation);
                if after.is_none() || after == before {
                    break;
                }
            }
        }
        if self.phase == Phase::Stopping && self.workers.is_empty() {
            self.phase = Phase::Stopped;
            self.actions.push_back(Action::Emit(Event::Stopped));
        }
    }
}
