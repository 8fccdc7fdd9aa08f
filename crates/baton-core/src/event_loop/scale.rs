//! Scaling a running group (`baton scale`, `supervisor.scale()`): the driver's part of
//! `fleet.rs`'s **Scale** rules. Before the state machine hears of a larger count, the
//! group's per-slot sockets of the new slots are bound (`balance: 'reuseport'`), so the new
//! workers inherit them; the sockets of removed slots are closed once their workers have
//! exited, after what they still queue has been handed to serving workers (the straggler
//! rescue watches them meanwhile, see `steering.rs`). Shared sockets need nothing.

use super::steering_state::Straggler;
use super::*;

impl LoopState {
    /// Start a scale of `group` (its name; `None` when the fleet has one group) to
    /// `count`. The answer, as for every scale, is a `scale:done` or `scale:failed` event
    /// naming `ticket` (and the reply to the control clients waiting for it).
    pub(super) fn start_scale(&mut self, ticket: Ticket, group: Option<&str>, count: u32) {
        let index = match group {
            Some(name) => self
                .group_names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| {
                    format!(
                        "group: no group \"{name}\" in this fleet (groups: {})",
                        self.group_names.join(", ")
                    )
                }),
            None if self.group_names.len() == 1 => Ok(0),
            None => Err(format!(
                "group: this fleet has {} groups ({}): name the one to scale",
                self.group_names.len(),
                self.group_names.join(", ")
            )),
        };
        let index = match index {
            Ok(i) => i,
            Err(message) => return self.scale_refused(ticket, group, count, &message),
        };
        if count == 0 || u64::from(count) > control::MAX_COUNT {
            let message = format!(
                "count: expected a whole number of workers from 1 to {}, got {count}",
                control::MAX_COUNT
            );
            return self.scale_refused(ticket, group, count, &message);
        }
        if let Err(e) = self.listeners[index].grow(&self.config.groups[index], count) {
            let message = format!("cannot bind the sockets of the new workers: {e}");
            return self.scale_refused(ticket, group, count, &message);
        }
        // New slots' sockets are watched for stragglers until their workers serve (for
        // when the kernel refused steering and hashes connections onto them).
        self.steering.mark_dirty();
        self.fleet.handle(
            Instant::now(),
            Input::Scale {
                group: index,
                count,
                ticket,
            },
        );
        self.drive();
    }

    /// Answer a scale refused before the state machine saw it.
    fn scale_refused(&mut self, ticket: Ticket, group: Option<&str>, count: u32, message: &str) {
        let event = public_json::scale_refused(
            group.map(str::to_string),
            count,
            ticket,
            message.to_string(),
        );
        (self.host.events)(event);
        self.answer_scale(ticket, &ControlAnswer::error(message));
    }

    /// Reply to the control clients waiting for `ticket`.
    fn answer_scale(&mut self, ticket: Ticket, answer: &ControlAnswer) {
        for id in self.clients.scale_waiters(ticket) {
            self.answer(id, answer);
        }
    }

    /// The driver's part of a scale event (after it went to the host).
    pub(super) fn on_scale_event(&mut self, event: &Event, public: &SupervisorEvent) {
        match event {
            Event::ScaleStart { group, to, .. } => {
                if let Some(g) = self.config.groups.get_mut(*group) {
                    g.rules.count = *to;
                }
            }
            Event::ScaleDone {
                group,
                count,
                ticket,
            } => {
                let answer = ControlAnswer {
                    group: self.group_names.get(*group).cloned(),
                    count: Some(*count),
                    ..ControlAnswer::ok()
                };
                self.answer_scale(*ticket, &answer);
            }
            Event::ScaleFailed { ticket, .. } => {
                let answer = ControlAnswer::error(public.message().unwrap_or_default());
                self.answer_scale(*ticket, &answer);
            }
            _ => {}
        }
    }

    /// Close the per-slot sockets of slots at or past their group's count once no worker
    /// of those slots is left. What they still queue is handed to serving workers first.
    pub(super) fn trim_sockets(&mut self) {
        let extra: Vec<(usize, u32)> = self
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(g, l)| {
                let count = self.fleet.group_rules(g)?.count;
                (l.slot_count() > count.max(1)).then_some((g, count))
            })
            .collect();
        if extra.is_empty() {
            return;
        }
        let snapshot = self.fleet.snapshot();
        for (g, count) in extra {
            let busy = snapshot
                .workers
                .iter()
                .any(|w| w.group == g && w.slot >= count);
            if busy {
                continue;
            }
            let addrs = self.listeners[g].per_slot_addrs();
            let slots = self.listeners[g].slot_count();
            let has_targets = self.steering.has_targets(g);
            for slot in (count..slots).rev() {
                for &addr in &addrs {
                    let socket = SlotSocket {
                        group: g,
                        addr,
                        slot,
                    };
                    if has_targets {
                        self.drain_slot_socket(socket);
                    }
                    self.unwatch(socket);
                }
            }
            self.listeners[g].shrink(count);
        }
    }

    /// Accept everything `socket` still queues and hand it to serving workers (or keep it
    /// for them, see `pending`), so closing the socket resets no connection.
    fn drain_slot_socket(&mut self, socket: SlotSocket) {
        loop {
            let Some(listener) = self.listeners[socket.group].slot_socket(socket.addr, socket.slot)
            else {
                return;
            };
            if listener.set_nonblocking().is_err() {
                return;
            }
            match listener.accept_pending() {
                Ok(Some(conn)) => {
                    let s = Straggler { from: socket, conn };
                    let s = if self.steering.has_pending() {
                        Err(s)
                    } else {
                        self.hand_off(s)
                    };
                    if let Err(s) = s {
                        self.steering.park(s);
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }
}
