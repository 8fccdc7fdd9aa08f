//! The control socket: the `baton` CLI's requests and replies, with the limits and
//! heartbeats of `control.rs` (request size and time, client count, unread output).
//! [`ControlClients`] owns the connected clients; `LoopState` answers their requests.

use super::*;
use mio::Registry;

use crate::control::{Framed, RequestBuffer};

/// One connected control client.
pub(super) struct Client {
    stream: UnixStream,
    inbuf: RequestBuffer,
    /// When it connected; it has [`control::REQUEST_TIMEOUT`] to send its request.
    accepted_at: Instant,
    /// Its request line arrived (it is not read from again).
    requested: bool,
    outbuf: Vec<u8>,
    /// Reload ticket this client waits for.
    ticket: Option<Ticket>,
    /// Scale ticket this client waits for.
    scale_ticket: Option<Ticket>,
    /// Close once `outbuf` is flushed.
    closing: bool,
    writable_registered: bool,
}

/// What a client's bytes amounted to (see [`ControlClients::read`]).
pub(super) enum Received {
    /// Nothing complete yet.
    Nothing,
    /// Its request line, or why it is refused (too long).
    Request(Result<String, String>),
    /// The client went away (with or without a request).
    Gone(Option<Result<String, String>>),
}

/// The connected control clients (the `baton` CLI): their sockets and buffers, what each
/// waits for (a reload ticket, a scale ticket, the fleet's stop), and their heartbeats.
/// The limits of `control.rs` are enforced here: client count, request size and time,
/// unread output. Registration with the poller goes through the registry passed in; the
/// tokens are the loop's (`Source::Client(id)`, `Token(id)`).
pub(super) struct ControlClients {
    clients: HashMap<usize, Client>,
    /// Clients waiting for the fleet to stop (`baton stop`).
    stop_waiters: Vec<usize>,
    /// When the next heartbeat goes to the clients waiting for an answer.
    next_heartbeat: Instant,
}

impl ControlClients {
    pub(super) fn new() -> ControlClients {
        ControlClients {
            clients: HashMap::new(),
            stop_waiters: Vec::new(),
            next_heartbeat: Instant::now(),
        }
    }

    /// Whether another client may connect ([`control::MAX_CLIENTS`]).
    pub(super) fn is_full(&self) -> bool {
        self.clients.len() >= control::MAX_CLIENTS
    }

    /// Take a new connection as client `id` (registered readable as `Token(id)`).
    pub(super) fn add(&mut self, id: usize, mut stream: UnixStream, registry: &Registry) -> bool {
        if registry
            .register(&mut stream, Token(id), Interest::READABLE)
            .is_err()
        {
            return false;
        }
        self.clients.insert(
            id,
            Client {
                stream,
                inbuf: RequestBuffer::default(),
                accepted_at: Instant::now(),
                requested: false,
                outbuf: Vec::new(),
                ticket: None,
                scale_ticket: None,
                closing: false,
                writable_registered: false,
            },
        );
        true
    }

