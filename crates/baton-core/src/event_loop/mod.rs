//! The driver: one thread that runs a [`Fleet`] against real processes and sockets.
//!
//! [`launch`] does everything that can fail on bad input *before* any worker exists: it
//! checks the name, prepares the runtime dir, takes the pid-file lock, binds every listen
//! address and the control socket. Then the loop thread starts the fleet and, until the
//! fleet has stopped, waits on one `mio::Poll` for:
//! - commands from the host (reload, stop, status), through a channel and a `Waker`;
//! - child exits (`exits.rs`): each worker's pidfd on Linux ≥ 5.3, readable once it is a
//!   zombie; elsewhere (or with `BATON_NO_PIDFD=1`) a small waiter thread per worker
//!   blocked in `waitid(WNOWAIT)` on its own pid, through the channel. Either way we never
//!   own `SIGCHLD` nor reap anyone else's children, and the loop reaps the zombie when it
//!   handles the exit, so no signal can reach a recycled pid;
//! - each worker's control channel (`ready` messages); its stdout and stderr are read by
//!   the log relay's own thread (`log_relay.rs`, see `output.rs`), never by this one;
//! - the control socket (the `baton` CLI);
//! - the state machine's next deadline;
//! - the per-slot listening sockets of slots without a ready worker (below).
//!
//! **Steering** (`balance: 'reuseport'`). The state machine announces each group's serving
//! slots ([`Action::Steer`], before any stop that takes a slot out); the loop attaches a
//! BPF program to each per-slot address's reuseport group so that new connections reach
//! only those slots' sockets (`steer.rs`). If the kernel refuses, it logs why and the
//! kernel's hash goes on spreading connections over every slot.
//!
//! **Stragglers.** Connections can still reach a slot's queue just before it is steered
//! away from (a worker killed with -9, in the moments before its exit is seen; handshakes
//! that complete after the steer). They would wait for the slot's next worker, which may
//! never become ready (a crash loop, a bad deploy). So while a slot is not serving and
//! another slot of its group is, with a worker that said it takes handed-off connections
//! (`{"type":"ready","handoff":true}`, baton's runtime), the loop registers that slot's
//! sockets with its poller, accepts what they queue and hands each connection to a
//! serving worker of the group, round-robin, over its control channel (`handoff.rs`).
//! This is the only place the master accepts on a listening socket. When the slot serves
//! again, its sockets are deregistered.

mod control_server;
mod cron;
mod drop_in;
mod exits;
mod launch;
mod output;
mod scale;
mod status;
mod steering;
mod steering_state;
mod takeover;
mod upgrade;
mod workers;

use control_server::ControlClients;
use exits::Pidfd;
pub use launch::launch;
use status::{Alive, StatusCache, StatusPublisher};
use steering::RESCUE_RETRY;
use steering_state::{SlotSocket, Steering};
pub use takeover::seal_handover;
use workers::WorkerIo;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::FleetConfig;
use crate::control::{self, Request};
use crate::exit_status::ExitStatus;
use crate::fleet::{Action, Event, Fleet, Input, ReloadOutcome, Ticket, WorkerKey, WorkerState};
use crate::group_sockets::GroupSockets;
use crate::handoff;
use crate::listen::Origin;
use crate::log_relay::{Drained, LogRelay};
use crate::public_json::{
    self, ConfigChange, ControlAnswer, Names, RowExtras, Status, SupervisorEvent, UpgradeEvent,
    UpgradeStartEvent, UpgradeTakeoverEvent,
};
use crate::reconfigure::{self, Change};
use crate::runtime_dir::{self, PidFile};
use crate::sd_notify::Notifier;
use crate::spawn::{self, Signal, SpawnSpec};

/// How long a host-side call ([`Handle::reconfigure`], [`Handle::status`] before the first
/// publication, [`Handle::reopen_logs`]) waits for the loop or log relay thread to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives every public event (see [`public_json::event`]); called on the loop thread.
pub type EventSink = Box<dyn Fn(SupervisorEvent) + Send + 'static>;

/// Receives the ticket of each `baton reload` the host prepares itself (a fleet started
/// from a config file re-reads it first): the host answers with [`Handle::reload_ticket`]
/// or [`Handle::fail_reload`]. Called on the loop thread; never a public event.
pub type ReloadRequestSink = Box<dyn Fn(Ticket) + Send + 'static>;

