//! `baton upgrade`, the old master's side (the sequence and the data are in
//! `crate::upgrade`; the new master's side is `takeover.rs`).
//!
//! [`LoopState::start_upgrade`] starts the successor with every socket, the control
//! listener, the pid file and the upgrade channel. What it says on the channel, its exit
//! and the deadlines go through the pure rules of `upgrade::Progress`, and the loop carries
//! out their steps: hand the fleet over ([`LoopState::hand_over`]), SIGTERM, SIGKILL, or
//! answer the failure once the successor was reaped, so nothing of it is left.
//!
//! This module's `unsafe`: clearing `FD_CLOEXEC` between fork and exec of the successor
//! ([`spawn_successor`]).

use super::*;
use crate::lines::LineBuffer;
use crate::listen::Listener;
use crate::upgrade::{self as proto, Handover, PassedSocket, SocketFrom, ToNew, ToOld};
use std::os::unix::process::CommandExt;

/// Who waits for an upgrade's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiter {
    /// A control client (`baton upgrade`).
    Client(usize),
    /// The host (`supervisor.upgrade()`), by ticket.
    Host(Ticket),
}

/// The old master's view of the upgrade in progress (the rules: `upgrade::Progress`).
pub(super) struct Outgoing {
    pid: i32,
    channel: Option<UnixStream>,
    inbuf: LineBuffer,
    progress: proto::Progress,
    waiters: Vec<Waiter>,
}

/// Start the successor: `command` (program first) in `cwd`, with `fds` left open across
/// exec and the handover in its environment. Its stdin is /dev/null; stdout and stderr are
/// the master's (in the child, `FD_CLOEXEC` is cleared on fds 1 and 2 too).
fn spawn_successor(
    command: &[String],
    cwd: Option<&std::path::Path>,
    handover: &str,
    fds: Vec<RawFd>,
) -> io::Result<u32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::other("no command line to start the new master with"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env(proto::ENV, handover)
        .stdin(std::process::Stdio::null());
    for k in crate::socket_activation::VARIABLES {
        cmd.env_remove(k);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it calls fcntl on fd numbers (copied into the
    // closure before the fork) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The master's stdout and stderr: Node opens them close-on-exec, yet the new
            // master writes to the same place (a closed one is left closed).
            for fd in [1, 2] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                }
            }
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping `Child` neither waits nor kills: the loop watches the pid itself.
    Ok(child.id())
}

impl LoopState {
    // ----- the old master ---------------------------------------------------------------------

    /// Start an upgrade for `waiter`, or join the one in progress. Refused (answered at
    /// once) while the fleet is not serving or a reload or scale runs.
    pub(super) fn start_upgrade(&mut self, waiter: Waiter) {
        if let Some(up) = self.upgrade.as_mut() {
            if up.progress.is_starting() {
                up.waiters.push(waiter);
                return;
            }
        }
        let snapshot = self.fleet.snapshot();
        let refusal = if self.upgrade.is_some() || self.handed_over {
            Some("an upgrade is already under way".to_string())
        } else if self.incoming.is_some() {
            Some("this master has not yet taken over from the one it replaces".to_string())
        } else if !snapshot.running {
            Some("the fleet is not serving (starting or stopping): nothing to upgrade".into())
        } else if snapshot.reloading {
            Some("a reload is running: upgrade once it has finished".into())
        } else if self.config.upgrade_command.is_empty() {
            Some(
                "this master has no command line to start its successor with (set upgradeCommand)"
                    .into(),
            )
        } else {
            None
        };
        if let Some(message) = refusal {
            self.answer_upgrade(&[waiter], Err(message));
            return;
        }
        match self.launch_successor() {
            Ok(up) => {
                let pid = up.pid;
                self.upgrade = Some(Outgoing {
                    waiters: vec![waiter],
                    ..up
                });
                self.log(&format!(
                    "upgrade: started the new master (pid {pid}): {}",
                    self.config.upgrade_command.join(" ")
                ));
                (self.host.events)(SupervisorEvent::UpgradeStart(UpgradeStartEvent {
                    pid: u32::try_from(pid).unwrap_or_default(),
                }));
            }
            Err(message) => self.answer_upgrade(&[waiter], Err(message)),
        }
    }

