//! Worker output, relayed off the supervision loop.
//!
//! One thread (`baton-logs`, its own `mio::Poll`) reads every worker's stdout and stderr
//! pipe as fast as the workers write, and for each chunk:
//! - pushes it to the stream's [`Sink`] (the master's fd 1 or 2, a file, or none for
//!   `ignore`); with `logPrefix`, `logTime` or `logFormat: 'json'`, line by line as
//!   `log_line.rs` writes them (`<time> group#id line`, or one JSON object). A sink never blocks the
//!   reader: when its bounded buffer is full the bytes are dropped and counted, per group
//!   ([`LogRelay::dropped`]);
//! - keeps the last [`STDERR_TAIL_BYTES`] of stderr for failure reports;
//! - cuts it into lines for the [`Ring`] of recent output (`baton logs`) and for the
//!   clients that follow it (`baton logs -f`), each with a bounded buffer too (a client
//!   that does not read loses lines, counted in an `output:dropped` event).
//!
//! The supervision loop only hands pipes over ([`LogRelay::add`]), says when a worker has
//! exited ([`LogRelay::exited`]) and hands over `logs` / `reopen-logs` control clients.
//! After an exit, the relay reads the pipes until both are at end of file, or for at most
//! [`DRAIN_WAIT`] (a worker's own children may keep them open), then closes them, flushes
//! a last partial line and calls back with the stderr tail ([`Drained`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::LogTarget;
pub use crate::control::LogsRequest;
use crate::control::{HEARTBEAT_INTERVAL, HEARTBEAT_LINE};
use crate::log_line::{self, LineFormat, Origin};
use crate::log_ring::{LineBuf, OutputEvent, Ring, Stream};
use crate::log_sink::{self, Sink};
use crate::public_json::{self, ControlAnswer};

/// Bytes of stderr kept per worker for failure reports.
pub const STDERR_TAIL_BYTES: usize = 4096;
/// Bytes of recent output lines the master keeps for `baton logs` (whole fleet).
pub const RING_BYTES: usize = 1 << 20;
/// Bytes buffered per `baton logs -f` client before lines are dropped for it.
pub const FOLLOWER_BUFFER_BYTES: usize = 1 << 20;
/// How long, after a worker exited, its pipes are read before they are closed anyway.
pub const DRAIN_WAIT: Duration = Duration::from_millis(250);

const WAKER: Token = Token(0);
const READ_CHUNK: usize = 64 * 1024;
/// Reads per pipe and wake-up before the other pipes get their turn.
const READS_PER_TURN: usize = 16;

/// A worker's pipes and where their output goes, handed over at spawn.
pub struct WorkerOutput {
    /// The loop's key for the worker (named again in [`Drained`]).
    pub key: u64,
    /// Index of its group (for the dropped-bytes counter).
    pub group: usize,
    /// Its group's name.
    pub group_name: Arc<str>,
    /// Its slot id.
    pub id: u32,
    /// The fleet's name (in JSON lines).
    pub fleet: Arc<str>,
    /// The worker's pid (in JSON lines).
    pub pid: u32,
    /// How its lines are written to its sinks (time stamp, `group#id ` prefix, JSON).
    pub format: LineFormat,
    /// Read ends of its stdout and stderr pipes (non-blocking).
    pub pipes: [OwnedFd; 2],
    /// Where each stream goes; `None` discards (`ignore`, or a file that cannot be opened).
    pub sinks: [Option<Arc<Sink>>; 2],
}

/// A worker's output is fully read (or [`DRAIN_WAIT`] passed): its stderr tail.
#[derive(Debug)]
pub struct Drained {
    /// The worker's key.
    pub key: u64,
    /// The last bytes it wrote to stderr.
    pub stderr_tail: String,
}

/// Where the answer to a reopen goes: a control client, or the host (API).
pub enum Reply {
    /// Write `{"ok":true,"reopened":N}` or `{"ok":false,"error":...}` and close.
    Client(StdUnixStream),
    /// Send the number of files reopened, or the errors.
    Channel(Sender<Result<usize, String>>),
}

