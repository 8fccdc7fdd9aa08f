//! `baton upgrade`, the new master's side (the sequence and the data are in
//! `crate::upgrade`; the old master's side is `upgrade.rs`).
//!
//! [`claim_handover`] takes the passed fds in `launch`; the loop sends `ready` (or
//! `failed`) when its start ends ([`LoopState::report_to_predecessor`]), and
//! [`LoopState::take_over`] makes this master the fleet's on `takeOver`, or on its own
//! once ready when the old master vanished.
//!
//! The passed fds arrive inheritable (they had to survive the exec), and the new master
//! runs its options or config file (JavaScript that may start processes) before
//! [`claim_handover`]: [`seal_handover`], called by the host as soon as the addon is
//! loaded, sets `FD_CLOEXEC` on each of them at once, so no `child_process` of the new
//! master inherits the pid-file lock or a listening socket. Workers get their sockets by
//! `dup2` into place between fork and exec (`spawn.rs`), which clears the flag on the copy.
//!
//! Before taking any fd, [`claim_handover`] checks the handover: each fd named once
//! ([`Handover::check_distinct_fds`]), open, and of the kind it is said to be ([`check_kind`]);
//! otherwise it refuses it, taking nothing (and so closing nothing).
//!
//! This module's `unsafe`: taking ownership of the passed fds ([`claim_fd`]), setting
//! `FD_CLOEXEC` on them ([`seal_handover`]) and `fstat`/`getsockopt` on them
//! ([`check_kind`]).

use super::upgrade::{read_lines, CHANNEL_LINE_LIMIT};
use super::*;
use crate::lines::LineBuffer;
use crate::listen::Listener;
use crate::upgrade::{self as proto, Handover, PassedSocket, SocketFrom, ToNew, ToOld};
use std::os::fd::FromRawFd;

/// The new master's view of the master it replaces, until it took over.
pub(super) struct Incoming {
    /// The old master's pid.
    pub(super) from_pid: u32,
    channel: Option<UnixStream>,
    inbuf: LineBuffer,
    /// The control listener, served from the takeover on.
    control: Option<UnixListener>,
    /// `ready` was sent: waiting for `takeOver`.
    ready_sent: bool,
    /// The old master is gone (channel closed): take over once ready.
    orphaned: bool,
}

/// What `launch` takes from a handover.
pub(super) struct Claimed {
    pub(super) incoming: Incoming,
    pub(super) name: String,
    pub(super) pid_file: OwnedFd,
    /// Per group, per address: the sockets it starts with.
    pub(super) per_group: Vec<Vec<Option<crate::group_sockets::Passed>>>,
    /// Drop-in addresses: (group index, host, port, its sockets).
    pub(super) drop_in: Vec<(usize, Option<String>, u16, crate::group_sockets::Passed)>,
    /// Lines for the log.
    pub(super) log: Vec<String>,
}

/// Set `FD_CLOEXEC` on every fd the handover `text` (the `BATON_UPGRADE` value) names
/// that is open, without taking them (see the module documentation). A malformed handover
/// is left for `launch` to report.
pub fn seal_handover(text: &str) {
    let Ok(handover) = Handover::parse(text) else {
        return;
    };
    for fd in handover.fds().into_iter().filter(|fd| *fd > 2) {
        // SAFETY: fcntl F_GETFD/F_SETFD only read and set the descriptor flags of an fd
        // number; on one that is not open they fail with EBADF and change nothing.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// What a passed fd must be.
#[derive(Clone, Copy)]
enum Kind {
    /// A connected stream socket (the upgrade channel).
    Channel,
    /// A listening socket (the control socket, a group's or drop-in address).
    Listener,
    /// A regular file (the pid file).
    File,
}

/// Check that `fd` is open and of `kind`, before it is taken. The error names the fd,
/// what it should be and what it is.
fn check_kind(fd: RawFd, kind: Kind, what: &str) -> Result<(), String> {
    // SAFETY: stat is plain data; all-zero is a valid value, filled in by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which we own; on an fd number that is not open it
    // fails with EBADF and writes nothing.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(format!(
            "{}: {what} (fd {fd}) is not open: {}",
            proto::ENV,
            io::Error::last_os_error()
        ));
    }
    let format = st.st_mode & libc::S_IFMT;
    let int_opt = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, an int we own; on an
        // fd that is not a socket it fails with ENOTSOCK and writes nothing.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value)
    };
    let is = match kind {
        Kind::File => format == libc::S_IFREG,
        Kind::Channel => {
            format == libc::S_IFSOCK
                && int_opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
                && int_opt(libc::SO_ACCEPTCONN) != Some(1)
        }
        Kind::Listener => format == libc::S_IFSOCK && int_opt(libc::SO_ACCEPTCONN) == Some(1),
    };
    if is {
        return Ok(());
    }
    let expected = match kind {
        Kind::File => "a regular file",
        Kind::Channel => "a connected stream socket",
        Kind::Listener => "a listening socket",
    };
    let actual = match format {
        libc::S_IFREG => "a regular file",
        libc::S_IFSOCK if int_opt(libc::SO_ACCEPTCONN) == Some(1) => "a listening socket",
        libc::S_IFSOCK => "a socket that is not listening",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a pipe",
        _ => "another kind of file",
    };
    Err(format!(
        "{}: {what} (fd {fd}) is {actual}, not {expected}: the handover does not match the fds this process has; \
         it is set by baton upgrade only, unset it",
        proto::ENV
    ))
}

