//! Steering and stragglers of groups with per-slot sockets (see the parent module's
//! documentation): which slots get new connections, and the hand-off of connections left
//! in the queue of a slot without a ready worker.

use super::steering_state::{SlotSocket, Straggler};
use super::*;
use crate::balance::{self, SlotLoad};

/// Connections accepted from one watched socket per wake-up, so one slot cannot starve
/// the loop; the rest are taken on the next turn.
pub(super) const ACCEPT_BATCH: usize = 64;
/// How soon to try again when no serving worker could take a connection (its channel
/// full) or an accept failed for lack of resources.
pub(super) const RESCUE_RETRY: Duration = Duration::from_millis(10);

impl LoopState {
    // ----- steering and stragglers (see the module documentation) ---------------------------

    /// New connections of `group` go to `serving` only.
    pub(super) fn steer(&mut self, group: usize, serving: Vec<u32>) {
        if self.handed_over {
            return; // the new master steers these sockets now
        }
        self.steering.mark_dirty();
        // Kept even while the group has no per-slot socket yet: a drop-in address bound
        // later is steered to these slots at once (`resteer`).
        self.steering.set_serving(group, serving);
        self.rebalance(group);
    }

    /// Give the kernel `group`'s steering again, on every per-slot address (one was just
    /// bound: `drop_in.rs`).
    pub(super) fn resteer(&mut self, group: usize) {
        self.steering.forget_shares(group);
        self.rebalance(group);
    }

    /// The earliest time a group's balance must be looked at again (a shed held back).
    pub(super) fn rebalance_at(&self) -> Option<Instant> {
        self.steering.recheck_at()
    }

    /// Rebalance the groups whose held-back shed is due.
    pub(super) fn rebalance_due(&mut self) {
        for g in self.steering.due(Instant::now()) {
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
        let r = &self.steering;
        if sockets.is_sticky() {
            // By source address: no weights (they would move clients) and no sheds (a
            // shed client comes back to the same slot).
            let shares: Vec<(u32, u32)> = r.serving(group).iter().map(|s| (*s, 1)).collect();
            if r.shares_changed(group, &shares) {
                let errors = sockets.steer_sticky(r.serving(group));
                let name = self.group_names.get(group).cloned().unwrap_or_default();
                for e in errors {
                    self.log_once(format!(
                        "group \"{name}\": {e}; the kernel's hash goes on spreading them over every \
                         slot, so one client's connections may reach different workers"
                    ));
                }
                self.steering.set_shares(group, shares);
            }
            return;
        }
        let snapshot = self.fleet.snapshot();
        // The serving worker of each serving slot (its replacement, once ready, is current).
        let serving: Vec<(u32, Option<WorkerKey>)> = r
            .serving(group)
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
        if r.shares_changed(group, &shares) {
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
        self.steering.set_shares(group, shares);
        let Some(balancer) = self.steering.balancer_mut(group) else {
            return;
        };
        let sheds = balancer.sheds(Instant::now(), count, &loads);
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
            let serving = self.steering.serving(*g).to_vec();
            // Ready (and not asked to stop) workers of serving slots that said they take
            // connections and whose channel is open.
            let targets: Vec<WorkerKey> = snapshot
                .workers
                .iter()
                .filter(|w| w.group == *g && w.state == WorkerState::Ready)
                .filter(|w| serving.contains(&w.slot))
                .filter_map(|w| w.key)
                .filter(|k| {
                    self.workers
                        .get(k)
                        .is_some_and(|io| io.handoff && io.control.is_some())
                })
                .collect();
            let idle = targets.is_empty();
            let not_serving: Vec<u32> = (0..self.listeners[*g].slot_count())
                .filter(|s| !serving.contains(s))
                .collect();
            self.steering.set_targets(*g, targets);
            if idle {
                continue;
            }
            // Every slot with sockets, including those a scale down removed whose sockets
            // are not closed yet (`scale.rs`).
            for slot in not_serving {
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
            .steering
            .watched()
            .into_iter()
            .filter(|s| !wanted.contains(s))
            .collect();
        for socket in gone {
            self.unwatch(socket);
        }
        for socket in wanted {
            if !self.steering.is_watched(&socket) {
                self.watch(socket);
            }
        }
        if self.steering.has_pending() {
            self.steering.set_backlog();
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
        self.steering.add_watched(socket, token);
        // Connections already queued: take them now (the poller reports only new ones
        // reliably once we have drained the queue).
        self.accept_stragglers(socket);
    }

    pub(super) fn unwatch(&mut self, socket: SlotSocket) {
        let Some((token, handed)) = self.steering.remove_watched(&socket) else {
            return;
        };
        self.sources.remove(&token);
        if let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot) {
            let fd = listener.fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if handed > 0 {
                self.log(&format!(
                    "group \"{}\": handed {} connection{} queued on slot {}'s socket {} to ready workers",
                    self.group_names[socket.group],
                    handed,
                    if handed == 1 { "" } else { "s" },
                    socket.slot,
                    listener.local
                ));
            }
        }
    }

    /// Whether stragglers wait for a retry that can succeed (`Steering::waiting`).
    pub(super) fn rescue_waiting(&self) -> bool {
        self.steering.waiting()
    }

    /// Hand over the connections left waiting, then take what the watched sockets queued.
    pub(super) fn retry_rescue(&mut self) {
        self.steering.clear_backlog();
        let mut waiting = self.steering.take_pending();
        let mut still = VecDeque::new();
        while let Some(s) = waiting.pop_front() {
            if let Err(s) = self.hand_off(s) {
                still.push_back(s);
            }
        }
        let blocked = !still.is_empty();
        self.steering.restore_pending(still);
        if blocked {
            self.steering.set_backlog();
            return;
        }
        for socket in self.steering.watched() {
            self.accept_stragglers(socket);
        }
    }

    /// Accept what `socket` has queued and hand it over.
    pub(super) fn accept_stragglers(&mut self, socket: SlotSocket) {
        if !self.steering.is_watched(&socket) {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            if self.steering.has_pending() {
                // The workers' channels are full: leave the rest in the kernel's queue.
                self.steering.set_backlog();
                return;
            }
            let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot)
            else {
                return;
            };
            match listener.accept_pending() {
                Ok(Some(conn)) => {
                    if let Err(s) = self.hand_off(Straggler { from: socket, conn }) {
                        self.steering.push_pending(s);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let message = format!(
                        "group \"{}\": cannot accept a connection queued on slot {}'s socket {}: {e}",
                        self.group_names[socket.group], socket.slot, listener.local
                    );
                    self.log_once(message);
                    self.steering.set_backlog();
                    return;
                }
            }
        }
        self.steering.set_backlog();
    }

    /// Send `s` to the next serving worker of its group that can take it; give it back
    /// when none can right now.
    pub(super) fn hand_off(&mut self, s: Straggler) -> Result<(), Straggler> {
        let Some((targets, next)) = self.steering.rotation(s.from.group) else {
            return Err(s);
        };
        let Some(target) = self
            .listeners
            .get(s.from.group)
            .and_then(|l| l.handoff_target(s.from.addr))
        else {
            return Err(s);
        };
        let line = handoff::target_line(target);
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
                    self.steering.handed_to(s.from.group, at, n);
                    self.steering.count_handed(&s.from);
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
