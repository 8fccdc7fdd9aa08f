//! Reaping orphans when the master is PID 1 (a container) or a child subreaper.
//!
//! In a container the master is usually PID 1 of its pid namespace, so every orphan of the
//! namespace (a worker's `sh -c 'job &'`, a child left behind by a crashed worker) is
//! reparented to it. Nobody waits for them: when they exit they stay zombies and fill the
//! pid table. The same holds for a master that declared itself a child subreaper
//! (`prctl(PR_SET_CHILD_SUBREAPER)`, or a parent that set it for a process manager).
//!
//! A plain `waitpid(-1)` would fix that and break two other waiters (`docs/design.md#pitfalls`):
//! - libuv reaps only the children it spawned (`child_process` in the master), with
//!   `waitpid(pid, WNOHANG)` from its `SIGCHLD` handler; a child stolen from it never
//!   reports its exit, and its handle keeps Node's loop alive forever;
//! - the supervision loop learns of each worker's exit without reaping it (its pidfd
//!   becomes readable, or its waiter thread's `waitid(WNOWAIT)` returns; see
//!   `event_loop/exits.rs`), then reaps it with `spawn::wait_exit` and must get the
//!   worker's status.
//!
//! So the reaper is one thread, started by the first [`start`] of the process, only when
//! the process is PID 1 or a subreaper (Linux), that every [`SCAN_INTERVAL`]:
//! 1. reads `/proc/*/stat` and collects the zombies whose parent is this process;
//! 2. leaves out every pid baton forked and has not waited for yet ([`track_child`] at
//!    fork, [`untrack_child`] once the loop reaped it, both in `spawn.rs`);
//! 3. reaps, with `waitpid(pid, WNOHANG)` on that pid alone, only a zombie that was already
//!    a zombie (same pid, same start time) on the previous scan, so it has been a zombie
//!    for at least one interval. libuv reaps its own children within milliseconds of their
//!    `SIGCHLD`, so it is never robbed — unless the master's JavaScript thread is blocked
//!    for longer than a whole interval at the moment a `child_process` child exits (then
//!    that child's exit event is lost; an accepted limit, documented in
//!    docs/architecture.md).
//!
//! The count of reaped orphans is [`reaped`] (`reapedOrphans` in the status JSON, `null`
//! when the reaper is not active). Elsewhere than on Linux [`start`] does nothing:
//! containers are Linux.
//!
//! This module is the one place of the reaper's `unsafe` (`waitpid`, `prctl`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often `/proc` is scanned. An orphan is reaped between one and two intervals after it
/// exits; a zombie costs only a pid-table slot meanwhile. One second keeps the scan's cost
/// (one `/proc/<pid>/stat` read per process of the namespace) negligible.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Pids baton forked and has not reaped yet: never touched by the reaper.
static CHILDREN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static REAPED: AtomicU64 = AtomicU64::new(0);
/// Set by the first [`start`]: whether the reaper runs, and why (or why not).
static STATE: OnceLock<State> = OnceLock::new();

/// Why the reaper runs, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The process is neither PID 1 nor a subreaper: orphans are not reparented to us.
    Inactive,
    /// The reaper thread runs; the text says why ("PID 1", "a child subreaper").
    Active(&'static str),
    /// It should run but cannot; the text says why and what to do.
    Failed(String),
}

impl State {
    /// A log line for the master, if there is something to say.
    pub fn message(&self) -> Option<String> {
        match self {
            State::Inactive => None,
            State::Active(why) => Some(format!(
                "running as {why}: orphaned processes are reaped (checked every {} ms)",
                SCAN_INTERVAL.as_millis()
            )),
            State::Failed(why) => Some(why.clone()),
        }
    }
}

/// Start the reaper if this process is PID 1 or a child subreaper (once per process; later
/// calls return the first call's state).
pub fn start() -> &'static State {
    STATE.get_or_init(imp::start)
}

/// Orphans reaped so far, or `None` when the reaper is not running.
pub fn reaped() -> Option<u64> {
    match STATE.get() {
        Some(State::Active(_)) => Some(REAPED.load(Ordering::Relaxed)),
        _ => None,
    }
}

/// Record a child baton forked (called in the parent right after `fork`): the reaper leaves
/// it to the supervision loop, which reaps it.
pub fn track_child(pid: i32) {
    if let Ok(mut set) = CHILDREN.lock() {
        set.insert(pid);
    }
}

/// Forget a child once it has been reaped ([`crate::spawn::wait_exit`]).
pub fn untrack_child(pid: i32) {
    if let Ok(mut set) = CHILDREN.lock() {
        set.remove(&pid);
    }
}

/// Whether baton forked `pid` (and waits for it itself). Only Linux's reaper scans for
/// zombies, so elsewhere only the tests use it.
#[cfg(any(target_os = "linux", test))]
fn is_tracked(pid: i32) -> bool {
    CHILDREN
        .lock()
        .map(|set| set.contains(&pid))
        .unwrap_or(true)
}

