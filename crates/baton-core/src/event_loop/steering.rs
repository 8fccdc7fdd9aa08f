//! Steering and stragglers of groups with per-slot sockets (see the parent module's
//! documentation): which slots get new connections, and the hand-off of connections left
//! in the queue of a slot without a ready worker.

use super::*;
use crate::balance::{self, Balancer, SlotLoad};

/// Connections accepted from one watched socket per wake-up, so one slot cannot starve
/// the loop; the rest are taken on the next turn.
pub(super) const ACCEPT_BATCH: usize = 64;
/// How soon to try again when no serving worker could take a connection (its channel
/// full) or an accept failed for lack of resources.
pub(super) const RESCUE_RETRY: Duration = Duration::from_millis(10);

/// One per-slot listening socket: group, address index (the worker's fd is 3 + addr),
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SlotSocket {
    pub(super) group: usize,
    pub(super) addr: usize,
    pub(super) slot: u32,
}

/// The steering state of one group with per-slot sockets.
#[derive(Default)]
pub(super) struct Rescue {
    /// The serving slots of the last [`Action::Steer`].
    pub(super) serving: Vec<u32>,
    /// Serving workers that take handed-off connections; refreshed after every drive.
    pub(super) targets: Vec<WorkerKey>,
    /// Round-robin position in `targets`.
    pub(super) next: usize,
    /// When workers shed connections (see `balance.rs`).
    pub(super) balancer: Balancer,
    /// The shares of new connections last given to the kernel.
    pub(super) shares: Vec<(u32, u32)>,
}

/// A watched per-slot socket.
pub(super) struct Watched {
    pub(super) token: Token,
    /// Connections handed off since it was registered.
    pub(super) handed: u64,
}

/// An accepted connection no serving worker could take yet (every channel full).
pub(super) struct Straggler {
    pub(super) from: SlotSocket,
    pub(super) conn: OwnedFd,
}

impl LoopState {
    // ----- steering and stragglers (see the module documentation) ---------------------------

    /// New connections of `group` go to `serving` only.
    pub(super) fn steer(&mut self, group: usize, serving: Vec<u32>) {
        if self.handed_over {
            return; // the new master steers these sockets now
        }
        self.rescue_dirty = true;
        let Some(sockets) = self.listeners.get(group) else {
            return;
        };
        if !sockets.has_per_slot() {
            return;
        }
        if let Some(r) = self.rescue.get_mut(group) {
            r.serving = serving;
        }
        self.rebalance(group);
    }

    /// The earliest time a group's balance must be looked at again (a shed held back).
    pub(super) fn rebalance_at(&self) -> Option<Instant> {
        self.rescue
            .iter()
            .filter_map(|r| r.balancer.recheck_at())
            .min()
    }

