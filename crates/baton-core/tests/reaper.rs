//! The orphan reaper against real processes. This test binary runs as its own process and
//! makes itself a child subreaper, so orphans of its grandchildren are reparented to it as
//! they would be to a container's PID 1. One test function: the subreaper flag and the
//! reaper thread are per process.

#![cfg(target_os = "linux")]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use baton_core::reaper::{self, State};

fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(stat) = reaper::parse_stat(&text) {
            if stat.state == 'Z' && stat.ppid == me {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn a_subreaper_reaps_orphans_and_leaves_tracked_children_to_their_waiter() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    assert_eq!(reaper::start(), &State::Active("a child subreaper"));
    assert_eq!(reaper::reaped(), Some(0));

    // A child of ours that exits at once but is waited for only later, as a worker's waiter
    // thread might be: tracked, so the reaper must leave its status to us.
    let mut tracked = Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .expect("spawn sh");
    reaper::track_child(tracked.id() as i32);

    // Orphans: each shell exits at once, its background sleep is reparented to us.
    for _ in 0..4 {
        let status = Command::new("sh")
            .args(["-c", "sleep 0.1 & exit 0"])
            .status()
            .expect("run sh");
        assert!(status.success());
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while reaper::reaped() < Some(4) {
        assert!(
            Instant::now() < deadline,
            "4 orphans reaped within 10 s; reaped {:?}, zombies {:?}",
            reaper::reaped(),
            zombie_children()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Several scans after it exited, the tracked child is still a zombie for us to wait on.
    assert!(zombie_children().contains(&(tracked.id() as i32)));
    let status = tracked
        .wait()
        .expect("the tracked child's status was not stolen");
    assert_eq!(status.code(), Some(3));
    reaper::untrack_child(tracked.id() as i32);
    assert_eq!(reaper::reaped(), Some(4));
    assert!(zombie_children().is_empty(), "{:?}", zombie_children());
}
