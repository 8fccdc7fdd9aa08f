//! Which inherited socket serves which group address: a pure function from the sockets
//! systemd passed (fd, name, address) and the groups' listen addresses to an assignment,
//! or an error naming the fd and what to change.
//!
//! Rules, in order of precedence:
//!
//! 1. **By name.** An fd whose name (`LISTEN_FDNAMES`, `FileDescriptorName=` in the
//!    `.socket` unit) is a group's name serves that group: its only listen address, or,
//!    when the group has several, the one whose address equals the fd's. A name
//!    `<group>.<listen name>` (e.g. `web.listen0`, `web.admin` for `listen: { admin: ... }`)
//!    names one address of a group. A name match wins over the address: the unit may put
//!    the socket on another port than the group's configuration says (the status then shows
//!    the socket's real address). systemd forbids `:` in fd names, so an address as written
//!    (`127.0.0.1:8080`) cannot be a name; such sockets match by address.
//! 2. **By address.** An fd without a name, or whose name is no group's (systemd's
//!    default name is the socket unit's, e.g. `baton-app.socket`), serves the group address
//!    equal to the fd's `getsockname`: same port and IP (a host name matches any address it
//!    resolves to; IPv4-mapped IPv6 is IPv4; `:port`, `0.0.0.0:port` and `[::]:port` all mean
//!    every interface and match each other), or the same absolute Unix socket path. Port 0
//!    matches no inherited socket.
//! 3. An fd that matches no group address is an **error**: systemd keeps such a socket
//!    open and queues its connections, which nobody would ever accept. Two fds for one
//!    address are an error too. A group address that no fd matches is bound by baton as
//!    usual.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The local address of an inherited socket (`getsockname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockName {
    /// TCP over IPv4 or IPv6.
    Inet(SocketAddr),
    /// A Unix socket bound to a path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket (`ListenStream=@name`), without the leading NUL.
    UnixAbstract(String),
    /// A Unix socket bound to nothing.
    UnixUnnamed,
}

impl fmt::Display for SockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SockName::Inet(sa) => {
                let ip = unmapped(sa.ip());
                match ip {
                    IpAddr::V4(ip) => write!(f, "{ip}:{}", sa.port()),
                    IpAddr::V6(ip) => write!(f, "[{ip}]:{}", sa.port()),
                }
            }
            SockName::Unix(p) => write!(f, "unix:{}", p.display()),
            SockName::UnixAbstract(name) => write!(f, "unix:@{name}"),
            SockName::UnixUnnamed => f.write_str("an unnamed Unix socket"),
        }
    }
}

/// One inherited socket as the matching sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdInfo {
    /// The fd number (3, 4, ...).
    pub fd: RawFd,
    /// Its name from `LISTEN_FDNAMES`, if any.
    pub name: Option<String>,
    /// Its local address.
    pub local: SockName,
}

impl fmt::Display for FdInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "fd {} (name \"{name}\", {})", self.fd, self.local),
            None => write!(f, "fd {} ({})", self.fd, self.local),
        }
    }
}

/// What a configured listen address accepts, resolved by the caller (host names looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// TCP on `port`; `ips: None` means every interface.
    Tcp {
        /// The addresses the host stands for; `None`: all interfaces.
        ips: Option<Vec<IpAddr>>,
        /// The port (never 0 here).
        port: u16,
    },
    /// A Unix socket at this absolute path.
    Unix(PathBuf),
    /// Matches no socket by address (port 0, a host that did not resolve).
    Nothing,
}