/// Where the loop's news goes: the public events, and the private requests to the host.
pub struct Host {
    /// Every public event.
    pub events: EventSink,
    /// Control-socket reloads for the host to prepare (`hostPreparesReloads`).
    pub prepare_reload: ReloadRequestSink,
}

/// Why a fleet could not be launched. Nothing was spawned and nothing is left behind.
#[derive(Debug)]
pub struct LaunchError {
    /// A sentence naming the field, address or path and what to do.
    pub message: String,
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LaunchError {}

fn launch_error(message: impl Into<String>) -> LaunchError {
    LaunchError {
        message: message.into(),
    }
}

enum Command {
    Reload(Ticket),
    /// Take a re-read configuration; answer with the changes found (JSON).
    Reconfigure(Box<FleetConfig>, Sender<Vec<ConfigChange>>),
    /// The host could not prepare the reload of this ticket: answer its waiters.
    FailReload(Ticket, String),
    Stop {
        force: bool,
    },
    Status(Sender<Status>),
    /// Scale a group (`None`: the only one) to a count; answered by a scale event.
    Scale {
        ticket: Ticket,
        group: Option<String>,
        count: u32,
    },
    /// Replace this master (`baton upgrade`); answered by an upgrade event.
    Upgrade(Ticket),
}

enum Msg {
    Command(Command),
    /// A waiter thread saw a worker exit; it is a zombie until the loop reaps it (`status`
    /// is the wait).
    Exited {
        key: WorkerKey,
        pid: i32,
        status: io::Result<()>,
    },
    /// The log relay has read an exited worker's output.
    Drained(Drained),
    /// A line for the master's log from another thread (the log relay's refusals).
    Log(String),
    /// The master started by an upgrade has exited (a zombie until the loop reaps it).
    SuccessorExited {
        pid: i32,
        status: io::Result<()>,
    },
}

/// A listen address of a running fleet.
#[derive(Debug, Clone)]
pub struct BoundAddress {
    /// The group.
    pub group: String,
    /// The address as configured.
    pub configured: String,
    /// The address actually listened on (a real port for `:0`; systemd's socket's address).
    pub bound: String,
    /// Whether baton bound it or systemd passed it.
    pub origin: Origin,
}

/// The host's handle on a running fleet. Dropping it does not stop the fleet.
pub struct Handle {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    tickets: Arc<AtomicU64>,
    /// Every listen address, in group order.
    pub bound: Vec<BoundAddress>,
    /// Path of the control socket.
    pub control_path: PathBuf,
    /// The latest status, published by the loop (see [`Handle::status`]).
    status_cache: StatusCache,
    /// When the loop last ran (see [`Handle::status_age`]).
    alive: Alive,
    relay: Arc<LogRelay>,
}

/// An answer another thread of the core sends later (e.g. the log relay's reopen).
pub struct Pending<T> {
    rx: Receiver<Result<T, String>>,
    timeout: Duration,
    /// The error when no answer came within `timeout`.
    silent: &'static str,
}

impl<T> Pending<T> {
    /// Block until the answer arrives, at most the timeout: call it where blocking is fine
    /// (a libuv worker thread, a test), not on the host's main thread.
    pub fn wait(self) -> Result<T, String> {
        self.rx
            .recv_timeout(self.timeout)
            .map_err(|_| self.silent.to_string())?
    }
}

impl Handle {
    fn send(&self, cmd: Command) -> Result<(), String> {
        self.tx
            .send(Msg::Command(cmd))
            .map_err(|_| "the fleet has already stopped".to_string())?;
        self.waker
            .wake()
            .map_err(|e| format!("cannot wake the supervisor loop: {e}"))
    }

