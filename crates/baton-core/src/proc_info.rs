//! Per-process resource figures for `baton status` and `/metrics`: resident memory, CPU
//! time (and the CPU percentage between two samples of it), open file descriptors.

/// Resident set size of process `pid` in bytes, or `None` if unknown (no such process,
/// no permission, unsupported OS).
///
/// Linux: `/proc/<pid>/statm` resident pages × page size. macOS: `proc_pidinfo`
/// (`PROC_PIDTASKINFO`).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    imp::rss_bytes(pid)
}

/// CPU time a process has used (user + system), in ticks of `per_sec` per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// User plus system time, in ticks.
    pub ticks: u64,
    /// Ticks per second (`sysconf(_SC_CLK_TCK)` on Linux; nanoseconds on macOS).
    pub per_sec: u64,
}

impl CpuTime {
    /// The time in seconds.
    pub fn seconds(&self) -> f64 {
        if self.per_sec == 0 {
            return 0.0;
        }
        self.ticks as f64 / self.per_sec as f64
    }
}

/// CPU time process `pid` has used so far (all its threads, not its children), or `None`
/// if unknown (no such process, unsupported OS).
///
/// Linux: `utime + stime` of `/proc/<pid>/stat` in clock ticks. macOS: `proc_pidinfo`
/// (`PROC_PIDTASKINFO`) `pti_total_user + pti_total_system`, converted to nanoseconds.
pub fn cpu_time(pid: i32) -> Option<CpuTime> {
    if pid <= 0 {
        return None;
    }
    imp::cpu_time(pid)
}

/// The CPU use between two samples as a percentage of one core, as `pm2 status` and `top`
/// count it (a process busy on two cores shows 200): `ticks_delta` ticks of CPU time, at
/// `ticks_per_sec`, used over `interval` of wall-clock time. 0 for an empty interval.
pub fn cpu_percent(ticks_delta: u64, interval: std::time::Duration, ticks_per_sec: u64) -> f64 {
    let wall = interval.as_secs_f64();
    if wall <= 0.0 || ticks_per_sec == 0 {
        return 0.0;
    }
    ticks_delta as f64 / ticks_per_sec as f64 / wall * 100.0
}

/// How often [`CpuSampler`] samples: the percentage is the CPU use over about this long.
pub const CPU_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One process's CPU figures, as the last sample left them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// CPU use between the last two samples, in percent of one core (`None` until the
    /// process was sampled twice).
    pub percent: Option<f64>,
    /// CPU time used since the process started, in seconds.
    pub seconds: f64,
}

/// Samples the CPU time of a set of processes (the workers and the master) about once per
/// [`CPU_SAMPLE_INTERVAL`], keeping the previous sample per pid, so `baton status` shows
/// each one's CPU use over the last interval. Driven by the supervisor loop's own timer (no
/// thread of its own); a pid no longer sampled is forgotten.
#[derive(Debug)]
pub struct CpuSampler {
    last: std::collections::HashMap<i32, (std::time::Instant, CpuTime, Option<f64>)>,
    next_at: std::time::Instant,
}

impl CpuSampler {
    /// A sampler whose first sample is due at once.
    pub fn new(now: std::time::Instant) -> Self {
        CpuSampler {
            last: std::collections::HashMap::new(),
            next_at: now,
        }
    }

    /// When the next sample is due.
    pub fn next_at(&self) -> std::time::Instant {
        self.next_at
    }

