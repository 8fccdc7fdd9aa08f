//! systemd socket activation of the master (`sd_listen_fds(3)`): when `LISTEN_PID` is the
//! master's pid, fds 3..3+`LISTEN_FDS` are listening sockets systemd (or
//! `systemd-socket-activate`) created and keeps open, optionally named by
//! `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` unit). The master takes them
//! instead of binding those addresses itself. Because systemd holds the sockets across
//! restarts of the service, connections that arrive while the master restarts wait in
//! the kernel's queue for the next master's workers: a restart refuses none.
//!
//! - [`parse_env`] reads the variables (pure): not set or `LISTEN_FDS=0` means nothing
//!   passed; a `LISTEN_PID` of another process means the sockets are not ours (a line is
//!   logged and everything is bound as usual); a malformed value is an error naming it.
//! - [`claim`] checks each fd (open, a socket, `SOCK_STREAM`, listening: `SO_ACCEPTCONN`,
//!   TCP or Unix), sets `FD_CLOEXEC` on it (so no `child_process` child of the master
//!   inherits it; workers get it through `spawn.rs` as usual) and reads its address.
//! - [`matching::assign`] decides which group address each fd serves (pure; the rules are
//!   documented there: a name beats an address, an fd matching nothing is an error, an
//!   address no fd matches is bound as usual).
//! - [`activate`] runs the three against the environment once per process and returns the
//!   [`Listener`]s per group address. An inherited Unix socket's path is never removed by
//!   baton: systemd owns the file.
//!
//! A `balance: 'reuseport'` group cannot have one socket per worker from one inherited
//! socket (sockets baton would add with `SO_REUSEPORT` would close with the master and
//! reset the connections queued on them), so its workers share the inherited socket; the
//! master logs it. The master's own environment is cleared of `LISTEN_*` by the host once
//! [`activate`] ran (`src/master/supervisor.ts`), so its `child_process` children do not see them.
//!
//! This module's `unsafe`: `fcntl` and `getsockopt` on the inherited fds, and taking
//! ownership of them ([`claim`]).

pub mod matching;

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::SockRef;

use crate::addr::ListenAddr;
use crate::config::GroupConfig;
use crate::listen::Listener;
use matching::{AddrTarget, FdInfo, GroupTargets, MatchedBy, SockName, Target};

/// The first passed fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// More inherited sockets than this is not a plausible `LISTEN_FDS`.
const MAX_FDS: usize = 4096;

/// The environment variables of the protocol (cleared from the master's env once read).
pub const VARIABLES: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PIDFDID",
];

/// What the `LISTEN_*` variables say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passed {
    /// Nothing passed: bind every address.
    Nothing,
    /// Sockets passed to another process: bind every address; the sentence says why.
    NotOurs(String),
    /// Our sockets: `(fd, name)` from fd 3 on.
    Ours(Vec<(RawFd, Option<String>)>),
}

/// Read `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` for the process `own_pid`.
pub fn parse_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    own_pid: u32,
) -> Result<Passed, String> {
    let Some(fds) = listen_fds.filter(|v| !v.is_empty()) else {
        return Ok(Passed::Nothing);
    };
    let n: usize = fds.parse().map_err(|_| {
        format!("LISTEN_FDS=\"{fds}\" is not a number of sockets (systemd sets LISTEN_FDS and LISTEN_PID for socket activation; unset them to let baton bind its listen addresses)")
    })?;
    if n > MAX_FDS {
        return Err(format!(
            "LISTEN_FDS={n} is more sockets than baton takes ({MAX_FDS}); check the .socket unit"
        ));
    }
    if n == 0 {
        return Ok(Passed::Nothing);
    }
    let Some(pid) = listen_pid.filter(|v| !v.is_empty()) else {
        return Ok(Passed::NotOurs(format!(
            "LISTEN_FDS={n} is set without LISTEN_PID, so the sockets are not meant for this master; binding the listen addresses instead"
        )));
    };
    let pid: u32 = pid.parse().map_err(|_| {
        format!("LISTEN_PID=\"{pid}\" is not a process id (systemd sets it to the pid of the process the sockets are for)")
    })?;
    if pid != own_pid {
        return Ok(Passed::NotOurs(format!(
            "LISTEN_FDS={n} is for process {pid} (LISTEN_PID), not this master ({own_pid}); binding the listen addresses instead (a wrapper that starts the master must exec it, e.g. ExecStart=/usr/bin/node ... or sh -c 'exec node ...')"
        )));
    }
    let names: Vec<Option<String>> = match listen_fdnames {
        None => vec![None; n],
        Some(all) => {
            let parts: Vec<&str> = all.split(':').collect();
            if parts.len() != n {
                return Err(format!(
                    "LISTEN_FDNAMES=\"{all}\" has {} names for LISTEN_FDS={n} sockets; systemd gives one name per socket",
                    parts.len()
                ));
            }
            parts
                .into_iter()
                .map(|p| (!p.is_empty()).then(|| p.to_string()))
                .collect()
        }
    };
    Ok(Passed::Ours(
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| (LISTEN_FDS_START + i as RawFd, name))
            .collect(),
    ))
}