enum Cmd {
    Add(Box<WorkerOutput>),
    Exited(u64),
    Forget(u64),
    Logs(StdUnixStream, LogsRequest),
    Reopen(Reply),
    Shutdown(Duration, Sender<()>),
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum SinkKey {
    Fd(i32),
    File(PathBuf),
}

struct Shared {
    sinks: Mutex<HashMap<SinkKey, Arc<Sink>>>,
    /// Bytes dropped per group because a sink was full.
    dropped: Vec<AtomicU64>,
    master_log: Option<Arc<log_sink::MasterLog>>,
    /// Lines for the master's log (the relay's and the file sinks').
    on_log: log_sink::LogFn,
}

/// The relay thread's handle. Shared by the loop and the host; every call is non-blocking
/// except [`LogRelay::shutdown`] (bounded).
pub struct LogRelay {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl LogRelay {
    /// Start the relay thread for a fleet of `groups` groups. `master_log` is the file the
    /// master's own fds 1 and 2 were redirected to (reopened with the sinks). `on_drained`
    /// runs on the relay thread; `on_log` (on the relay thread or a file sink's writer)
    /// takes a line for the master's log (a file a reopen or a rotation refused).
    pub fn start(
        groups: usize,
        master_log: Option<Arc<log_sink::MasterLog>>,
        on_drained: Box<dyn Fn(Drained) + Send>,
        on_log: log_sink::LogFn,
    ) -> io::Result<LogRelay> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            sinks: Mutex::new(HashMap::new()),
            dropped: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            master_log,
            on_log: on_log.clone(),
        });
        let relay = Relay {
            poll,
            rx,
            shared: shared.clone(),
            on_drained,
            on_log,
            workers: HashMap::new(),
            pipes: HashMap::new(),
            followers: HashMap::new(),
            next_token: 1,
            ring: Ring::new(RING_BYTES),
            hot: Vec::new(),
            buf: vec![0u8; READ_CHUNK],
            next_heartbeat: Instant::now(),
        };
        thread::Builder::new()
            .name("baton-logs".into())
            .spawn(move || relay.run())?;
        Ok(LogRelay { tx, waker, shared })
    }

    fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// The sink for one stream of a group (opening a file the first time it is named,
    /// with `settings`; an open sink keeps its own: see [`Sink::configure`]).
    /// `Ok(None)` for `ignore`. The error names the file.
    pub fn sink(
        &self,
        target: &LogTarget,
        stream: Stream,
        settings: &log_sink::SinkSettings,
    ) -> io::Result<Option<Arc<Sink>>> {
        let key = match target {
            LogTarget::Ignore => return Ok(None),
            LogTarget::Inherit => SinkKey::Fd(if stream == Stream::Stdout { 1 } else { 2 }),
            LogTarget::File(path) => SinkKey::File(path.clone()),
        };
        let mut sinks = self.shared.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sinks.get(&key) {
            return Ok(Some(s.clone()));
        }
        let sink = match &key {
            SinkKey::Fd(fd) => Sink::std_fd_to(*fd, self.shared.master_log.clone())?,
            SinkKey::File(path) => Sink::file_logging(path, Some(self.shared.on_log.clone()))?,
        };
        sink.configure(settings.clone());
        sinks.insert(key, sink.clone());
        Ok(Some(sink))
    }

    /// Take over a new worker's pipes.
    pub fn add(&self, output: WorkerOutput) {
        self.send(Cmd::Add(Box::new(output)));
    }

    /// The worker has exited: drain its pipes, then call back with [`Drained`].
    pub fn exited(&self, key: u64) {
        self.send(Cmd::Exited(key));
    }

    /// Close a worker's pipes without a [`Drained`] call-back.
    pub fn forget(&self, key: u64) {
        self.send(Cmd::Forget(key));
    }

    /// Serve a `baton logs` client (the request line is already read).
    pub fn logs(&self, client: StdUnixStream, request: LogsRequest) {
        self.send(Cmd::Logs(client, request));
    }

    /// Reopen every log file (and the master's own log), answering `reply`.
    pub fn reopen(&self, reply: Reply) {
        self.send(Cmd::Reopen(reply));
    }

    /// Bytes of group `group`'s output dropped because its sink was full.
    pub fn dropped(&self, group: usize) -> u64 {
        self.shared
            .dropped
            .get(group)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// Bytes the sinks' destinations refused (closed pipe, full disk), all sinks together.
    pub fn failed(&self) -> u64 {
        let sinks = self.shared.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks.values().map(|s| s.failed()).sum()
    }

    /// The master's own log file, if any.
    pub fn master_log(&self) -> Option<&Path> {
        self.shared
            .master_log
            .as_deref()
            .map(log_sink::MasterLog::path)
    }

    /// Answer the followers that the master stops, write what the sinks hold (for at most
    /// `timeout`), and end the thread.
    pub fn shutdown(&self, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Shutdown(timeout, tx));
        let _ = rx.recv_timeout(timeout + Duration::from_secs(1));
    }
}

