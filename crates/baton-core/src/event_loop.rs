//! The driver: one thread that runs a [`Fleet`] against real processes and sockets.
//!
//! [`launch`] does everything that can fail on bad input *before* any worker exists: it
//! checks the name, prepares the runtime dir, takes the pid-file lock, binds every listen
//! address and the control socket. Then the loop thread starts the fleet and, until the
//! fleet has stopped, waits on one `mio::Poll` for:
//! - commands from the host (reload, stop, status) and child exits, through a channel and
//!   a `Waker` (each worker has a small waiter thread blocked in `waitpid` on its own pid,
//!   so we never own `SIGCHLD` nor reap anyone else's children);
//! - each worker's control channel (`ready` messages) and stderr pipe (relayed to our
//!   stderr, the tail kept for failure reports);
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};

use crate::config::{Balance, FleetConfig, Order};
use crate::control::{self, Request};
use crate::exit_status::ExitStatus;
use crate::fleet::{Action, Event, Fleet, Input, ReloadOutcome, Ticket, WorkerKey, WorkerState};
use crate::group_sockets::GroupSockets;
use crate::handoff;
use crate::public_json::{self, Names, RowExtras};
use crate::runtime_dir::{self, PidFile};
use crate::spawn::{self, Signal, SpawnSpec};

/// Receives every event as JSON (see [`public_json::event`]); called on the loop thread.
pub type EventSink = Box<dyn Fn(Value) + Send + 'static>;

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
    Stop { force: bool },
    Status(Sender<Value>),
}

enum Msg {
    Command(Command),
    Exited {
        key: WorkerKey,
        status: io::Result<ExitStatus>,
    },
}

/// The host's handle on a running fleet. Dropping it does not stop the fleet.
pub struct Handle {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    tickets: Arc<AtomicU64>,
    /// Every bound listen address, in group order: `(group, configured, bound)`.
    pub bound: Vec<(String, String, String)>,
    /// Path of the control socket.
    pub control_path: PathBuf,
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

    /// Request a stop (graceful, or forced).
    pub fn stop(&self, force: bool) -> Result<(), String> {
        self.send(Command::Stop { force })
    }

    /// The current status JSON.
    pub fn status(&self) -> Result<Value, String> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Status(tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the supervisor loop did not answer".to_string())
    }
}

/// Prepare everything that can fail on bad input, then start the fleet on its own thread.
pub fn launch(config: FleetConfig, sink: EventSink) -> Result<Handle, LaunchError> {
    runtime_dir::validate_name(&config.name)
        .map_err(|e| launch_error(format!("invalid name: {e}")))?;
    if config.groups.is_empty() {
        return Err(launch_error(
            "no groups: add at least one group with a script",
        ));
    }
    runtime_dir::ensure_dir(&config.runtime_dir).map_err(|e| launch_error(e.to_string()))?;
    let pid_file = PidFile::acquire(&config.runtime_dir, &config.name)
        .map_err(|e| launch_error(e.to_string()))?;

    if cfg!(not(target_os = "linux")) {
        if let Some(g) = config
            .groups
            .iter()
            .find(|g| g.balance == Balance::ReusePort)
        {
            return Err(launch_error(format!(
                "group \"{}\": balance \"reuseport\" needs Linux (other systems do not spread connections across SO_REUSEPORT sockets); use \"shared\"",
                g.rules.name
            )));
        }
    }
    let mut listeners: Vec<GroupSockets> = Vec::new();
    let mut bound = Vec::new();
    for g in &config.groups {
        let sockets = GroupSockets::bind(g).map_err(launch_error)?;
        for (configured, local) in sockets.bound() {
            bound.push((g.rules.name.clone(), configured, local));
        }
        listeners.push(sockets);
    }

    let control_path = runtime_dir::socket_path(&config.runtime_dir, &config.name);
    let std_listener =
        runtime_dir::bind_control_socket(&control_path).map_err(|e| launch_error(e.to_string()))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| launch_error(format!("control socket {}: {e}", control_path.display())))?;
    let control = UnixListener::from_std(std_listener);

    let poll = Poll::new().map_err(|e| launch_error(format!("cannot create a poller: {e}")))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER)
            .map_err(|e| launch_error(format!("cannot create a waker: {e}")))?,
    );
    let (tx, rx) = mpsc::channel();
    let tickets = Arc::new(AtomicU64::new(1));

    let rules = config.groups.iter().map(|g| g.rules.clone()).collect();
    let fleet = Fleet::new(rules, config.backoff);
    let group_names = config.groups.iter().map(|g| g.rules.name.clone()).collect();
    let rescue = config.groups.iter().map(|_| Rescue::default()).collect();
    let mut state = LoopState {
        fleet,
        config,
        listeners,
        pid_file: Some(pid_file),
        control: Some(control),
        control_path: control_path.clone(),
        poll,
        waker: waker.clone(),
        tx: tx.clone(),
        rx,
        sink,
        group_names,
        workers: HashMap::new(),
        sources: HashMap::new(),
        clients: HashMap::new(),
        next_token: FIRST_DYNAMIC,
        rescue,
        watched: BTreeMap::new(),
        pending: VecDeque::new(),
        rescue_dirty: false,
        rescue_backlog: false,
        logged_once: HashSet::new(),
        stop_waiters: Vec::new(),
        tickets: tickets.clone(),
        master_pid: std::process::id(),
        uid: current_uid(),
    };
    let mut control = state.control.take();
    if let Some(c) = control.as_mut() {
        state
            .poll
            .registry()
            .register(c, CONTROL, Interest::READABLE)
            .map_err(|e| launch_error(format!("cannot watch the control socket: {e}")))?;
    }
    state.control = control;

    thread::Builder::new()
        .name("baton-supervisor".into())
        .spawn(move || state.run())
        .map_err(|e| launch_error(format!("cannot start the supervisor thread: {e}")))?;
    Ok(Handle {
        tx,
        waker,
        tickets,
        bound,
        control_path,
    })
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

