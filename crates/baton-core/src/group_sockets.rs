//! The listening sockets of one group, bound once in the master.
//!
//! With [`Balance::Shared`] each address has one socket that every worker of the group
//! accepts on. With [`Balance::ReusePort`] (Linux) each TCP address has one
//! `SO_REUSEPORT` socket per worker slot, bound and listening in slot order, so a slot's
//! socket has the slot's index in the kernel's reuseport group. The kernel spreads new
//! connections across them, [steered](GroupSockets::steer_weighted) to the slots with a ready
//! worker (`steer.rs`), and since the master keeps each slot's socket across
//! replacements, connections queued for a slot wait for its next worker instead of being
//! reset (or are handed to a ready worker by the master, see `event_loop/steering.rs`).
//!
//! An address whose socket systemd passed (`socket_activation/`) is not bound: that one
//! socket is shared by every worker of the group, whatever the balance.

use std::os::fd::RawFd;

use crate::addr::ListenAddr;
use crate::config::{Balance, GroupConfig};
use crate::listen::{self, BindOptions, Listener};

/// Sockets an address starts with instead of binding (socket activation, `baton upgrade`).
pub enum Passed {
    /// One socket every worker of the group shares.
    Shared(Listener),
    /// One `SO_REUSEPORT` socket per slot, in slot order (the previous master's); slots
    /// beyond the group's count are closed, missing ones are bound ([`GroupSockets::grow`]).
    /// They stay per slot even if the group's balance is now `shared`.
    PerSlot(Vec<Listener>),
}

enum AddrSockets {
    Shared(Listener),
    PerSlot(Vec<Listener>),
}

/// Every listening socket of one group.
pub struct GroupSockets {
    per_addr: Vec<AddrSockets>,
    /// `balance: 'sticky'`: steered by source address ([`GroupSockets::steer_sticky`]).
    sticky: bool,
}

impl GroupSockets {
    /// Bind every address of `group`. The error names the group and the address.
    pub fn bind(group: &GroupConfig) -> Result<GroupSockets, String> {
        GroupSockets::open(group, Vec::new())
    }

    /// Take the inherited socket of each address that has one (`inherited[i]` for
    /// `group.listen[i]`; missing entries are `None`) and bind the others. The error names
    /// the group and the address.
    pub fn open(
        group: &GroupConfig,
        inherited: Vec<Option<Passed>>,
    ) -> Result<GroupSockets, String> {
        let name = &group.rules.name;
        let fail = |e: listen::ListenError| format!("group \"{name}\": {e}");
        let mut per_addr = Vec::new();
        let mut inherited = inherited.into_iter();
        for addr in &group.listen {
            match inherited.next().flatten() {
                Some(Passed::Shared(listener)) => {
                    per_addr.push(AddrSockets::Shared(listener));
                    continue;
                }
                // Kept per slot whatever the balance says now: the previous master's other
                // slot sockets stay in the address's reuseport group until it exits, so
                // the kernel must go on being steered to the slots that serve.
                Some(Passed::PerSlot(slots)) if !slots.is_empty() => {
                    let mut sockets = AddrSockets::PerSlot(slots);
                    if let AddrSockets::PerSlot(v) = &mut sockets {
                        close_down_to(v, group.rules.count.max(1) as usize);
                    }
                    per_addr.push(sockets);
                    continue;
                }
                _ => {}
            }
            let per_slot = group.balance.per_slot() && matches!(addr, ListenAddr::Tcp { .. });
            if !per_slot {
                per_addr.push(AddrSockets::Shared(
                    listen::bind(addr, group.backlog).map_err(fail)?,
                ));
                continue;
            }
            let opts = BindOptions {
                backlog: group.backlog,
                reuse_port: true,
            };
            let first = listen::bind_with(addr, &opts).map_err(fail)?;
            // Every further slot binds the very port the first one got (`:0` included).
            let same = match (addr, first.port()) {
                (ListenAddr::Tcp { host, .. }, Some(port)) => ListenAddr::Tcp {
                    host: host.clone(),
                    port,
                },
                _ => addr.clone(),
            };
            let mut slots = vec![first];
            for _ in 1..group.rules.count {
                slots.push(listen::bind_with(&same, &opts).map_err(fail)?);
            }
            per_addr.push(AddrSockets::PerSlot(slots));
        }
        let sticky = group.balance == Balance::Sticky;
        let mut sockets = GroupSockets { per_addr, sticky };
        // Passed per-slot sockets of a previous master with fewer slots: bind the rest.
        sockets.grow(group, group.rules.count)?;
        if sticky {
            sockets.probe_sticky(name)?;
        }
        Ok(sockets)
    }