struct Worker {
    group: usize,
    group_name: Arc<str>,
    id: u32,
    fleet: Arc<str>,
    pid: u32,
    format: LineFormat,
    pipes: [Option<(File, Token)>; 2],
    sinks: [Option<Arc<Sink>>; 2],
    lines: [LineBuf; 2],
    tail: Vec<u8>,
    drain_by: Option<Instant>,
}

impl Worker {
    /// Where this worker's lines on `stream` come from (for [`log_line::write_line`]).
    /// Owned copies of the names: the line callbacks borrow other fields of the worker.
    fn origin(&self, stream: Stream) -> OwnedOrigin {
        OwnedOrigin {
            fleet: self.fleet.clone(),
            group: self.group_name.clone(),
            id: self.id,
            pid: self.pid,
            stream,
        }
    }
}

/// A worker's [`Origin`], cheap to clone (two `Arc`s).
struct OwnedOrigin {
    fleet: Arc<str>,
    group: Arc<str>,
    id: u32,
    pid: u32,
    stream: Stream,
}

impl OwnedOrigin {
    fn get(&self) -> Origin<'_> {
        Origin {
            fleet: &self.fleet,
            group: Some(&self.group),
            id: Some(self.id),
            pid: Some(self.pid),
            stream: match self.stream {
                Stream::Stdout => "out",
                Stream::Stderr => "err",
            },
        }
    }
}

struct Follower {
    stream: UnixStream,
    out: Vec<u8>,
    follow: bool,
    group: Option<String>,
    /// Lines not sent because `out` was full, since the last note.
    dropped: u64,
    /// Close once `out` is written.
    closing: bool,
}

impl Follower {
    fn queue(&mut self, line: &[u8]) {
        if self.out.len() + line.len() > FOLLOWER_BUFFER_BYTES {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let note = OutputDropped {
                kind: "output:dropped",
                lines: self.dropped,
            };
            self.out
                .extend_from_slice(public_json::event_line(&note).as_bytes());
            self.dropped = 0;
        }
        self.out.extend_from_slice(line);
    }

    /// Write what can be written; false when the client is gone or done.
    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        !self.closing
    }
}

struct Relay {
    poll: Poll,
    rx: Receiver<Cmd>,
    shared: Arc<Shared>,
    on_drained: Box<dyn Fn(Drained) + Send>,
    /// A line for the master's log.
    on_log: log_sink::LogFn,
    workers: HashMap<u64, Worker>,
    pipes: HashMap<Token, (u64, Stream)>,
    followers: HashMap<Token, Follower>,
    next_token: usize,
    ring: Ring,
    /// Pipes that had more to read when their turn ended.
    hot: Vec<Token>,
    buf: Vec<u8>,
    /// When followers next get `{"heartbeat":true}` (a quiet `baton logs -f` is not a
    /// master that stopped answering; see `control.rs`).
    next_heartbeat: Instant,
}

fn event_line(line: &crate::log_ring::Line) -> Vec<u8> {
    public_json::event_line(&OutputEvent::of(line)).into_bytes()
}

/// `{"type":"output:dropped","lines":N}`: a follower read too slowly and lost lines.
#[derive(serde::Serialize)]
struct OutputDropped {
    #[serde(rename = "type")]
    kind: &'static str,
    lines: u64,
}

