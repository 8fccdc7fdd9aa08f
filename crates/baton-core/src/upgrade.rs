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
use std::time::{Duration, Instant};

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

    /// Every fd it names with what it is, for messages: the upgrade channel, the control
    /// socket, the pid file, then each listening socket.
    pub fn named_fds(&self) -> Vec<(RawFd, String)> {
        let mut fds = vec![
            (self.channel_fd, "the upgrade channel".to_string()),
            (self.control_fd, "the control socket".to_string()),
            (self.pid_fd, "the pid file".to_string()),
        ];
        fds.extend(self.sockets.iter().map(|s| {
            (
                s.fd,
                format!("the socket of {} (group \"{}\")", s.configured, s.group),
            )
        }));
        fds
    }

    /// The rule the new master checks before it takes any fd: each fd is named once and
    /// is not stdin, stdout or stderr. A number named twice would be taken twice, and
    /// closing one of the two owners would close a socket still in use. The error names
    /// the fd, both uses and the rule.
    pub fn check_distinct_fds(&self) -> Result<(), String> {
        let named = self.named_fds();
        for (i, (fd, what)) in named.iter().enumerate() {
            if *fd < 3 {
                return Err(format!(
                    "{ENV}: {what} is fd {fd}, one of stdin, stdout and stderr: a handover passes fds 3 and up; \
                     it is set by baton upgrade only, unset it"
                ));
            }
            if let Some((_, first)) = named[..i].iter().find(|(f, _)| f == fd) {
                return Err(format!(
                    "{ENV}: fd {fd} is named twice ({first} and {what}): every passed fd must be distinct; \
                     it is set by baton upgrade only, unset it"
                ));
            }
        }
        Ok(())
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

/// Why an upgrade failed; rendered for people by the loop (`event_loop/upgrade.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The new master reported that its start failed, with its own account of why (the
    /// worker, its exit, its stderr tail).
    Reported(String),
    /// It exited before it was ready (how it ended, e.g. "exited with code 1").
    Exited(String),
    /// It closed the upgrade channel before it was ready.
    ChannelClosed,
    /// It did not report within the deadline.
    NoReport,
    /// The fleet is stopping.
    Stopping,
}

/// What happens to an upgrade in progress, as the old master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The new master's `ready` line.
    Ready,
    /// Its `failed` line.
    Failed(String),
    /// Its end of the channel closed.
    ChannelClosed,
    /// It exited (and was reaped): how.
    Exited(String),
    /// This fleet is stopping.
    Stop,
}

/// What the old master must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Give the fleet to the new master (systemd, files, `takeOver`, then drain).
    HandOver,
    /// Ask the new master to stop (SIGTERM).
    Terminate,
    /// Kill it (SIGKILL): it did not stop in time.
    Kill,
    /// It is gone and the upgrade failed: answer the waiters.
    Fail(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// The new master starts; it must report by the deadline.
    Starting { deadline: Instant },
    /// It failed; it is being stopped (killed at `kill_at`), then the waiters hear why.
    Aborting {
        failure: Failure,
        kill_at: Option<Instant>,
    },
    /// It serves: the old master drains and exits.
    HandedOver,
    /// It failed and is gone: nothing more happens.
    Failed,
}

/// The upgrade's rules, without I/O or a clock (time is passed in): the old master feeds
/// it what it sees and carries out the [`Step`]s.
///
/// - A `ready` while starting hands over, once; nothing fails after that.
/// - A failure while starting (the `failed` line, the channel's end, the deadline, a stop)
///   asks the new master to stop, then kills it after `stop_grace`; the waiters hear the
///   first failure (for a closed channel: how it exited), and only once it has exited, so
///   nothing of it is left.
/// - An exit while starting fails at once (nothing to stop).
/// - No signal is asked for once it has exited.
#[derive(Debug, Clone)]
pub struct Progress {
    phase: Phase,
    exited: bool,
    stop_grace: Duration,
}

