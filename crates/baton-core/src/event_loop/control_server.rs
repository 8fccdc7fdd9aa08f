//! The control socket: the `baton` CLI's requests and replies.

use super::*;

pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) inbuf: Vec<u8>,
    pub(super) outbuf: Vec<u8>,
    /// Reload ticket this client waits for.
    pub(super) ticket: Option<Ticket>,
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

    pub(super) fn read_client(&mut self, id: usize) {
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
                let status = self.status_json();
                self.reply(id, &json!({ "ok": true, "status": status }), true);
            }
            Ok(Request::Reload) => {
                let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = self.clients.get_mut(&id) {
                    c.ticket = Some(ticket);
                }
                if self.config.host_prepares_reloads {
                    // The host re-reads its config first, then answers with reload_ticket.
                    (self.sink)(json!({ "type": "reload:requested", "ticket": ticket }));
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
            Ok(request @ (Request::Logs(_) | Request::ReopenLogs)) => {
                self.hand_client_to_relay(id, request)
            }
        }
    }

    pub(super) fn reply(&mut self, id: usize, value: &Value, close: bool) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.outbuf.extend_from_slice(control::line(value).as_bytes());
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