impl Relay {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.hot.is_empty() {
                let beat = (!self.followers.is_empty()).then_some(self.next_heartbeat);
                self.next_deadline()
                    .into_iter()
                    .chain(beat)
                    .min()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    // Nothing sensible is left to do; the pipes close with the thread and
                    // the loop's own deadline reports the exits.
                    return;
                }
            }
            for event in events.iter() {
                let token = event.token();
                if self.pipes.contains_key(&token) {
                    self.read_pipe(token);
                } else if self.followers.contains_key(&token) {
                    if event.is_readable() || event.is_read_closed() {
                        self.read_follower(token);
                    }
                    self.flush_follower(token);
                }
            }
            for token in std::mem::take(&mut self.hot) {
                self.read_pipe(token);
            }
            while let Ok(cmd) = self.rx.try_recv() {
                if let Cmd::Shutdown(timeout, done) = cmd {
                    self.shutdown(timeout);
                    let _ = done.send(());
                    return;
                }
                self.handle(cmd);
            }
            self.drain_due();
            let beat = Instant::now() >= self.next_heartbeat;
            if beat {
                self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
            }
            let tokens: Vec<Token> = self.followers.keys().copied().collect();
            for token in tokens {
                if beat {
                    if let Some(f) = self.followers.get_mut(&token) {
                        if f.follow && !f.closing && f.out.len() < FOLLOWER_BUFFER_BYTES {
                            f.out.extend_from_slice(HEARTBEAT_LINE.as_bytes());
                        }
                    }
                }
                self.flush_follower(token);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.workers.values().filter_map(|w| w.drain_by).min()
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(output) => self.add(*output),
            Cmd::Exited(key) => {
                let tokens = self.worker_tokens(key);
                if let Some(w) = self.workers.get_mut(&key) {
                    w.drain_by = Some(Instant::now() + DRAIN_WAIT);
                }
                for token in tokens {
                    self.read_pipe(token);
                }
            }
            Cmd::Forget(key) => {
                if let Some(w) = self.workers.remove(&key) {
                    self.close_pipes(w);
                }
            }
            Cmd::Logs(client, request) => self.serve_logs(client, request),
            Cmd::Reopen(reply) => {
                let result = self.reopen();
                match reply {
                    Reply::Channel(tx) => {
                        let _ = tx.send(result);
                    }
                    Reply::Client(mut stream) => {
                        let answer = match result {
                            Ok(n) => ControlAnswer {
                                reopened: Some(u32::try_from(n).unwrap_or(u32::MAX)),
                                ..ControlAnswer::ok()
                            },
                            Err(e) => ControlAnswer::error(e),
                        };
                        // A short line on a fresh connection: it fits the socket buffer.
                        let _ = stream.set_nonblocking(true);
                        let _ = stream.write_all(public_json::line(&answer).as_bytes());
                    }
                }
            }
            Cmd::Shutdown(..) => {}
        }
    }

    fn add(&mut self, output: WorkerOutput) {
        let WorkerOutput {
            key,
            group,
            group_name,
            id,
            fleet,
            pid,
            format,
            pipes,
            sinks,
        } = output;
        let [out, err] = pipes;
        let mut registered = [None, None];
        for (slot, fd) in [(0, out), (1, err)] {
            let fd = File::from(fd);
            let token = self.token();
            let raw = fd.as_raw_fd();
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&raw), token, Interest::READABLE)
                .is_ok()
            {
                self.pipes.insert(token, (key, Stream::BOTH[slot]));
                registered[slot] = Some((fd, token));
            }
            // Not watchable (cannot happen for a pipe): dropping it closes it; the worker
            // then gets EPIPE on that stream.
        }
        let tokens: Vec<Token> = registered.iter().flatten().map(|(_, t)| *t).collect();
        self.workers.insert(
            key,
            Worker {
                group,
                group_name,
                id,
                fleet,
                pid,
                format,
                pipes: registered,
                sinks,
                lines: [LineBuf::default(), LineBuf::default()],
                tail: Vec::new(),
                drain_by: None,
            },
        );
        // It may have written before registration (edge-triggered: no event for that).
        for token in tokens {
            self.hot.push(token);
        }
    }

    fn worker_tokens(&self, key: u64) -> Vec<Token> {
        self.workers.get(&key).map_or_else(Vec::new, |w| {
            w.pipes.iter().flatten().map(|(_, t)| *t).collect()
        })
    }

    /// Read a pipe until it would block, ends, or its turn is over.
    fn read_pipe(&mut self, token: Token) {
        let Some(&(key, stream)) = self.pipes.get(&token) else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut reads = 0;
        let mut closed = false;
        while let Some(read) = self
            .workers
            .get(&key)
            .and_then(|w| w.pipes[stream.index()].as_ref())
            .map(|(file, _)| (&*file).read(&mut buf))
        {
            match read {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.deliver(key, stream, &buf[..n]);
                    reads += 1;
                    if reads == READS_PER_TURN {
                        self.hot.push(token);
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        self.buf = buf;
        if closed {
            self.close_pipe(key, stream);
        }
    }

    fn close_pipe(&mut self, key: u64, stream: Stream) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if let Some((fd, token)) = w.pipes[stream.index()].take() {
            let raw = fd.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            self.pipes.remove(&token);
        }
        self.flush_partial(key, stream);
    }

    fn close_pipes(&mut self, mut w: Worker) {
        for pipe in w.pipes.iter_mut() {
            if let Some((fd, token)) = pipe.take() {
                let raw = fd.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                self.pipes.remove(&token);
            }
        }
    }

    /// Everything a chunk of output goes to (see the module documentation).
    fn deliver(&mut self, key: u64, stream: Stream, bytes: &[u8]) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        let i = stream.index();
        if stream == Stream::Stderr {
            w.tail.extend_from_slice(bytes);
            if w.tail.len() > STDERR_TAIL_BYTES {
                let cut = w.tail.len() - STDERR_TAIL_BYTES;
                w.tail.drain(..cut);
            }
        }
        let mut dropped = 0;
        if let (Some(sink), true) = (&w.sinks[i], w.format.is_raw()) {
            if !sink.push(bytes) {
                dropped += bytes.len();
            }
        }
        let now = SystemTime::now();
        let mut formatted = Vec::new();
        let ring = &mut self.ring;
        let followers = &mut self.followers;
        let (group_name, id) = (&w.group_name, w.id);
        let by_line = w.sinks[i].is_some() && !w.format.is_raw();
        let (format, origin) = (w.format, w.origin(stream));
        w.lines[i].feed(bytes, &mut |text| {
            let line = ring.push(now, group_name, id, stream, text);
            offer(followers, line);
            if by_line {
                log_line::write_line(&mut formatted, format, &origin.get(), now, text);
            }
        });
        if let (Some(sink), false) = (&w.sinks[i], formatted.is_empty()) {
            if !sink.push(&formatted) {
                dropped += formatted.len();
            }
        }
        if dropped > 0 {
            if let Some(counter) = self.shared.dropped.get(w.group) {
                counter.fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
    }

    /// A last line without newline (the stream ended).
    fn flush_partial(&mut self, key: u64, stream: Stream) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        let i = stream.index();
        let now = SystemTime::now();
        let ring = &mut self.ring;
        let followers = &mut self.followers;
        let (group_name, id, sink) = (&w.group_name, w.id, &w.sinks[i]);
        let (format, origin) = (w.format, w.origin(stream));
        let mut dropped = 0;
        w.lines[i].finish(&mut |text| {
            let line = ring.push(now, group_name, id, stream, text);
            offer(followers, line);
            if let (false, Some(sink)) = (format.is_raw(), sink) {
                let mut bytes = Vec::new();
                log_line::write_line(&mut bytes, format, &origin.get(), now, text);
                if !sink.push(&bytes) {
                    dropped += bytes.len();
                }
            }
        });
        if dropped > 0 {
            if let Some(counter) = self.shared.dropped.get(w.group) {
                counter.fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
    }

    /// Report every exited worker whose pipes are closed, or whose drain time is over.
    fn drain_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.drain_by
                    .is_some_and(|by| now >= by || w.pipes.iter().all(Option::is_none))
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            for stream in Stream::BOTH {
                self.flush_partial(key, stream);
            }
            if let Some(w) = self.workers.remove(&key) {
                let tail = String::from_utf8_lossy(&w.tail).into_owned();
                self.close_pipes(w);
                (self.on_drained)(Drained {
                    key,
                    stderr_tail: tail,
                });
            }
        }
    }

    fn serve_logs(&mut self, client: StdUnixStream, request: LogsRequest) {
        if client.set_nonblocking(true).is_err() {
            return;
        }
        let mut stream = UnixStream::from_std(client);
        let token = self.token();
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return;
        }
        let mut out = Vec::new();
        for line in self.ring.last(request.lines, request.group.as_deref()) {
            out.extend_from_slice(&event_line(line));
        }
        let closing = !request.follow;
        if closing {
            out.extend_from_slice(public_json::line(&ControlAnswer::ok()).as_bytes());
        }
        self.followers.insert(
            token,
            Follower {
                stream,
                out,
                follow: request.follow,
                group: request.group,
                dropped: 0,
                closing,
            },
        );
        self.flush_follower(token);
    }

    fn read_follower(&mut self, token: Token) {
        let Some(f) = self.followers.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; 512];
        let gone = loop {
            match f.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {} // nothing more is expected from a client: ignore it
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if gone {
            self.drop_follower(token);
        }
    }

    fn flush_follower(&mut self, token: Token) {
        let keep = self.followers.get_mut(&token).is_none_or(|f| f.flush());
        if !keep {
            self.drop_follower(token);
        }
    }

    fn drop_follower(&mut self, token: Token) {
        if let Some(mut f) = self.followers.remove(&token) {
            let _ = self.poll.registry().deregister(&mut f.stream);
        }
    }

    fn reopen(&mut self) -> Result<usize, String> {
        let mut reopened = 0;
        let mut errors = Vec::new();
        if let Some(master) = &self.shared.master_log {
            match master.reopen() {
                Ok(()) => reopened += 1,
                Err(e) => {
                    (self.on_log)(format!(
                        "reopen-logs: {e}; the master keeps writing its own output to the file it had open"
                    ));
                    errors.push(e.to_string());
                }
            }
        }
        let files: Vec<Arc<Sink>> = {
            let sinks = self.shared.sinks.lock().unwrap_or_else(|p| p.into_inner());
            sinks
                .iter()
                .filter(|(k, _)| matches!(k, SinkKey::File(_)))
                .map(|(_, s)| s.clone())
                .collect()
        };
        for sink in files {
            match sink.reopen() {
                Ok(()) => reopened += 1,
                Err(e) => {
                    (self.on_log)(format!(
                        "reopen-logs: {e}; that output keeps going to the file opened before (under its old name, or unlinked if it was removed) until a reopen succeeds"
                    ));
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(reopened)
        } else {
            Err(format!(
                "{} (the old file stays in use until a reopen succeeds)",
                errors.join("; ")
            ))
        }
    }

    fn shutdown(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let keys: Vec<u64> = self.workers.keys().copied().collect();
        for key in keys {
            for stream in Stream::BOTH {
                self.flush_partial(key, stream);
            }
            if let Some(w) = self.workers.remove(&key) {
                self.close_pipes(w);
            }
        }
        let stopped = public_json::line(&ControlAnswer {
            stopped: Some(true),
            ..ControlAnswer::ok()
        });
        let tokens: Vec<Token> = self.followers.keys().copied().collect();
        for token in tokens {
            if let Some(f) = self.followers.get_mut(&token) {
                if f.follow {
                    f.out.extend_from_slice(stopped.as_bytes());
                }
                let _ = f.flush();
            }
            self.drop_follower(token);
        }
        let sinks: Vec<Arc<Sink>> = {
            let mut sinks = self.shared.sinks.lock().unwrap_or_else(|p| p.into_inner());
            sinks.drain().map(|(_, s)| s).collect()
        };
        for sink in &sinks {
            sink.flush(deadline.saturating_duration_since(Instant::now()));
            sink.close();
        }
    }
}

fn offer(followers: &mut HashMap<Token, Follower>, line: &crate::log_ring::Line) {
    let mut encoded: Option<Vec<u8>> = None;
    for f in followers.values_mut() {
        if !f.follow || f.closing || f.group.as_deref().is_some_and(|g| g != &*line.group) {
            continue;
        }
        let bytes = encoded.get_or_insert_with(|| event_line(line));
        f.queue(bytes);
    }
}

#[cfg(test)]
mod tests;