/// Take ownership of fd `fd` passed by the old master, with `FD_CLOEXEC` set again. The
/// error names the fd.
fn claim_fd(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: F_GETFD only reads the flags of an fd number; one that is not open fails
    // with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(format!(
            "{}: {what} (fd {fd}) is not open: {}",
            proto::ENV,
            io::Error::last_os_error()
        ));
    }
    // SAFETY: the fd is open and the handover names it once, for this process alone (the
    // old master passed it at exec); `claim_handover` runs once per handover, so no other
    // owner exists.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD on the fd we now own, with the flags read plus FD_CLOEXEC.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(format!(
            "cannot set close-on-exec on {what} (fd {fd}): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(owned)
}

/// Take the fds of the handover `text` (the `BATON_UPGRADE` value) for a fleet of
/// `groups`: each group address gets the passed sockets with its configured form, the
/// drop-in sockets go to their groups, and the rest is closed (the old master holds them
/// until its workers have drained). Every fd is owned on return, also on an error.
pub(super) fn claim_handover(
    text: &str,
    groups: &[crate::config::GroupConfig],
) -> Result<Claimed, String> {
    use crate::group_sockets::Passed;
    let handover = Handover::parse(text)?;
    // Check every fd before taking any: a refused handover takes (and closes) nothing.
    handover.check_distinct_fds()?;
    check_kind(handover.channel_fd, Kind::Channel, "the upgrade channel")?;
    check_kind(handover.control_fd, Kind::Listener, "the control socket")?;
    check_kind(handover.pid_fd, Kind::File, "the pid file")?;
    for s in &handover.sockets {
        let what = format!("the socket of {} ({})", s.configured, s.group);
        check_kind(s.fd, Kind::Listener, &what)?;
    }
    // Own every fd first, so that an error below closes them all.
    let mut owned: HashMap<RawFd, OwnedFd> = HashMap::new();
    for (fd, what) in [
        (handover.channel_fd, "the upgrade channel"),
        (handover.control_fd, "the control socket"),
        (handover.pid_fd, "the pid file"),
    ] {
        owned.insert(fd, claim_fd(fd, what)?);
    }
    for s in &handover.sockets {
        let what = format!("the socket of {} ({})", s.configured, s.group);
        owned.insert(s.fd, claim_fd(s.fd, &what)?);
    }
    let mut take = |fd: RawFd| {
        owned
            .remove(&fd)
            .ok_or_else(|| format!("{}: fd {fd} is named twice", proto::ENV))
    };
    let channel = std::os::unix::net::UnixStream::from(take(handover.channel_fd)?);
    channel
        .set_nonblocking(true)
        .map_err(|e| format!("the upgrade channel: {e}"))?;
    let control = std::os::unix::net::UnixListener::from(take(handover.control_fd)?);
    control
        .set_nonblocking(true)
        .map_err(|e| format!("the control socket passed by the old master: {e}"))?;
    let pid_file = take(handover.pid_fd)?;

    let wanted: Vec<(&str, Vec<String>)> = groups
        .iter()
        .map(|g| {
            (
                g.rules.name.as_str(),
                g.listen.iter().map(|a| a.to_string()).collect(),
            )
        })
        .collect();
    let assigned = proto::assign(&wanted, &handover.sockets);
    let listener = |s: &PassedSocket, socket: OwnedFd| -> Result<Listener, String> {
        let addr = crate::addr::parse(&s.configured).map_err(|e| {
            format!(
                "{}: the address {} passed for group \"{}\": {e}",
                proto::ENV,
                s.configured,
                s.group
            )
        })?;
        let origin = match &s.from {
            SocketFrom::Systemd { fd, name } => Origin::Inherited {
                fd: *fd,
                name: name.clone(),
            },
            SocketFrom::Bound | SocketFrom::DropIn { .. } => Origin::Bound,
        };
        Ok(Listener::adopted(addr, socket, s.local.clone(), origin))
    };
    let mut per_group = Vec::new();
    let mut log = Vec::new();
    for (g, addrs) in groups.iter().zip(&assigned) {
        let mut per_addr = Vec::new();
        for (addr, picked) in g.listen.iter().zip(addrs) {
            let mut ls = Vec::new();
            for &i in picked {
                let s = &handover.sockets[i];
                ls.push(listener(s, take(s.fd)?)?);
            }
            let passed_slots = picked
                .first()
                .is_some_and(|i| handover.sockets[*i].slot.is_some());
            per_addr.push(match ls.len() {
                0 => {
                    log.push(format!(
                        "upgrade: group \"{}\": {addr} is new, binding it",
                        g.rules.name
                    ));
                    None
                }
                1 if !passed_slots => ls.pop().map(Passed::Shared),
                _ => Some(Passed::PerSlot(ls)),
            });
        }
        per_group.push(per_addr);
    }
    let names: Vec<&str> = groups.iter().map(|g| g.rules.name.as_str()).collect();
    let mut passed_drop_in = Vec::new();
    for (i, g) in proto::assign_drop_in(&names, &handover.sockets) {
        let s = &handover.sockets[i];
        if let SocketFrom::DropIn { host, port } = &s.from {
            let l = listener(s, take(s.fd)?)?;
            passed_drop_in.push(((g, host.clone(), *port), s.slot, l));
        }
    }
    let drop_in = super::drop_in::by_address(passed_drop_in)
        .into_iter()
        .filter_map(|((g, host, port), slots)| {
            use crate::group_sockets::Passed;
            let per_slot = slots.first().is_some_and(|(slot, _)| slot.is_some());
            let mut ls: Vec<Listener> = slots.into_iter().map(|(_, l)| l).collect();
            let passed = if per_slot {
                Passed::PerSlot(ls)
            } else {
                // One shared socket per address (an older master's, or balance shared).
                ls.truncate(1);
                Passed::Shared(ls.pop()?)
            };
            Some((g, host, port, passed))
        })
        .collect();
    for s in handover
        .sockets
        .iter()
        .filter(|s| owned.contains_key(&s.fd))
    {
        log.push(format!(
            "upgrade: group \"{}\" no longer listens on {}: it closes once the old master's workers have drained",
            s.group, s.local
        ));
    }
    drop(owned);
    Ok(Claimed {
        incoming: Incoming {
            from_pid: handover.from_pid,
            channel: Some(UnixStream::from_std(channel)),
            inbuf: LineBuffer::new(CHANNEL_LINE_LIMIT),
            control: Some(UnixListener::from_std(control)),
            ready_sent: false,
            orphaned: false,
        },
        name: handover.name,
        pid_file,
        per_group,
        drop_in,
        log,
    })
}