    /// Sample `pids` with `read` (normally [`cpu_time`]) if a sample is due at `now`;
    /// returns whether it sampled.
    pub fn sample_if_due(
        &mut self,
        now: std::time::Instant,
        pids: impl IntoIterator<Item = i32>,
        read: impl Fn(i32) -> Option<CpuTime>,
    ) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + CPU_SAMPLE_INTERVAL;
        let mut next = std::collections::HashMap::new();
        for pid in pids {
            let Some(time) = read(pid) else { continue };
            let percent = self.last.get(&pid).and_then(|(at, before, _)| {
                // A reused pid (a new process) has less CPU time than the old one had.
                let delta = time.ticks.checked_sub(before.ticks)?;
                (before.per_sec == time.per_sec && now > *at)
                    .then(|| cpu_percent(delta, now.duration_since(*at), time.per_sec))
            });
            next.insert(pid, (now, time, percent));
        }
        self.last = next;
        true
    }

    /// What the last sample found for `pid`, if it was sampled.
    pub fn get(&self, pid: i32) -> Option<CpuUse> {
        self.last.get(&pid).map(|(_, time, percent)| CpuUse {
            percent: *percent,
            seconds: time.seconds(),
        })
    }
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`; macOS
/// `PROC_PIDLISTFDS`), or `None` if unknown.
pub fn open_fds(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    imp::open_fds(pid)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::CpuTime;

    pub fn cpu_time(pid: i32) -> Option<CpuTime> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(CpuTime {
            ticks: parse_stat(&text)?,
            per_sec: clock_ticks()?,
        })
    }

    /// `utime + stime` of a `/proc/<pid>/stat` line. The command name (field 2) is in
    /// parentheses and may hold spaces and parentheses, so fields are counted from the
    /// last `)`: field 3 (state) is the first after it, utime and stime are fields 14, 15.
    pub(super) fn parse_stat(text: &str) -> Option<u64> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        utime.checked_add(stime)
    }

    fn clock_ticks() -> Option<u64> {
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then_some(hz as u64)
    }

    pub fn open_fds(pid: i32) -> Option<u64> {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(dir.count() as u64)
    }

    pub fn rss_bytes(pid: i32) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no memory preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page <= 0 {
            return None;
        }
        pages.checked_mul(page as u64)
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::CpuTime;

    fn task_info(pid: i32) -> Option<libc::proc_taskinfo> {
        let size = std::mem::size_of::<libc::proc_taskinfo>();
        // SAFETY: proc_taskinfo is plain data; all-zero is a valid value.
        let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
        // SAFETY: the buffer is `info`, valid for `size` bytes of writes.
        let rc = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDTASKINFO,
                0,
                (&mut info as *mut libc::proc_taskinfo).cast::<libc::c_void>(),
                size as libc::c_int,
            )
        };
        (rc as usize == size).then_some(info)
    }

    /// `pti_total_user + pti_total_system` are in Mach absolute time units (nanoseconds on
    /// Intel, 125/3 ns on Apple silicon): converted with `mach_timebase_info` (deprecated in
    /// the libc crate in favour of the `mach2` crate, which this one call does not justify).
    pub fn cpu_time(pid: i32) -> Option<CpuTime> {
        let info = task_info(pid)?;
        let units = info.pti_total_user.checked_add(info.pti_total_system)?;
        #[allow(deprecated)]
        let (numer, denom) = {
            let mut tb = libc::mach_timebase_info { numer: 0, denom: 0 };
            // SAFETY: `tb` is valid for writes of a mach_timebase_info.
            let rc = unsafe { libc::mach_timebase_info(&mut tb) };
            if rc != 0 || tb.denom == 0 {
                return None;
            }
            (u128::from(tb.numer), u128::from(tb.denom))
        };
        let nanos = u128::from(units) * numer / denom;
        Some(CpuTime {
            ticks: u64::try_from(nanos).ok()?,
            per_sec: 1_000_000_000,
        })
    }

    pub fn open_fds(pid: i32) -> Option<u64> {
        // SAFETY: a null buffer asks for the size needed; nothing is written.
        let bytes =
            unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDLISTFDS, 0, std::ptr::null_mut(), 0) };
        if bytes <= 0 {
            return None;
        }
        // An upper bound (the kernel adds room for fds opened meanwhile): list them.
        let cap = bytes as usize / std::mem::size_of::<libc::proc_fdinfo>();
        let mut fds: Vec<libc::proc_fdinfo> = Vec::with_capacity(cap);
        // SAFETY: the buffer has room for `cap` proc_fdinfo, `bytes` bytes at most.
        let used = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDLISTFDS,
                0,
                fds.as_mut_ptr().cast::<libc::c_void>(),
                (cap * std::mem::size_of::<libc::proc_fdinfo>()) as libc::c_int,
            )
        };
        if used <= 0 {
            return None;
        }
        Some(used as u64 / std::mem::size_of::<libc::proc_fdinfo>() as u64)
    }

    pub fn rss_bytes(pid: i32) -> Option<u64> {
        task_info(pid).map(|info| info.pti_resident_size)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
mod imp {
    use super::CpuTime;

    pub fn rss_bytes(_pid: i32) -> Option<u64> {
        None
    }

    pub fn cpu_time(_pid: i32) -> Option<CpuTime> {
        None
    }

    pub fn open_fds(_pid: i32) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[test]
    fn own_rss_is_positive() {
        let rss = rss_bytes(std::process::id() as i32).unwrap();
        assert!(rss > 0);
    }

    #[test]
    fn cpu_percent_of_one_core() {
        use std::time::Duration;
        // 50 ticks at 100 Hz over 1 s: half a core.
        assert_eq!(cpu_percent(50, Duration::from_secs(1), 100), 50.0);
        // Two cores busy for 2 s: 400 ticks at 100 Hz in 2 s is 200 %.
        assert_eq!(cpu_percent(400, Duration::from_secs(2), 100), 200.0);
        // Nanosecond ticks (macOS): 250 ms of CPU in 500 ms.
        assert_eq!(
            cpu_percent(250_000_000, Duration::from_millis(500), 1_000_000_000),
            50.0
        );
        assert_eq!(cpu_percent(0, Duration::from_secs(1), 100), 0.0);
        assert_eq!(cpu_percent(10, Duration::ZERO, 100), 0.0);
        assert_eq!(cpu_percent(10, Duration::from_secs(1), 0), 0.0);
    }

    #[test]
    fn sampler_keeps_the_previous_sample_per_pid() {
        use std::cell::Cell;
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let ticks = Cell::new(1000u64);
        let read = |pid: i32| {
            (pid == 7).then(|| CpuTime {
                ticks: ticks.get(),
                per_sec: 100,
            })
        };
        let mut s = CpuSampler::new(t0);
        assert!(s.sample_if_due(t0, [7, 8], read));
        assert_eq!(
            s.get(7),
            Some(CpuUse {
                percent: None,
                seconds: 10.0
            })
        );
        assert_eq!(s.get(8), None); // unreadable: not sampled
                                    // Not due yet: nothing changes.
        ticks.set(1100);
        assert!(!s.sample_if_due(t0 + Duration::from_millis(500), [7], read));
        // 150 ticks at 100 Hz in 1 s of wall time: 1.5 cores.
        ticks.set(1150);
        assert!(s.sample_if_due(t0 + CPU_SAMPLE_INTERVAL, [7], read));
        assert_eq!(s.get(7).unwrap().percent, Some(150.0));
        // A pid reused by a new process (less CPU time): no percentage until its next sample.
        ticks.set(3);
        assert!(s.sample_if_due(t0 + 2 * CPU_SAMPLE_INTERVAL, [7], read));
        assert_eq!(s.get(7).unwrap().percent, None);
        // A pid no longer listed is forgotten.
        assert!(s.sample_if_due(t0 + 3 * CPU_SAMPLE_INTERVAL, [], read));
        assert_eq!(s.get(7), None);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 99 0 0";
        assert_eq!(imp::parse_stat(line), Some(22));
        assert_eq!(imp::parse_stat("4242 (short) S 1"), None);
        assert_eq!(imp::parse_stat("no parenthesis"), None);
    }

    #[cfg(any(target_os = "linux", target_os = "macos"))]
    #[test]
    fn own_cpu_time_grows_and_fds_are_counted() {
        let pid = std::process::id() as i32;
        let before = cpu_time(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let after = cpu_time(pid).unwrap();
        assert!(after.ticks > before.ticks, "{before:?} -> {after:?}");
        assert!(after.seconds() > 0.0);
        assert!(open_fds(pid).unwrap() >= 3);
    }

    #[test]
    fn invalid_pids() {
        assert_eq!(cpu_time(0), None);
        assert_eq!(open_fds(-1), None);
        assert_eq!(rss_bytes(0), None);
        assert_eq!(rss_bytes(-1), None);
        // Above the default pid_max (4194304 on 64-bit Linux, 99999 on macOS).
        assert_eq!(rss_bytes(i32::MAX), None);
    }
}
