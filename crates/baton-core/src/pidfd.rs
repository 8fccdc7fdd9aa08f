//! Process file descriptors (Linux ≥ 5.3): a worker's exit as a poller source, and signals
//! that cannot reach a recycled pid.
//!
//! `pidfd_open(pid)` returns an fd that refers to that process itself, not to its number:
//! it becomes readable when the process exits, and `pidfd_send_signal` through it fails
//! with `ESRCH` once the process is gone, even if its pid now belongs to another process.
//! The supervision loop opens one right after fork for each worker (`spawn.rs`), registers
//! it with its poller, and reaps the worker when it is readable (`event_loop/exits.rs`);
//! where this is not available (an older kernel, a seccomp filter, macOS) it falls back to
//! a waiter thread per worker.
//!
//! This module is the one place of the pidfd `unsafe` (`syscall`, `poll`).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Opens a pidfd for `pid` (close-on-exec, as the kernel always makes it). `pid` must be a
/// child not reaped yet, so that the number still names it. Elsewhere than on Linux, and on
/// kernels before 5.3 (`ENOSYS`), this fails.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to open a pidfd for pid {pid}: only a single positive pid is allowed"
            ),
        ));
    }
    imp::open(pid)
}

/// Sends the signal `sig` to the process `pidfd` refers to (`ESRCH` once it has been
/// reaped, never another process).
pub fn send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    imp::send_signal(pidfd, sig)
}

/// Whether the process `pidfd` refers to has exited (its pidfd is readable), without
/// blocking.
pub fn has_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    imp::has_exited(pidfd)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    pub(super) fn open(pid: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and a flags word (0) by value and touches no memory
        // of ours; on success it returns a new fd that nobody else owns.
        let rc =
            unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(rc).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pidfd_open returned {rc}"),
            )
        })?;
        // SAFETY: `fd` was just returned by the kernel, is open, and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(super) fn send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes an fd that is open for the call (borrowed), a
        // signal number, a null siginfo (the kernel fills in a plain kill's) and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn has_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid, writable pollfd for the duration of the call; a
            // zero timeout never blocks.
            let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
            if rc >= 0 {
                return Ok(rc > 0 && pfd.revents & libc::POLLIN != 0);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "pidfd needs Linux 5.3 or later")
    }

    pub(super) fn open(_pid: i32) -> io::Result<OwnedFd> {
        Err(unsupported())
    }

    pub(super) fn send_signal(_pidfd: BorrowedFd<'_>, _sig: libc::c_int) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn has_exited(_pidfd: BorrowedFd<'_>) -> io::Result<bool> {
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::process::Command;

    #[test]
    fn follows_a_child_until_it_is_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = open(pid).unwrap();
        assert!(!has_exited(fd.as_fd()).unwrap());
        send_signal(fd.as_fd(), libc::SIGTERM).unwrap();
        // The exit makes the fd readable; the zombie is still there, so wait() gets it.
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; -1 waits until the fd is readable.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, -1) }, 1);
        assert!(has_exited(fd.as_fd()).unwrap());
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        // Reaped: the pidfd reaches nobody, whoever has the number now.
        let e = send_signal(fd.as_fd(), libc::SIGTERM).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert!(open(0).is_err());
        assert!(open(-1).is_err());
    }
}