impl Target {
    fn matches(&self, local: &SockName) -> bool {
        match (self, local) {
            (Target::Tcp { ips, port }, SockName::Inet(sa)) => {
                if sa.port() != *port {
                    return false;
                }
                let ip = unmapped(sa.ip());
                match ips {
                    None => ip.is_unspecified(),
                    Some(ips) => ips.iter().any(|want| unmapped(*want) == ip),
                }
            }
            (Target::Unix(path), SockName::Unix(p)) => path == p,
            _ => false,
        }
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One listen address of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrTarget {
    /// The address as configured, in display form (`127.0.0.1:8080`).
    pub shown: String,
    /// Its name in the group (`listen0`, or the key of `listen: { name: addr }`).
    pub listen_name: String,
    /// What it matches.
    pub target: Target,
}

/// One group's listen addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTargets {
    /// The group name.
    pub name: String,
    /// Its addresses in order.
    pub addrs: Vec<AddrTarget>,
}

/// How an fd was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// Its name is the group's (or `group.listen-name`).
    Name,
    /// Its address equals the group's listen address.
    Address,
}

/// An fd assigned to one group address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index into the fds given to [`assign`].
    pub fd_index: usize,
    /// How it was matched.
    pub by: MatchedBy,
}

/// For each group, for each of its addresses: the inherited fd that serves it, if any.
pub type Assignment = Vec<Vec<Option<Match>>>;

/// Why the inherited sockets cannot be assigned. `Display` says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchError {
    /// An fd matches no group address.
    Unmatched {
        /// The fd.
        fd: FdInfo,
        /// Every group address, `group on addr` each, for the message.
        known: Vec<String>,
    },
    /// Two fds claim the same group address.
    Conflict {
        /// The group.
        group: String,
        /// Its address as configured.
        addr: String,
        /// The first fd and how it matched.
        first: (FdInfo, MatchedBy),
        /// The second fd and how it matched.
        second: (FdInfo, MatchedBy),
    },
    /// An fd is named after a group with several addresses, and its address is none of them.
    AmbiguousName {
        /// The fd.
        fd: FdInfo,
        /// The group.
        group: String,
        /// `(listen name, address)` of the group's addresses.
        addrs: Vec<(String, String)>,
    },
    /// An fd is named after a group that listens nowhere.
    GroupWithoutListen {
        /// The fd.
        fd: FdInfo,
        /// The group.
        group: String,
    },
    /// An fd assigned by name has the address of another group address, which baton could
    /// then not bind (systemd holds it).
    Shadowed {
        /// The fd.
        fd: FdInfo,
        /// The group it was assigned to by name.
        named: String,
        /// The group whose address it has.
        group: String,
        /// That address as configured.
        addr: String,
    },
    /// An unnamed fd's address is the address of several groups.
    AmbiguousAddress {
        /// The fd.
        fd: FdInfo,
        /// `group on addr` of each candidate.
        candidates: Vec<String>,
    },
}

fn by_text(by: MatchedBy) -> &'static str {
    match by {
        MatchedBy::Name => "by name",
        MatchedBy::Address => "by address",
    }
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchError::Unmatched { fd, known } => {
                let groups = if known.is_empty() {
                    "no group has a listen address".to_string()
                } else {
                    format!("listen addresses: {}", known.join(", "))
                };
                write!(
                    f,
                    "systemd passed the socket {fd}, which matches no group ({groups}): name it after the group that should serve it (FileDescriptorName=<group> in the .socket unit) or give that group the listen address {}; an unserved socket would queue connections nobody accepts",
                    fd.local
                )
            }
            MatchError::Conflict {
                group,
                addr,
                first,
                second,
            } => write!(
                f,
                "systemd passed two sockets for group \"{group}\"'s listen address {addr}: {} ({}) and {} ({}); give each socket its own group name (FileDescriptorName=) or address",
                first.0,
                by_text(first.1),
                second.0,
                by_text(second.1)
            ),
            MatchError::AmbiguousName { fd, group, addrs } => {
                let names: Vec<String> = addrs
                    .iter()
                    .map(|(n, a)| format!("{group}.{n} for {a}"))
                    .collect();
                write!(
                    f,
                    "systemd passed the socket {fd}, named after group \"{group}\", which has {} listen addresses and none of them is {}: name the socket after one address ({})",
                    addrs.len(),
                    fd.local,
                    names.join(", ")
                )
            }
            MatchError::GroupWithoutListen { fd, group } => write!(
                f,
                "systemd passed the socket {fd}, named after group \"{group}\", which has no listen address: give the group a listen address (--listen) or name the socket after another group"
            ),
            MatchError::Shadowed {
                fd,
                named,
                group,
                addr,
            } => write!(
                f,
                "systemd passed the socket {fd} for group \"{named}\" (by name), but it is on group \"{group}\"'s listen address {addr}, which baton then could not bind: correct the FileDescriptorName= or the listen addresses"
            ),
            MatchError::AmbiguousAddress { fd, candidates } => write!(
                f,
                "systemd passed the socket {fd}, whose address is the listen address of several groups ({}): name it after one of them (FileDescriptorName=<group>)",
                candidates.join(", ")
            ),
        }
    }
}