    /// Request a reload; the returned ticket appears in the `reload:done`/`reload:failed`
    /// event that answers it.
    pub fn reload(&self) -> Result<Ticket, String> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Reload(ticket))?;
        Ok(ticket)
    }

    /// Run the reload of a ticket handed to [`Host::prepare_reload`] (the host has
    /// prepared it).
    pub fn reload_ticket(&self, ticket: Ticket) -> Result<(), String> {
        self.send(Command::Reload(ticket))
    }

    /// Answer a ticket handed to [`Host::prepare_reload`] with an error: the host could not
    /// prepare the reload (e.g. the config file has an error). Nothing is replaced.
    pub fn fail_reload(&self, ticket: Ticket, message: String) -> Result<(), String> {
        self.send(Command::FailReload(ticket, message))
    }

    /// Apply a re-read configuration (see `reconfigure.rs`): per-worker settings take
    /// effect for the workers started from now on, the rest is reported as needing a
    /// restart. The changes are attached to the report of the next reload requested, and
    /// returned.
    pub fn reconfigure(&self, config: FleetConfig) -> Result<Vec<ConfigChange>, String> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Reconfigure(Box::new(config), tx))?;
        rx.recv_timeout(ANSWER_TIMEOUT)
            .map_err(|_| "the supervisor loop did not answer".to_string())
    }

    /// Change a group's worker count (`group`: its name, or `None` when the fleet has one
    /// group). The returned ticket appears in the `scale:done`/`scale:failed` event that
    /// answers it: done once every new worker is ready and every removed one has exited.
    pub fn scale(&self, group: Option<String>, count: u32) -> Result<Ticket, String> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Scale {
            ticket,
            group,
            count,
        })?;
        Ok(ticket)
    }

    /// Replace this master with a new one started from the installed baton and Node
    /// (`upgrade.rs`). The returned ticket appears in the `upgrade:done`/`upgrade:failed`
    /// event that answers it; after `upgrade:done` this fleet stops (its workers drain).
    pub fn upgrade(&self) -> Result<Ticket, String> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Upgrade(ticket))?;
        Ok(ticket)
    }

    /// Request a stop (graceful, or forced).
    pub fn stop(&self, force: bool) -> Result<(), String> {
        self.send(Command::Stop { force })
    }

    /// Reopen every log file (`stdout`/`stderr` files of the groups, the master's own log):
    /// after logrotate renamed them, the next lines go to new files at the same paths.
    /// Returns how many files were reopened.
    /// The answer comes from the log relay thread: wait for it with [`Pending::wait`] off
    /// the host's main thread.
    pub fn reopen_logs(&self) -> Pending<usize> {
        let (tx, rx) = mpsc::channel();
        self.relay.reopen(crate::log_relay::Reply::Channel(tx));
        Pending {
            rx,
            timeout: ANSWER_TIMEOUT,
            silent: "the log relay did not answer",
        }
    }

    /// The current status, without waiting for the loop thread: the loop publishes it
    /// whenever something changed (before each event it emits, so an event handler sees
    /// the status that event describes), and `rssBytes` (per worker and the master's) and
    /// the master's `openFds` are read here, fresh.
    pub fn status(&self) -> Result<Status, String> {
        let cached = self.status_cache.lock().ok().and_then(|c| c.clone());
        let Some(mut status) = cached else {
            // Before the loop's first publication (it publishes before anything else).
            let (tx, rx) = mpsc::channel();
            self.send(Command::Status(tx))?;
            return rx
                .recv_timeout(ANSWER_TIMEOUT)
                .map_err(|_| "the supervisor loop did not answer".to_string());
        };
        for row in &mut status.workers {
            row.rss_bytes = row
                .pid
                .and_then(crate::proc_info::rss_bytes)
                .map(public_json::bytes);
        }
        status::add_master_resources(&mut status);
        Ok(status)
    }

    /// How long ago the loop thread last finished a turn: the status [`Handle::status`]
    /// answers with is at most this old plus [`STATUS_REFRESH`]. The loop turns at least
    /// every [`HEARTBEAT`], so an age of several heartbeats means the loop is stuck (the
    /// health endpoint then answers 503, src/master/health.ts).
    pub fn status_age(&self) -> Duration {
        self.alive
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or(Duration::MAX)
    }
}

/// The text of a panic payload (`panic!` with a message or a format string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The effective uid: the one that owns the runtime dir and the control socket, so the
/// one a client must match.
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

