//! The control socket: the `baton` CLI's requests and replies, with the limits and
//! heartbeats of `control.rs` (request size and time, client count, unread output).

use super::*;
use crate::control::{Framed, RequestBuffer};

pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) inbuf: RequestBuffer,
    /// When it connected; it has [`control::REQUEST_TIMEOUT`] to send its request.
    pub(super) accepted_at: Instant,
    /// Its request line arrived (it is not read from again).
    pub(super) requested: bool,
    pub(super) outbuf: Vec<u8>,
    /// Reload ticket this client waits for.
    pub(super) ticket: Option<Ticket>,
    /// Scale ticket this client waits for.
    pub(super) scale_ticket: Option<Ticket>,
    /// Close once `outbuf` is flushed.
    pub(super) closing: bool,
    pub(super) writable_registered: bool,
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
                    if self.clients.len() >= control::MAX_CLIENTS {
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
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    pub(super) fn read_client(&mut self, id: usize) {
        let mut request = None;
        let mut gone = false;
        if let Some(c) = self.clients.get_mut(&id) {
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
        }
        match request {
            // The client left before we read its request (it timed out while the master
            // was stopped, say): it gets no answer, so nothing is done on its behalf. A
            // client that only shut down its writing side (`nc -U`) is still answered.
            Some(_) if gone && !self.still_listening(id) => self.drop_client(id),
            Some(Ok(line)) => self.on_request(id, &line),
            Some(Err(message)) => self.refuse(id, &message),
            None if gone => self.drop_client(id),
            None => {}
        }
    }

    /// Whether a client whose read side ended can still receive: a heartbeat line is
    /// written; a peer that closed completely makes it fail (EPIPE).
    fn still_listening(&mut self, id: usize) -> bool {
        match self.clients.get_mut(&id) {
            Some(c) => c
                .stream
                .write(control::HEARTBEAT_LINE.as_bytes())
                .is_ok_and(|n| n > 0),
            None => false,
        }
    }

    /// Answer with an error line and close.
    fn refuse(&mut self, id: usize, message: &str) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.outbuf
                .extend_from_slice(control::error_line(message).as_bytes());
            c.closing = true;
        }
        self.flush_client(id);
    }

    /// The loop's periodic control work: drop clients that did not send a request in
    /// time, send heartbeats to the ones waiting for an answer, and fail reloads the host
    /// never prepared. Returns how long until it is due again (while any client is open).
    pub(super) fn control_tick(&mut self, now: Instant) -> Option<Duration> {
        let late: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                !c.requested && now.duration_since(c.accepted_at) >= control::REQUEST_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
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
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + control::HEARTBEAT_INTERVAL;
            let waiting: Vec<usize> = self
                .clients
                .iter()
                .filter(|(_, c)| c.requested && !c.closing)
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.outbuf
                        .extend_from_slice(control::HEARTBEAT_LINE.as_bytes());
                }
                self.flush_client(id);
            }
        }
        if self.clients.is_empty() && self.host_pending.is_empty() {
            return None;
        }
        let mut wait = self.next_heartbeat.saturating_duration_since(now);
        for c in self.clients.values().filter(|c| !c.requested) {
            let due = (c.accepted_at + control::REQUEST_TIMEOUT).saturating_duration_since(now);
            wait = wait.min(due);
        }
        for at in self.host_pending.values() {
            wait = wait.min((*at + HOST_PREPARE_TIMEOUT).saturating_duration_since(now));
        }
        Some(wait)
    }

    pub(super) fn on_request(&mut self, id: usize, line: &str) {
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
                let answer = ControlAnswer {
                    status: Some(self.status(true)),
                    ..ControlAnswer::ok()
                };
                self.answer(id, &answer);
            }
            Ok(Request::Reload) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = self.clients.get_mut(&id) {
                    c.ticket = Some(ticket);
                }
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
                self.stop_waiters.push(id);
                self.stop_fleet(force);
                self.drive();
            }
            Ok(Request::Scale { group, count }) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = self.clients.get_mut(&id) {
                    c.scale_ticket = Some(ticket);
                }
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
        if let Some(c) = self.clients.get_mut(&id) {
            c.outbuf.extend_from_slice(line.as_bytes());
            c.closing |= close;
        }
        self.flush_client(id);
    }

    pub(super) fn flush_client(&mut self, id: usize) {
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
            if c.outbuf.len() > control::MAX_PENDING_OUTPUT {
                done = true; // it does not read what it asked for
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

    pub(super) fn drop_client(&mut self, id: usize) {
        if let Some(mut c) = self.clients.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.sources.remove(&Token(id));
        }
        self.stop_waiters.retain(|w| *w != id);
    }
}