    /// Sticky balance is steering or nothing (the kernel's hash would spread one client's
    /// connections over every slot, which is what it exists to prevent), so the start
    /// fails when the kernel refuses the program: attach it with every slot serving. It
    /// stays until the first steer: connections that arrive before any worker is ready
    /// wait in their home slot's queue (as they would in the hash's), and sockets passed
    /// by a previous master (`baton upgrade`) keep their clients' slots meanwhile.
    fn probe_sticky(&self, name: &str) -> Result<(), String> {
        if !self.has_per_slot() {
            return Err(format!(
                "group \"{name}\": balance \"sticky\" needs a TCP listen address of the group \
                 (--listen :PORT, the port the app listens on): the socket of an app's own \
                 listen(PORT) without it, like a socket systemd passed, is shared by every \
                 worker and cannot be steered; add the port to the group's listen, or use balance \"reuseport\" or \"shared\""
            ));
        }
        let all: Vec<u32> = (0..self.slot_count()).collect();
        match self.steer_sticky(&all).into_iter().next() {
            None => Ok(()),
            Some(e) => Err(format!(
                "group \"{name}\": balance \"sticky\": {e}; sticky needs a kernel that takes \
                 reuseport steering programs (SO_ATTACH_REUSEPORT_CBPF, Linux >= 4.5, not \
                 forbidden by a seccomp filter); use balance \"reuseport\" or \"shared\""
            )),
        }
    }

    /// The fds a worker of `slot` inherits, in address order.
    pub fn fds_for(&self, slot: u32) -> Vec<RawFd> {
        self.per_addr
            .iter()
            .map(|a| match a {
                AddrSockets::Shared(l) => l.fd(),
                AddrSockets::PerSlot(v) => {
                    v.get(slot as usize).or(v.first()).map_or(-1, Listener::fd)
                }
            })
            .collect()
    }

    /// Whether some address has one socket per slot (and [`GroupSockets::steer_weighted`] applies).
    pub fn has_per_slot(&self) -> bool {
        self.per_addr
            .iter()
            .any(|a| matches!(a, AddrSockets::PerSlot(_)))
    }