const WAKER: Token = Token(0);
const CONTROL: Token = Token(1);
const FIRST_DYNAMIC: usize = 2;
/// Time the host has to prepare a control-socket reload (re-read its config file).
const HOST_PREPARE_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two status publications that no event asked for (connection
/// counts, ready workers between events).
const STATUS_REFRESH: Duration = Duration::from_millis(100);
/// Longest time the loop waits without a turn, so that [`Handle::status_age`] can tell an
/// idle loop from a stuck one.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest freeze the test-only `test-freeze` control request may ask for.
const MAX_TEST_FREEZE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Source {
    WorkerControl(WorkerKey),
    /// A worker's pidfd: readable once it has exited.
    WorkerExit(WorkerKey),
    Client(usize),
    /// A per-slot listening socket whose slot has no ready worker.
    Straggler(SlotSocket),
    /// The upgrade channel to the master replacing this one.
    Successor,
    /// The upgrade channel to the master this one replaces.
    Predecessor,
}

struct LoopState {
    fleet: Fleet,
    config: FleetConfig,
    listeners: Vec<GroupSockets>,
    pid_file: Option<PidFile>,
    control: Option<UnixListener>,
    control_path: PathBuf,
    poll: Poll,
    waker: Arc<Waker>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    host: Host,
    group_names: Vec<String>,
    workers: HashMap<WorkerKey, WorkerIo>,
    sources: HashMap<Token, Source>,
    /// The connected control clients (`control_server.rs`).
    clients: ControlClients,
    next_token: usize,
    /// Steering and stragglers (see the module documentation, `steering_state.rs`).
    steering: Steering,
    /// Log lines already written (repeated failures are logged once).
    logged_once: HashSet<String>,
    /// Shared with the host's [`Handle`], so CLI and API reload tickets never collide.
    tickets: Arc<AtomicU64>,
    master_pid: u32,
    uid: u32,
    /// Config changes of the last reconfigure, for the next reload ticket.
    pending_changes: Vec<Change>,
    /// Config changes by the ticket whose reload picked them up.
    changes_by_ticket: HashMap<Ticket, Vec<Change>>,
    /// The changes of the last reported reload, by its generation (for status).
    last_changes: (u32, Vec<Change>),
    /// Control-socket reloads handed to the host to prepare (`Host::prepare_reload`), since.
    host_pending: HashMap<Ticket, Instant>,
    /// Tickets failed because the host did not prepare them in time (a late answer is
    /// ignored).
    host_expired: HashSet<Ticket>,
    /// Status, readiness and systemd's view of the fleet (`status.rs`).
    publisher: StatusPublisher,
    /// `BATON_TEST_HOOKS=1` at launch: the control socket honours test-only requests
    /// (`test-freeze`, which stalls this loop to exercise the health endpoint's staleness
    /// check in __test__/health.spec.ts). Not documented for users.
    test_hooks: bool,
    /// Reads the workers' stdout and stderr on its own thread (`output.rs`).
    relay: Arc<LogRelay>,
    /// Exits are watched through pidfds, not waiter threads (`exits.rs`).
    pidfd: bool,
    /// The upgrade this master runs (`upgrade.rs`, old master's side).
    upgrade: Option<upgrade::Outgoing>,
    /// The master this one replaces, until it took over (new master's side).
    incoming: Option<takeover::Incoming>,
    /// The fleet was handed to a new master: its sockets are not this one's to steer.
    handed_over: bool,
    /// Shutdown removes the control socket's file (not when another master serves it).
    owns_control_path: bool,
    /// CPU use of the workers and the master, sampled about once a second (`status.rs`).
    cpu: crate::proc_info::CpuSampler,
    /// Restarts and reloads since this master started (`counters` in the status).
    counters: crate::metrics::Counters,
    /// Scheduled reloads of the groups with a `cronRestart` (`cron.rs`).
    cron: cron::CronTimers<chrono::Local>,
}

impl LoopState {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        self.publish_status();
        self.fleet.handle(Instant::now(), Input::Start);
        self.drive();
        let mut control_due: Option<Duration> = None;
        while !self.fleet.is_stopped() {
            self.publisher.beat();
            let mut timeout = Some(
                self.fleet
                    .poll_timeout()
                    .map_or(HEARTBEAT, |t| t.saturating_duration_since(Instant::now()))
                    .min(HEARTBEAT),
            );
            if let Some(wait) = control_due {
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            if let Some(wait) = self.publisher.refresh_wait() {
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            if self.rescue_waiting() {
                timeout = Some(timeout.map_or(RESCUE_RETRY, |t| t.min(RESCUE_RETRY)));
            }
            for at in [
                self.rebalance_at(),
                self.drain_deadline(),
                self.upgrade_deadline(),
                Some(self.cpu.next_at()),
                self.cron_at(),
            ]
            .into_iter()
            .flatten()
            {
                let wait = at.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            let polled = self.poll.poll(&mut events, timeout);
            // Awake: what this turn does next (a request, an exit) is measured from here.
            self.publisher.beat();
            if let Err(e) = polled {
                if e.kind() != ErrorKind::Interrupted {
                    self.log(&format!("poll failed: {e}; stopping the fleet"));
                    self.fleet
                        .handle(Instant::now(), Input::Stop { force: true });
                    self.drive();
                }
                continue;
            }
            let ready: Vec<(Token, bool, bool)> = events
                .iter()
                .map(|e| {
                    (
                        e.token(),
                        e.is_readable() || e.is_read_closed(),
                        e.is_writable(),
                    )
                })
                .collect();
            for (token, readable, writable) in ready {
                match token {
                    WAKER => {}
                    CONTROL => self.accept_clients(),
                    t => match self.sources.get(&t).copied() {
                        Some(Source::WorkerControl(key)) => {
                            if writable {
                                self.flush_worker(key);
                            }
                            if readable {
                                self.read_worker_control(key);
                            }
                        }
                        Some(Source::WorkerExit(key)) => self.on_pidfd_readable(key),
                        Some(Source::Client(id)) => {
                            if readable {
                                self.read_client(id);
                            }
                            if writable {
                                self.flush_client(id);
                            }
                        }
                        Some(Source::Straggler(socket)) => self.accept_stragglers(socket),
                        Some(Source::Successor) => self.read_successor(),
                        Some(Source::Predecessor) => self.read_predecessor(),
                        None => {}
                    },
                }
            }
            if self.rescue_waiting() {
                self.retry_rescue();
            }
            self.rebalance_due();
            self.drain_overdue();
            self.upgrade_due(Instant::now());
            self.sample_cpu(Instant::now());
            self.cron_due();
            while let Ok(msg) = self.rx.try_recv() {
                self.on_msg(msg);
            }
            self.fleet.handle_timeout(Instant::now());
            self.drive();
            control_due = self.control_tick(Instant::now());
            self.publisher.mark_dirty();
            if self.publisher.refresh_due() {
                self.publish_status();
            }
        }
        self.shutdown();
    }

    /// The loop panicked (a bug): do not leave a master that supervises nothing. Every
    /// worker still known is killed (they are not reaped yet, so their pids are still
    /// theirs), the sockets and files are released, and the host hears why, then
    /// `fleet:stopped`.
    fn after_panic(&mut self, message: String) {
        self.log(&format!(
            "internal error in the supervisor loop ({message}); killing every worker and stopping. Please report this."
        ));
        self.kill_and_reap_all();
        self.workers.clear();
        self.clients.clear();
        self.shutdown();
    }

    /// Release everything, so that by the time the host hears `fleet:stopped` the ports are
    /// free and the control socket and pid file are gone.
    fn shutdown(&mut self) {
        for socket in self.steering.watched() {
            self.unwatch(socket);
        }
        // Connections nobody could take are closed (the clients see the end of the stream).
        self.steering.drop_pending();
        self.listeners.clear();
        if let Some(mut c) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        if self.owns_control_path {
            let _ = std::fs::remove_file(&self.control_path);
        }
        self.answer_upgrade_at_exit();
        for id in self.clients.take_stop_waiters() {
            let answer = ControlAnswer {
                stopped: Some(true),
                ..ControlAnswer::ok()
            };
            self.answer(id, &answer);
            self.flush_client(id);
        }
        self.clients.clear();
        // Followers hear that the master stops; what the sinks hold is written (bounded).
        self.relay.shutdown(Duration::from_secs(1));
        self.pid_file = None;
        self.publish_status();
        let names = Names {
            groups: &self.group_names,
        };
        (self.host.events)(public_json::event(&names, &Event::Stopped, &[]));
    }

    fn log(&self, message: &str) {
        (self.host.events)(SupervisorEvent::log(message));
    }

    /// Log `message` unless it was logged before (failures that repeat on every change).
    fn log_once(&mut self, message: String) {
        if !self.logged_once.contains(&message) {
            self.log(&message);
            self.logged_once.insert(message);
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Command(Command::Reload(ticket)) => {
                self.host_pending.remove(&ticket);
                if self.host_expired.remove(&ticket) {
                    return; // already answered as failed: the host took too long
                }
                let changes = std::mem::take(&mut self.pending_changes);
                if !changes.is_empty() {
                    self.changes_by_ticket.insert(ticket, changes);
                }
                self.fleet.handle(now, Input::Reload { ticket })
            }
            Msg::Command(Command::Reconfigure(config, reply)) => {
                let found = self.reconfigure(*config);
                let _ = reply.send(public_json::changes(&found));
            }
            Msg::Command(Command::FailReload(ticket, message)) => {
                self.host_pending.remove(&ticket);
                if !self.host_expired.remove(&ticket) {
                    self.fail_ticket(ticket, &message)
                }
            }
            Msg::Command(Command::Stop { force }) => self.stop_fleet(force),
            Msg::Command(Command::Scale {
                ticket,
                group,
                count,
            }) => self.start_scale(ticket, group.as_deref(), count),
            Msg::Command(Command::Upgrade(ticket)) => {
                self.start_upgrade(upgrade::Waiter::Host(ticket))
            }
            Msg::SuccessorExited { pid, status } => self.on_successor_exit(pid, status),
            Msg::Command(Command::Status(reply)) => {
                let _ = reply.send(self.status(true));
            }
            // Reported once the relay has read what it wrote (its stderr tail).
            Msg::Exited { key, pid, status } => self.reap(key, pid, status),
            Msg::Drained(drained) => self.on_drained(drained),
            Msg::Log(line) => self.log(&line),
        }
    }

    /// Execute every pending action of the state machine.
    fn drive(&mut self) {
        while let Some(action) = self.fleet.poll_action() {
            match action {
                Action::Spawn {
                    key,
                    group,
                    slot,
                    generation,
                } => self.spawn(key, group, slot, generation),
                Action::Stop { key, pid } => {
                    self.steering.mark_dirty();
                    if !self.has_exited(key) {
                        self.send_worker(key, "{\"type\":\"stop\"}\n");
                        self.signal_worker(key, pid, Signal::Term);
                    }
                }
                Action::Kill { key, pid } => {
                    self.steering.mark_dirty();
                    self.signal_worker(key, pid, Signal::Kill);
                }
                Action::NotifyReload { key, .. } => {
                    self.send_worker(key, "{\"type\":\"reload\"}\n")
                }
                Action::Steer { group, serving } => self.steer(group, serving),
                Action::Emit(event) => self.emit(event),
            }
        }
        if self.steering.take_dirty() {
            self.refresh_rescue();
        }
        self.trim_sockets();
    }

    fn emit(&mut self, event: Event) {
        if event == Event::Stopped {
            return; // announced by `shutdown`, once the sockets are released
        }
        self.count(&event);
        // A reload's report carries the config changes its tickets picked up.
        let found: Vec<Change> = match &event {
            Event::ReloadDone(report) | Event::ReloadFailed(report) => {
                let found = report
                    .tickets
                    .iter()
                    .filter_map(|t| self.changes_by_ticket.remove(t))
                    .flatten()
                    .collect();
                self.last_changes = (report.generation, found);
                self.last_changes.1.clone()
            }
            _ => Vec::new(),
        };
        let names = Names {
            groups: &self.group_names,
        };
        let public = public_json::event(&names, &event, &found);
        // Published first, so an event handler sees the status the event describes.
        self.publish_status();
        (self.host.events)(public.clone());
        match (&event, &public) {
            (Event::ReloadStart { .. } | Event::ReloadProgress { .. }, _) => {
                let line = public_json::event_line(&public);
                for id in self.clients.reload_waiters(|_| true) {
                    self.send_line(id, &line, false);
                }
            }
            (Event::ScaleStart { .. } | Event::ScaleDone { .. } | Event::ScaleFailed { .. }, _) => {
                self.on_scale_event(&event, &public)
            }
            (
                Event::ReloadDone(report) | Event::ReloadFailed(report),
                SupervisorEvent::ReloadDone(r) | SupervisorEvent::ReloadFailed(r),
            ) => {
                let answer = if report.outcome == ReloadOutcome::Done {
                    ControlAnswer {
                        report: Some(r.clone()),
                        ..ControlAnswer::ok()
                    }
                } else {
                    ControlAnswer {
                        report: Some(r.clone()),
                        ..ControlAnswer::error(r.message.clone())
                    }
                };
                for id in self.clients.reload_waiters(|t| report.tickets.contains(&t)) {
                    self.answer(id, &answer);
                }
            }
            (Event::FleetReady | Event::StartFailed { .. }, _) => {
                self.report_to_predecessor(&event, &public)
            }
            _ => {}
        }
        self.notify_systemd(&event, &public);
    }

    /// Take a re-read configuration: what a reload can apply goes into the config the next
    /// workers are spawned with (and the state machine's rules); the changes wait for the
    /// next reload ticket.
    fn reconfigure(&mut self, reread: FleetConfig) -> Vec<Change> {
        let plan = reconfigure::plan(&self.config, &reread);
        for (index, group) in plan.config.groups.iter().enumerate() {
            self.fleet.update_rules(index, group.rules.clone());
        }
        self.fleet.set_backoff(plan.config.backoff);
        let host_prepares_reloads = self.config.host_prepares_reloads;
        self.config = plan.config;
        self.config.host_prepares_reloads = host_prepares_reloads;
        self.pending_changes = plan.changes.clone();
        for problem in self.cron.reconfigure(&cron::schedules(&self.config)) {
            self.log(&problem);
        }
        self.open_reconfigured_sinks();
        plan.changes
    }

    /// When the next scheduled reload is due (`cronRestart`), if any group has one.
    fn cron_at(&mut self) -> Option<Instant> {
        if self.cron.is_empty() {
            return None;
        }
        self.cron.next_at(&cron::local_now(), Instant::now())
    }

    /// Run the scheduled reloads that are due: the same request as `baton reload` (one per
    /// turn, however many groups fire together), so it is sequential, readiness-gated and
    /// coalesces with a running pass.
    fn cron_due(&mut self) {
        if self.cron.is_empty() {
            return;
        }
        let fires = self.cron.due(&cron::local_now());
        if fires.is_empty() {
            return;
        }
        let running = self.fleet.is_running() && !self.handed_over;
        for fire in &fires {
            let what = format!("(cronRestart {}, group {})", fire.expression, fire.group);
            if running {
                self.log(&format!("scheduled reload {what}"));
            } else {
                self.log(&format!(
                    "scheduled reload skipped {what}: the fleet is not running (starting, stopping or handed over)"
                ));
            }
        }
        if running {
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            self.fleet.handle(Instant::now(), Input::Reload { ticket });
        }
    }

    /// Answer the control clients waiting for `ticket` with an error.
    /// Also tells systemd, so a `Type=notify-reload` unit's `systemctl reload` ends (with the
    /// reason in its status) instead of waiting for a reload that never starts.
    fn fail_ticket(&mut self, ticket: Ticket, message: &str) {
        self.counters.reload_refused();
        let text = format!("reload not started: {message}");
        self.log(&text);
        if !self.publisher.stopping_notified() {
            let reloading = self.publisher.systemd_reloading("reloading");
            self.systemd_result(reloading);
            let ready = self.publisher.systemd_ready_again(&text);
            self.systemd_result(ready);
        }
        for id in self.clients.reload_waiters(|t| t == ticket) {
            self.answer(id, &ControlAnswer::error(message));
        }
    }

    /// Stop the fleet (API, signal or `baton stop`), telling systemd first.
    fn stop_fleet(&mut self, force: bool) {
        self.stop_upgrade();
        self.notify_stopping();
        self.fleet.handle(Instant::now(), Input::Stop { force });
    }

    // ----- systemd (sd_notify.rs, through the publisher) ----------------------------------

    /// Tell systemd what `event` means for the unit: ready, reloading, ready again, stopping.
    fn notify_systemd(&mut self, event: &Event, public: &SupervisorEvent) {
        if !self.publisher.has_systemd() {
            return;
        }
        let message = public.message().unwrap_or_default();
        let sent = match event {
            // A new master is ready for systemd once it took over (`upgrade.rs`).
            Event::FleetReady if self.incoming.is_some() => Ok(()),
            Event::FleetReady => self.publisher.systemd_ready(self.master_pid, message),
            Event::ReloadStart { .. } => self.publisher.systemd_reloading(message),
            // A pass cancelled by a stop ends in STOPPING, never in READY.
            Event::ReloadDone(_) | Event::ReloadFailed(_) => {
                self.publisher.systemd_ready_again(message)
            }
            Event::StartFailed { .. } => self.publisher.systemd_stopping(),
            _ => Ok(()),
        };
        self.systemd_result(sent);
    }

    fn notify_stopping(&mut self) {
        let sent = self.publisher.systemd_stopping();
        self.systemd_result(sent);
    }

    /// Log (once) that systemd could not be told.
    fn systemd_result(&mut self, sent: Result<(), String>) {
        if let Err(message) = sent {
            self.log_once(message);
        }
    }
}
