//! Drop-in mode: a worker whose app calls plain `listen(port)` asks for the socket
//! (`src/preload.ts` sends `{"type":"baton:listen","req":N,"port":P,"host":H}`), as a
//! node:cluster worker asks its primary.
//!
//! The answer is, in order:
//! 1. the group's own listen address on that TCP port (for `reuseport`, the worker's
//!    slot's socket), so `baton start app.js --listen :3000` with an app calling
//!    `listen(3000)` serves on the master's socket;
//! 2. else a socket the master binds the first time a worker of the group asks for that
//!    host and port, and keeps until it exits: every later worker and every replacement
//!    gets the same one, so the port never closes during a reload. `listen(0)` gives
//!    every worker of the group the same ephemeral port (node:cluster does the same).
//!
//! The socket travels as Node's `net.Native` handle (`NODE_HANDLE`, `SCM_RIGHTS`, see
//! `handoff.rs`); an error is a plain line with Node's error code.

use super::*;
use crate::addr::ListenAddr;
use crate::listen::{self, ListenErrorKind, Listener};

/// A socket bound on a worker's request, kept for the group.
pub(super) struct DropInSocket {
    pub(super) group: usize,
    /// Host as the app gave it (`None`: all interfaces).
    pub(super) host: Option<String>,
    pub(super) port: u16,
    pub(super) listener: Listener,
}

/// Node's error code for a failed bind, so the app sees the error it would see alone.
fn node_code(kind: &ListenErrorKind) -> &'static str {
    match kind {
        ListenErrorKind::AddrInUse => "EADDRINUSE",
        ListenErrorKind::PermissionDenied => "EACCES",
        ListenErrorKind::AddrNotAvailable => "EADDRNOTAVAIL",
        ListenErrorKind::Resolve => "ENOTFOUND",
        ListenErrorKind::NotASocket | ListenErrorKind::Other => "EINVAL",
    }
}

/// `listener`'s fd, made non-blocking first. The flag belongs to the open file that the
/// master and every worker given this socket share, and libuv does not set it on a handle
/// that arrives over IPC: on a blocking socket, the worker that loses the race for a new
/// connection blocks in `accept()`, and every connection it already has stalls with it.
fn nonblocking(listener: &Listener) -> Result<RawFd, (String, &'static str)> {
    listener
        .set_nonblocking()
        .map(|()| listener.fd())
        .map_err(|e| {
            (
                format!("cannot make {} non-blocking: {e}", listener.local),
                "EINVAL",
            )
        })
}

/// The `NODE_HANDLE` line that carries a listening socket for request `req`.
fn handle_line(req: u64) -> String {
    format!(
        "{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{{\"type\":\"baton:listen\",\"req\":{req}}},\"key\":null}}\n"
    )
}

impl LoopState {
    /// Answer a worker's `baton:listen` request with a socket, or with an error line.
    pub(super) fn listen_for_worker(
        &mut self,
        key: WorkerKey,
        req: u64,
        port: u16,
        host: Option<String>,
    ) {
        let Some(group) = self.workers.get(&key).map(|io| io.group) else {
            return;
        };
        let slot = self
            .fleet
            .snapshot()
            .workers
            .iter()
            .find(|w| w.key == Some(key))
            .map_or(0, |w| w.slot);
        let fd = match self.drop_in_fd(group, slot, port, host.as_deref()) {
            Ok(fd) => fd,
            Err((message, code)) => {
                let line = control::line(&json!({
                    "type": "baton:listen", "req": req, "error": message, "code": code,
                }));
                self.send_worker(key, &line);
                return;
            }
        };
        let Some(channel) = self.workers.get(&key).and_then(|io| io.control.as_ref()) else {
            return;
        };
        let sent = {
            // SAFETY: `fd` is the fd of a listener owned by `self.listeners` or
            // `self.drop_in`, open for the duration of this call.
            let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let line = handle_line(req);
            let mut result = handoff::send_with_fd(channel.as_fd(), line.as_bytes(), socket);
            // A fresh worker's channel is empty; a full one clears in moments.
            for _ in 0..50 {
                match &result {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                        result = handoff::send_with_fd(channel.as_fd(), line.as_bytes(), socket);
                    }
                    _ => break,
                }
            }
            result.and_then(|n| {
                let mut rest = channel;
                rest.write_all(&line.as_bytes()[n..]).map(|()| n)
            })
        };
        if let Err(e) = sent {
            self.log(&format!(
                "cannot hand port {port} to worker {key}: {e}; it will time out as not ready"
            ));
        }
    }

    /// The fd answering a request for `host:port` from a worker of `group` in `slot`.
    fn drop_in_fd(
        &mut self,
        group: usize,
        slot: u32,
        port: u16,
        host: Option<&str>,
    ) -> Result<RawFd, (String, &'static str)> {
        // 1. The group's own listen address on that port.
        if port != 0 {
            if let Some(sockets) = self.listeners.get(group) {
                for (i, l) in sockets.first_listeners().enumerate() {
                    if matches!(l.addr, ListenAddr::Tcp { .. }) && l.port() == Some(port) {
                        let listener = sockets.slot_socket(i, slot).unwrap_or(l);
                        return nonblocking(listener);
                    }
                }
            }
        }
        // 2. One the master bound for this group before, or binds now.
        let host = host.filter(|h| !h.is_empty()).map(str::to_string);
        if let Some(s) = self
            .drop_in
            .iter()
            .find(|s| s.group == group && s.port == port && s.host == host)
        {
            return nonblocking(&s.listener);
        }
        let addr = ListenAddr::Tcp {
            host: host.clone().unwrap_or_default(),
            port,
        };
        let backlog = self.config.groups.get(group).map_or(511, |g| g.backlog);
        match listen::bind(&addr, backlog) {
            Ok(listener) => {
                let group_name = self.group_names.get(group).cloned().unwrap_or_default();
                self.log(&format!(
                    "group \"{group_name}\": listening on {} for its workers' listen({port}) (kept across reloads)",
                    listener.local
                ));
                let fd = nonblocking(&listener)?;
                self.drop_in.push(DropInSocket {
                    group,
                    host,
                    port,
                    listener,
                });
                Ok(fd)
            }
            Err(e) => Err((e.to_string(), node_code(&e.kind))),
        }
    }

    /// The drop-in sockets of `group`, as status `sockets` entries.
    pub(super) fn drop_in_status(&self, group: usize) -> Vec<Value> {
        self.drop_in
            .iter()
            .filter(|s| s.group == group)
            .map(|s| {
                json!({
                    "address": s.listener.local, "configured": s.listener.addr.to_string(),
                    "from": "drop-in", "fd": null, "fdName": null,
                })
            })
            .collect()
    }
}