impl std::error::Error for MatchError {}

/// Assign every inherited fd to one group address (see the module documentation).
pub fn assign(fds: &[FdInfo], groups: &[GroupTargets]) -> Result<Assignment, Box<MatchError>> {
    let mut out: Assignment = groups.iter().map(|g| vec![None; g.addrs.len()]).collect();
    let place =
        |out: &mut Assignment, g: usize, a: usize, m: Match| -> Result<(), Box<MatchError>> {
            if let Some(prev) = out[g][a] {
                return Err(Box::new(MatchError::Conflict {
                    group: groups[g].name.clone(),
                    addr: groups[g].addrs[a].shown.clone(),
                    first: (fds[prev.fd_index].clone(), prev.by),
                    second: (fds[m.fd_index].clone(), m.by),
                }));
            }
            out[g][a] = Some(m);
            Ok(())
        };

    // 1. By name.
    let mut unnamed = Vec::new();
    for (i, fd) in fds.iter().enumerate() {
        let by_name = Match {
            fd_index: i,
            by: MatchedBy::Name,
        };
        let Some(name) = fd.name.as_deref() else {
            unnamed.push(i);
            continue;
        };
        if let Some(g) = groups.iter().position(|g| g.name == name) {
            let group = &groups[g];
            let a = match group.addrs.len() {
                0 => {
                    return Err(Box::new(MatchError::GroupWithoutListen {
                        fd: fd.clone(),
                        group: group.name.clone(),
                    }))
                }
                1 => 0,
                _ => group
                    .addrs
                    .iter()
                    .position(|a| a.target.matches(&fd.local))
                    .ok_or_else(|| {
                        Box::new(MatchError::AmbiguousName {
                            fd: fd.clone(),
                            group: group.name.clone(),
                            addrs: group
                                .addrs
                                .iter()
                                .map(|a| (a.listen_name.clone(), a.shown.clone()))
                                .collect(),
                        })
                    })?,
            };
            place(&mut out, g, a, by_name)?;
            continue;
        }
        let qualified = groups.iter().enumerate().find_map(|(g, group)| {
            group
                .addrs
                .iter()
                .position(|a| {
                    name.len() == group.name.len() + 1 + a.listen_name.len()
                        && name.starts_with(group.name.as_str())
                        && name[group.name.len()..].starts_with('.')
                        && name.ends_with(a.listen_name.as_str())
                })
                .map(|a| (g, a))
        });
        match qualified {
            Some((g, a)) => place(&mut out, g, a, by_name)?,
            None => unnamed.push(i),
        }
    }

    // 2. By address.
    for i in unnamed {
        let fd = &fds[i];
        let candidates: Vec<(usize, usize)> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                group
                    .addrs
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.target.matches(&fd.local))
                    .map(move |(a, _)| (g, a))
            })
            .collect();
        let describe = |&(g, a): &(usize, usize)| {
            format!("{} on {}", groups[g].name, groups[g].addrs[a].shown)
        };
        match candidates.as_slice() {
            [] => {
                return Err(Box::new(MatchError::Unmatched {
                    fd: fd.clone(),
                    known: groups
                        .iter()
                        .enumerate()
                        .flat_map(|(g, group)| (0..group.addrs.len()).map(move |a| (g, a)))
                        .map(|ga| describe(&ga))
                        .collect(),
                }))
            }
            [(g, a)] => place(
                &mut out,
                *g,
                *a,
                Match {
                    fd_index: i,
                    by: MatchedBy::Address,
                },
            )?,
            several => {
                return Err(Box::new(MatchError::AmbiguousAddress {
                    fd: fd.clone(),
                    candidates: several.iter().map(describe).collect(),
                }))
            }
        }
    }

    // 3. A group address left to bind must not be the address of a socket given by name to
    //    another one.
    for (g, group) in groups.iter().enumerate() {
        for (a, addr) in group.addrs.iter().enumerate() {
            if out[g][a].is_some() {
                continue;
            }
            let shadow = out.iter().enumerate().find_map(|(og, addrs)| {
                addrs
                    .iter()
                    .flatten()
                    .find(|m| addr.target.matches(&fds[m.fd_index].local))
                    .map(|m| (og, m.fd_index))
            });
            if let Some((og, i)) = shadow {
                return Err(Box::new(MatchError::Shadowed {
                    fd: fds[i].clone(),
                    named: groups[og].name.clone(),
                    group: group.name.clone(),
                    addr: addr.shown.clone(),
                }));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn inet(s: &str) -> SockName {
        SockName::Inet(s.parse().unwrap())
    }

    fn fd(n: RawFd, name: Option<&str>, local: SockName) -> FdInfo {
        FdInfo {
            fd: n,
            name: name.map(str::to_string),
            local,
        }
    }

    fn tcp(shown: &str, ips: Option<Vec<IpAddr>>, port: u16) -> AddrTarget {
        AddrTarget {
            shown: shown.into(),
            listen_name: "listen0".into(),
            target: Target::Tcp { ips, port },
        }
    }

    fn lo(port: u16) -> AddrTarget {
        tcp(
            &format!("127.0.0.1:{port}"),
            Some(vec![Ipv4Addr::LOCALHOST.into()]),
            port,
        )
    }

    fn group(name: &str, addrs: Vec<AddrTarget>) -> GroupTargets {
        GroupTargets {
            name: name.into(),
            addrs,
        }
    }

    fn named(mut a: AddrTarget, listen_name: &str) -> AddrTarget {
        a.listen_name = listen_name.into();
        a
    }

    const NAME: MatchedBy = MatchedBy::Name;
    const ADDR: MatchedBy = MatchedBy::Address;

    fn m(fd_index: usize, by: MatchedBy) -> Option<Match> {
        Some(Match { fd_index, by })
    }

    #[test]
    fn no_fds_assign_nothing() {
        let groups = [group("web", vec![lo(8080)]), group("jobs", vec![])];
        assert_eq!(assign(&[], &groups).unwrap(), vec![vec![None], vec![]]);
    }

    #[test]
    fn a_name_wins_over_the_address() {
        // The unit moved the port: the name still says which group serves it.
        let fds = [fd(3, Some("web"), inet("127.0.0.1:9000"))];
        let groups = [group("web", vec![lo(8080)])];
        assert_eq!(assign(&fds, &groups).unwrap(), vec![vec![m(0, NAME)]]);
    }

    #[test]
    fn unnamed_fds_match_by_address_in_any_order() {
        let fds = [
            fd(3, None, inet("127.0.0.1:8081")),
            fd(4, None, inet("127.0.0.1:8080")),
        ];
        let groups = [group("web", vec![lo(8080)]), group("admin", vec![lo(8081)])];
        assert_eq!(
            assign(&fds, &groups).unwrap(),
            vec![vec![m(1, ADDR)], vec![m(0, ADDR)]]
        );
    }

    #[test]
    fn a_name_of_no_group_falls_back_to_the_address() {
        // systemd's default name is the socket unit's.
        let fds = [fd(3, Some("baton-app.socket"), inet("127.0.0.1:8080"))];
        let groups = [group("web", vec![lo(8080)])];
        assert_eq!(assign(&fds, &groups).unwrap(), vec![vec![m(0, ADDR)]]);
    }

    #[test]
    fn wildcards_match_each_other_and_mapped_addresses_are_ipv4() {
        let any = || tcp(":8080", None, 8080);
        for local in ["0.0.0.0:8080", "[::]:8080"] {
            let fds = [fd(3, None, inet(local))];
            assert_eq!(
                assign(&fds, &[group("web", vec![any()])]).unwrap(),
                vec![vec![m(0, ADDR)]],
                "{local}"
            );
        }
        let fds = [fd(3, None, inet("[::ffff:127.0.0.1]:8080"))];
        assert_eq!(
            assign(&fds, &[group("web", vec![lo(8080)])]).unwrap(),
            vec![vec![m(0, ADDR)]]
        );
        // A specific address is not a wildcard, nor the other way round.
        let fds = [fd(3, None, inet("0.0.0.0:8080"))];
        assert!(assign(&fds, &[group("web", vec![lo(8080)])]).is_err());
        let fds = [fd(3, None, inet("127.0.0.1:8080"))];
        assert!(assign(&fds, &[group("web", vec![any()])]).is_err());
    }

    #[test]
    fn a_host_name_matches_any_address_it_resolved_to() {
        let localhost = tcp(
            "localhost:8080",
            Some(vec![Ipv6Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()]),
            8080,
        );
        for local in ["127.0.0.1:8080", "[::1]:8080"] {
            let fds = [fd(3, None, inet(local))];
            assert_eq!(
                assign(&fds, &[group("web", vec![localhost.clone()])]).unwrap(),
                vec![vec![m(0, ADDR)]]
            );
        }
    }

    #[test]
    fn unix_paths_match_exactly_and_port_0_matches_nothing() {
        let unix = AddrTarget {
            shown: "unix:/run/app.sock".into(),
            listen_name: "listen0".into(),
            target: Target::Unix("/run/app.sock".into()),
        };
        let fds = [fd(3, None, SockName::Unix("/run/app.sock".into()))];
        assert_eq!(
            assign(&fds, &[group("web", vec![unix.clone()])]).unwrap(),
            vec![vec![m(0, ADDR)]]
        );
        let fds = [fd(3, None, SockName::Unix("/run/other.sock".into()))];
        assert!(assign(&fds, &[group("web", vec![unix])]).is_err());
        let zero = AddrTarget {
            shown: "127.0.0.1:0".into(),
            listen_name: "listen0".into(),
            target: Target::Nothing,
        };
        let fds = [fd(3, None, inet("127.0.0.1:41000"))];
        assert!(assign(&fds, &[group("web", vec![zero.clone()])]).is_err());
        // ... but a name still assigns it.
        let fds = [fd(3, Some("web"), inet("127.0.0.1:41000"))];
        assert_eq!(
            assign(&fds, &[group("web", vec![zero])]).unwrap(),
            vec![vec![m(0, NAME)]]
        );
    }

    #[test]
    fn a_group_with_several_addresses_takes_a_qualified_name_or_the_address() {
        let web = || {
            group(
                "web",
                vec![named(lo(8080), "http"), named(lo(8443), "https")],
            )
        };
        // web.https names the second address whatever the socket's port.
        let fds = [fd(3, Some("web.https"), inet("127.0.0.1:9443"))];
        assert_eq!(
            assign(&fds, &[web()]).unwrap(),
            vec![vec![None, m(0, NAME)]]
        );
        // The group's name alone: the address picks one of the group's.
        let fds = [fd(3, Some("web"), inet("127.0.0.1:8443"))];
        assert_eq!(
            assign(&fds, &[web()]).unwrap(),
            vec![vec![None, m(0, NAME)]]
        );
        // ... and when it is none of them, the error lists the qualified names.
        let fds = [fd(3, Some("web"), inet("127.0.0.1:9000"))];
        let e = assign(&fds, &[web()]).unwrap_err();
        assert!(matches!(*e, MatchError::AmbiguousName { .. }));
        assert_eq!(
            e.to_string(),
            "systemd passed the socket fd 3 (name \"web\", 127.0.0.1:9000), named after group \"web\", which has 2 listen addresses and none of them is 127.0.0.1:9000: name the socket after one address (web.http for 127.0.0.1:8080, web.https for 127.0.0.1:8443)"
        );
    }

    #[test]
    fn dotted_group_names_are_matched_whole_first() {
        let groups = [
            group("api.v2", vec![lo(8080)]),
            group("api", vec![named(lo(8081), "v2")]),
        ];
        let fds = [fd(3, Some("api.v2"), inet("127.0.0.1:1"))];
        assert_eq!(
            assign(&fds, &groups).unwrap(),
            vec![vec![m(0, NAME)], vec![None]]
        );
    }

    #[test]
    fn an_unmatched_fd_is_an_error_naming_it_and_the_groups() {
        let fds = [
            fd(3, Some("web"), inet("127.0.0.1:8080")),
            fd(4, Some("api"), inet("127.0.0.1:8081")),
        ];
        let groups = [group("web", vec![lo(8080)]), group("jobs", vec![])];
        let e = assign(&fds, &groups).unwrap_err();
        assert_eq!(
            e.to_string(),
            "systemd passed the socket fd 4 (name \"api\", 127.0.0.1:8081), which matches no group (listen addresses: web on 127.0.0.1:8080): name it after the group that should serve it (FileDescriptorName=<group> in the .socket unit) or give that group the listen address 127.0.0.1:8081; an unserved socket would queue connections nobody accepts"
        );
    }

    #[test]
    fn two_fds_for_one_address_conflict() {
        let fds = [
            fd(3, Some("web"), inet("127.0.0.1:9000")),
            fd(4, None, inet("127.0.0.1:8080")),
        ];
        let e = assign(&fds, &[group("web", vec![lo(8080)])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "systemd passed two sockets for group \"web\"'s listen address 127.0.0.1:8080: fd 3 (name \"web\", 127.0.0.1:9000) (by name) and fd 4 (127.0.0.1:8080) (by address); give each socket its own group name (FileDescriptorName=) or address"
        );
        let fds = [
            fd(3, Some("web"), inet("127.0.0.1:8080")),
            fd(4, Some("web"), inet("127.0.0.1:8080")),
        ];
        assert!(matches!(
            assign(&fds, &[group("web", vec![lo(8080)])]).map_err(|e| *e),
            Err(MatchError::Conflict { .. })
        ));
    }

    #[test]
    fn a_name_of_a_group_without_listen_and_an_address_of_two_groups_are_errors() {
        let fds = [fd(3, Some("jobs"), inet("127.0.0.1:8080"))];
        let e = assign(&fds, &[group("jobs", vec![])]).unwrap_err();
        assert!(
            e.to_string()
                .contains("group \"jobs\", which has no listen address"),
            "{e}"
        );
        let fds = [fd(3, None, inet("127.0.0.1:8080"))];
        let e = assign(
            &fds,
            &[group("a", vec![lo(8080)]), group("b", vec![lo(8080)])],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("several groups (a on 127.0.0.1:8080, b on 127.0.0.1:8080)"),
            "{e}"
        );
    }

    #[test]
    fn a_socket_named_for_one_group_on_another_groups_address_is_an_error() {
        let fds = [fd(3, Some("web"), inet("127.0.0.1:8081"))];
        let groups = [group("web", vec![lo(8080)]), group("admin", vec![lo(8081)])];
        let e = assign(&fds, &groups).unwrap_err();
        assert_eq!(
            e.to_string(),
            "systemd passed the socket fd 3 (name \"web\", 127.0.0.1:8081) for group \"web\" (by name), but it is on group \"admin\"'s listen address 127.0.0.1:8081, which baton then could not bind: correct the FileDescriptorName= or the listen addresses"
        );
    }

    #[test]
    fn sock_names_display_like_listen_addresses() {
        assert_eq!(inet("[::ffff:10.0.0.1]:80").to_string(), "10.0.0.1:80");
        assert_eq!(inet("[::]:80").to_string(), "[::]:80");
        assert_eq!(SockName::Unix("/r/a".into()).to_string(), "unix:/r/a");
        assert_eq!(SockName::UnixAbstract("x".into()).to_string(), "unix:@x");
    }
}
