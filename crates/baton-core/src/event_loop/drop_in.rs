//! Drop-in mode: a worker whose app calls plain `listen(port)` asks for the socket
//! (`src/worker/preload.ts` sends `{"type":"baton:listen","req":N,"port":P,"host":H}`), as a
//! node:cluster worker asks its primary.
//!
//! The answer is, in order:
//! 1. the group's own listen address on that TCP port (for `reuseport`, the worker's
//!    slot's socket), so `baton start app.js --listen :3000` with an app calling
//!    `listen(3000)` serves on the master's socket;
//! 2. else the sockets the master binds the first time a worker of the group asks for that
//!    host and port, and keeps until it exits (`GroupSockets`' drop-in addresses), so the
//!    port never closes during a reload. With `balance: 'reuseport'` or `'sticky'` (Linux)
//!    that is one `SO_REUSEPORT` socket per worker slot, bound in slot order, and each
//!    worker gets its own slot's: the kernel steers new connections to the slots with a
//!    ready worker (by source address for `sticky`) exactly as for a listen address
//!    (`steering.rs`), and a replacement gets its slot's socket, so a slot's clients move
//!    to it. With `shared` (and off Linux) it is one socket every worker of the group
//!    gets. `listen(0)` gives every worker of the group the same ephemeral port
//!    (node:cluster does the same).
//!
//! The socket travels as Node's `net.Native` handle (`NODE_HANDLE`, `SCM_RIGHTS`, see
//! `handoff.rs`); an error is a plain line with Node's error code.
//!
//! **Who may ask for what.** A worker's user is not trusted, and any worker can write a
//! `baton:listen` line on its channel, preload or not. So the master refuses (`EACCES`,
//! logged with the worker, the port and the rule; the worker's `listen()` fails as it
//! would alone, and the fleet goes on):
//! - every request from a group without drop-in (`dropIn: false`);
//! - a port below 1024 when the worker's uid is not the master's, unless the group's own
//!   `listen` names that port (rule 1 above answers it with that socket);
//! - more than [`MAX_LISTEN_REQUESTS`] requests from one worker, more than
//!   [`MAX_LISTEN_ADDRESSES`] distinct addresses asked by one worker, and more than
//!   [`MAX_GROUP_DROP_IN_SOCKETS`] addresses bound for one group (they are kept until the
//!   master exits, so a worker replaced again and again could otherwise grow them; a
//!   per-slot address is one socket per slot, as a listen address is);
//! - a host that is not an IP literal, `localhost` (taken as 127.0.0.1) or empty (all
//!   interfaces; `EINVAL`): names are never resolved on the loop thread, the preload
//!   resolves them in the worker (`src/worker/preload.ts`).

use super::*;
use crate::addr::ListenAddr;
use crate::listen::{ListenErrorKind, Listener};
use crate::public_json::{SocketOrigin, SocketStatus};

/// Most `baton:listen` requests one worker may make in its life (an app listens on a few
/// ports, once each); later ones are refused.
pub(super) const MAX_LISTEN_REQUESTS: u32 = 64;
/// Most distinct host:port pairs one worker may ask for.
pub(super) const MAX_LISTEN_ADDRESSES: usize = 16;
/// Most addresses the master binds for one group's drop-in requests (per slot with a
/// per-slot balance).
pub(super) const MAX_GROUP_DROP_IN_SOCKETS: usize = 32;
/// Ports below this one are privileged (`CAP_NET_BIND_SERVICE`).
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// A request the master refuses: Node's error code and the rule, for the worker and the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: &'static str,
    pub(super) rule: String,
}

/// The answer to a refused `baton:listen` request, on the worker's control channel.
#[derive(serde::Serialize)]
struct ListenRefused<'a> {
    /// Always `baton:listen`.
    #[serde(rename = "type")]
    kind: &'static str,
    req: u64,
    error: &'a str,
    code: &'static str,
    port: u16,
    host: &'a str,
}

fn refuse(code: &'static str, rule: impl Into<String>) -> Refusal {
    Refusal {
        code,
        rule: rule.into(),
    }
}

