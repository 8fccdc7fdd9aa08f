//! Worker processes as the loop sees them: spawning and their control channel, held as a
//! `mio::net::UnixStream` (read, written and registered through its own safe impls; only
//! `handoff.rs`'s `sendmsg` borrows its fd). Their output goes to the log relay
//! (`output.rs`), their exits to `exits.rs`.
//!
//! Everything the master writes to a channel goes through the channel's [`Outbox`]: a
//! message the socket does not take at once waits there, whole and in order, and the
//! channel is registered for `WRITABLE` until it is flushed. The loop never sleeps or
//! blocks on a worker. A worker that lets [`CHANNEL_QUEUE_LIMIT`] bytes pile up (it never
//! reads its channel) loses its channel and is stopped (SIGTERM), with a logged reason.

use super::*;
use crate::lines::LineBuffer;
use crate::outbox::Outbox;

/// Longest message accepted on a worker's control channel; longer lines are dropped whole.
const CONTROL_LINE_LIMIT: usize = 64 * 1024;
/// Most bytes the master queues for one worker's channel beyond what its socket holds.
pub(super) const CHANNEL_QUEUE_LIMIT: usize = 1024 * 1024;

pub(super) struct WorkerIo {
    pub(super) pid: i32,
    /// Its pidfd (`exits.rs`), closed with the rest when its exit is reported.
    pub(super) pidfd: Option<Pidfd>,
    /// Its control channel (non-blocking, registered with the poller while it is open).
    pub(super) control: Option<UnixStream>,
    pub(super) control_token: Option<Token>,
    pub(super) control_buf: LineBuffer,
    /// Seen exiting and reaped (status, when); reported once the relay drained its output.
    pub(super) exited: Option<(ExitStatus, Instant)>,
    pub(super) started_at: SystemTime,
    /// Said `{"type":"ready","handoff":true}`: takes connections over its channel.
    pub(super) handoff: bool,
    /// The group it belongs to.
    pub(super) group: usize,
    /// Open connections, as it last reported (`{"type":"connections","count":N}`).
    pub(super) connections: Option<u32>,
    /// The uid it runs as (the master's when its group sets none).
    pub(super) uid: u32,
    /// Its `baton:listen` requests so far, for the caps of `drop_in.rs`.
    pub(super) listen_requests: super::drop_in::ListenRequests,
    /// What waits to be written to its channel.
    pub(super) outbox: Outbox,
    /// The channel is registered for `WRITABLE` too (the outbox holds something).
    pub(super) want_writable: bool,
}

