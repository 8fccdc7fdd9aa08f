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
//!
//! **Drop-in addresses.** The sockets the master binds when a worker's app calls its own
//! `listen(PORT)` (`event_loop/drop_in.rs`) belong here too, after the listen addresses:
//! with a per-slot balance (Linux) each drop-in address has one `SO_REUSEPORT` socket per
//! slot, bound in slot order like a listen address, steered, grown and shrunk with them,
//! and a worker is handed its own slot's socket. They are not inherited at spawn (a
//! worker gets them over its channel when it asks), so [`GroupSockets::fds_for`],
//! [`GroupSockets::per_slot_addrs`] and [`GroupSockets::first_listeners`] leave them out.

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

/// A drop-in address: bound for the group's workers' own `listen(port)` (`event_loop/drop_in.rs`).
struct DropInAddr {
    /// Host as the app gave it (`None`: all interfaces).
    host: Option<String>,
    /// Port as the app asked it (0: the one the first socket got, for every slot).
    port: u16,
    sockets: AddrSockets,
}

/// Every listening socket of one group.
pub struct GroupSockets {
    per_addr: Vec<AddrSockets>,
    /// Drop-in addresses, in the order they were first asked for.
    drop_in: Vec<DropInAddr>,
    /// Whether new drop-in addresses get one socket per slot (a per-slot balance on Linux).
    drop_in_per_slot: bool,
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
        let mut sockets = GroupSockets {
            per_addr,
            drop_in: Vec::new(),
            drop_in_per_slot: group.balance.per_slot() && cfg!(target_os = "linux"),
            sticky,
        };
        // Passed per-slot sockets of a previous master with fewer slots: bind the rest.
        sockets.grow(group, group.rules.count)?;
        if sticky {
            sockets.probe_sticky(group)?;
        }
        Ok(sockets)
    }

    /// Sticky balance is steering or nothing (the kernel's hash would spread one client's
    /// connections over every slot, which is what it exists to prevent), so the start
    /// fails when the kernel refuses the program: attach it with every slot serving. It
    /// stays until the first steer: connections that arrive before any worker is ready
    /// wait in their home slot's queue (as they would in the hash's), and sockets passed
    /// by a previous master (`baton upgrade`) keep their clients' slots meanwhile. A group
    /// whose only TCP sockets will be its workers' own `listen(PORT)` (drop-in) is probed
    /// on a throwaway pair of sockets on 127.0.0.1.
    fn probe_sticky(&self, group: &GroupConfig) -> Result<(), String> {
        let name = &group.rules.name;
        let refused = |e: String| {
            format!(
                "group \"{name}\": balance \"sticky\": {e}; sticky needs a kernel that takes \
                 reuseport steering programs (SO_ATTACH_REUSEPORT_CBPF, Linux >= 4.5, not \
                 forbidden by a seccomp filter); use balance \"reuseport\" or \"shared\""
            )
        };
        if self.has_per_slot() {
            let all: Vec<u32> = (0..self.slot_count()).collect();
            return match self.steer_sticky(&all).into_iter().next() {
                None => Ok(()),
                Some(e) => Err(refused(e)),
            };
        }
        if !group.drop_in {
            return Err(format!(
                "group \"{name}\": balance \"sticky\" needs a TCP address to steer: a TCP listen \
                 address of the group (--listen :PORT), or dropIn so the app's own listen(PORT) \
                 gets one socket per worker slot; the group has neither (a socket systemd passed \
                 is shared by every worker and cannot be steered); add one, or use balance \"reuseport\" or \"shared\""
            ));
        }
        let mut probe = GroupSockets {
            per_addr: Vec::new(),
            drop_in: Vec::new(),
            drop_in_per_slot: true,
            sticky: true,
        };
        let bound = probe
            .bind_drop_in(Some("127.0.0.1".into()), 0, 1, 2)
            .map_err(|e| refused(format!("cannot bind a socket to probe the kernel: {e}")))?;
        debug_assert_eq!(bound, 0);
        match probe.steer_sticky(&[0, 1]).into_iter().next() {
            None => Ok(()),
            Some(e) => Err(refused(e)),
        }
    }

    /// Every address's sockets, the listen addresses' then the drop-in ones'.
    fn every_addr(&self) -> impl Iterator<Item = &AddrSockets> {
        self.per_addr
            .iter()
            .chain(self.drop_in.iter().map(|d| &d.sockets))
    }

    /// The drop-in address asked as `host:port` (`port` as asked, 0 included), if bound.
    pub fn find_drop_in(&self, host: &Option<String>, port: u16) -> Option<usize> {
        self.drop_in
            .iter()
            .position(|d| d.port == port && &d.host == host)
    }

    /// Whether drop-in addresses get one socket per slot (a per-slot balance on Linux).
    pub fn drop_in_per_slot(&self) -> bool {
        self.drop_in_per_slot
    }

    /// How many drop-in addresses the group has.
    pub fn drop_in_count(&self) -> usize {
        self.drop_in.len()
    }

    /// Bind a new drop-in address for `host:port` (`None`: all interfaces): one socket per
    /// slot up to `count` when the balance is per slot (each slot's on the port the first
    /// one got), else one. Returns its index for [`GroupSockets::drop_in_socket`].
    pub fn bind_drop_in(
        &mut self,
        host: Option<String>,
        port: u16,
        backlog: i32,
        count: u32,
    ) -> Result<usize, listen::ListenError> {
        let addr = ListenAddr::Tcp {
            host: host.clone().unwrap_or_default(),
            port,
        };
        let sockets = if self.drop_in_per_slot {
            let opts = BindOptions {
                backlog,
                reuse_port: true,
            };
            let first = listen::bind_with(&addr, &opts)?;
            let same = ListenAddr::Tcp {
                host: host.clone().unwrap_or_default(),
                port: first.port().unwrap_or(port),
            };
            let mut slots = vec![first];
            for _ in 1..count.max(1) {
                slots.push(listen::bind_with(&same, &opts)?);
            }
            AddrSockets::PerSlot(slots)
        } else {
            AddrSockets::Shared(listen::bind(&addr, backlog)?)
        };
        self.drop_in.push(DropInAddr {
            host,
            port,
            sockets,
        });
        Ok(self.drop_in.len() - 1)
    }

    /// Take a drop-in address a previous master passed (`baton upgrade`); slots beyond
    /// `count` are closed, missing ones are bound by the next [`GroupSockets::grow`].
    pub fn adopt_drop_in(&mut self, host: Option<String>, port: u16, passed: Passed, count: u32) {
        let sockets = match passed {
            Passed::Shared(l) => AddrSockets::Shared(l),
            Passed::PerSlot(mut v) => {
                close_down_to(&mut v, count.max(1) as usize);
                AddrSockets::PerSlot(v)
            }
        };
        self.drop_in.push(DropInAddr {
            host,
            port,
            sockets,
        });
    }

    /// The socket a worker of `slot` is handed for drop-in address `index`: its slot's
    /// (the first one if the slot has none), or the one shared socket.
    pub fn drop_in_socket(&self, index: usize, slot: u32) -> Option<&Listener> {
        match &self.drop_in.get(index)?.sockets {
            AddrSockets::Shared(l) => Some(l),
            AddrSockets::PerSlot(v) => v.get(slot as usize).or(v.first()),
        }
    }

    /// Every drop-in socket: host and port as asked, slot (`None`: shared), socket.
    pub fn drop_in_sockets(&self) -> Vec<(&Option<String>, u16, Option<u32>, &Listener)> {
        let mut out = Vec::new();
        for d in &self.drop_in {
            match &d.sockets {
                AddrSockets::Shared(l) => out.push((&d.host, d.port, None, l)),
                AddrSockets::PerSlot(v) => {
                    for (slot, l) in v.iter().enumerate() {
                        out.push((&d.host, d.port, Some(slot as u32), l));
                    }
                }
            }
        }
        out
    }

    /// The first (or only) socket of each drop-in address, in the order they were asked.
    pub fn drop_in_first(&self) -> impl Iterator<Item = &Listener> {
        self.drop_in.iter().filter_map(|d| match &d.sockets {
            AddrSockets::Shared(l) => Some(l),
            AddrSockets::PerSlot(v) => v.first(),
        })
    }

    /// Every drop-in socket, mutably (to hand its file over, `baton upgrade`).
    pub fn drop_in_mut(&mut self) -> Vec<&mut Listener> {
        let mut out = Vec::new();
        for d in &mut self.drop_in {
            match &mut d.sockets {
                AddrSockets::Shared(l) => out.push(l),
                AddrSockets::PerSlot(v) => out.extend(v.iter_mut()),
            }
        }
        out
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

    /// Whether some address (a listen or a drop-in one) has one socket per slot (and
    /// [`GroupSockets::steer_weighted`] applies).
    pub fn has_per_slot(&self) -> bool {
        self.every_addr()
            .any(|a| matches!(a, AddrSockets::PerSlot(_)))
    }

    /// The indices of the addresses with one socket per slot: listen addresses first, in
    /// address order (index `i` is the worker's fd `3 + i`), then drop-in addresses
    /// (index `listen count + j` for drop-in address `j`).
    pub fn per_slot_addrs(&self) -> Vec<usize> {
        self.every_addr()
            .enumerate()
            .filter(|(_, a)| matches!(a, AddrSockets::PerSlot(_)))
            .map(|(i, _)| i)
            .collect()
    }

    /// The address of index `addr` (see [`GroupSockets::per_slot_addrs`]).
    fn addr_at(&self, addr: usize) -> Option<&AddrSockets> {
        match addr.checked_sub(self.per_addr.len()) {
            None => self.per_addr.get(addr),
            Some(j) => self.drop_in.get(j).map(|d| &d.sockets),
        }
    }

    /// The socket of `slot` for the per-slot address `addr` (`None` for a shared address).
    pub fn slot_socket(&self, addr: usize, slot: u32) -> Option<&Listener> {
        match self.addr_at(addr)? {
            AddrSockets::PerSlot(v) => v.get(slot as usize),
            AddrSockets::Shared(_) => None,
        }
    }

    /// How a worker is told which of its servers takes a connection queued on address
    /// `addr` (see [`GroupSockets::per_slot_addrs`]): a listen address by its inherited fd,
    /// a drop-in address by the port its sockets are bound to (the worker's server
    /// listening there, `src/worker/worker.ts`).
    pub fn handoff_target(&self, addr: usize) -> Option<crate::handoff::Target> {
        match addr.checked_sub(self.per_addr.len()) {
            None => Some(crate::handoff::Target::Fd(3 + addr as i32)),
            Some(j) => {
                let d = self.drop_in.get(j)?;
                let port = match &d.sockets {
                    AddrSockets::Shared(l) => l.port(),
                    AddrSockets::PerSlot(v) => v.first().and_then(Listener::port),
                }?;
                Some(crate::handoff::Target::Port(port))
            }
        }
    }

    /// `loads` with each known count raised by the connections waiting in that slot's
    /// accept queues (every per-slot address, listen and drop-in alike): what the weights of new connections go by
    /// (`balance.rs`). A worker that falls behind accepts late, so its own count alone
    /// would make it look idle and draw even more new connections.
    pub fn with_queued(&self, loads: &[crate::balance::SlotLoad]) -> Vec<crate::balance::SlotLoad> {
        loads
            .iter()
            .map(|l| {
                let queued: u32 = self
                    .per_addr
                    .iter()
                    .chain(self.drop_in.iter().map(|d| &d.sockets))
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
        for a in self.every_addr() {
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
        for a in self.every_addr() {
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
        self.every_addr()
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
            .every_addr()
            .map(|a| match a {
                AddrSockets::PerSlot(v) => v.len(),
                AddrSockets::Shared(_) => 0,
            })
            .collect();
        let mut result = Ok(());
        'addrs: for a in self.every_addr_mut() {
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
            for (a, len) in self.every_addr_mut().zip(before) {
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
        for a in self.every_addr_mut() {
            if let AddrSockets::PerSlot(v) = a {
                close_down_to(v, count.max(1) as usize);
            }
        }
    }

    /// Every address's sockets, mutably (listen addresses, then drop-in ones).
    fn every_addr_mut(&mut self) -> impl Iterator<Item = &mut AddrSockets> {
        self.per_addr
            .iter_mut()
            .chain(self.drop_in.iter_mut().map(|d| &mut d.sockets))
    }

    /// Every socket of the listen addresses with its address index and slot (`None`:
    /// shared), for the handover to the next master (`baton upgrade`); drop-in ones are
    /// [`GroupSockets::drop_in_sockets`].
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
            options: Default::default(),
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
    fn sticky_without_a_tcp_address_nor_drop_in_is_refused() {
        let mut g = group(Balance::Sticky, 2, vec![]);
        g.drop_in = false;
        let err = match GroupSockets::bind(&g) {
            Err(e) => e,
            Ok(_) => panic!("sticky with no address was accepted"),
        };
        assert!(
            err.contains("group \"web\"")
                && err.contains("--listen :PORT")
                && err.contains("dropIn"),
            "{err}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sticky_drop_in_group_without_a_listen_address_starts_and_steers_its_drop_in_sockets() {
        let mut s = GroupSockets::bind(&group(Balance::Sticky, 3, vec![])).unwrap();
        assert!(!s.has_per_slot(), "nothing to steer before the app listens");
        assert!(s.drop_in_per_slot());
        let i = s.bind_drop_in(Some("127.0.0.1".into()), 0, 16, 3).unwrap();
        assert!(s.has_per_slot());
        assert_eq!(s.slot_count(), 3);
        let port = s.drop_in_socket(i, 0).unwrap().port().unwrap();
        // One client address reaches one slot's socket only, whatever the source port.
        let home = crate::steer::sticky_slot("127.0.0.1".parse().unwrap(), 3, &[0, 1, 2]).unwrap();
        assert!(s.steer_sticky(&[0, 1, 2]).is_empty());
        let _conns: Vec<std::net::TcpStream> = (0..10)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let mut counts = [0; 3];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for slot in 0..3 {
            s.drop_in_socket(i, slot)
                .unwrap()
                .set_nonblocking()
                .unwrap();
        }
        while counts.iter().sum::<usize>() < 10 {
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
            for slot in 0..3 {
                while let Some(_c) = s.drop_in_socket(i, slot).unwrap().accept_pending().unwrap() {
                    counts[slot as usize] += 1;
                }
            }
        }
        assert_eq!(counts[home as usize], 10, "{counts:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn drop_in_addresses_get_one_socket_per_slot_on_one_port_and_are_not_inherited() {
        let g = group(Balance::ReusePort, 2, vec![local_tcp()]);
        let mut s = GroupSockets::bind(&g).unwrap();
        let inherited = s.fds_for(1);
        let host = Some("127.0.0.1".to_string());
        assert_eq!(s.find_drop_in(&host, 0), None);
        let i = s.bind_drop_in(host.clone(), 0, 16, 2).unwrap();
        assert_eq!(s.find_drop_in(&host, 0), Some(i));
        assert_eq!(
            s.find_drop_in(&None, 0),
            None,
            "another host is another address"
        );
        assert_eq!(s.drop_in_count(), 1);
        let (a, b) = (
            s.drop_in_socket(i, 0).unwrap(),
            s.drop_in_socket(i, 1).unwrap(),
        );
        assert_ne!(a.fd(), b.fd(), "each slot has its own socket");
        assert!(a.port().is_some_and(|p| p != 0));
        assert_eq!(
            a.port(),
            b.port(),
            "on the port the first one got (listen(0))"
        );
        // Not part of a worker's inherited fds, nor of the listen addresses.
        assert_eq!(s.fds_for(1), inherited);
        // Stragglers: listen address 0 (fd 3), then drop-in address 0 (by its port).
        assert_eq!(s.per_slot_addrs(), [0, 1]);
        assert_eq!(s.slot_socket(1, 1).map(Listener::fd), Some(b.fd()));
        assert_eq!(s.handoff_target(0), Some(crate::handoff::Target::Fd(3)));
        assert_eq!(
            s.handoff_target(1),
            Some(crate::handoff::Target::Port(b.port().unwrap()))
        );
        assert_eq!(s.handoff_target(2), None);
        assert_eq!(s.bound().len(), 1);
        assert_eq!(s.drop_in_first().count(), 1);
        let slots: Vec<Option<u32>> = s.drop_in_sockets().iter().map(|d| d.2).collect();
        assert_eq!(slots, [Some(0), Some(1)]);
        // Scaling grows and shrinks them with the listen address's, slot 0 kept.
        s.grow(&g, 4).unwrap();
        assert_eq!(s.drop_in_sockets().len(), 4);
        assert_eq!(s.drop_in_socket(i, 3).unwrap().port(), a_port(&s, i));
        s.shrink(1);
        assert_eq!(s.drop_in_sockets().len(), 1);
        // A slot without a socket (never for a live worker) falls back to slot 0's.
        assert_eq!(
            s.drop_in_socket(i, 5).map(Listener::fd),
            s.drop_in_socket(i, 0).map(Listener::fd)
        );
        assert!(s.drop_in_socket(1, 0).is_none());
    }

    #[cfg(target_os = "linux")]
    fn a_port(s: &GroupSockets, i: usize) -> Option<u16> {
        s.drop_in_socket(i, 0).and_then(Listener::port)
    }

    #[test]
    fn shared_balance_keeps_one_drop_in_socket_for_every_slot() {
        let mut s = GroupSockets::bind(&group(Balance::Shared, 3, vec![])).unwrap();
        assert!(!s.drop_in_per_slot());
        let i = s.bind_drop_in(Some("127.0.0.1".into()), 0, 16, 3).unwrap();
        assert!(!s.has_per_slot(), "nothing to steer");
        assert_eq!(s.slot_count(), 0);
        assert_eq!(
            s.drop_in_socket(i, 0).map(Listener::fd),
            s.drop_in_socket(i, 2).map(Listener::fd)
        );
        assert_eq!(s.drop_in_sockets()[0].2, None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_adopted_drop_in_address_keeps_its_slots_and_closes_extra_ones() {
        let g = group(Balance::ReusePort, 3, vec![]);
        let mut old = GroupSockets::bind(&g).unwrap();
        let i = old.bind_drop_in(None, 0, 16, 3).unwrap();
        let port = old.drop_in_socket(i, 0).unwrap().port();
        let mut passed = Vec::new();
        for l in old.drop_in_mut() {
            use std::os::fd::AsFd;
            let fd = l.as_fd().try_clone_to_owned().unwrap();
            passed.push(Listener::adopted(
                l.addr.clone(),
                fd,
                l.local.clone(),
                crate::listen::Origin::Bound,
            ));
        }
        let mut new = GroupSockets::bind(&group(Balance::ReusePort, 2, vec![])).unwrap();
        new.adopt_drop_in(None, 0, Passed::PerSlot(passed), 2);
        assert_eq!(new.find_drop_in(&None, 0), Some(0));
        assert_eq!(new.slot_count(), 2, "the third slot's socket is closed");
        assert_eq!(new.drop_in_socket(0, 1).unwrap().port(), port);
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