    /// The indices (in address order, which is the order of the worker's fds 3..) of the
    /// addresses with one socket per slot.
    pub fn per_slot_addrs(&self) -> Vec<usize> {
        self.per_addr
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, AddrSockets::PerSlot(_)))
            .map(|(i, _)| i)
            .collect()
    }

    /// The socket of `slot` for the per-slot address `addr` (`None` for a shared address).
    pub fn slot_socket(&self, addr: usize, slot: u32) -> Option<&Listener> {
        match self.per_addr.get(addr)? {
            AddrSockets::PerSlot(v) => v.get(slot as usize),
            AddrSockets::Shared(_) => None,
        }
    }

    /// `loads` with each known count raised by the connections waiting in that slot's
    /// accept queues (every per-slot address): what the weights of new connections go by
    /// (`balance.rs`). A worker that falls behind accepts late, so its own count alone
    /// would make it look idle and draw even more new connections.
    pub fn with_queued(&self, loads: &[crate::balance::SlotLoad]) -> Vec<crate::balance::SlotLoad> {
        loads
            .iter()
            .map(|l| {
                let queued: u32 = self
                    .per_addr
                    .iter()
                    .filter_map(|a| match a {
                        AddrSockets::PerSlot(v) => v.get(l.slot as usize)?.queued(),
                        AddrSockets::Shared(_) => None,
                    })
                    .sum();
                crate::balance::SlotLoad {
                    slot: l.slot,
                    connections: l.connections.map(|c| c.saturating_add(queued)),
                }
            })
            .collect()
    }

    /// Send the new connections of every per-slot address only to the sockets of the
    /// serving slots in `shares`, each with its share: `(slot, weight)` (see `balance.rs`;
    /// no share: the kernel's hash). The program belongs to the address's reuseport group,
    /// so it is attached on the first socket. Returns one sentence per address where the
    /// kernel refused; the others are steered regardless.
    pub fn steer_weighted(&self, shares: &[(u32, u32)]) -> Vec<String> {
        let steering = match crate::steer::weighted(shares) {
            Ok(s) => s,
            Err(e) => return vec![format!("cannot steer new connections: {e}")],
        };
        let mut errors = Vec::new();
        for a in &self.per_addr {
            let AddrSockets::PerSlot(v) = a else { continue };
            let Some(first) = v.first() else { continue };
            if let Err(e) = apply_steering(first, &steering) {
                errors.push(format!(
                    "cannot steer new connections on {} to the slots with a ready worker ({e})",
                    first.local
                ));
            }
        }
        errors
    }

    /// Whether new connections are steered by source address (`balance: 'sticky'`).
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// Send each new connection of every per-slot address to a slot chosen from its
    /// source address ([`crate::steer::sticky`]), among `serving` (none: the kernel's
    /// hash). Returns one sentence per address where the kernel refused.
    pub fn steer_sticky(&self, serving: &[u32]) -> Vec<String> {
        let mut errors = Vec::new();
        for a in &self.per_addr {
            let AddrSockets::PerSlot(v) = a else { continue };
            let Some(first) = v.first() else { continue };
            let steering = match crate::steer::sticky(v.len() as u32, serving) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!(
                        "cannot steer new connections on {}: {e}",
                        first.local
                    ));
                    continue;
                }
            };
            if let Err(e) = apply_steering(first, &steering) {
                errors.push(format!(
                    "cannot steer new connections on {} by client address ({e})",
                    first.local
                ));
            }
        }
        errors
    }

    /// `(configured, bound)` for each address, e.g. `("127.0.0.1:0", "127.0.0.1:41234")`.
    pub fn bound(&self) -> Vec<(String, String)> {
        self.first_listeners()
            .map(|l| (l.addr.to_string(), l.local.clone()))
            .collect()
    }

    /// How many slots have their own sockets (0 when no address has per-slot sockets).
    pub fn slot_count(&self) -> u32 {
        self.per_addr
            .iter()
            .filter_map(|a| match a {
                AddrSockets::PerSlot(v) => Some(v.len() as u32),
                AddrSockets::Shared(_) => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Bind the per-slot sockets of slots up to `count` (scale up), each on the address
    /// slot 0 listens on, so it joins the same reuseport group in slot order. On an error
    /// the sockets bound by this call are closed again; the error names the group and
    /// the address.
    pub fn grow(&mut self, group: &GroupConfig, count: u32) -> Result<(), String> {
        let name = &group.rules.name;
        let opts = BindOptions {
            backlog: group.backlog,
            reuse_port: true,
        };
        let before: Vec<usize> = self
            .per_addr
            .iter()
            .map(|a| match a {
                AddrSockets::PerSlot(v) => v.len(),
                AddrSockets::Shared(_) => 0,
            })
            .collect();
        let mut result = Ok(());
        'addrs: for a in &mut self.per_addr {
            let AddrSockets::PerSlot(v) = a else { continue };
            let Some(first) = v.first() else { continue };
            let same = match (&first.addr, first.port()) {
                (ListenAddr::Tcp { host, .. }, Some(port)) => ListenAddr::Tcp {
                    host: host.clone(),
                    port,
                },
                (addr, _) => addr.clone(),
            };
            while (v.len() as u32) < count {
                match listen::bind_with(&same, &opts) {
                    Ok(l) => v.push(l),
                    Err(e) => {
                        result = Err(format!("group \"{name}\": slot {}: {e}", v.len()));
                        break 'addrs;
                    }
                }
            }
        }
        if result.is_err() {
            for (a, len) in self.per_addr.iter_mut().zip(before) {
                if let AddrSockets::PerSlot(v) = a {
                    close_down_to(v, len);
                }
            }
        }
        result
    }

    /// Close the per-slot sockets of slots `count..` (scale down, once their workers have
    /// exited). Slot 0's socket is always kept.
    pub fn shrink(&mut self, count: u32) {
        for a in &mut self.per_addr {
            if let AddrSockets::PerSlot(v) = a {
                close_down_to(v, count.max(1) as usize);
            }
        }
    }

    /// Every socket with its address index and slot (`None`: shared), for the handover to
    /// the next master (`baton upgrade`).
    pub fn all_mut(&mut self) -> Vec<(usize, Option<u32>, &mut Listener)> {
        let mut out = Vec::new();
        for (i, a) in self.per_addr.iter_mut().enumerate() {
            match a {
                AddrSockets::Shared(l) => out.push((i, None, l)),
                AddrSockets::PerSlot(v) => {
                    for (slot, l) in v.iter_mut().enumerate() {
                        out.push((i, Some(slot as u32), l));
                    }
                }
            }
        }
        out
    }

    /// The first (or only) socket of each address, in address order.
    pub fn first_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.per_addr.iter().filter_map(|a| match a {
            AddrSockets::Shared(l) => Some(l),
            AddrSockets::PerSlot(v) => v.first(),
        })
    }
}