impl LoopState {
    pub(super) fn spawn(&mut self, key: WorkerKey, group: usize, slot: u32, generation: u32) {
        let now = Instant::now();
        let g = &self.config.groups[group];
        let mut env = g.env.clone();
        // baton's own variables, and the worker id's, are the core's to set.
        env.retain(|(k, _)| !k.starts_with("BATON_") && *k != g.instance_var);
        env.extend([
            (g.instance_var.clone(), slot.to_string()),
            (
                crate::config::READINESS_ENV.to_string(),
                g.rules.readiness.as_str().to_string(),
            ),
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
        if let Some(c) = &g.credentials {
            c.apply_env(&mut env);
        }
        let spec = SpawnSpec {
            program: g.program.clone(),
            args: g.argv(),
            env,
            cwd: g.cwd.clone(),
            listen_fds: self.listeners[group].fds_for(slot),
            listen_names: g.listen_names.clone(),
            credentials: g.credentials.clone(),
            pidfd: self.pidfd,
        };
        let uid = g
            .credentials
            .as_ref()
            .and_then(|c| c.uid)
            .unwrap_or(self.uid);
        match spawn::spawn(&spec) {
            Ok(child) => {
                let pid = child.pid;
                let mut control =
                    UnixStream::from_std(std::os::unix::net::UnixStream::from(child.control));
                let control_token = self.register_source(&mut control, Source::WorkerControl(key));
                self.workers.insert(
                    key,
                    WorkerIo {
                        pid,
                        pidfd: None,
                        control: Some(control),
                        control_token,
                        control_buf: LineBuffer::new(CONTROL_LINE_LIMIT),
                        exited: None,
                        started_at: SystemTime::now(),
                        handoff: false,
                        group,
                        connections: None,
                        uid,
                        listen_requests: Default::default(),
                        outbox: Outbox::new(CHANNEL_QUEUE_LIMIT),
                        want_writable: false,
                    },
                );
                self.hand_output(
                    key,
                    group,
                    slot,
                    pid.unsigned_abs(),
                    [child.stdout, child.stderr],
                );
                match self.watch_exit(key, pid, child.pidfd) {
                    Ok(pidfd) => {
                        if let Some(io) = self.workers.get_mut(&key) {
                            io.pidfd = pidfd;
                        }
                    }
                    Err(message) => {
                        // Without a watcher we would never learn of its exit: do not keep it.
                        self.log(&format!("{message}; killing it"));
                        let _ = spawn::send_signal(pid, Signal::Kill);
                        let _ = spawn::wait_exit(pid);
                        self.close_worker_io(key);
                        self.fleet.handle(
                            now,
                            Input::SpawnFailed {
                                key,
                                error: message,
                            },
                        );
                        return;
                    }
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

    /// Register `io` (readable) with the poller as `source`; `None` (logged) on failure.
    pub(super) fn register_source<S>(&mut self, io: &mut S, source: Source) -> Option<Token>
    where
        S: mio::event::Source + ?Sized,
    {
        let token = Token(self.next_token);
        self.next_token += 1;
        match self.poll.registry().register(io, token, Interest::READABLE) {
            Ok(()) => {
                self.sources.insert(token, source);
                Some(token)
            }
            Err(e) => {
                let what = match source {
                    Source::WorkerControl(key) => format!("the control channel of worker {key}"),
                    Source::WorkerExit(key) => format!("the pidfd of worker {key}"),
                    Source::Client(id) => format!("control client {id}"),
                    Source::Straggler(_) => "a slot's socket".to_string(),
                    Source::Successor | Source::Predecessor => "the upgrade channel".to_string(),
                };
                self.log(&format!("cannot watch {what}: {e}"));
                None
            }
        }
    }

    /// Deregister what [`Self::register_source`] registered under `token`.
    pub(super) fn deregister_source<S>(&mut self, io: Option<&mut S>, token: Option<Token>)
    where
        S: mio::event::Source + ?Sized,
    {
        if let (Some(io), Some(token)) = (io, token) {
            let _ = self.poll.registry().deregister(io);
            self.sources.remove(&token);
        }
    }

    /// Close a worker's control channel and have the relay close its output pipes.
    pub(super) fn close_worker_io(&mut self, key: WorkerKey) {
        self.relay.forget(key);
        let Some(mut io) = self.workers.remove(&key) else {
            return;
        };
        self.steering.mark_dirty();
        self.deregister_source(io.control.as_mut(), io.control_token);
        io.control.take();
        if let Some(p) = io.pidfd.take() {
            let raw = p.fd.as_raw_fd();
            self.deregister_source(Some(&mut SourceFd(&raw)), p.token);
        }
    }

    /// Queue `line` for worker `key`'s channel and write what its socket takes now.
    pub(super) fn send_worker(&mut self, key: WorkerKey, line: &str) {
        self.send_worker_with_fd(key, line.as_bytes().to_vec(), None);
    }

    /// Queue a message (with an fd, `SCM_RIGHTS`) for worker `key`'s channel and flush.
    /// A worker whose outbox is full loses its channel and is stopped (logged).
    pub(super) fn send_worker_with_fd(
        &mut self,
        key: WorkerKey,
        bytes: Vec<u8>,
        fd: Option<OwnedFd>,
    ) {
        let Some(io) = self.workers.get_mut(&key) else {
            return;
        };
        if io.control.is_none() {
            return;
        }
        match io.outbox.push(bytes, fd) {
            Ok(()) => self.flush_worker(key),
            Err(full) => self.give_up_channel(
                key,
                &format!(
                    "{} bytes wait unread on its control channel, the most the master queues for one worker \
                     ({} KiB): it does not read its channel",
                    full.queued,
                    CHANNEL_QUEUE_LIMIT / 1024
                ),
            ),
        }
    }

    /// Write what worker `key`'s channel takes now; watch it for `WRITABLE` while
    /// something is left.
    pub(super) fn flush_worker(&mut self, key: WorkerKey) {
        let Some(io) = self.workers.get_mut(&key) else {
            return;
        };
        let Some(stream) = io.control.as_mut() else {
            return;
        };
        let flushed = io.outbox.flush(&*stream);
        let want = matches!(flushed, Ok(false));
        if want != io.want_writable {
            if let Some(token) = io.control_token {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(stream, token, interest)
                    .is_ok()
                {
                    io.want_writable = want;
                }
            }
        }
        if let Err(e) = flushed {
            // The worker closed its end (its exit or EOF follows): nothing more goes out.
            io.outbox = Outbox::new(CHANNEL_QUEUE_LIMIT);
            if e.kind() != ErrorKind::BrokenPipe && e.kind() != ErrorKind::ConnectionReset {
                let who = self.worker_label(key);
                self.log_once(format!("{who}: cannot write to its control channel: {e}"));
            }
        }
    }

    /// Close worker `key`'s channel and stop it (SIGTERM): it cannot be talked to.
    fn give_up_channel(&mut self, key: WorkerKey, why: &str) {
        let who = self.worker_label(key);
        self.log(&format!(
            "{who}: {why}; closing its channel and stopping it (SIGTERM). The rest of the fleet goes on"
        ));
        let Some(io) = self.workers.get_mut(&key) else {
            return;
        };
        let pid = io.pid;
        let (mut stream, token) = (io.control.take(), io.control_token.take());
        io.outbox = Outbox::new(CHANNEL_QUEUE_LIMIT);
        io.want_writable = false;
        self.deregister_source(stream.as_mut(), token);
        drop(stream);
        self.steering.mark_dirty();
        self.signal_worker(key, pid, Signal::Term);
    }

    pub(super) fn read_worker_control(&mut self, key: WorkerKey) {
        let mut readies = 0;
        let mut handoff = false;
        let mut nacks = 0;
        let mut connections = None;
        let mut listens = Vec::new();
        let mut eof = false;
        let mut first_drop = false;
        if let Some(io) = self.workers.get_mut(&key) {
            let Some(mut stream) = io.control.as_ref() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let dropped_before = io.control_buf.dropped();
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                io.control_buf
                    .push(&buf[..n], |line| match parse_control_line(line) {
                        ControlLine::Ready { handoff: h } => {
                            readies += 1;
                            handoff |= h;
                        }
                        ControlLine::HandleNack => nacks += 1,
                        ControlLine::Connections(n) => connections = Some(n),
                        ControlLine::Listen { req, port, host } => listens.push((req, port, host)),
                        ControlLine::Other => {}
                    });
            }
            first_drop = dropped_before == 0 && io.control_buf.dropped() > 0;
        }
        if first_drop {
            let who = self.worker_label(key);
            self.log(&format!(
                "{who}: dropped a control-channel message longer than {} KiB (process.send of a large value?); \
                 later ones are dropped without a word",
                CONTROL_LINE_LIMIT / 1024
            ));
        }
        for (req, port, host) in listens {
            self.listen_for_worker(key, req, port, host);
        }
        if handoff {
            if let Some(io) = self.workers.get_mut(&key) {
                io.handoff = true;
                self.steering.mark_dirty();
            }
        }
        if eof {
            if let Some(io) = self.workers.get_mut(&key) {
                io.outbox = Outbox::new(CHANNEL_QUEUE_LIMIT);
                io.want_writable = false;
                let (mut stream, token) = (io.control.take(), io.control_token.take());
                self.deregister_source(stream.as_mut(), token);
                self.steering.mark_dirty();
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
        if let Some(n) = connections {
            if let Some(io) = self.workers.get_mut(&key) {
                io.connections = Some(n);
                let group = io.group;
                self.rebalance(group);
            }
        }
    }

    /// `web#2 (pid 1234)`, for log lines about one worker.
    pub(super) fn worker_label(&self, key: WorkerKey) -> String {
        let snap = self.fleet.snapshot();
        match snap.workers.iter().find(|w| w.key == Some(key)) {
            Some(w) => {
                let group = self.group_names.get(w.group).map_or("?", String::as_str);
                match w.pid {
                    Some(pid) => format!("{group}#{} (pid {pid})", w.slot),
                    None => format!("{group}#{}", w.slot),
                }
            }
            None => format!("worker {key}"),
        }
    }
}

/// What a line from a worker's control channel means to the master.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ControlLine {
    /// `{"type":"ready"}` (`"handoff":true` from baton's runtime: it takes handed-off
    /// connections), or the bare string `"ready"` that PM2-style apps send with
    /// `process.send`.
    Ready { handoff: bool },
    /// Node's `{"cmd":"NODE_HANDLE_NACK"}`: a handed-off fd did not arrive.
    HandleNack,
    /// `{"type":"connections","count":N}` from baton's runtime: its open connections.
    Connections(u32),
    /// `{"type":"baton:listen","req":N,"port":P,"host":H|null}` from the drop-in preload:
    /// the app called `listen(port)`; answer with the socket (drop_in.rs).
    Listen {
        req: u64,
        port: u16,
        host: Option<String>,
    },
    /// Anything else, including Node's `{"cmd":"NODE_HANDLE_ACK"}`: ignored.
    Other,
}

pub(super) fn parse_control_line(line: &[u8]) -> ControlLine {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::String(s)) if s == "ready" => ControlLine::Ready { handoff: false },
        Ok(Value::Object(map)) => {
            if map.get("type").and_then(Value::as_str) == Some("ready") {
                ControlLine::Ready {
                    handoff: map.get("handoff") == Some(&Value::Bool(true)),
                }
            } else if map.get("type").and_then(Value::as_str) == Some("connections") {
                match map
                    .get("count")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                {
                    Some(n) => ControlLine::Connections(n),
                    None => ControlLine::Other,
                }
            } else if map.get("type").and_then(Value::as_str) == Some("baton:listen") {
                let req = map.get("req").and_then(Value::as_u64);
                let port = map
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok());
                match (req, port) {
                    (Some(req), Some(port)) => ControlLine::Listen {
                        req,
                        port,
                        host: map.get("host").and_then(Value::as_str).map(str::to_string),
                    },
                    _ => ControlLine::Other,
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

    #[test]
    fn drop_in_listen_requests() {
        let parse = |s: &str| parse_control_line(s.as_bytes());
        assert_eq!(
            parse(r#"{"type":"baton:listen","req":3,"port":8080,"host":null}"#),
            ControlLine::Listen {
                req: 3,
                port: 8080,
                host: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"baton:listen","req":1,"port":0,"host":"127.0.0.1"}"#),
            ControlLine::Listen {
                req: 1,
                port: 0,
                host: Some("127.0.0.1".into())
            }
        );
        // Out of range or missing fields: ignored (the worker then times out as not ready).
        assert_eq!(
            parse(r#"{"type":"baton:listen","req":1,"port":70000}"#),
            ControlLine::Other
        );
        assert_eq!(
            parse(r#"{"type":"baton:listen","port":80}"#),
            ControlLine::Other
        );
    }
}