impl Progress {
    /// An upgrade whose new master was started at `now`: it must report within
    /// `report_within`; once asked to stop it has `stop_grace` before it is killed.
    pub fn new(now: Instant, report_within: Duration, stop_grace: Duration) -> Progress {
        Progress {
            phase: Phase::Starting {
                deadline: now + report_within,
            },
            exited: false,
            stop_grace,
        }
    }

    /// The new master is starting (a further request joins this upgrade).
    pub fn is_starting(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. })
    }

    /// The fleet was handed over.
    pub fn is_handed_over(&self) -> bool {
        self.phase == Phase::HandedOver
    }

    /// The new master has exited.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// When [`Progress::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Starting { deadline } => Some(*deadline),
            Phase::Aborting { kill_at, .. } => *kill_at,
            Phase::HandedOver | Phase::Failed => None,
        }
    }

    /// Take `input`, seen at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Step> {
        if let Input::Exited(how) = &input {
            self.exited = true;
            return match std::mem::replace(&mut self.phase, Phase::Failed) {
                Phase::Starting { .. }
                | Phase::Aborting {
                    failure: Failure::ChannelClosed,
                    ..
                } => {
                    // A channel that closed says less than the exit that comes with it.
                    vec![Step::Fail(Failure::Exited(how.clone()))]
                }
                Phase::Aborting { failure, .. } => vec![Step::Fail(failure)],
                other => {
                    self.phase = other;
                    vec![]
                }
            };
        }
        if !self.is_starting() {
            return vec![];
        }
        match input {
            Input::Ready => {
                self.phase = Phase::HandedOver;
                vec![Step::HandOver]
            }
            Input::Failed(message) => self.abort(now, Failure::Reported(message)),
            Input::ChannelClosed => self.abort(now, Failure::ChannelClosed),
            Input::Stop => self.abort(now, Failure::Stopping),
            Input::Exited(_) => vec![], // handled above
        }
    }

    /// The time is `now`: a missed deadline or an overdue stop.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Step> {
        match &mut self.phase {
            Phase::Starting { deadline } if now >= *deadline => self.abort(now, Failure::NoReport),
            Phase::Aborting { kill_at, .. } if kill_at.is_some_and(|at| now >= at) => {
                *kill_at = None;
                vec![Step::Kill]
            }
            _ => vec![],
        }
    }

    fn abort(&mut self, now: Instant, failure: Failure) -> Vec<Step> {
        self.phase = Phase::Aborting {
            failure,
            kill_at: Some(now + self.stop_grace),
        };
        vec![Step::Terminate]
    }
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
        assert_eq!(h.check_distinct_fds(), Ok(()));
        let err = Handover::parse("{").unwrap_err();
        assert!(err.starts_with("BATON_UPGRADE is not"), "{err}");
    }

    #[test]
    fn a_handover_naming_an_fd_twice_or_stdio_is_refused() {
        let mut h = Handover {
            from_pid: 42,
            name: "api".into(),
            channel_fd: 7,
            control_fd: 8,
            pid_fd: 9,
            sockets: vec![
                sock(10, "web", "127.0.0.1:3000", None),
                sock(8, "web", "127.0.0.1:3001", None),
            ],
        };
        let err = h.check_distinct_fds().unwrap_err();
        assert!(
            err.contains("fd 8 is named twice (the control socket and the socket of 127.0.0.1:3001 (group \"web\"))"),
            "{err}"
        );
        assert!(err.contains("every passed fd must be distinct"), "{err}");
        h.sockets.pop();
        h.pid_fd = 2;
        let err = h.check_distinct_fds().unwrap_err();
        assert!(err.contains("the pid file is fd 2"), "{err}");
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

    mod progress {
        use super::super::*;
        use proptest::prelude::*;

        const REPORT: Duration = Duration::from_secs(60);
        const GRACE: Duration = Duration::from_secs(5);

        #[test]
        fn ready_hands_over_once_and_nothing_fails_after() {
            let t0 = Instant::now();
            let mut p = Progress::new(t0, REPORT, GRACE);
            assert_eq!(p.handle(t0, Input::Ready), vec![Step::HandOver]);
            assert!(p.is_handed_over());
            assert_eq!(p.handle(t0, Input::Ready), vec![]);
            assert_eq!(p.handle(t0, Input::Failed("x".into())), vec![]);
            assert_eq!(
                p.handle(t0, Input::Exited("exited with code 0".into())),
                vec![]
            );
            assert_eq!(p.handle_timeout(t0 + REPORT * 2), vec![]);
            assert_eq!(p.poll_timeout(), None);
        }

        #[test]
        fn a_reported_failure_stops_kills_and_answers_once_it_exited() {
            let t0 = Instant::now();
            let mut p = Progress::new(t0, REPORT, GRACE);
            assert_eq!(
                p.handle(t0, Input::Failed("boom".into())),
                vec![Step::Terminate]
            );
            assert_eq!(p.poll_timeout(), Some(t0 + GRACE));
            assert_eq!(p.handle_timeout(t0 + GRACE), vec![Step::Kill]);
            assert_eq!(p.handle_timeout(t0 + GRACE * 2), vec![]);
            // The first cause is the one reported, not the exit it led to.
            assert_eq!(
                p.handle(t0, Input::Exited("was killed by signal 9".into())),
                vec![Step::Fail(Failure::Reported("boom".into()))]
            );
        }

        #[test]
        fn a_closed_channel_is_reported_as_the_exit_that_follows() {
            let t0 = Instant::now();
            let mut p = Progress::new(t0, REPORT, GRACE);
            assert_eq!(p.handle(t0, Input::ChannelClosed), vec![Step::Terminate]);
            let how = "exited with code 3".to_string();
            assert_eq!(
                p.handle(t0, Input::Exited(how.clone())),
                vec![Step::Fail(Failure::Exited(how))]
            );
        }

        #[test]
        fn an_exit_while_starting_fails_at_once_and_a_missed_deadline_aborts() {
            let t0 = Instant::now();
            let mut p = Progress::new(t0, REPORT, GRACE);
            let how = "exited with code 1".to_string();
            assert_eq!(
                p.handle(t0, Input::Exited(how.clone())),
                vec![Step::Fail(Failure::Exited(how))]
            );
            let mut q = Progress::new(t0, REPORT, GRACE);
            assert_eq!(q.handle_timeout(t0 + REPORT), vec![Step::Terminate]);
            assert_eq!(
                q.handle(t0, Input::Exited("x".into())),
                vec![Step::Fail(Failure::NoReport)]
            );
        }

        fn input() -> impl Strategy<Value = Option<Input>> {
            prop_oneof![
                Just(Some(Input::Ready)),
                Just(Some(Input::Failed("f".into()))),
                Just(Some(Input::ChannelClosed)),
                Just(Some(Input::Exited("e".into()))),
                Just(Some(Input::Stop)),
                Just(None), // a timeout
            ]
        }

        proptest! {
            /// Whatever happens in whatever order: at most one hand-over, at most one
            /// failure and never both; a failure only once the new master exited; no
            /// signal after its exit; a kill only after a terminate.
            #[test]
            fn every_interleaving_has_one_coherent_outcome(
                events in proptest::collection::vec((input(), 0u64..120), 0..24)
            ) {
                let t0 = Instant::now();
                let mut p = Progress::new(t0, REPORT, GRACE);
                let (mut now, mut exited) = (t0, false);
                let (mut handed, mut failed, mut terminated) = (0, 0, false);
                for (event, advance) in events {
                    now += Duration::from_secs(advance);
                    let steps = match event {
                        Some(i) => {
                            exited |= matches!(i, Input::Exited(_));
                            p.handle(now, i)
                        }
                        None => p.handle_timeout(now),
                    };
                    for step in steps {
                        match step {
                            Step::HandOver => handed += 1,
                            Step::Fail(_) => {
                                failed += 1;
                                prop_assert!(exited, "failed before the new master exited");
                            }
                            Step::Terminate => {
                                prop_assert!(!exited);
                                terminated = true;
                            }
                            Step::Kill => prop_assert!(!exited && terminated),
                        }
                    }
                    prop_assert!(handed <= 1 && failed <= 1 && handed + failed <= 1);
                }
            }
        }
    }
}