/// What the reaper reads from one `/proc/<pid>/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state (`Z` for a zombie).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Start time in clock ticks since boot (tells a reused pid apart).
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat`: `pid (comm) state ppid ... starttime(22nd) ...`. The command
/// name may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        start_time,
    })
}

/// The zombies to reap now: those of `current` (pid → start time) that were already
/// zombies with the same start time in `previous`.
pub fn due(previous: &HashMap<i32, u64>, current: &HashMap<i32, u64>) -> Vec<i32> {
    let mut pids: Vec<i32> = current
        .iter()
        .filter(|(pid, start)| previous.get(pid) == Some(start))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::io;
    use std::thread;

    pub(super) fn start() -> State {
        let me = std::process::id() as i32;
        let why = if me == 1 {
            "PID 1"
        } else {
            match is_subreaper() {
                Ok(true) => "a child subreaper",
                Ok(false) => return State::Inactive,
                Err(e) => {
                    return State::Failed(format!(
                        "cannot tell whether this process is a child subreaper ({e}); orphans reparented to it are not reaped"
                    ))
                }
            }
        };
        // /proc must be this pid namespace's, or the ppids and pids we read are not ours.
        match std::fs::read_link("/proc/self") {
            Ok(link) if link.as_os_str() == me.to_string().as_str() => {}
            _ => {
                return State::Failed(format!(
                    "running as {why}, but /proc does not show this process as pid {me} (not this pid namespace's /proc?): orphans are not reaped; mount a proc of the namespace on /proc"
                ))
            }
        }
        let spawned = thread::Builder::new()
            .name("baton-reaper".into())
            .stack_size(128 * 1024)
            .spawn(move || run(me));
        match spawned {
            Ok(_) => State::Active(why),
            Err(e) => State::Failed(format!(
                "running as {why}, but the reaper thread cannot start ({e}): orphans are not reaped"
            )),
        }
    }

    fn is_subreaper() -> io::Result<bool> {
        let mut flag: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer, which points
        // to `flag`, valid and writable for the duration of the call.
        let rc = unsafe {
            libc::prctl(
                libc::PR_GET_CHILD_SUBREAPER,
                &mut flag as *mut libc::c_int as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc == 0 {
            Ok(flag != 0)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn run(me: i32) {
        let mut previous: HashMap<i32, u64> = HashMap::new();
        loop {
            thread::sleep(SCAN_INTERVAL);
            let current = zombies(me);
            for pid in due(&previous, &current) {
                // Checked again just before the wait: a tracked pid is never waited for here.
                if !is_tracked(pid) && reap(pid) {
                    REAPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            previous = current;
        }
    }

    /// Zombie children of `me` that baton did not fork, by pid, with their start time.
    fn zombies(me: i32) -> HashMap<i32, u64> {
        let mut found = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // A process that vanished meanwhile, or one we may not read: skip it.
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(stat) = parse_stat(&text) {
                if stat.state == 'Z' && stat.ppid == me && !is_tracked(pid) {
                    found.insert(pid, stat.start_time);
                }
            }
        }
        found
    }

    /// Reap `pid` if it is still our zombie; true if this call reaped it.
    fn reap(pid: i32) -> bool {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waits on exactly one positive pid (never -1 or a group) without
            // blocking; `status` is a valid, writable c_int for the duration of the call.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                return true;
            }
            // 0: not exited (cannot happen for a zombie); ECHILD: someone else reaped it.
            if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::State;

    pub(super) fn start() -> State {
        // Containers are Linux; a macOS master is never PID 1 of a container.
        State::Inactive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (we ird) (name) Z 1 4242 4242 0 -1 4228108 53 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'Z',
                ppid: 1,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("12 (sh) S"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn only_zombies_seen_twice_with_the_same_start_time_are_due() {
        let previous = HashMap::from([(10, 100), (11, 110), (12, 120)]);
        // 10: still a zombie (due); 11: reaped by someone else meanwhile; 12: pid reused
        // by a new process that is a zombie already (not due yet); 13: new zombie.
        let current = HashMap::from([(10, 100), (12, 999), (13, 130)]);
        assert_eq!(due(&previous, &current), vec![10]);
        assert!(due(&HashMap::new(), &current).is_empty());
    }

    #[test]
    fn tracked_children_are_left_alone() {
        track_child(-77);
        assert!(is_tracked(-77));
        untrack_child(-77);
        assert!(!is_tracked(-77));
    }

    #[test]
    fn reports_nothing_when_not_pid_1_nor_a_subreaper() {
        // The test process is neither (the integration test in tests/reaper.rs is a
        // subreaper in its own process).
        if std::process::id() != 1 {
            assert_eq!(start(), &State::Inactive);
            assert_eq!(reaped(), None);
        }
    }
}