const WAKER: Token = Token(0);
const CONTROL: Token = Token(1);
const FIRST_DYNAMIC: usize = 2;
const STDERR_TAIL_BYTES: usize = 4096;
/// Connections accepted from one watched socket per wake-up, so one slot cannot starve
/// the loop; the rest are taken on the next turn.
const ACCEPT_BATCH: usize = 64;
/// How soon to try again when no serving worker could take a connection (its channel
/// full) or an accept failed for lack of resources.
const RESCUE_RETRY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
enum Source {
    WorkerControl(WorkerKey),
    WorkerStderr(WorkerKey),
    Client(usize),
    /// A per-slot listening socket whose slot has no ready worker.
    Straggler(SlotSocket),
}

/// One per-slot listening socket: group, address index (the worker's fd is 3 + addr),
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SlotSocket {
    group: usize,
    addr: usize,
    slot: u32,
}

/// The steering state of one group with per-slot sockets.
#[derive(Default)]
struct Rescue {
    /// The serving slots of the last [`Action::Steer`].
    serving: Vec<u32>,
    /// Serving workers that take handed-off connections; refreshed after every drive.
    targets: Vec<WorkerKey>,
    /// Round-robin position in `targets`.
    next: usize,
}

/// A watched per-slot socket.
struct Watched {
    token: Token,
    /// Connections handed off since it was registered.
    handed: u64,
}

/// An accepted connection no serving worker could take yet (every channel full).
struct Straggler {
    from: SlotSocket,
    conn: OwnedFd,
}

struct WorkerIo {
    control: Option<OwnedFd>,
    control_token: Option<Token>,
    control_buf: Vec<u8>,
    stderr: Option<OwnedFd>,
    stderr_token: Option<Token>,
    stderr_tail: Vec<u8>,
    started_at: SystemTime,
    /// Said `{"type":"ready","handoff":true}`: takes connections over its channel.
    handoff: bool,
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Reload ticket this client waits for.
    ticket: Option<Ticket>,
    /// Close once `outbuf` is flushed.
    closing: bool,
    writable_registered: bool,
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
    sink: EventSink,
    group_names: Vec<String>,
    workers: HashMap<WorkerKey, WorkerIo>,
    sources: HashMap<Token, Source>,
    clients: HashMap<usize, Client>,
    next_token: usize,
    /// Per group (see the module documentation, **Stragglers**).
    rescue: Vec<Rescue>,
    watched: BTreeMap<SlotSocket, Watched>,
    pending: VecDeque<Straggler>,
    /// Something that decides the rescue changed; recomputed at the end of `drive`.
    rescue_dirty: bool,
    /// Work left over (a batch limit, full channels, an accept error): retry soon.
    rescue_backlog: bool,
    /// Log lines already written (repeated failures are logged once).
    logged_once: HashSet<String>,
    stop_waiters: Vec<usize>,
    /// Shared with the host's [`Handle`], so CLI and API reload tickets never collide.
    tickets: Arc<AtomicU64>,
    master_pid: u32,
    uid: u32,
}