    fn launch_successor(&mut self) -> Result<Outgoing, String> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("cannot create the upgrade channel: {e}"))?;
        ours.set_nonblocking(true)
            .map_err(|e| format!("the upgrade channel: {e}"))?;
        let control_fd = self
            .control
            .as_ref()
            .map(|c| c.as_raw_fd())
            .ok_or_else(|| "the control socket is closed".to_string())?;
        let pid_fd = self
            .pid_file
            .as_ref()
            .map(PidFile::fd)
            .ok_or_else(|| "the pid file is released".to_string())?;
        let mut sockets = Vec::new();
        for (g, group) in self.listeners.iter_mut().enumerate() {
            let name = self.group_names.get(g).cloned().unwrap_or_default();
            for (_, slot, l) in group.all_mut() {
                sockets.push(passed(l, &name, slot, None));
            }
            for (host, port, slot, l) in group.drop_in_sockets() {
                let from = SocketFrom::DropIn {
                    host: host.clone(),
                    port,
                };
                sockets.push(passed(l, &name, slot, Some(from)));
            }
        }
        let handover = Handover {
            from_pid: self.master_pid,
            name: self.config.name.clone(),
            channel_fd: theirs.as_raw_fd(),
            control_fd,
            pid_fd,
            sockets,
        };
        let fds = handover.fds();
        let pid = spawn_successor(
            &self.config.upgrade_command,
            self.config.upgrade_cwd.as_deref(),
            &handover.to_env(),
            fds,
        )
        .map_err(|e| {
            format!(
                "cannot start the new master ({}): {e}",
                self.config
                    .upgrade_command
                    .first()
                    .map_or("", String::as_str)
            )
        })?;
        drop(theirs);
        let pid = pid as i32;
        crate::reaper::track_child(pid);
        let (tx, waker) = (self.tx.clone(), self.waker.clone());
        let watcher = thread::Builder::new()
            .name("baton-upgrade-wait".into())
            .spawn(move || {
                let status = spawn::wait_exited(pid);
                let _ = tx.send(Msg::SuccessorExited { pid, status });
                let _ = waker.wake();
            });
        if let Err(e) = watcher {
            // Without a watcher its exit would go unseen: stop it now.
            let _ = spawn::send_signal(pid, Signal::Kill);
            let _ = spawn::wait_exit(pid);
            return Err(format!("cannot watch the new master: {e}"));
        }
        let mut channel = UnixStream::from_std(ours);
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut channel, token, Interest::READABLE)
            .map_err(|e| format!("cannot watch the upgrade channel: {e}"))?;
        self.sources.insert(token, Source::Successor);
        let longest = |f: fn(&crate::config::GroupRules) -> Duration| {
            let rules = self.config.groups.iter().map(|g| &g.rules);
            rules.map(f).max().unwrap_or_default()
        };
        let progress = proto::Progress::new(
            Instant::now(),
            longest(|r| r.ready_timeout) + proto::BOOT_ALLOWANCE,
            longest(|r| r.stop_timeout) + proto::STOP_GRACE,
        );
        Ok(Outgoing {
            pid,
            channel: Some(channel),
            inbuf: LineBuffer::new(CHANNEL_LINE_LIMIT),
            progress,
            waiters: Vec::new(),
        })
    }

    /// The successor's channel is readable.
    pub(super) fn read_successor(&mut self) {
        let Some(up) = self.upgrade.as_mut() else {
            return;
        };
        let (lines, closed) = match up.channel.as_mut() {
            Some(c) => read_lines(c, &mut up.inbuf),
            None => return,
        };
        for line in lines {
            match serde_json::from_str::<ToOld>(&line) {
                Ok(ToOld::Ready) => self.feed_upgrade(proto::Input::Ready),
                Ok(ToOld::Failed { message }) => self.feed_upgrade(proto::Input::Failed(message)),
                Err(_) => {} // not ours: ignore
            }
        }
        if closed {
            self.close_successor_channel();
            self.feed_upgrade(proto::Input::ChannelClosed);
        }
    }

    fn close_successor_channel(&mut self) {
        if let Some(mut c) = self.upgrade.as_mut().and_then(|u| u.channel.take()) {
            let _ = self.poll.registry().deregister(&mut c);
        }
        self.sources.retain(|_, s| !matches!(s, Source::Successor));
    }

    /// Tell the upgrade's rules what happened, and carry out what they say.
    fn feed_upgrade(&mut self, input: proto::Input) {
        let Some(up) = self.upgrade.as_mut() else {
            return;
        };
        let steps = up.progress.handle(Instant::now(), input);
        self.run_upgrade_steps(steps);
    }

    fn run_upgrade_steps(&mut self, steps: Vec<proto::Step>) {
        for step in steps {
            let Some(up) = self.upgrade.as_ref() else {
                return;
            };
            // Never a signal once it was reaped (the rules ask for none after its exit).
            let alive = !up.progress.has_exited();
            match step {
                proto::Step::HandOver => self.hand_over(),
                proto::Step::Terminate if alive => {
                    let _ = spawn::send_signal(up.pid, Signal::Term);
                }
                proto::Step::Kill if alive => {
                    let _ = spawn::send_signal(up.pid, Signal::Kill);
                }
                proto::Step::Terminate | proto::Step::Kill => {}
                proto::Step::Fail(failure) => self.finish_failed(failure),
            }
        }
    }

    /// The fleet is stopping: an upgrade still starting is called off.
    pub(super) fn stop_upgrade(&mut self) {
        self.feed_upgrade(proto::Input::Stop);
    }

    /// The successor serves: give it the fleet, and drain this master's workers.
    fn hand_over(&mut self) {
        let Some(up) = self.upgrade.as_ref() else {
            return;
        };
        let (to, waiters) = (up.pid, up.waiters.clone());
        // systemd first, so that the new master's notifications are accepted from now on.
        let status = format!("upgraded: the new master (pid {to}) serves; the old workers drain");
        let sent = self
            .publisher
            .systemd_main_pid(u32::try_from(to).unwrap_or_default(), &status);
        self.systemd_result(sent);
        self.publisher.hand_over_systemd(); // this master's stop is not the unit's
        self.handed_over = true;
        // The files now belong to the new master: closing ours must not remove them.
        for group in &mut self.listeners {
            for (_, _, l) in group.all_mut() {
                l.disown_file();
            }
            for l in group.drop_in_mut() {
                l.disown_file();
            }
        }
        if let Some(p) = self.pid_file.as_mut() {
            p.hand_over();
        }
        self.owns_control_path = false;
        if let Some(mut c) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        // Stop steering and rescuing: the sockets are the new master's to manage.
        for socket in self.steering.watched() {
            self.unwatch(socket);
        }
        if let Some(c) = self.upgrade.as_mut().and_then(|u| u.channel.as_mut()) {
            let _ = c.write_all(proto::line(&ToNew::TakeOver).as_bytes());
        }
        self.close_successor_channel();
        self.log(&format!(
            "upgrade: the new master (pid {to}) serves; stopping this master's workers gracefully"
        ));
        let tickets: Vec<Ticket> = waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Host(t) => Some(*t),
                Waiter::Client(_) => None,
            })
            .collect();
        (self.host.events)(SupervisorEvent::UpgradeDone(UpgradeEvent {
            from: Some(self.master_pid),
            to: u32::try_from(to).ok(),
            tickets: tickets.iter().map(|t| *t as i64).collect(),
            message: format!("upgraded: master {} -> {to}", self.master_pid),
        }));
        self.fleet
            .handle(Instant::now(), Input::Stop { force: false });
    }

    /// The successor's exit was seen (it is a zombie until reaped here).
    pub(super) fn on_successor_exit(&mut self, pid: i32, waited: io::Result<()>) {
        if self.upgrade.as_ref().is_none_or(|u| u.pid != pid) {
            return;
        }
        let how = match waited.and_then(|()| spawn::wait_exit(pid)) {
            Ok(s) => s.to_string(),
            Err(e) => format!("ended (its exit could not be read: {e})"),
        };
        self.feed_upgrade(proto::Input::Exited(how));
    }

    /// The successor is gone and the upgrade failed: answer every waiter with the cause.
    fn finish_failed(&mut self, failure: proto::Failure) {
        self.close_successor_channel();
        let Some(up) = self.upgrade.take() else {
            return;
        };
        let reason = match failure {
            proto::Failure::Reported(message) => message,
            proto::Failure::Exited(how) => {
                format!("the new master (pid {}) {how} before it was ready", up.pid)
            }
            proto::Failure::ChannelClosed => {
                "the new master closed the upgrade channel before it was ready".into()
            }
            proto::Failure::NoReport => "the new master did not report ready within its groups' longest readyTimeout plus 30 s".into(),
            proto::Failure::Stopping => "the fleet is stopping".into(),
        };
        let text = format!(
            "upgrade failed, the old master (pid {}) keeps serving: {reason}",
            self.master_pid
        );
        self.log(&text);
        self.answer_upgrade(&up.waiters, Err(text));
    }

    /// The upgrade's next deadline: the successor's report, or its SIGKILL.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        self.upgrade.as_ref()?.progress.poll_timeout()
    }

    pub(super) fn upgrade_due(&mut self, now: Instant) {
        let Some(up) = self.upgrade.as_mut() else {
            return;
        };
        let steps = up.progress.handle_timeout(now);
        self.run_upgrade_steps(steps);
    }

    /// Answer `waiters`: `Ok(message)` once this master handed over and stopped, or the
    /// error.
    pub(super) fn answer_upgrade(&mut self, waiters: &[Waiter], outcome: Result<String, String>) {
        let mut tickets = Vec::new();
        for w in waiters {
            match (*w, &outcome) {
                (Waiter::Client(id), Ok(message)) => {
                    let answer = ControlAnswer {
                        message: Some(message.clone()),
                        ..ControlAnswer::ok()
                    };
                    self.answer(id, &answer)
                }
                (Waiter::Client(id), Err(e)) => self.answer(id, &ControlAnswer::error(e.clone())),
                (Waiter::Host(t), _) => tickets.push(t),
            }
        }
        if let Err(e) = &outcome {
            (self.host.events)(SupervisorEvent::UpgradeFailed(UpgradeEvent {
                from: None,
                to: None,
                tickets: tickets.iter().map(|t| *t as i64).collect(),
                message: e.clone(),
            }));
        }
    }

    /// At shutdown: the control clients of a completed upgrade hear it now, when this
    /// master's workers have drained.
    pub(super) fn answer_upgrade_at_exit(&mut self) {
        let Some(up) = self.upgrade.take() else {
            return;
        };
        if up.progress.is_handed_over() {
            let message = format!(
                "upgraded \"{}\": master {} -> {}; the old workers drained",
                self.config.name, self.master_pid, up.pid
            );
            let clients: Vec<Waiter> = up
                .waiters
                .iter()
                .filter(|w| matches!(w, Waiter::Client(_)))
                .copied()
                .collect();
            self.answer_upgrade(&clients, Ok(message));
        } else if !up.progress.has_exited() {
            // Stopping during an upgrade: the successor goes too.
            let _ = spawn::send_signal(up.pid, Signal::Kill);
            let _ = spawn::wait_exit(up.pid);
            let reason = "the fleet stopped during the upgrade".to_string();
            self.answer_upgrade(&up.waiters, Err(reason));
        }
    }
}

