//! Per-process resource figures for `baton status` (resident memory).

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

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
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
    pub fn rss_bytes(pid: i32) -> Option<u64> {
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
        if rc as usize != size {
            return None;
        }
        Some(info.pti_resident_size)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
mod imp {
    pub fn rss_bytes(_pid: i32) -> Option<u64> {
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
    fn invalid_pids() {
        assert_eq!(rss_bytes(0), None);
        assert_eq!(rss_bytes(-1), None);
        // Above the default pid_max (4194304 on 64-bit Linux, 99999 on macOS).
        assert_eq!(rss_bytes(i32::MAX), None);
    }
}