impl LoopState {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        self.fleet.handle(Instant::now(), Input::Start);
        self.drive();
        while !self.fleet.is_stopped() {
            let mut timeout = self
                .fleet
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if self.rescue_waiting() {
                timeout = Some(timeout.map_or(RESCUE_RETRY, |t| t.min(RESCUE_RETRY)));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
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
                        Some(Source::WorkerControl(key)) => self.read_worker_control(key),
                        Some(Source::WorkerStderr(key)) => self.read_worker_stderr(key, false),
                        Some(Source::Client(id)) => {
                            if readable {
                                self.read_client(id);
                            }
                            if writable {
                                self.flush_client(id);
                            }
                        }
                        Some(Source::Straggler(socket)) => self.accept_stragglers(socket),
                        None => {}
                    },
                }
            }
            if self.rescue_waiting() {
                self.retry_rescue();
            }
            while let Ok(msg) = self.rx.try_recv() {
                self.on_msg(msg);
            }
            self.fleet.handle_timeout(Instant::now());
            self.drive();
        }
        self.shutdown();
    }

    /// Release everything, so that by the time the host hears `fleet:stopped` the ports are
    /// free and the control socket and pid file are gone.
    fn shutdown(&mut self) {
        let watched: Vec<SlotSocket> = self.watched.keys().copied().collect();
        for socket in watched {
            self.unwatch(socket);
        }
        // Connections nobody could take are closed (the clients see the end of the stream).
        self.pending.clear();
        self.listeners.clear();
        if let Some(mut c) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        let _ = std::fs::remove_file(&self.control_path);
        let waiters = std::mem::take(&mut self.stop_waiters);
        for id in waiters {
            self.reply(id, &json!({ "ok": true, "stopped": true }), true);
            self.flush_client(id);
        }
        self.clients.clear();
        self.pid_file = None;
        let names = Names {
            groups: &self.group_names,
        };
        (self.sink)(public_json::event(&names, &Event::Stopped));
    }

    fn log(&self, message: &str) {
        (self.sink)(json!({ "type": "log", "message": message }));
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
                self.fleet.handle(now, Input::Reload { ticket })
            }
            Msg::Command(Command::Stop { force }) => self.fleet.handle(now, Input::Stop { force }),
            Msg::Command(Command::Status(reply)) => {
                let _ = reply.send(self.status_json());
            }
            Msg::Exited { key, status } => {
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        self.log(&format!("waiting for worker {key} failed: {e}"));
                        ExitStatus::Code(-1)
                    }
                };
                // Everything the worker wrote is in the pipe by now: read it before reporting.
                self.read_worker_stderr(key, true);
                let tail = self.close_worker_io(key);
                self.fleet.handle(
                    now,
                    Input::Exited {
                        key,
                        status,
                        stderr_tail: tail,
                    },
                );
            }
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
                    self.rescue_dirty = true;
                    self.send_worker(key, "{\"type\":\"stop\"}\n");
                    let _ = spawn::send_signal(pid, Signal::Term);
                }
                Action::Kill { pid, .. } => {
                    self.rescue_dirty = true;
                    let _ = spawn::send_signal(pid, Signal::Kill);
                }
                Action::NotifyReload { key, .. } => {
                    self.send_worker(key, "{\"type\":\"reload\"}\n")
                }
                Action::Steer { group, serving } => self.steer(group, serving),
                Action::Emit(event) => self.emit(event),
            }
        }
        if self.rescue_dirty {
            self.refresh_rescue();
        }
    }

    // ----- steering and stragglers (see the module documentation) ---------------------------

    /// New connections of `group` go to `serving` only.
    fn steer(&mut self, group: usize, serving: Vec<u32>) {
        self.rescue_dirty = true;
        let Some(sockets) = self.listeners.get(group) else {
            return;
        };
        if !sockets.has_per_slot() {
            return;
        }
        let errors = sockets.steer(&serving);
        let name = self.group_names.get(group).cloned().unwrap_or_default();
        for e in errors {
            self.log_once(format!(
                "group \"{name}\": {e}; the kernel's hash goes on spreading them over every slot, \
                 including those without a ready worker"
            ));
        }
        if let Some(r) = self.rescue.get_mut(group) {
            r.serving = serving;
        }
    }

    /// Recompute which workers take handed-off connections and which per-slot sockets the
    /// loop watches.
    fn refresh_rescue(&mut self) {
        self.rescue_dirty = false;
        let per_slot: Vec<(usize, Vec<usize>)> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(g, l)| (g, l.per_slot_addrs()))
            .filter(|(_, addrs)| !addrs.is_empty())
            .collect();
        if per_slot.is_empty() {
            return;
        }
        let snapshot = self.fleet.snapshot();
        let mut wanted: Vec<SlotSocket> = Vec::new();
        for (g, addrs) in &per_slot {
            let Some(r) = self.rescue.get_mut(*g) else {
                continue;
            };
            // Ready (and not asked to stop) workers of serving slots that said they take
            // connections and whose channel is open.
            let targets: Vec<WorkerKey> = snapshot
                .workers
                .iter()
                .filter(|w| w.group == *g && w.state == WorkerState::Ready)
                .filter(|w| r.serving.contains(&w.slot))
                .filter_map(|w| w.key)
                .filter(|k| {
                    self.workers
                        .get(k)
                        .is_some_and(|io| io.handoff && io.control.is_some())
                })
                .collect();
            if targets != r.targets {
                r.targets = targets;
                r.next = 0;
            }
            if r.targets.is_empty() {
                continue;
            }
            let count = self.config.groups[*g].rules.count;
            for slot in (0..count).filter(|s| !r.serving.contains(s)) {
                for addr in addrs {
                    wanted.push(SlotSocket {
                        group: *g,
                        addr: *addr,
                        slot,
                    });
                }
            }
        }
        let gone: Vec<SlotSocket> = self
            .watched
            .keys()
            .filter(|s| !wanted.contains(s))
            .copied()
            .collect();
        for socket in gone {
            self.unwatch(socket);
        }
        for socket in wanted {
            if !self.watched.contains_key(&socket) {
                self.watch(socket);
            }
        }
        if !self.pending.is_empty() {
            self.rescue_backlog = true;
        }
    }

    fn watch(&mut self, socket: SlotSocket) {
        let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot)
        else {
            return;
        };
        let name = &self.group_names[socket.group];
        let fail = |what: &str, e: io::Error| {
            format!(
                "group \"{name}\": cannot watch slot {}'s socket {} for connections to hand \
                 to ready workers ({what}: {e}); they wait for the slot's next worker",
                socket.slot, listener.local
            )
        };
        if let Err(e) = listener.set_nonblocking() {
            let message = fail("O_NONBLOCK", e);
            self.log_once(message);
            return;
        }
        let fd = listener.fd();
        let token = Token(self.next_token);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            let message = fail("poll", e);
            self.log_once(message);
            return;
        }
        self.next_token += 1;
        self.sources.insert(token, Source::Straggler(socket));
        self.watched.insert(socket, Watched { token, handed: 0 });
        // Connections already queued: take them now (the poller reports only new ones
        // reliably once we have drained the queue).
        self.accept_stragglers(socket);
    }

    fn unwatch(&mut self, socket: SlotSocket) {
        let Some(w) = self.watched.remove(&socket) else {
            return;
        };
        self.sources.remove(&w.token);
        if let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot) {
            let fd = listener.fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if w.handed > 0 {
                self.log(&format!(
                    "group \"{}\": handed {} connection{} queued on slot {}'s socket {} to ready workers",
                    self.group_names[socket.group],
                    w.handed,
                    if w.handed == 1 { "" } else { "s" },
                    socket.slot,
                    listener.local
                ));
            }
        }
    }

    /// Whether stragglers wait for a retry that can succeed: left in a watched queue, or
    /// accepted for a group that has a worker to take them.
    fn rescue_waiting(&self) -> bool {
        let has_targets = |g: usize| self.rescue.get(g).is_some_and(|r| !r.targets.is_empty());
        (self.rescue_backlog && self.watched.keys().any(|s| has_targets(s.group)))
            || self.pending.iter().any(|s| has_targets(s.from.group))
    }

    /// Hand over the connections left waiting, then take what the watched sockets queued.
    fn retry_rescue(&mut self) {
        self.rescue_backlog = false;
        let mut still = VecDeque::new();
        while let Some(s) = self.pending.pop_front() {
            if let Err(s) = self.hand_off(s) {
                still.push_back(s);
            }
        }
        let blocked = !still.is_empty();
        self.pending = still;
        if blocked {
            self.rescue_backlog = true;
            return;
        }
        let watched: Vec<SlotSocket> = self.watched.keys().copied().collect();
        for socket in watched {
            self.accept_stragglers(socket);
        }
    }

    /// Accept what `socket` has queued and hand it over.
    fn accept_stragglers(&mut self, socket: SlotSocket) {
        if !self.watched.contains_key(&socket) {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            if !self.pending.is_empty() {
                // The workers' channels are full: leave the rest in the kernel's queue.
                self.rescue_backlog = true;
                return;
            }
            let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot)
            else {
                return;
            };
            match listener.accept_pending() {
                Ok(Some(conn)) => {
                    if let Err(s) = self.hand_off(Straggler { from: socket, conn }) {
                        self.pending.push_back(s);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let message = format!(
                        "group \"{}\": cannot accept a connection queued on slot {}'s socket {}: {e}",
                        self.group_names[socket.group], socket.slot, listener.local
                    );
                    self.log_once(message);
                    self.rescue_backlog = true;
                    return;
                }
            }
        }
        self.rescue_backlog = true;
    }

    /// Send `s` to the next serving worker of its group that can take it; give it back
    /// when none can right now.
    fn hand_off(&mut self, s: Straggler) -> Result<(), Straggler> {
        let Some(r) = self.rescue.get_mut(s.from.group) else {
            return Err(s);
        };
        let line = handoff::handle_line(3 + s.from.addr as i32);
        let n = r.targets.len();
        for i in 0..n {
            let at = (r.next + i) % n;
            let key = r.targets[at];
            let Some(channel) = self.workers.get(&key).and_then(|io| io.control.as_ref()) else {
                continue;
            };
            match handoff::send_with_fd(channel.as_fd(), line.as_bytes(), s.conn.as_fd()) {
                Ok(sent) => {
                    if sent < line.len() {
                        // Never seen for ~100 bytes on a Unix stream socket, but the rest of
                        // the line must follow or the channel's JSON stream breaks.
                        let mut stream = BorrowedStream(channel.as_raw_fd());
                        let _ = stream.write_all(&line.as_bytes()[sent..]);
                    }
                    r.next = (at + 1) % n;
                    if let Some(w) = self.watched.get_mut(&s.from) {
                        w.handed += 1;
                    }
                    // `s.conn` drops here: the worker has its own copy.
                    return Ok(());
                }
                // A full channel, or a worker that just went away (its exit refreshes the
                // targets): try the next one.
                Err(_) => continue,
            }
        }
        Err(s)
    }

    fn emit(&mut self, event: Event) {
        if event == Event::Stopped {
            return; // announced by `shutdown`, once the sockets are released
        }
        let names = Names {
            groups: &self.group_names,
        };
        let value = public_json::event(&names, &event);
        (self.sink)(value.clone());
        match &event {
            Event::ReloadStart { .. } | Event::ReloadProgress { .. } => {
                let ids: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.ticket.is_some())
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.reply(id, &json!({ "event": value }), false);
                }
            }
            Event::ReloadDone(report) | Event::ReloadFailed(report) => {
                let ids: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.ticket.is_some_and(|t| report.tickets.contains(&t)))
                    .map(|(id, _)| *id)
                    .collect();
                let report_json = public_json::report(&names, report);
                for id in ids {
                    let answer = if report.outcome == ReloadOutcome::Done {
                        json!({ "ok": true, "report": report_json })
                    } else {
                        json!({ "ok": false, "error": report_json["message"], "report": report_json })
                    };
                    self.reply(id, &answer, true);
                }
            }
            _ => {}
        }
    }

    fn spawn(&mut self, key: WorkerKey, group: usize, slot: u32, generation: u32) {
        let now = Instant::now();
        let g = &self.config.groups[group];
        let mut env = g.env.clone();
        env.retain(|(k, _)| !k.starts_with("BATON_"));
        env.extend([
            ("BATON_NAME".to_string(), self.config.name.clone()),
            ("BATON_GROUP".to_string(), g.rules.name.clone()),
            ("BATON_WORKER_ID".to_string(), slot.to_string()),
            ("BATON_GENERATION".to_string(), generation.to_string()),
            ("BATON_MASTER_PID".to_string(), self.master_pid.to_string()),
            (
                "BATON_STOP_TIMEOUT".to_string(),
                g.rules.stop_timeout.as_millis().to_string(),
            ),
            ("BATON_BACKLOG".to_string(), g.backlog.to_string()),
        ]);
        let spec = SpawnSpec {
            program: g.program.clone(),
            args: g.args.clone(),
            env,
            cwd: g.cwd.clone(),
            listen_fds: self.listeners[group].fds_for(slot),
            listen_names: g.listen_names.clone(),
            uid: g.uid,
            gid: g.gid,
        };
        match spawn::spawn(&spec) {
            Ok(child) => {
                let pid = child.pid;
                let control_token =
                    self.register_fd(child.control.as_raw_fd(), Source::WorkerControl(key));
                let stderr_token =
                    self.register_fd(child.stderr.as_raw_fd(), Source::WorkerStderr(key));
                self.workers.insert(
                    key,
                    WorkerIo {
                        control: Some(child.control),
                        control_token,
                        control_buf: Vec::new(),
                        stderr: Some(child.stderr),
                        stderr_token,
                        stderr_tail: Vec::new(),
                        started_at: SystemTime::now(),
                        handoff: false,
                    },
                );
                let tx = self.tx.clone();
                let waker = self.waker.clone();
                let waiter = thread::Builder::new()
                    .name(format!("baton-wait-{pid}"))
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let status = spawn::wait_exit(pid);
                        let _ = tx.send(Msg::Exited { key, status });
                        let _ = waker.wake();
                    });
                if let Err(e) = waiter {
                    // Without a waiter we would never learn of its exit: do not keep it.
                    self.log(&format!(
                        "cannot start a waiter thread for pid {pid}: {e}; killing it"
                    ));
                    let _ = spawn::send_signal(pid, Signal::Kill);
                    let _ = spawn::wait_exit(pid);
                    self.close_worker_io(key);
                    self.fleet.handle(
                        now,
                        Input::SpawnFailed {
                            key,
                            error: e.to_string(),
                        },
                    );
                    return;
                }
                self.fleet.handle(now, Input::Spawned { key, pid });
            }
            Err(e) => self.fleet.handle(
                now,
                Input::SpawnFailed {
                    key,
                    error: e.to_string(),
                },
            ),
        }
    }

    fn register_fd(&mut self, fd: RawFd, source: Source) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        match self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            Ok(()) => {
                self.sources.insert(token, source);
                Some(token)
            }
            Err(e) => {
                self.log(&format!("cannot watch fd {fd}: {e}"));
                None
            }
        }
    }

    fn deregister_fd(&mut self, fd: Option<&OwnedFd>, token: Option<Token>) {
        if let (Some(fd), Some(token)) = (fd, token) {
            let raw = fd.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            self.sources.remove(&token);
        }
    }

    /// Close a worker's control channel and stderr pipe; return its stderr tail.
    fn close_worker_io(&mut self, key: WorkerKey) -> String {
        let Some(mut io) = self.workers.remove(&key) else {
            return String::new();
        };
        self.rescue_dirty = true;
        self.deregister_fd(io.control.as_ref(), io.control_token);
        self.deregister_fd(io.stderr.as_ref(), io.stderr_token);
        io.control.take();
        io.stderr.take();
        String::from_utf8_lossy(&io.stderr_tail).into_owned()
    }

    fn send_worker(&mut self, key: WorkerKey, line: &str) {
        let Some(io) = self.workers.get(&key) else {
            return;
        };
        let Some(fd) = io.control.as_ref() else {
            return;
        };
        // Best effort: a few bytes into an idle socket; the stop path also sends SIGTERM.
        let mut file = BorrowedStream(fd.as_raw_fd());
        let _ = file.write_all(line.as_bytes());
    }

    fn read_worker_control(&mut self, key: WorkerKey) {
        let mut readies = 0;
        let mut handoff = false;
        let mut nacks = 0;
        let mut eof = false;
        if let Some(io) = self.workers.get_mut(&key) {
            let Some(fd) = io.control.as_ref() else {
                return;
            };
            let mut stream = BorrowedStream(fd.as_raw_fd());
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => io.control_buf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            while let Some(pos) = io.control_buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = io.control_buf.drain(..=pos).collect();
                match parse_control_line(&line) {
                    ControlLine::Ready { handoff: h } => {
                        readies += 1;
                        handoff |= h;
                    }
                    ControlLine::HandleNack => nacks += 1,
                    ControlLine::Other => {}
                }
            }
            if io.control_buf.len() > 64 * 1024 {
                io.control_buf.clear();
            }
        }
        if handoff {
            if let Some(io) = self.workers.get_mut(&key) {
                io.handoff = true;
                self.rescue_dirty = true;
            }
        }
        if eof {
            if let Some(io) = self.workers.get_mut(&key) {
                let (fd, token) = (io.control.take(), io.control_token.take());
                self.deregister_fd(fd.as_ref(), token);
                self.rescue_dirty = true;
            }
        }
        if nacks > 0 {
            self.log(&format!(
                "worker {key}: {nacks} handed-off connection{} did not arrive (NODE_HANDLE_NACK); \
                 the client sees its connection closed",
                if nacks == 1 { "" } else { "s" }
            ));
        }
        if readies > 0 {
            self.fleet.handle(Instant::now(), Input::Ready { key });
        }
    }

    fn read_worker_stderr(&mut self, key: WorkerKey, final_read: bool) {
        let mut eof = false;
        {
            let Some(io) = self.workers.get_mut(&key) else {
                return;
            };
            let Some(fd) = io.stderr.as_ref() else { return };
            let mut stream = BorrowedStream(fd.as_raw_fd());
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        relay_to_stderr(&buf[..n]);
                        io.stderr_tail.extend_from_slice(&buf[..n]);
                        if io.stderr_tail.len() > STDERR_TAIL_BYTES {
                            let cut = io.stderr_tail.len() - STDERR_TAIL_BYTES;
                            io.stderr_tail.drain(..cut);
                        }
                        if final_read {
                            continue;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        if eof && !final_read {
            if let Some(io) = self.workers.get_mut(&key) {
                let (fd, token) = (io.stderr.take(), io.stderr_token.take());
                self.deregister_fd(fd.as_ref(), token);
            }
        }
    }

    // ----- control socket ------------------------------------------------------------------

    fn accept_clients(&mut self) {
        loop {
            let accepted = match self.control.as_ref() {
                Some(l) => l.accept(),
                None => return,
            };
            match accepted {
                Ok((mut stream, _)) => {
                    match crate::peer::peer_uid(&stream) {
                        Ok(uid) if uid == self.uid || uid == 0 => {}
                        _ => continue, // another user: drop the connection unanswered
                    }
                    let id = self.next_token;
                    self.next_token += 1;
                    let token = Token(id);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.sources.insert(token, Source::Client(id));
                    self.clients.insert(
                        id,
                        Client {
                            stream,
                            inbuf: Vec::new(),
                            outbuf: Vec::new(),
                            ticket: None,
                            closing: false,
                            writable_registered: false,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, id: usize) {
        let mut request = None;
        let mut gone = false;
        if let Some(c) = self.clients.get_mut(&id) {
            let mut buf = [0u8; 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if let Some(pos) = c.inbuf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = c.inbuf.drain(..=pos).collect();
                request = Some(String::from_utf8_lossy(&line).into_owned());
            } else if c.inbuf.len() > 64 * 1024 {
                request = Some(String::new());
            }
        }
        if let Some(line) = request {
            self.on_request(id, &line);
        } else if gone {
            self.drop_client(id);
        }
    }

    fn on_request(&mut self, id: usize, line: &str) {
        match control::parse_request(line) {
            Err(e) => {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.outbuf
                        .extend_from_slice(control::error_line(&e).as_bytes());
                    c.closing = true;
                }
                self.flush_client(id);
            }
            Ok(Request::Status) => {
                let status = self.status_json();
                self.reply(id, &json!({ "ok": true, "status": status }), true);
            }
            Ok(Request::Reload) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = self.clients.get_mut(&id) {
                    c.ticket = Some(ticket);
                }
                self.fleet.handle(Instant::now(), Input::Reload { ticket });
                self.drive();
            }
            Ok(Request::Stop { force }) => {
                self.stop_waiters.push(id);
                self.fleet.handle(Instant::now(), Input::Stop { force });
                self.drive();
            }
        }
    }

    fn reply(&mut self, id: usize, value: &Value, close: bool) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.outbuf.extend_from_slice(control::line(value).as_bytes());
            c.closing |= close;
        }
        self.flush_client(id);
    }

    fn flush_client(&mut self, id: usize) {
        let mut done = false;
        let mut need_writable = false;
        if let Some(c) = self.clients.get_mut(&id) {
            while !c.outbuf.is_empty() {
                match c.stream.write(&c.outbuf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        c.outbuf.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        need_writable = true;
                        break;
                    }
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if c.outbuf.is_empty() && c.closing {
                done = true;
            }
            if need_writable && !c.writable_registered {
                c.writable_registered = true;
                let _ = self.poll.registry().reregister(
                    &mut c.stream,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                );
            }
        }
        if done {
            self.drop_client(id);
        }
    }

    fn drop_client(&mut self, id: usize) {
        if let Some(mut c) = self.clients.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.sources.remove(&Token(id));
        }
        self.stop_waiters.retain(|w| *w != id);
    }

    // ----- status ----------------------------------------------------------------------------

    fn status_json(&self) -> Value {
        let names = Names {
            groups: &self.group_names,
        };
        let snap = self.fleet.snapshot();
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
                json!({
                    "name": g.rules.name,
                    "count": g.rules.count,
                    "reloadable": g.rules.reloadable,
                    "order": if g.rules.order == Order::StopFirst { "stop-first" } else { "start-first" },
                    "parallel": g.rules.parallel,
                    "listen": listen,
                    "balance": if g.balance == Balance::ReusePort { "reuseport" } else { "shared" },
                })
            })
            .collect();
        let extras = |key: Option<WorkerKey>, pid: Option<i32>| RowExtras {
            started_at: key
                .and_then(|k| self.workers.get(&k))
                .map(|io| io.started_at),
            rss_bytes: pid.and_then(crate::proc_info::rss_bytes),
        };
        public_json::status(
            &names,
            &self.config.name,
            self.master_pid,
            Value::Array(groups),
            &snap,
            Instant::now(),
            &extras,
        )
    }
}

