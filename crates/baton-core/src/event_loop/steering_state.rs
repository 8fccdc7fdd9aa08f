//! The loop's steering state ([`Steering`]): what each group's kernel steering and
//! straggler rescue were last told, and the rescue's work in progress. It owns its fields
//! (as node's `RoundRobinHandle` owns its queue and free list); the loop (`steering.rs`,
//! `scale.rs`, `workers.rs`, ...) reads and changes them only through its methods, and
//! does the I/O (sockets, poller, channels) itself.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::time::Instant;

use mio::Token;

use crate::balance::Balancer;
use crate::fleet::WorkerKey;

/// One per-slot listening socket: group, address index (the worker's fd is 3 + addr),
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SlotSocket {
    pub(super) group: usize,
    pub(super) addr: usize,
    pub(super) slot: u32,
}

/// An accepted connection no serving worker could take yet (every channel full).
pub(super) struct Straggler {
    pub(super) from: SlotSocket,
    pub(super) conn: OwnedFd,
}

/// A watched per-slot socket.
struct Watched {
    token: Token,
    /// Connections handed off since it was registered.
    handed: u64,
}

/// The steering state of one group.
#[derive(Default)]
struct GroupSteering {
    /// The serving slots of the last `Action::Steer`.
    serving: Vec<u32>,
    /// Serving workers that take handed-off connections; refreshed after every drive.
    targets: Vec<WorkerKey>,
    /// Round-robin position in `targets`.
    next: usize,
    /// When workers shed connections (see `balance.rs`).
    balancer: Balancer,
    /// The shares of new connections last given to the kernel.
    shares: Vec<(u32, u32)>,
}

/// The steering state of every group (see the module documentation).
pub(super) struct Steering {
    /// Per group.
    groups: Vec<GroupSteering>,
    /// The per-slot sockets registered with the poller for stragglers.
    watched: BTreeMap<SlotSocket, Watched>,
    /// Accepted connections waiting for a worker whose channel has room, oldest first.
    pending: VecDeque<Straggler>,
    /// Something that decides the rescue changed; recomputed at the end of `drive`.
    dirty: bool,
    /// Work left over (a batch limit, full channels, an accept error): retry soon.
    backlog: bool,
}

impl Steering {
    /// The state of `groups` groups, none steered yet.
    pub(super) fn new(groups: usize) -> Steering {
        Steering {
            groups: (0..groups).map(|_| GroupSteering::default()).collect(),
            watched: BTreeMap::new(),
            pending: VecDeque::new(),
            dirty: false,
            backlog: false,
        }
    }

    // ----- the flags ----------------------------------------------------------------------

    /// Something that decides the rescue changed (a steer, a stop, a worker's channel).
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the rescue must be recomputed; clears the flag.
    pub(super) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Work is left over: retry soon.
    pub(super) fn set_backlog(&mut self) {
        self.backlog = true;
    }

    /// A retry starts: nothing is left over until it says so.
    pub(super) fn clear_backlog(&mut self) {
        self.backlog = false;
    }

    // ----- serving slots, shares and sheds ---------------------------------------------------

    /// The serving slots of `group` last announced.
    pub(super) fn serving(&self, group: usize) -> &[u32] {
        self.groups.get(group).map_or(&[], |g| &g.serving)
    }

    /// `group`'s serving slots are now `serving`.
    pub(super) fn set_serving(&mut self, group: usize, serving: Vec<u32>) {
        if let Some(g) = self.groups.get_mut(group) {
            g.serving = serving;
        }
    }

    /// Whether `shares` differ from those last given to the kernel for `group`.
    pub(super) fn shares_changed(&self, group: usize, shares: &[(u32, u32)]) -> bool {
        self.groups.get(group).is_some_and(|g| g.shares != shares)
    }

    /// The kernel now has `shares` for `group`.
    pub(super) fn set_shares(&mut self, group: usize, shares: Vec<(u32, u32)>) {
        if let Some(g) = self.groups.get_mut(group) {
            g.shares = shares;
        }
    }

    /// Forget what the kernel was given for `group`, so the next rebalance gives it again
    /// (a per-slot address was just bound).
    pub(super) fn forget_shares(&mut self, group: usize) {
        if let Some(g) = self.groups.get_mut(group) {
            g.shares.clear();
        }
    }