    /// Rebalance the groups whose held-back shed is due.
    pub(super) fn rebalance_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.rescue.len())
            .filter(|&g| {
                self.rescue[g]
                    .balancer
                    .recheck_at()
                    .is_some_and(|at| at <= now)
            })
            .collect();
        for g in due {
            self.rebalance(g);
        }
    }

    /// Give the kernel each serving slot's share of `group`'s new connections, weighted by
    /// the connections their workers report, and ask over-full workers to shed (the rules
    /// are in `balance.rs`). Called when the serving slots change and on every report.
    pub(super) fn rebalance(&mut self, group: usize) {
        if self.handed_over {
            return;
        }
        let Some(sockets) = self.listeners.get(group) else {
            return;
        };
        if !sockets.has_per_slot() {
            return;
        }
        let Some(r) = self.rescue.get(group) else {
            return;
        };
        if sockets.is_sticky() {
            // By source address: no weights (they would move clients) and no sheds (a
            // shed client comes back to the same slot).
            let shares: Vec<(u32, u32)> = r.serving.iter().map(|s| (*s, 1)).collect();
            if shares != r.shares {
                let errors = sockets.steer_sticky(&r.serving);
                let name = self.group_names.get(group).cloned().unwrap_or_default();
                for e in errors {
                    self.log_once(format!(
                        "group \"{name}\": {e}; the kernel's hash goes on spreading them over every \
                         slot, so one client's connections may reach different workers"
                    ));
                }
                if let Some(r) = self.rescue.get_mut(group) {
                    r.shares = shares;
                }
            }
            return;
        }
        let snapshot = self.fleet.snapshot();
        // The serving worker of each serving slot (its replacement, once ready, is current).
        let serving: Vec<(u32, Option<WorkerKey>)> = r
            .serving
            .iter()
            .map(|&slot| {
                let key = snapshot
                    .workers
                    .iter()
                    .find(|w| w.group == group && w.slot == slot && w.state == WorkerState::Ready)
                    .and_then(|w| w.key);
                (slot, key)
            })
            .collect();
        let loads: Vec<SlotLoad> = serving
            .iter()
            .map(|&(slot, key)| SlotLoad {
                slot,
                connections: key
                    .and_then(|k| self.workers.get(&k))
                    .and_then(|io| io.connections),
            })
            .collect();
        let shares = balance::weights(&sockets.with_queued(&loads));
        if shares != r.shares {
            let errors = sockets.steer_weighted(&shares);
            let name = self.group_names.get(group).cloned().unwrap_or_default();
            for e in errors {
                self.log_once(format!(
                    "group \"{name}\": {e}; the kernel's hash goes on spreading them over every slot, \
                     including those without a ready worker"
                ));
            }
        }
        let count = self.config.groups[group].rules.count;
        let Some(r) = self.rescue.get_mut(group) else {
            return;
        };
        r.shares = shares;
        let sheds = r.balancer.sheds(Instant::now(), count, &loads);
        for shed in sheds {
            let key = serving
                .iter()
                .find(|(s, _)| *s == shed.slot)
                .and_then(|(_, k)| *k);
            if let Some(key) = key {
                let line = format!("{{\"type\":\"shed\",\"count\":{}}}\n", shed.connections);
                self.send_worker(key, &line);
            }
        }
    }

    /// Recompute which workers take handed-off connections and which per-slot sockets the
    /// loop watches.
    pub(super) fn refresh_rescue(&mut self) {
        self.rescue_dirty = false;
        if self.handed_over {
            return; // the new master's workers take what the sockets queue
        }
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
            // Every slot with sockets, including those a scale down removed whose sockets
            // are not closed yet (`scale.rs`).
            let slots = self.listeners[*g].slot_count();
            for slot in (0..slots).filter(|s| !r.serving.contains(s)) {
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

    pub(super) fn watch(&mut self, socket: SlotSocket) {
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

    pub(super) fn unwatch(&mut self, socket: SlotSocket) {
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
    pub(super) fn rescue_waiting(&self) -> bool {
        let has_targets = |g: usize| self.rescue.get(g).is_some_and(|r| !r.targets.is_empty());
        (self.rescue_backlog && self.watched.keys().any(|s| has_targets(s.group)))
            || self.pending.iter().any(|s| has_targets(s.from.group))
    }

    /// Hand over the connections left waiting, then take what the watched sockets queued.
    pub(super) fn retry_rescue(&mut self) {
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
    pub(super) fn accept_stragglers(&mut self, socket: SlotSocket) {
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
    pub(super) fn hand_off(&mut self, s: Straggler) -> Result<(), Straggler> {
        let Some(r) = self.rescue.get(s.from.group) else {
            return Err(s);
        };
        let line = handoff::handle_line(3 + s.from.addr as i32);
        let (targets, next) = (r.targets.clone(), r.next);
        let n = targets.len();
        for i in 0..n {
            let at = (next + i) % n;
            let key = targets[at];
            // Only a worker with nothing queued: a connection never waits behind a full
            // channel while another worker could take it now.
            let Some(channel) = self
                .workers
                .get(&key)
                .filter(|io| io.outbox.is_empty())
                .and_then(|io| io.control.as_ref())
            else {
                continue;
            };
            match handoff::send_with_fd(channel.as_fd(), line.as_bytes(), s.conn.as_fd()) {
                Ok(sent) => {
                    if sent < line.len() {
                        // The rest of the line must follow, or the channel's JSON stream
                        // breaks: it waits in the outbox (the fd went with the first byte).
                        let rest = line.as_bytes()[sent..].to_vec();
                        self.send_worker_with_fd(key, rest, None);
                    }
                    if let Some(r) = self.rescue.get_mut(s.from.group) {
                        r.next = (at + 1) % n;
                    }
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
}