impl LoopState {
    /// Register the old master's channel (from `launch`).
    pub(super) fn watch_predecessor(&mut self) -> io::Result<()> {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Some(c) = self.incoming.as_mut().and_then(|i| i.channel.as_mut()) {
            self.poll
                .registry()
                .register(c, token, Interest::READABLE)?;
            self.sources.insert(token, Source::Predecessor);
        }
        Ok(())
    }

    /// The old master's channel is readable.
    pub(super) fn read_predecessor(&mut self) {
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        let (lines, closed) = match inc.channel.as_mut() {
            Some(c) => read_lines(c, &mut inc.inbuf),
            None => return,
        };
        let take_over = lines
            .iter()
            .any(|l| matches!(serde_json::from_str::<ToNew>(l), Ok(ToNew::TakeOver)));
        if take_over {
            self.take_over();
            return;
        }
        if closed {
            self.close_predecessor_channel();
            if let Some(inc) = self.incoming.as_mut() {
                inc.orphaned = true;
                let from = inc.from_pid;
                self.log(&format!(
                    "upgrade: the old master (pid {from}) is gone; this master takes over once its workers are ready"
                ));
            }
            if self.fleet.snapshot().running {
                self.take_over();
            }
        }
    }

    fn close_predecessor_channel(&mut self) {
        if let Some(mut c) = self.incoming.as_mut().and_then(|i| i.channel.take()) {
            let _ = self.poll.registry().deregister(&mut c);
        }
        self.sources
            .retain(|_, s| !matches!(s, Source::Predecessor));
    }