    /// `group`'s shed state.
    pub(super) fn balancer_mut(&mut self, group: usize) -> Option<&mut Balancer> {
        self.groups.get_mut(group).map(|g| &mut g.balancer)
    }

    /// The earliest time a group's balance must be looked at again (a shed held back).
    pub(super) fn recheck_at(&self) -> Option<Instant> {
        self.groups
            .iter()
            .filter_map(|g| g.balancer.recheck_at())
            .min()
    }

    /// The groups whose held-back shed is due at `now`.
    pub(super) fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.groups.len())
            .filter(|&g| {
                self.groups[g]
                    .balancer
                    .recheck_at()
                    .is_some_and(|at| at <= now)
            })
            .collect()
    }

    // ----- hand-off targets -------------------------------------------------------------------

    /// `group`'s workers that take handed-off connections are now `targets`; the
    /// round-robin starts over when they changed.
    pub(super) fn set_targets(&mut self, group: usize, targets: Vec<WorkerKey>) {
        if let Some(g) = self.groups.get_mut(group) {
            if targets != g.targets {
                g.targets = targets;
                g.next = 0;
            }
        }
    }

    /// Whether `group` has a worker that takes handed-off connections.
    pub(super) fn has_targets(&self, group: usize) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| !g.targets.is_empty())
    }

    /// `group`'s targets and the round-robin position to start from (`None`: no group).
    pub(super) fn rotation(&self, group: usize) -> Option<(Vec<WorkerKey>, usize)> {
        self.groups.get(group).map(|g| (g.targets.clone(), g.next))
    }

    /// A connection went to target `at` of `group`'s `n`: the next goes to the one after.
    pub(super) fn handed_to(&mut self, group: usize, at: usize, n: usize) {
        if let Some(g) = self.groups.get_mut(group) {
            g.next = (at + 1) % n.max(1);
        }
    }

    // ----- watched sockets --------------------------------------------------------------------

    /// The watched sockets, in order.
    pub(super) fn watched(&self) -> Vec<SlotSocket> {
        self.watched.keys().copied().collect()
    }

    /// Whether `socket` is watched.
    pub(super) fn is_watched(&self, socket: &SlotSocket) -> bool {
        self.watched.contains_key(socket)
    }

    /// `socket` is registered with the poller as `token`.
    pub(super) fn add_watched(&mut self, socket: SlotSocket, token: Token) {
        self.watched.insert(socket, Watched { token, handed: 0 });
    }

    /// `socket` is no longer watched: its token and how many connections it handed off
    /// (`None`: it was not watched).
    pub(super) fn remove_watched(&mut self, socket: &SlotSocket) -> Option<(Token, u64)> {
        self.watched.remove(socket).map(|w| (w.token, w.handed))
    }

    /// One more connection of `socket` was handed off.
    pub(super) fn count_handed(&mut self, socket: &SlotSocket) {
        if let Some(w) = self.watched.get_mut(socket) {
            w.handed += 1;
        }
    }

    // ----- connections waiting for a worker ---------------------------------------------------

    /// Whether accepted connections wait for a worker.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `s` waits (after those already waiting).
    pub(super) fn push_pending(&mut self, s: Straggler) {
        self.pending.push_back(s);
    }

    /// `s` waits, and a retry is due.
    pub(super) fn park(&mut self, s: Straggler) {
        self.pending.push_back(s);
        self.backlog = true;
    }

    /// Every waiting connection, oldest first (they wait no more until given back).
    pub(super) fn take_pending(&mut self) -> VecDeque<Straggler> {
        std::mem::take(&mut self.pending)
    }

    /// These connections wait again (what [`Steering::take_pending`] gave, left over).
    pub(super) fn restore_pending(&mut self, still: VecDeque<Straggler>) {
        self.pending = still;
    }

    /// Close every waiting connection (the clients see the end of the stream).
    pub(super) fn drop_pending(&mut self) {
        self.pending.clear();
    }

    /// Whether stragglers wait for a retry that can succeed: left in a watched queue, or
    /// accepted for a group that has a worker to take them.
    pub(super) fn waiting(&self) -> bool {
        (self.backlog && self.watched.keys().any(|s| self.has_targets(s.group)))
            || self.pending.iter().any(|s| self.has_targets(s.from.group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> WorkerKey {
        n
    }

    fn socket(group: usize, slot: u32) -> SlotSocket {
        SlotSocket {
            group,
            addr: 0,
            slot,
        }
    }

    fn straggler(group: usize) -> Straggler {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Straggler {
            from: socket(group, 1),
            conn: OwnedFd::from(a),
        }
    }

    #[test]
    fn targets_restart_the_round_robin_only_when_they_change() {
        let mut s = Steering::new(2);
        assert!(!s.has_targets(0));
        s.set_targets(0, vec![key(1), key(2), key(3)]);
        s.handed_to(0, 1, 3);
        assert_eq!(s.rotation(0), Some((vec![key(1), key(2), key(3)], 2)));
        s.set_targets(0, vec![key(1), key(2), key(3)]);
        assert_eq!(
            s.rotation(0).map(|r| r.1),
            Some(2),
            "same targets: position kept"
        );
        s.handed_to(0, 2, 3);
        assert_eq!(s.rotation(0).map(|r| r.1), Some(0), "wraps around");
        s.set_targets(0, vec![key(2)]);
        assert_eq!(s.rotation(0), Some((vec![key(2)], 0)));
        assert!(s.has_targets(0) && !s.has_targets(1) && !s.has_targets(7));
        assert_eq!(s.rotation(7), None);
    }

    #[test]
    fn shares_are_given_again_once_forgotten() {
        let mut s = Steering::new(1);
        s.set_serving(0, vec![0, 1]);
        assert_eq!(s.serving(0), [0, 1]);
        assert_eq!(s.serving(3), [] as [u32; 0]);
        assert!(s.shares_changed(0, &[(0, 1), (1, 1)]));
        s.set_shares(0, vec![(0, 1), (1, 1)]);
        assert!(!s.shares_changed(0, &[(0, 1), (1, 1)]));
        s.forget_shares(0);
        assert!(s.shares_changed(0, &[(0, 1), (1, 1)]));
        assert!(!s.shares_changed(5, &[]), "no such group: nothing to give");
    }

    #[test]
    fn the_dirty_flag_is_taken_once() {
        let mut s = Steering::new(1);
        assert!(!s.take_dirty());
        s.mark_dirty();
        assert!(s.take_dirty());
        assert!(!s.take_dirty());
    }

    #[test]
    fn stragglers_wait_for_a_retry_only_where_a_worker_can_take_them() {
        let mut s = Steering::new(2);
        assert!(!s.waiting());
        s.park(straggler(0));
        assert!(s.has_pending());
        assert!(!s.waiting(), "group 0 has no worker to take it");
        s.set_targets(0, vec![key(1)]);
        assert!(s.waiting());
        let taken = s.take_pending();
        assert_eq!(taken.len(), 1);
        assert!(!s.has_pending() && !s.waiting());
        s.restore_pending(taken);
        assert!(s.waiting());
        s.drop_pending();
        assert!(!s.waiting());
        // A watched socket's queue counts while work is left over.
        s.add_watched(socket(0, 1), Token(9));
        assert!(s.is_watched(&socket(0, 1)));
        s.clear_backlog();
        assert!(!s.waiting());
        s.set_backlog();
        assert!(s.waiting());
        s.count_handed(&socket(0, 1));
        s.count_handed(&socket(0, 1));
        assert_eq!(s.watched(), [socket(0, 1)]);
        assert_eq!(s.remove_watched(&socket(0, 1)), Some((Token(9), 2)));
        assert_eq!(s.remove_watched(&socket(0, 1)), None);
        assert!(!s.waiting());
    }

    #[test]
    fn push_pending_sets_no_retry_of_its_own() {
        let mut s = Steering::new(1);
        s.set_targets(0, vec![key(1)]);
        s.add_watched(socket(0, 1), Token(3));
        s.push_pending(straggler(0));
        s.clear_backlog();
        assert!(
            s.waiting(),
            "waiting connections of a group with a target count"
        );
        s.drop_pending();
        assert!(!s.waiting(), "no backlog flag was set by push_pending");
    }
}