/// The host a request may name, as the master binds it: `None` (all interfaces) for none
/// or empty, an IP literal (IPv6 with or without brackets), `localhost` as 127.0.0.1.
/// Anything else is refused rather than resolved here, on the loop thread.
pub(super) fn request_host(host: Option<&str>) -> Result<Option<String>, Refusal> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Some("127.0.0.1".to_string()));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(Some(ip.to_string())),
        Err(_) => Err(refuse(
            "EINVAL",
            format!(
                "host {:?} is not an IP address: the master does not resolve names for workers \
                 (baton's preload resolves them in the worker); pass an IP address, localhost or no host",
                host.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// The privileged-port rule: a worker whose uid is not the master's gets no port below
/// 1024 but the group's own listen ports (answered before this check).
pub(super) fn check_privileged(port: u16, worker_uid: u32, master_uid: u32) -> Result<(), Refusal> {
    if port != 0 && port < FIRST_UNPRIVILEGED_PORT && worker_uid != master_uid {
        return Err(refuse(
            "EACCES",
            format!(
                "port {port} is below {FIRST_UNPRIVILEGED_PORT} and the worker runs as uid {worker_uid}, \
                 not the master's uid {master_uid}; add the port to the group's listen addresses to serve it"
            ),
        ));
    }
    Ok(())
}

/// A worker's `baton:listen` requests so far.
#[derive(Debug, Default)]
pub(super) struct ListenRequests {
    count: u32,
    addresses: Vec<(Option<String>, u16)>,
}

impl ListenRequests {
    /// Count one request for `host:port` and apply the per-worker caps.
    pub(super) fn admit(&mut self, host: &Option<String>, port: u16) -> Result<(), Refusal> {
        self.count = self.count.saturating_add(1);
        if self.count > MAX_LISTEN_REQUESTS {
            return Err(refuse(
                "EACCES",
                format!("the worker made more than {MAX_LISTEN_REQUESTS} listen requests, the most one worker may make"),
            ));
        }
        let address = (host.clone(), port);
        if !self.addresses.contains(&address) {
            if self.addresses.len() >= MAX_LISTEN_ADDRESSES {
                return Err(refuse(
                    "EACCES",
                    format!("the worker asked for more than {MAX_LISTEN_ADDRESSES} different addresses, the most one worker may have"),
                ));
            }
            self.addresses.push(address);
        }
        Ok(())
    }

    /// Requests made so far (refused ones included).
    pub(super) fn count(&self) -> u32 {
        self.count
    }
}

/// A drop-in address of a group: (group index, host as asked, port as asked).
pub(super) type DropInKey = (usize, Option<String>, u16);
/// One address's passed sockets, by slot (`None`: shared).
pub(super) type PassedSlots<T> = Vec<(Option<u32>, T)>;

/// Drop-in sockets a previous master passed (`baton upgrade`), one entry per socket
/// (address, slot, socket), gathered per address in the order the addresses first
/// appear, each address's sockets in slot order (`None`, shared, first).
pub(super) fn by_address<T>(
    passed: Vec<(DropInKey, Option<u32>, T)>,
) -> Vec<(DropInKey, PassedSlots<T>)> {
    let mut out: Vec<(DropInKey, PassedSlots<T>)> = Vec::new();
    for (key, slot, socket) in passed {
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, sockets)) => sockets.push((slot, socket)),
            None => out.push((key, vec![(slot, socket)])),
        }
    }
    for (_, sockets) in &mut out {
        sockets.sort_by_key(|(slot, _)| *slot);
    }
    out
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
fn nonblocking(listener: &Listener) -> Result<RawFd, Refusal> {
    listener
        .set_nonblocking()
        .map(|()| listener.fd())
        .map_err(|e| {
            refuse(
                "EINVAL",
                format!("cannot make {} non-blocking: {e}", listener.local),
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
        let fd = match self.admit_listen(key, group, port, host.as_deref()) {
            Ok(fd) => fd,
            Err(refusal) => {
                let shown = host.as_deref().unwrap_or("");
                self.refuse_listen(key, req, port, shown, refusal);
                return;
            }
        };
        // SAFETY: `fd` is the fd of a listener owned by `self.listeners`, open for the
        // duration of this call; the outbox keeps its own copy (a dup).
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match socket.try_clone_to_owned() {
            Ok(copy) => self.send_worker_with_fd(key, handle_line(req).into_bytes(), Some(copy)),
            Err(e) => {
                let who = self.worker_label(key);
                self.log(&format!(
                    "cannot hand port {port} to {who}: {e}; it will time out as not ready"
                ));
            }
        }
    }

    /// Apply the rules (module documentation) to a request of worker `key` of `group`,
    /// then find or bind its socket.
    fn admit_listen(
        &mut self,
        key: WorkerKey,
        group: usize,
        port: u16,
        host: Option<&str>,
    ) -> Result<RawFd, Refusal> {
        let (worker_uid, admitted) = match self.workers.get_mut(&key) {
            Some(io) => (
                io.uid,
                io.listen_requests.admit(&host.map(str::to_string), port),
            ),
            None => return Err(refuse("EINVAL", "the worker is gone")),
        };
        admitted?;
        if !self.config.groups.get(group).is_some_and(|g| g.drop_in) {
            return Err(refuse(
                "EACCES",
                "the group has dropIn: false, so the master binds no socket for its workers; \
                 listen on the group's listen addresses (fds 3, 4, ...) or set dropIn: true",
            ));
        }
        let host = request_host(host)?;
        let slot = self
            .fleet
            .snapshot()
            .workers
            .iter()
            .find(|w| w.key == Some(key))
            .map_or(0, |w| w.slot);
        let uid = self.uid;
        self.drop_in_fd(group, slot, port, host, |port| {
            check_privileged(port, worker_uid, uid)
        })
    }

    /// Tell the worker its request is refused (its `listen()` fails with `code`) and log
    /// why, naming the worker, the port and the rule.
    fn refuse_listen(&mut self, key: WorkerKey, req: u64, port: u16, host: &str, r: Refusal) {
        let line = public_json::line(&ListenRefused {
            kind: "baton:listen",
            req,
            error: &r.rule,
            code: r.code,
            port,
            host,
        });
        self.send_worker(key, &line);
        let count = self
            .workers
            .get(&key)
            .map_or(0, |io| io.listen_requests.count());
        if count > MAX_LISTEN_REQUESTS + 1 {
            return; // logged once when the cap was reached
        }
        let who = self.worker_label(key);
        let group = self
            .workers
            .get(&key)
            .and_then(|io| self.group_names.get(io.group))
            .cloned()
            .unwrap_or_default();
        self.log(&format!(
            "group \"{group}\": refused {who}'s listen on port {port}{}: {} ({}); the fleet goes on",
            if host.is_empty() { String::new() } else { format!(" host {:?}", host.chars().take(64).collect::<String>()) },
            r.rule,
            r.code
        ));
    }

    /// The fd answering a request for `host:port` from a worker of `group` in `slot`;
    /// `allowed` says whether the worker may have a socket other than the group's own.
    fn drop_in_fd(
        &mut self,
        group: usize,
        slot: u32,
        port: u16,
        host: Option<String>,
        allowed: impl Fn(u16) -> Result<(), Refusal>,
    ) -> Result<RawFd, Refusal> {
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
        allowed(port)?;
        let Some(sockets) = self.listeners.get(group) else {
            return Err(refuse("EINVAL", "the group has no sockets"));
        };
        if let Some(i) = sockets.find_drop_in(&host, port) {
            return match sockets.drop_in_socket(i, slot) {
                Some(l) => nonblocking(l),
                None => Err(refuse("EINVAL", "the address has no socket")),
            };
        }
        if sockets.drop_in_count() >= MAX_GROUP_DROP_IN_SOCKETS {
            return Err(refuse(
                "EACCES",
                format!("the group already has {MAX_GROUP_DROP_IN_SOCKETS} drop-in addresses, the most the master binds for one group"),
            ));
        }
        let (backlog, count) = self
            .config
            .groups
            .get(group)
            .map_or((crate::config::DEFAULT_BACKLOG, 1), |g| {
                (g.backlog, g.rules.count)
            });
        // Slots a scale down removed keep their sockets until their workers are gone.
        let count = count.max(sockets.slot_count());
        let Some(sockets) = self.listeners.get_mut(group) else {
            return Err(refuse("EINVAL", "the group has no sockets"));
        };
        let index = sockets
            .bind_drop_in(host, port, backlog, count)
            .map_err(|e| refuse(node_code(&e.kind), e.to_string()))?;
        let per_slot = sockets.drop_in_per_slot();
        let (local, fd) = match sockets.drop_in_socket(index, slot) {
            Some(l) => (l.local.clone(), nonblocking(l)?),
            None => return Err(refuse("EINVAL", "the address has no socket")),
        };
        let group_name = self.group_names.get(group).cloned().unwrap_or_default();
        self.log(&format!(
            "group \"{group_name}\": listening on {local} for its workers' listen({port}){} (kept across reloads)",
            if per_slot { ", one socket per worker slot" } else { "" }
        ));
        if per_slot {
            // The new address joins the group's steering at once.
            self.resteer(group);
        }
        Ok(fd)
    }

    /// The drop-in sockets of `group`, as status `sockets` entries.
    pub(super) fn drop_in_status(&self, group: usize) -> Vec<SocketStatus> {
        self.listeners
            .get(group)
            .into_iter()
            .flat_map(|s| s.drop_in_first())
            .map(|l| SocketStatus {
                address: l.local.clone(),
                configured: l.addr.to_string(),
                from: SocketOrigin::DropIn,
                fd: None,
                fd_name: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_drop_in_sockets_are_gathered_per_address_in_slot_order() {
        let h = |s: &str| Some(s.to_string());
        let passed = vec![
            ((0, h("127.0.0.1"), 3000), Some(1), "a1"),
            ((1, h("127.0.0.1"), 3000), None, "other group"),
            ((0, h("127.0.0.1"), 3000), Some(0), "a0"),
            ((0, None, 3000), Some(0), "all interfaces"),
            ((0, h("127.0.0.1"), 0), Some(0), "ephemeral"),
        ];
        let got = by_address(passed);
        assert_eq!(
            got,
            vec![
                (
                    (0, h("127.0.0.1"), 3000),
                    vec![(Some(0), "a0"), (Some(1), "a1")]
                ),
                ((1, h("127.0.0.1"), 3000), vec![(None, "other group")]),
                ((0, None, 3000), vec![(Some(0), "all interfaces")]),
                ((0, h("127.0.0.1"), 0), vec![(Some(0), "ephemeral")]),
            ]
        );
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_none() {
        assert_eq!(request_host(None), Ok(None));
        assert_eq!(request_host(Some("")), Ok(None));
        assert_eq!(
            request_host(Some("127.0.0.1")),
            Ok(Some("127.0.0.1".into()))
        );
        assert_eq!(request_host(Some("[::1]")), Ok(Some("::1".into())));
        assert_eq!(request_host(Some("::1")), Ok(Some("::1".into())));
        assert_eq!(
            request_host(Some("LocalHost")),
            Ok(Some("127.0.0.1".into()))
        );
        let refused = request_host(Some("example.com")).unwrap_err();
        assert_eq!(refused.code, "EINVAL");
        assert!(refused
            .rule
            .contains("\"example.com\" is not an IP address"));
    }

    #[test]
    fn privileged_ports_only_for_the_masters_uid() {
        assert!(check_privileged(81, 0, 0).is_ok());
        assert!(check_privileged(0, 65534, 0).is_ok(), "an ephemeral port");
        assert!(check_privileged(1024, 65534, 0).is_ok());
        let refused = check_privileged(81, 65534, 0).unwrap_err();
        assert_eq!(refused.code, "EACCES");
        assert!(refused.rule.contains("port 81 is below 1024"));
        assert!(refused.rule.contains("uid 65534"));
        // A non-root master running its workers as another user: still refused.
        assert!(check_privileged(1023, 1001, 1000).is_err());
    }

    #[test]
    fn requests_and_addresses_per_worker_are_capped() {
        let mut r = ListenRequests::default();
        for port in 0..MAX_LISTEN_ADDRESSES as u16 {
            assert!(r.admit(&None, 3000 + port).is_ok());
        }
        let refused = r.admit(&None, 5000).unwrap_err();
        assert!(refused.rule.contains("different addresses"));
        // The same address again is fine until the request cap.
        while r.count() < MAX_LISTEN_REQUESTS {
            assert!(r.admit(&None, 3000).is_ok());
        }
        let refused = r.admit(&None, 3000).unwrap_err();
        assert!(refused
            .rule
            .contains(&format!("more than {MAX_LISTEN_REQUESTS} listen requests")));
    }
}