    /// Tell the old master how this master's start ended (from `emit`).
    pub(super) fn report_to_predecessor(&mut self, event: &Event, public: &SupervisorEvent) {
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        let message = match event {
            Event::FleetReady if !inc.ready_sent => {
                inc.ready_sent = true;
                if inc.orphaned {
                    self.take_over();
                    return;
                }
                ToOld::Ready
            }
            Event::StartFailed { .. } => ToOld::Failed {
                message: public
                    .message()
                    .unwrap_or("the new master's start failed")
                    .to_string(),
            },
            _ => return,
        };
        if let Some(c) = inc.channel.as_mut() {
            let _ = c.write_all(proto::line(&message).as_bytes());
        }
    }

    /// The old master stopped (or is gone): this master serves the control socket and owns
    /// the pid file and the Unix socket files from now on.
    fn take_over(&mut self) {
        self.close_predecessor_channel();
        let Some(mut inc) = self.incoming.take() else {
            return;
        };
        if let Some(mut control) = inc.control.take() {
            match self
                .poll
                .registry()
                .register(&mut control, CONTROL, Interest::READABLE)
            {
                Ok(()) => self.control = Some(control),
                Err(e) => self.log(&format!(
                    "upgrade: cannot watch the control socket ({e}); baton commands cannot reach this master"
                )),
            }
        }
        self.owns_control_path = true;
        let written = self.pid_file.as_mut().map(|p| {
            p.take_over().map_err(|e| {
                format!(
                    "upgrade: cannot write this master's pid into {} ({e})",
                    p.path().display()
                )
            })
        });
        if let Some(Err(message)) = written {
            self.log(&message);
        }
        for group in &mut self.listeners {
            for (_, _, l) in group.all_mut() {
                l.own_file();
            }
            for l in group.drop_in_mut() {
                l.own_file();
            }
        }
        let text = format!(
            "took over from the old master (pid {}): this master (pid {}) serves \"{}\"",
            inc.from_pid, self.master_pid, self.config.name
        );
        if !self.publisher.stopping_notified() {
            let sent = self.publisher.systemd_ready(self.master_pid, &text);
            self.systemd_result(sent);
        }
        (self.host.events)(SupervisorEvent::UpgradeTakeover(UpgradeTakeoverEvent {
            from: inc.from_pid,
            message: text,
        }));
        self.publish_status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::{PassedSocket, SocketFrom};
    use std::os::fd::AsRawFd;

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the flags of an fd number.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    fn passed(fd: RawFd, configured: &str) -> PassedSocket {
        PassedSocket {
            fd,
            group: "web".into(),
            configured: configured.into(),
            local: configured.into(),
            slot: None,
            from: SocketFrom::Bound,
        }
    }

    #[test]
    fn a_handover_naming_an_fd_twice_is_refused_and_closes_nothing() {
        let (channel, _old_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let dir = std::env::temp_dir().join(format!("baton-takeover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let control = std::os::unix::net::UnixListener::bind(dir.join("c.sock")).unwrap();
        let pid_file = std::fs::File::create(dir.join("fleet.pid")).unwrap();
        let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handover = Handover {
            from_pid: 1,
            name: "fleet".into(),
            channel_fd: channel.as_raw_fd(),
            control_fd: control.as_raw_fd(),
            pid_fd: pid_file.as_raw_fd(),
            sockets: vec![
                passed(web.as_raw_fd(), "127.0.0.1:1"),
                passed(web.as_raw_fd(), "127.0.0.1:2"),
            ],
        };
        let err = claim_handover(&handover.to_env(), &[])
            .err()
            .expect("refused");
        assert!(err.contains("is named twice"), "{err}");
        for fd in handover.fds() {
            assert!(is_open(fd), "fd {fd} was closed");
        }

        // Of the wrong kind: the pid file where a listening socket should be.
        let wrong = Handover {
            sockets: vec![passed(pid_file.as_raw_fd(), "127.0.0.1:1")],
            pid_fd: web.as_raw_fd(),
            ..handover.clone()
        };
        let err = claim_handover(&wrong.to_env(), &[]).err().expect("refused");
        assert!(
            err.contains("the pid file (fd")
                && err.contains("is a listening socket, not a regular file"),
            "{err}"
        );
        for fd in wrong.fds() {
            assert!(is_open(fd), "fd {fd} was closed");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
