//! `baton upgrade`: what the running master hands to the master that replaces it, and the
//! small protocol the two speak. The I/O is in `event_loop/upgrade.rs`; this module is the
//! data and the pure decisions, tested without processes.
//!
//! The sequence (the old master is *O*, its successor *N*):
//! 1. O starts N with the command line it was started with (or `upgradeCommand`), so N is
//!    the baton and Node now installed. N inherits, as open fds, every listening socket of
//!    O (each group address, each reuseport slot, the drop-in sockets), the control
//!    socket's listener, the locked pid file and one end of a socket pair, the *upgrade
//!    channel*. The environment variable [`ENV`] describes them ([`Handover`], JSON).
//! 2. N reads its options or config file again (it is a fresh process), takes the passed
//!    socket of each address it still listens on ([`assign`]), binds the addresses that are
//!    new, and starts its workers, readiness-gated, on those sockets. O's workers go on
//!    serving on the same sockets meanwhile: nothing closes, so no connection is refused.
//! 3. When all of N's workers are ready, N sends [`ToOld::Ready`]. O tells systemd
//!    `MAINPID=N`, stops touching the shared sockets (no more steering or accepting),
//!    answers [`ToNew::TakeOver`], and stops its own workers gracefully (they drain), then
//!    exits. On `TakeOver`, N starts answering the control socket and writes its pid into
//!    the pid file, whose lock it has held since it inherited the open file.
//! 4. If N fails first ([`ToOld::Failed`], an exit, or no word within the timeout), O
//!    stops N (SIGTERM, then SIGKILL; N's workers follow their master), waits for its exit,
//!    and answers the request with the cause. O never stopped serving.
//!
//! A listen address N no longer has is closed by N at once; O holds it until its workers
//! have drained, so it closes only then. If O dies before `TakeOver`, N takes over on its
//! own once it is ready (the channel's end of file), so the service stays up.

use std::os::fd::RawFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The environment variable that carries the [`Handover`] to the new master.
pub const ENV: &str = "BATON_UPGRADE";

/// How long the new master has to report, beyond its groups' longest `readyTimeout`
/// (Node's boot, the config file, binding).
pub const BOOT_ALLOWANCE: Duration = Duration::from_secs(30);

/// How long a failed new master has to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the old master passes to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handover {
    /// The old master's pid.
    pub from_pid: u32,
    /// The fleet's name: the new master keeps it, whatever its options say.
    pub name: String,
    /// The new master's end of the upgrade channel (a stream socket).
    pub channel_fd: RawFd,
    /// The control socket's listener.
    pub control_fd: RawFd,
    /// The pid file, opened and locked (`flock`) by the old master: the lock belongs to
    /// the open file, so it passes with the fd.
    pub pid_fd: RawFd,
    /// Every listening socket.
    pub sockets: Vec<PassedSocket>,
}

/// One listening socket passed to the new master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassedSocket {
    /// Its fd in the new master.
    pub fd: RawFd,
    /// The group it served.
    pub group: String,
    /// The address as configured (`ListenAddr`'s display form), or for a drop-in socket
    /// the address the app asked for.
    pub configured: String,
    /// The address it is bound to (the real port of `:0`).
    pub local: String,
    /// The reuseport slot it belongs to (`None`: shared by every worker of the group).
    pub slot: Option<u32>,
    /// How it came to the old master.
    pub from: SocketFrom,
}

/// Where a passed socket came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum SocketFrom {
    /// The old master bound it (a Unix socket's file passes to the new master, which
    /// removes it when it exits).
    Bound,
    /// systemd passed it (socket activation): systemd owns its file.
    Systemd {
        /// The fd number systemd passed it as.
        fd: RawFd,
        /// Its `LISTEN_FDNAMES` name.
        name: Option<String>,
    },
    /// Bound for a worker's plain `listen(port)` (drop-in mode).
    DropIn {
        /// The host the app asked for (`None`: all interfaces).
        host: Option<String>,
        /// The port the app asked for.
        port: u16,
    },
}

impl Handover {
    /// Parse the [`ENV`] value; the error names the variable.
    pub fn parse(text: &str) -> Result<Handover, String> {
        serde_json::from_str(text).map_err(|e| {
            format!("{ENV} is not a baton upgrade handover ({e}); it is set by baton upgrade only, unset it")
        })
    }

    /// The [`ENV`] value.
    pub fn to_env(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every fd it names (the new master takes each, or closes it).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.channel_fd, self.control_fd, self.pid_fd];
        fds.extend(self.sockets.iter().map(|s| s.fd));
        fds
    }
}

/// A line of the upgrade channel from the new master to the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ToOld {
    /// Every worker of the new master is ready.
    Ready,
    /// The new master cannot serve (its start failed); it stops its workers and exits.
    Failed {
        /// The cause, rendered for people (the worker, its exit, its stderr tail).
        message: String,
    },
}

/// A line of the upgrade channel from the old master to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ToNew {
    /// Serve the control socket and own the pid file: the old master is stopping.
    TakeOver,
}

/// One protocol line, newline included.
pub fn line<T: Serialize>(message: &T) -> String {
    let mut s = serde_json::to_string(message).unwrap_or_default();
    s.push('\n');
    s
}