    /// Read what client `id` sent: its request line, once.
    pub(super) fn read(&mut self, id: usize) -> Received {
        let Some(c) = self.clients.get_mut(&id) else {
            return Received::Nothing;
        };
        let mut request = None;
        let mut gone = false;
        let mut buf = [0u8; 4096];
        // Bounded, so a client that floods after its request cannot hold the loop; the
        // poller reports it again when more arrives.
        for _ in 0..64 {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                // One request per connection: later bytes are read and ignored.
                Ok(_) if c.requested => {}
                Ok(n) => match c.inbuf.push(&buf[..n]) {
                    Framed::Partial => {}
                    Framed::Line(line) => {
                        c.requested = true;
                        request = Some(Ok(line));
                    }
                    Framed::TooLong => {
                        c.requested = true;
                        request = Some(Err(control::too_long_message()));
                        break;
                    }
                },
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        match (request, gone) {
            (request, true) => Received::Gone(request),
            (Some(request), false) => Received::Request(request),
            (None, false) => Received::Nothing,
        }
    }

    /// Whether a client whose read side ended can still receive: a heartbeat line is
    /// written; a peer that closed completely makes it fail (EPIPE).
    pub(super) fn still_listening(&mut self, id: usize) -> bool {
        match self.clients.get_mut(&id) {
            Some(c) => c
                .stream
                .write(control::HEARTBEAT_LINE.as_bytes())
                .is_ok_and(|n| n > 0),
            None => false,
        }
    }

    /// Client `id` waits for the reload of `ticket`.
    pub(super) fn wait_reload(&mut self, id: usize, ticket: Ticket) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.ticket = Some(ticket);
        }
    }

    /// Client `id` waits for the scale of `ticket`.
    pub(super) fn wait_scale(&mut self, id: usize, ticket: Ticket) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.scale_ticket = Some(ticket);
        }
    }

    /// Client `id` waits for the fleet to stop.
    pub(super) fn wait_stop(&mut self, id: usize) {
        self.stop_waiters.push(id);
    }

    /// The clients waiting for the fleet to stop (they are answered once).
    pub(super) fn take_stop_waiters(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.stop_waiters)
    }

    /// The clients waiting for a reload whose ticket `answers` says it answers.
    pub(super) fn reload_waiters(&self, answers: impl Fn(Ticket) -> bool) -> Vec<usize> {
        self.ids(|c| c.ticket.is_some_and(&answers))
    }

    /// The clients waiting for the scale of `ticket`.
    pub(super) fn scale_waiters(&self, ticket: Ticket) -> Vec<usize> {
        self.ids(|c| c.scale_ticket == Some(ticket))
    }

    fn ids(&self, keep: impl Fn(&Client) -> bool) -> Vec<usize> {
        self.clients
            .iter()
            .filter(|(_, c)| keep(c))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Queue one protocol line for client `id` (`close`: it is the last) and write what
    /// can be written. False when the client must be dropped (gone, done, or not reading).
    pub(super) fn send(&mut self, id: usize, line: &str, close: bool, registry: &Registry) -> bool {
        if let Some(c) = self.clients.get_mut(&id) {
            c.outbuf.extend_from_slice(line.as_bytes());
            c.closing |= close;
        }
        self.flush(id, registry)
    }

    /// Write what can be written to client `id`; false when it must be dropped.
    pub(super) fn flush(&mut self, id: usize, registry: &Registry) -> bool {
        let Some(c) = self.clients.get_mut(&id) else {
            return true;
        };
        let mut done = false;
        let mut need_writable = false;
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
        if c.outbuf.len() > control::MAX_PENDING_OUTPUT {
            done = true; // it does not read what it asked for
        }
        if need_writable && !c.writable_registered {
            c.writable_registered = true;
            let _ = registry.reregister(
                &mut c.stream,
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            );
        }
        !done
    }

    /// Forget client `id` (deregistered; no longer a stop waiter). Its stream, if any.
    pub(super) fn remove(&mut self, id: usize, registry: &Registry) -> Option<UnixStream> {
        self.stop_waiters.retain(|w| *w != id);
        let mut c = self.clients.remove(&id)?;
        let _ = registry.deregister(&mut c.stream);
        Some(c.stream)
    }

    /// Close every connection.
    pub(super) fn clear(&mut self) {
        self.clients.clear();
    }

    /// The clients that did not send a request within [`control::REQUEST_TIMEOUT`].
    pub(super) fn late(&self, now: Instant) -> Vec<usize> {
        self.ids(|c| !c.requested && now.duration_since(c.accepted_at) >= control::REQUEST_TIMEOUT)
    }

    /// When due, queue a heartbeat for every client waiting for an answer; returns them
    /// (to be flushed).
    pub(super) fn heartbeat(&mut self, now: Instant) -> Vec<usize> {
        if now < self.next_heartbeat {
            return Vec::new();
        }
        self.next_heartbeat = now + control::HEARTBEAT_INTERVAL;
        let waiting = self.ids(|c| c.requested && !c.closing);
        for id in &waiting {
            if let Some(c) = self.clients.get_mut(id) {
                c.outbuf
                    .extend_from_slice(control::HEARTBEAT_LINE.as_bytes());
            }
        }
        waiting
    }

    /// How long until the next heartbeat or request timeout (`None` without clients).
    pub(super) fn next_due(&self, now: Instant) -> Option<Duration> {
        if self.clients.is_empty() {
            return None;
        }
        let mut wait = self.next_heartbeat.saturating_duration_since(now);
        for c in self.clients.values().filter(|c| !c.requested) {
            let due = (c.accepted_at + control::REQUEST_TIMEOUT).saturating_duration_since(now);
            wait = wait.min(due);
        }
        Some(wait)
    }
}

impl LoopState {
    // ----- control socket ------------------------------------------------------------------