/// Close the last sockets until `len` are left, the highest slot first: the kernel fills
/// the index a closed socket leaves in its reuseport group with the group's last socket,
/// so closing from the end keeps every remaining socket at its slot's index (which the
/// steering program relies on).
fn close_down_to(v: &mut Vec<Listener>, len: usize) {
    while v.len() > len {
        v.pop();
    }
}

#[cfg(target_os = "linux")]
fn apply_steering(l: &Listener, steering: &crate::steer::Steering) -> Result<(), String> {
    use std::os::fd::AsFd;
    crate::steer::apply(l.as_fd(), steering).map_err(|e| e.to_string())
}

/// Per-slot sockets exist on Linux only (`launch` refuses `reuseport` elsewhere).
#[cfg(not(target_os = "linux"))]
fn apply_steering(_: &Listener, _: &crate::steer::Steering) -> Result<(), String> {
    Err("steering needs Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupRules, Order};
    use std::path::PathBuf;
    use std::time::Duration;

    fn group(balance: Balance, count: u32, listen: Vec<ListenAddr>) -> GroupConfig {
        GroupConfig {
            rules: GroupRules {
                name: "web".into(),
                count,
                reloadable: true,
                order: Order::StartFirst,
                parallel: 1,
                ready_timeout: Duration::from_secs(1),
                stop_timeout: Duration::from_secs(1),
                readiness: Default::default(),
            },
            program: PathBuf::from("/bin/true"),
            exec_argv: vec![],
            script: PathBuf::new(),
            args: vec![],
            env: vec![],
            cwd: None,
            listen_names: listen
                .iter()
                .enumerate()
                .map(|(i, _)| format!("listen{i}"))
                .collect(),
            listen,
            backlog: 128,
            credentials: None,
            balance,
            stdout: Default::default(),
            stderr: Default::default(),
            log_prefix: false,
            instance_var: crate::config::DEFAULT_INSTANCE_VAR.to_string(),
            drop_in: true,
        }
    }

    fn local_tcp() -> ListenAddr {
        ListenAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        }
    }

    #[test]
    fn shared_gives_every_slot_the_same_fd() {
        let s = GroupSockets::bind(&group(Balance::Shared, 3, vec![local_tcp()])).unwrap();
        assert_eq!(s.fds_for(0), s.fds_for(2));
        assert_eq!(s.bound().len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sticky_binds_per_slot_sockets_and_steers_by_source_address() {
        use std::net::{SocketAddr, TcpStream};
        let s = GroupSockets::bind(&group(Balance::Sticky, 3, vec![local_tcp()])).unwrap();
        assert!(s.is_sticky() && s.has_per_slot());
        assert_eq!(s.slot_count(), 3);
        assert!(s.steer_sticky(&[0, 1, 2]).is_empty());
        let port = s.bound()[0].1.rsplit(':').next().unwrap().to_string();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // 127.0.0.1's slot takes every connection from it, whatever the source port.
        let home = crate::steer::sticky_slot("127.0.0.1".parse().unwrap(), 3, &[0, 1, 2]).unwrap();
        let _conns: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for slot in 0..3 {
            s.slot_socket(0, slot).unwrap().set_nonblocking().unwrap();
        }
        let mut counts = [0; 3];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counts.iter().sum::<usize>() < 10 {
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
            for slot in 0..3 {
                while let Some(_c) = s.slot_socket(0, slot).unwrap().accept_pending().unwrap() {
                    counts[slot as usize] += 1;
                }
            }
        }
        assert_eq!(counts[home as usize], 10, "{counts:?}");
    }

    #[test]
    fn sticky_without_a_tcp_address_is_refused() {
        let err = match GroupSockets::bind(&group(Balance::Sticky, 2, vec![])) {
            Err(e) => e,
            Ok(_) => panic!("sticky with no address was accepted"),
        };
        assert!(
            err.contains("group \"web\"") && err.contains("--listen :PORT"),
            "{err}"
        );
    }

    #[test]
    fn reuseport_gives_each_slot_its_own_socket_on_one_port() {
        let s = GroupSockets::bind(&group(Balance::ReusePort, 3, vec![local_tcp()])).unwrap();
        let fds: Vec<RawFd> = (0..3).flat_map(|i| s.fds_for(i)).collect();
        assert_eq!(fds.len(), 3);
        assert!(fds[0] != fds[1] && fds[1] != fds[2] && fds[0] != fds[2]);
        let (_, bound) = &s.bound()[0];
        assert!(
            bound.starts_with("127.0.0.1:") && !bound.ends_with(":0"),
            "{bound}"
        );
        // Every slot's socket accepts connections on that one port.
        let port: u16 = bound.rsplit(':').next().unwrap().parse().unwrap();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn steering_sends_new_connections_to_the_serving_slots_only() {
        let s = GroupSockets::bind(&group(Balance::ReusePort, 3, vec![local_tcp()])).unwrap();
        assert!(s.has_per_slot());
        assert_eq!(s.per_slot_addrs(), [0]);
        let port: u16 = s.bound()[0].1.rsplit(':').next().unwrap().parse().unwrap();
        for slot in 0..3 {
            s.slot_socket(0, slot).unwrap().set_nonblocking().unwrap();
        }
        assert!(s.steer_weighted(&[(2, 1)]).is_empty());
        let clients: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // Wait (on readiness) until slot 2 has all of them, then check the others have none.
        let mut poll = mio::Poll::new().unwrap();
        let fd = s.slot_socket(0, 2).unwrap().fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(2),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut accepted = Vec::new();
        while accepted.len() < clients.len() {
            match s.slot_socket(0, 2).unwrap().accept_pending().unwrap() {
                Some(c) => accepted.push(c),
                None => {
                    poll.poll(&mut events, Some(Duration::from_secs(5)))
                        .unwrap();
                    assert!(!events.is_empty(), "only {} accepted", accepted.len());
                }
            }
        }
        for slot in [0, 1] {
            assert!(s
                .slot_socket(0, slot)
                .unwrap()
                .accept_pending()
                .unwrap()
                .is_none());
        }
        assert!(s.steer_weighted(&[]).is_empty());
    }

    /// Connect 10 clients and check they all queue on `slot`'s socket, none elsewhere.
    #[cfg(target_os = "linux")]
    fn all_reach(s: &GroupSockets, port: u16, slot: u32) {
        let count = s.slot_count();
        for i in 0..count {
            s.slot_socket(0, i).unwrap().set_nonblocking().unwrap();
        }
        let clients: Vec<_> = (0..10)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let mut poll = mio::Poll::new().unwrap();
        let fd = s.slot_socket(0, slot).unwrap().fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(1),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut accepted = 0;
        while accepted < clients.len() {
            match s.slot_socket(0, slot).unwrap().accept_pending().unwrap() {
                Some(_) => accepted += 1,
                None => {
                    poll.poll(&mut events, Some(Duration::from_secs(5)))
                        .unwrap();
                    assert!(!events.is_empty(), "only {accepted} accepted on {slot}");
                }
            }
        }
        for other in (0..count).filter(|o| *o != slot) {
            let l = s.slot_socket(0, other).unwrap();
            assert!(
                l.accept_pending().unwrap().is_none(),
                "slot {other} got one"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn grow_and_shrink_keep_each_socket_at_its_slot_index() {
        let g = group(Balance::ReusePort, 2, vec![local_tcp()]);
        let mut s = GroupSockets::bind(&g).unwrap();
        let port: u16 = s.bound()[0].1.rsplit(':').next().unwrap().parse().unwrap();
        s.grow(&g, 4).unwrap();
        assert_eq!(s.slot_count(), 4);
        assert_eq!(s.fds_for(3).len(), 1);
        assert_ne!(s.fds_for(3), s.fds_for(0));
        assert!(s.steer_weighted(&[(3, 1)]).is_empty());
        all_reach(&s, port, 3);
        s.shrink(1);
        assert_eq!(s.slot_count(), 1);
        s.grow(&g, 3).unwrap();
        assert!(s.steer_weighted(&[(2, 1)]).is_empty());
        all_reach(&s, port, 2);
        assert!(s.steer_weighted(&[(1, 1)]).is_empty());
        all_reach(&s, port, 1);
        s.shrink(0);
        assert_eq!(s.slot_count(), 1, "slot 0 is kept");
        // A shared group has no per-slot sockets to grow.
        let shared = group(Balance::Shared, 1, vec![local_tcp()]);
        let mut s = GroupSockets::bind(&shared).unwrap();
        s.grow(&shared, 3).unwrap();
        assert_eq!(s.slot_count(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_inherited_socket_is_shared_even_in_a_reuseport_group() {
        use std::os::fd::{AsRawFd, OwnedFd};
        let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = passed.local_addr().unwrap().port();
        let fd = OwnedFd::from(passed);
        let raw = fd.as_raw_fd();
        let inherited = Listener::inherited(
            ListenAddr::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            fd,
            format!("127.0.0.1:{port}"),
            Some(port),
            3,
            Some("web".into()),
        );
        let g = group(Balance::ReusePort, 3, vec![local_tcp(), local_tcp()]);
        let s = GroupSockets::open(&g, vec![Some(Passed::Shared(inherited))]).unwrap();
        // Address 0 is the inherited socket for every slot; address 1 is bound per slot.
        assert_eq!(s.fds_for(0)[0], raw);
        assert_eq!(s.fds_for(2)[0], raw);
        assert_ne!(s.fds_for(0)[1], s.fds_for(1)[1]);
        assert_eq!(s.per_slot_addrs(), [1]);
        let origins: Vec<_> = s.first_listeners().map(|l| l.origin().clone()).collect();
        assert_eq!(
            origins,
            [
                crate::listen::Origin::Inherited {
                    fd: 3,
                    name: Some("web".into())
                },
                crate::listen::Origin::Bound
            ]
        );
    }

    #[test]
    fn shared_sockets_have_nothing_to_steer() {
        let s = GroupSockets::bind(&group(Balance::Shared, 2, vec![local_tcp()])).unwrap();
        assert!(!s.has_per_slot());
        assert!(s.slot_socket(0, 0).is_none());
        assert!(s.steer_weighted(&[(0, 1)]).is_empty());
    }

    #[test]
    fn a_port_in_use_names_the_group_and_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr = ListenAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let err = GroupSockets::bind(&group(Balance::Shared, 1, vec![addr]))
            .err()
            .unwrap();
        assert!(
            err.contains("group \"web\"") && err.contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