/// What a line from a worker's control channel means to the master.
#[derive(Debug, PartialEq, Eq)]
enum ControlLine {
    /// `{"type":"ready"}` (`"handoff":true` from baton's runtime: it takes handed-off
    /// connections), or the bare string `"ready"` that PM2-style apps send with
    /// `process.send`.
    Ready { handoff: bool },
    /// Node's `{"cmd":"NODE_HANDLE_NACK"}`: a handed-off fd did not arrive.
    HandleNack,
    /// Anything else, including Node's `{"cmd":"NODE_HANDLE_ACK"}`: ignored.
    Other,
}

fn parse_control_line(line: &[u8]) -> ControlLine {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::String(s)) if s == "ready" => ControlLine::Ready { handoff: false },
        Ok(Value::Object(map)) => {
            if map.get("type").and_then(Value::as_str) == Some("ready") {
                ControlLine::Ready {
                    handoff: map.get("handoff") == Some(&Value::Bool(true)),
                }
            } else if map.get("cmd").and_then(Value::as_str) == Some("NODE_HANDLE_NACK") {
                ControlLine::HandleNack
            } else {
                ControlLine::Other
            }
        }
        _ => ControlLine::Other,
    }
}

/// Copy worker stderr to ours, waiting briefly if our stderr is a full non-blocking pipe.
fn relay_to_stderr(mut bytes: &[u8]) {
    let mut err = BorrowedStream(2);
    let mut stalls = 0;
    while !bytes.is_empty() {
        match err.write(bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock && stalls < 50 => {
                stalls += 1;
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

/// Read/write on a raw fd we do not own (a worker's pipe or our own stderr).
struct BorrowedStream(RawFd);

impl Read for BorrowedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the fd is open for the duration of the call (owned by a live OwnedFd or
        // our stderr) and buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Write for BorrowedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: as above; buf is a valid readable buffer of buf.len() bytes. MSG_NOSIGNAL is
        // not available for pipes, but Node ignores SIGPIPE in the master, so EPIPE is returned.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        let parse = |s: &str| parse_control_line(s.as_bytes());
        assert_eq!(parse("\"ready\"\n"), ControlLine::Ready { handoff: false });
        assert_eq!(
            parse("{\"type\":\"ready\"}\n"),
            ControlLine::Ready { handoff: false }
        );
        assert_eq!(
            parse("{\"type\":\"ready\",\"handoff\":true}\n"),
            ControlLine::Ready { handoff: true }
        );
        assert_eq!(
            parse("{\"type\":\"ready\",\"handoff\":\"yes\"}\n"),
            ControlLine::Ready { handoff: false }
        );
        assert_eq!(parse("{\"cmd\":\"NODE_HANDLE_ACK\"}\n"), ControlLine::Other);
        assert_eq!(
            parse("{\"cmd\":\"NODE_HANDLE_NACK\"}\n"),
            ControlLine::HandleNack
        );
        assert_eq!(parse("{\"type\":\"stop\"}\n"), ControlLine::Other);
        assert_eq!(parse("not json\n"), ControlLine::Other);
    }
}