    pub(super) fn accept_clients(&mut self) {
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
                    if self.clients.is_full() {
                        // Best effort: the socket buffer of a new connection has room.
                        let message = format!(
                            "too many control connections ({} open): try again",
                            control::MAX_CLIENTS
                        );
                        let _ = stream.write(control::error_line(&message).as_bytes());
                        continue;
                    }
                    let id = self.next_token;
                    self.next_token += 1;
                    if self.clients.add(id, stream, self.poll.registry()) {
                        self.sources.insert(Token(id), Source::Client(id));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    pub(super) fn read_client(&mut self, id: usize) {
        match self.clients.read(id) {
            Received::Nothing => {}
            Received::Request(Ok(line)) => self.on_request(id, &line),
            Received::Request(Err(message)) => self.refuse(id, &message),
            // The client left before we read its request (it timed out while the master
            // was stopped, say): it gets no answer, so nothing is done on its behalf. A
            // client that only shut down its writing side (`nc -U`) is still answered.
            Received::Gone(Some(request)) if self.clients.still_listening(id) => match request {
                Ok(line) => self.on_request(id, &line),
                Err(message) => self.refuse(id, &message),
            },
            Received::Gone(_) => self.drop_client(id),
        }
    }

    /// Answer with an error line and close.
    fn refuse(&mut self, id: usize, message: &str) {
        self.send_line(id, &control::error_line(message), true);
    }

    /// The loop's periodic control work: drop clients that did not send a request in
    /// time, send heartbeats to the ones waiting for an answer, and fail reloads the host
    /// never prepared. Returns how long until it is due again (while any client is open).
    pub(super) fn control_tick(&mut self, now: Instant) -> Option<Duration> {
        for id in self.clients.late(now) {
            let message = format!(
                "no request within {} s: send one JSON line",
                control::REQUEST_TIMEOUT.as_secs()
            );
            self.refuse(id, &message);
        }
        let expired: Vec<Ticket> = self
            .host_pending
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= HOST_PREPARE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for ticket in expired {
            self.host_pending.remove(&ticket);
            self.host_expired.insert(ticket);
            let message = format!(
                "the master's JavaScript did not prepare the reload within {} s (is its event loop blocked?); nothing was replaced",
                HOST_PREPARE_TIMEOUT.as_secs()
            );
            self.fail_ticket(ticket, &message);
        }
        for id in self.clients.heartbeat(now) {
            self.flush_client(id);
        }
        let mut wait = self.clients.next_due(now);
        for at in self.host_pending.values() {
            let due = (*at + HOST_PREPARE_TIMEOUT).saturating_duration_since(now);
            wait = Some(wait.map_or(due, |w| w.min(due)));
        }
        wait
    }

    pub(super) fn on_request(&mut self, id: usize, line: &str) {
        match control::parse_request(line) {
            Err(e) => self.refuse(id, &e),
            Ok(Request::Status) => {
                let answer = ControlAnswer {
                    status: Some(self.status(true)),
                    ..ControlAnswer::ok()
                };
                self.answer(id, &answer);
            }
            Ok(Request::Reload) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                self.clients.wait_reload(id, ticket);
                if self.config.host_prepares_reloads {
                    // The host re-reads its config first, then answers with reload_ticket.
                    // A private request: never on the public event stream.
                    self.host_pending.insert(ticket, Instant::now());
                    (self.host.prepare_reload)(ticket);
                } else {
                    self.fleet.handle(Instant::now(), Input::Reload { ticket });
                    self.drive();
                }
            }
            Ok(Request::Stop { force }) => {
                self.clients.wait_stop(id);
                self.stop_fleet(force);
                self.drive();
            }
            Ok(Request::Scale { group, count }) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                self.clients.wait_scale(id, ticket);
                self.start_scale(ticket, group.as_deref(), count);
            }
            Ok(Request::Upgrade) => self.start_upgrade(upgrade::Waiter::Client(id)),
            Ok(request @ (Request::Logs(_) | Request::ReopenLogs)) => {
                self.hand_client_to_relay(id, request)
            }
            Ok(Request::TestFreeze { ms }) if self.test_hooks => {
                // Answer first, then stall this thread: the loop publishes nothing and
                // answers nothing until the freeze ends (a stuck loop, as a test sees it).
                let answer = ControlAnswer {
                    frozen_ms: Some(i64::try_from(ms).unwrap_or(i64::MAX)),
                    ..ControlAnswer::ok()
                };
                self.answer(id, &answer);
                std::thread::sleep(Duration::from_millis(ms).min(MAX_TEST_FREEZE));
            }
            Ok(Request::TestFreeze { .. }) => {
                let message = control::unknown_command("test-freeze");
                self.answer(id, &ControlAnswer::error(message));
            }
        }
    }

    /// Send a client its final answer and close once it is written.
    pub(super) fn answer(&mut self, id: usize, answer: &ControlAnswer) {
        self.send_line(id, &public_json::line(answer), true);
    }

    /// Queue one protocol line for a client (`close`: it is the last).
    pub(super) fn send_line(&mut self, id: usize, line: &str, close: bool) {
        if !self.clients.send(id, line, close, self.poll.registry()) {
            self.drop_client(id);
        }
    }

    pub(super) fn flush_client(&mut self, id: usize) {
        if !self.clients.flush(id, self.poll.registry()) {
            self.drop_client(id);
        }
    }

    pub(super) fn drop_client(&mut self, id: usize) {
        if self.clients.remove(id, self.poll.registry()).is_some() {
            self.sources.remove(&Token(id));
        }
    }
}