/// A passed socket, checked and owned (closed when dropped).
#[derive(Debug)]
pub struct Inherited {
    /// What the matching sees.
    pub info: FdInfo,
    socket: OwnedFd,
}

fn describe(fd: RawFd, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("fd {fd} (name \"{n}\")"),
        None => format!("fd {fd}"),
    }
}

fn getsockopt_int(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`; an
    // fd that is not a socket fails with ENOTSOCK, no memory is touched then.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Check each passed fd, set `FD_CLOEXEC` on it and take ownership of it. The error names
/// the fd and what to change in the unit.
pub fn claim(passed: &[(RawFd, Option<String>)]) -> Result<Vec<Inherited>, String> {
    let mut out = Vec::with_capacity(passed.len());
    for (fd, name) in passed {
        let (fd, shown) = (*fd, describe(*fd, name));
        // SAFETY: F_GETFD reads the flags of an fd number; an fd that is not open fails
        // with EBADF and nothing else happens.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(format!(
                "systemd socket activation: {shown} is not open, though LISTEN_FDS says it was passed ({}); start the master directly from the unit (or exec it), so nothing closes the fds on the way",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: the fd is open (checked above) and was passed to this process by the
        // LISTEN_FDS protocol, which makes us its owner; `activate` claims the range once
        // per process, so no other OwnedFd exists for it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD on an fd we own, with the flags just read plus FD_CLOEXEC.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(format!(
                "systemd socket activation: cannot set close-on-exec on {shown}: {}",
                io::Error::last_os_error()
            ));
        }
        let kind = match getsockopt_int(fd, libc::SO_TYPE) {
            Ok(kind) => kind,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
                return Err(format!(
                    "systemd socket activation: {shown} is not a socket; baton takes listening stream sockets (ListenStream= in the .socket unit)"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "systemd socket activation: cannot inspect {shown}: {e}"
                ))
            }
        };
        if kind != libc::SOCK_STREAM {
            let what = if kind == libc::SOCK_DGRAM {
                "a datagram socket (ListenDatagram=)"
            } else if kind == libc::SOCK_SEQPACKET {
                "a seqpacket socket (ListenSequentialPacket=)"
            } else {
                "not a stream socket"
            };
            return Err(format!(
                "systemd socket activation: {shown} is {what}; baton takes listening stream sockets (ListenStream= in the .socket unit)"
            ));
        }
        let listening = getsockopt_int(fd, libc::SO_ACCEPTCONN)
            .map_err(|e| format!("systemd socket activation: cannot inspect {shown}: {e}"))?;
        if listening == 0 {
            return Err(format!(
                "systemd socket activation: {shown} is not a listening socket (with Accept=yes systemd passes one connection per service instance); baton needs Accept=no, the default, in the .socket unit"
            ));
        }
        let local = SockRef::from(&socket).local_addr().map_err(|e| {
            format!("systemd socket activation: cannot read the address of {shown}: {e}")
        })?;
        let local = if let Some(sa) = local.as_socket() {
            SockName::Inet(sa)
        } else if local.family() == libc::AF_UNIX as libc::sa_family_t {
            if let Some(path) = local.as_pathname() {
                SockName::Unix(path.to_path_buf())
            } else if let Some(name) = local.as_abstract_namespace() {
                SockName::UnixAbstract(String::from_utf8_lossy(name).into_owned())
            } else {
                SockName::UnixUnnamed
            }
        } else {
            return Err(format!(
                "systemd socket activation: {shown} is neither a TCP nor a Unix socket (address family {}); baton serves TCP and Unix stream sockets",
                local.family()
            ));
        };
        out.push(Inherited {
            info: FdInfo {
                fd,
                name: name.clone(),
                local,
            },
            socket,
        });
    }
    Ok(out)
}

/// What each listen address of `group` matches (host names are resolved here).
pub fn targets(group: &GroupConfig, cwd: &Path) -> GroupTargets {
    let addrs = group
        .listen
        .iter()
        .zip(
            group
                .listen_names
                .iter()
                .map(String::as_str)
                .chain(std::iter::repeat("")),
        )
        .map(|(addr, listen_name)| AddrTarget {
            shown: addr.to_string(),
            listen_name: listen_name.to_string(),
            target: target(addr, cwd),
        })
        .collect();
    GroupTargets {
        name: group.rules.name.clone(),
        addrs,
    }
}

fn target(addr: &ListenAddr, cwd: &Path) -> Target {
    match addr {
        ListenAddr::Tcp { port: 0, .. } => Target::Nothing,
        ListenAddr::Tcp { host, port } if host.is_empty() => Target::Tcp {
            ips: None,
            port: *port,
        },
        ListenAddr::Tcp { host, port } => match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => Target::Tcp {
                ips: None,
                port: *port,
            },
            Ok(ip) => Target::Tcp {
                ips: Some(vec![ip]),
                port: *port,
            },
            Err(_) => match (host.as_str(), *port).to_socket_addrs() {
                Ok(found) => Target::Tcp {
                    ips: Some(found.map(|sa| sa.ip()).collect()),
                    port: *port,
                },
                // Unresolvable: only a name can match; the bind reports the host.
                Err(_) => Target::Nothing,
            },
        },
        ListenAddr::Unix(path) => Target::Unix(cwd.join(path)),
    }
}

/// The inherited listeners of a fleet: for each group, for each listen address, the
/// socket systemd passed for it (`None`: bind it), and the lines to log.
#[derive(Debug, Default)]
pub struct Activation {
    /// Per group, per address.
    pub per_group: Vec<Vec<Option<Listener>>>,
    /// What happened, one sentence each (for the log).
    pub log: Vec<String>,
}

static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Take the sockets systemd passed to this process, if any, and assign them to `groups`
/// (see the module documentation). Claims them once per process: a later fleet in the
/// same process binds its addresses. The error is a sentence naming the fd or variable.
pub fn activate(groups: &[GroupConfig]) -> Result<Activation, String> {
    let var = |k: &str| std::env::var(k).ok();
    let passed = parse_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let empty = || {
        groups
            .iter()
            .map(|g| g.listen.iter().map(|_| None).collect())
            .collect()
    };
    let list = match passed {
        Passed::Nothing => {
            return Ok(Activation {
                per_group: empty(),
                log: vec![],
            })
        }
        Passed::NotOurs(why) => {
            return Ok(Activation {
                per_group: empty(),
                log: vec![why],
            })
        }
        Passed::Ours(list) => list,
    };
    if CLAIMED.swap(true, Ordering::SeqCst) {
        return Ok(Activation {
            per_group: empty(),
            log: vec!["the sockets systemd passed (LISTEN_FDS) were taken by an earlier fleet of this process; binding the listen addresses instead".into()],
        });
    }
    let inherited = claim(&list)?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let targets: Vec<GroupTargets> = groups.iter().map(|g| targets(g, &cwd)).collect();
    let infos: Vec<FdInfo> = inherited.iter().map(|i| i.info.clone()).collect();
    let assignment = matching::assign(&infos, &targets)
        .map_err(|e| format!("systemd socket activation: {e}"))?;
    let mut sockets: Vec<Option<Inherited>> = inherited.into_iter().map(Some).collect();
    let mut out = Activation::default();
    for ((group, matched), target) in groups.iter().zip(assignment).zip(&targets) {
        let mut listeners = Vec::with_capacity(matched.len());
        for ((addr, m), t) in group.listen.iter().zip(matched).zip(&target.addrs) {
            let Some(m) = m else {
                listeners.push(None);
                continue;
            };
            let Some(Inherited { info, socket }) = sockets[m.fd_index].take() else {
                listeners.push(None);
                continue;
            };
            let by = match m.by {
                MatchedBy::Name => "by name",
                MatchedBy::Address => "by address",
            };
            let mut line = format!(
                "group \"{}\": {} is the socket systemd passed as {info} (matched {by}); baton does not bind it",
                group.rules.name, t.shown
            );
            if group.balance.per_slot() && matches!(info.local, SockName::Inet(_)) {
                line.push_str(&format!("; its workers share it (balance \"{}\" needs one socket per worker, and sockets baton added would not outlive a restart of the master)", group.balance.name()));
            }
            out.log.push(line);
            let port = match info.local {
                SockName::Inet(sa) => Some(sa.port()),
                _ => None,
            };
            debug_assert_eq!(socket.as_raw_fd(), info.fd);
            listeners.push(Some(Listener::inherited(
                addr.clone(),
                socket,
                info.local.to_string(),
                port,
                info.fd,
                info.name.clone(),
            )));
        }
        out.per_group.push(listeners);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_passed() {
        assert_eq!(parse_env(None, None, None, 7).unwrap(), Passed::Nothing);
        assert_eq!(
            parse_env(Some("7"), Some(""), None, 7).unwrap(),
            Passed::Nothing
        );
        assert_eq!(
            parse_env(Some("7"), Some("0"), None, 7).unwrap(),
            Passed::Nothing
        );
    }

    #[test]
    fn ours_with_and_without_names() {
        assert_eq!(
            parse_env(Some("7"), Some("2"), None, 7).unwrap(),
            Passed::Ours(vec![(3, None), (4, None)])
        );
        assert_eq!(
            parse_env(Some("7"), Some("2"), Some("web:"), 7).unwrap(),
            Passed::Ours(vec![(3, Some("web".into())), (4, None)])
        );
    }

    #[test]
    fn another_process_or_no_pid_is_not_ours() {
        let Passed::NotOurs(why) = parse_env(Some("8"), Some("1"), None, 7).unwrap() else {
            panic!("expected NotOurs");
        };
        assert!(
            why.contains("for process 8 (LISTEN_PID), not this master (7)"),
            "{why}"
        );
        assert!(matches!(
            parse_env(None, Some("1"), None, 7).unwrap(),
            Passed::NotOurs(_)
        ));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_variable() {
        let e = parse_env(Some("7"), Some("two"), None, 7).unwrap_err();
        assert!(e.starts_with("LISTEN_FDS=\"two\" is not a number"), "{e}");
        let e = parse_env(Some("me"), Some("1"), None, 7).unwrap_err();
        assert!(
            e.starts_with("LISTEN_PID=\"me\" is not a process id"),
            "{e}"
        );
        let e = parse_env(Some("7"), Some("1"), Some("a:b"), 7).unwrap_err();
        assert!(e.contains("has 2 names for LISTEN_FDS=1"), "{e}");
        assert!(parse_env(Some("7"), Some("100000"), None, 7).is_err());
    }

    /// A pipe is open but no socket; a connected socketpair is a stream socket that does not
    /// listen; a datagram socket is the wrong type. Each error names the fd.
    #[test]
    fn claim_rejects_what_is_not_a_listening_stream_socket() {
        let (r, _w) = std::io::pipe().unwrap();
        let fd = OwnedFd::from(r);
        let raw = fd.as_raw_fd();
        std::mem::forget(fd); // claim takes ownership (and closes it on error)
        let e = claim(&[(raw, Some("web".into()))]).unwrap_err();
        assert!(
            e.contains(&format!("fd {raw} (name \"web\") is not a socket")),
            "{e}"
        );

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw = OwnedFd::from(a);
        let n = raw.as_raw_fd();
        std::mem::forget(raw);
        let e = claim(&[(n, None)]).unwrap_err();
        assert!(
            e.contains(&format!("fd {n} is not a listening socket")),
            "{e}"
        );
        assert!(e.contains("Accept=no"), "{e}");

        let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let d = OwnedFd::from(d);
        let n = d.as_raw_fd();
        std::mem::forget(d);
        let e = claim(&[(n, None)]).unwrap_err();
        assert!(e.contains("is a datagram socket (ListenDatagram=)"), "{e}");
    }

    #[test]
    fn claim_takes_a_listening_socket_sets_cloexec_and_reads_its_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fd = OwnedFd::from(l);
        let raw = fd.as_raw_fd();
        // SAFETY: F_SETFD on an fd we own: clear FD_CLOEXEC, as systemd passes it.
        unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
        std::mem::forget(fd);
        let got = claim(&[(raw, Some("web".into()))]).unwrap();
        assert_eq!(
            got[0].info.to_string(),
            format!("fd {raw} (name \"web\", 127.0.0.1:{port})")
        );
        // SAFETY: F_GETFD on an fd `got` owns.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
    }

    #[test]
    fn claim_names_an_fd_that_is_not_open() {
        // An fd number far above anything this test process opens.
        let e = claim(&[(4000, None)]).unwrap_err();
        assert!(e.contains("fd 4000 is not open"), "{e}");
    }

    #[test]
    fn targets_resolve_wildcards_ips_and_relative_unix_paths() {
        let cwd = Path::new("/srv/app");
        let t = |s: &str| target(&crate::addr::parse(s).unwrap(), cwd);
        assert_eq!(
            t(":80"),
            Target::Tcp {
                ips: None,
                port: 80
            }
        );
        assert_eq!(
            t("0.0.0.0:80"),
            Target::Tcp {
                ips: None,
                port: 80
            }
        );
        assert_eq!(
            t("[::]:80"),
            Target::Tcp {
                ips: None,
                port: 80
            }
        );
        assert_eq!(
            t("127.0.0.1:80"),
            Target::Tcp {
                ips: Some(vec!["127.0.0.1".parse().unwrap()]),
                port: 80
            }
        );
        assert_eq!(t("127.0.0.1:0"), Target::Nothing);
        assert_eq!(
            t("unix:run/a.sock"),
            Target::Unix("/srv/app/run/a.sock".into())
        );
        assert_eq!(t("unix:/run/a.sock"), Target::Unix("/run/a.sock".into()));
    }
}