/// A passed-socket entry for `l` of group `group`.
fn passed(
    l: &Listener,
    group: &str,
    slot: Option<u32>,
    drop_in: Option<SocketFrom>,
) -> PassedSocket {
    let from = drop_in.unwrap_or_else(|| match l.origin() {
        Origin::Bound => SocketFrom::Bound,
        Origin::Inherited { fd, name } => SocketFrom::Systemd {
            fd: *fd,
            name: name.clone(),
        },
    });
    PassedSocket {
        fd: l.fd(),
        group: group.to_string(),
        configured: l.addr.to_string(),
        local: l.local.clone(),
        slot,
        from,
    }
}

/// The longest line of the upgrade channel (longer ones are dropped whole).
pub(super) const CHANNEL_LINE_LIMIT: usize = 64 * 1024;

/// Read what is available: the whole lines (framed by `lines::LineBuffer`, as a worker's
/// control channel is) and whether the peer closed.
pub(super) fn read_lines(stream: &mut UnixStream, buf: &mut LineBuffer) -> (Vec<String>, bool) {
    let mut chunk = [0u8; 4096];
    let mut lines = Vec::new();
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (lines, true),
            Ok(n) => buf.push(&chunk[..n], |l| {
                lines.push(String::from_utf8_lossy(l).into_owned())
            }),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (lines, false),
            Err(_) => return (lines, true),
        }
    }
}