/// Which passed sockets a new master's group addresses take: for each group (by index)
/// and each of its addresses, the indices into `passed` (one for a shared socket, one per
/// slot in slot order for reuseport sockets; empty: bind it). A socket matches an address
/// of the same group with the same configured form; failing that, of any group (a renamed
/// group keeps its port). Drop-in sockets are matched by [`assign_drop_in`] instead.
/// Sockets left unassigned are closed by the new master.
pub fn assign(groups: &[(&str, Vec<String>)], passed: &[PassedSocket]) -> Vec<Vec<Vec<usize>>> {
    let mut taken = vec![false; passed.len()];
    let mut result: Vec<Vec<Vec<usize>>> = groups
        .iter()
        .map(|(_, addrs)| vec![Vec::new(); addrs.len()])
        .collect();
    for same_group in [true, false] {
        for (g, (group, addrs)) in groups.iter().enumerate() {
            for (a, addr) in addrs.iter().enumerate() {
                if !result[g][a].is_empty() {
                    continue;
                }
                // The first matching (group, configured) pair wins with all its slots.
                let owner = passed.iter().enumerate().find(|(i, p)| {
                    !taken[*i]
                        && !matches!(p.from, SocketFrom::DropIn { .. })
                        && &p.configured == addr
                        && (!same_group || p.group == *group)
                });
                let Some((_, first)) = owner else { continue };
                let owner_group = first.group.clone();
                let mut picked: Vec<(Option<u32>, usize)> = passed
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| {
                        !taken[*i]
                            && !matches!(p.from, SocketFrom::DropIn { .. })
                            && &p.configured == addr
                            && p.group == owner_group
                    })
                    .map(|(i, p)| (p.slot, i))
                    .collect();
                picked.sort();
                for (_, i) in &picked {
                    taken[*i] = true;
                }
                result[g][a] = picked.into_iter().map(|(_, i)| i).collect();
            }
        }
    }
    result
}

/// The group (index into `groups`) each drop-in socket of `passed` goes to, by group name:
/// `(passed index, group index)`. A drop-in socket of a group that no longer exists is
/// closed.
pub fn assign_drop_in(groups: &[&str], passed: &[PassedSocket]) -> Vec<(usize, usize)> {
    passed
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.from, SocketFrom::DropIn { .. }))
        .filter_map(|(i, p)| groups.iter().position(|g| *g == p.group).map(|g| (i, g)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(fd: RawFd, group: &str, configured: &str, slot: Option<u32>) -> PassedSocket {
        PassedSocket {
            fd,
            group: group.into(),
            configured: configured.into(),
            local: configured.into(),
            slot,
            from: SocketFrom::Bound,
        }
    }

    #[test]
    fn handover_round_trips_through_the_environment() {
        let h = Handover {
            from_pid: 42,
            name: "api".into(),
            channel_fd: 7,
            control_fd: 8,
            pid_fd: 9,
            sockets: vec![
                sock(10, "web", "127.0.0.1:3000", None),
                PassedSocket {
                    from: SocketFrom::Systemd {
                        fd: 3,
                        name: Some("http".into()),
                    },
                    ..sock(11, "web", "[::]:80", None)
                },
                PassedSocket {
                    from: SocketFrom::DropIn {
                        host: None,
                        port: 8080,
                    },
                    ..sock(12, "web", ":8080", None)
                },
            ],
        };
        assert_eq!(Handover::parse(&h.to_env()), Ok(h.clone()));
        assert_eq!(h.fds(), vec![7, 8, 9, 10, 11, 12]);
        let err = Handover::parse("{").unwrap_err();
        assert!(err.starts_with("BATON_UPGRADE is not"), "{err}");
    }

    #[test]
    fn protocol_lines() {
        assert_eq!(line(&ToOld::Ready), "{\"type\":\"ready\"}\n");
        assert_eq!(line(&ToNew::TakeOver), "{\"type\":\"takeOver\"}\n");
        let failed = ToOld::Failed {
            message: "x".into(),
        };
        assert_eq!(
            serde_json::from_str::<ToOld>(line(&failed).trim()).ok(),
            Some(failed)
        );
    }

    #[test]
    fn same_address_same_group_takes_every_slot_in_order() {
        let passed = vec![
            sock(5, "web", ":3000", Some(1)),
            sock(4, "web", ":3000", Some(0)),
            sock(6, "admin", ":9000", None),
        ];
        let groups = vec![
            ("web", vec![":3000".to_string(), ":3001".to_string()]),
            ("admin", vec![":9000".to_string()]),
        ];
        let got = assign(&groups, &passed);
        assert_eq!(got, vec![vec![vec![1, 0], vec![]], vec![vec![2]]]);
    }

    #[test]
    fn a_renamed_group_keeps_its_socket_and_a_removed_address_is_left() {
        let passed = vec![sock(4, "web", ":3000", None), sock(5, "web", ":4000", None)];
        let groups = vec![("api", vec![":3000".to_string()])];
        assert_eq!(assign(&groups, &passed), vec![vec![vec![0]]]);
    }

    #[test]
    fn the_own_group_wins_over_another_with_the_same_address() {
        // Two reuseport groups can share a port: each keeps its own sockets.
        let passed = vec![
            sock(4, "a", ":3000", Some(0)),
            sock(5, "b", ":3000", Some(0)),
        ];
        let groups = vec![
            ("b", vec![":3000".to_string()]),
            ("a", vec![":3000".to_string()]),
        ];
        assert_eq!(assign(&groups, &passed), vec![vec![vec![1]], vec![vec![0]]]);
    }

    #[test]
    fn drop_in_sockets_go_to_their_group_by_name() {
        let mut d = sock(4, "web", ":8080", None);
        d.from = SocketFrom::DropIn {
            host: None,
            port: 8080,
        };
        let mut gone = d.clone();
        gone.group = "old".into();
        let passed = vec![d, sock(5, "web", ":8080", None), gone];
        assert_eq!(assign_drop_in(&["x", "web"], &passed), vec![(0, 1)]);
        // A drop-in socket is never taken as a configured address.
        assert_eq!(
            assign(&[("web", vec![":8080".to_string()])], &passed),
            vec![vec![vec![1]]]
        );
    }
}
