//! How a worker process ended: an exit code or a fatal signal, decoded from a `waitpid`
//! status, with a human-readable form ("exited with code 1", "killed by SIGSEGV").

use std::fmt;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExitStatus {
    /// The process called `exit` (or returned from `main`) with this code (0..=255).
    Code(i32),
    /// The process was terminated by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a raw status as filled in by `waitpid` (`WIFEXITED`/`WEXITSTATUS`,
    /// `WIFSIGNALED`/`WTERMSIG`).
    ///
    /// A status that is neither (stopped/continued, only reported with `WUNTRACED` or
    /// `WCONTINUED`, which baton never asks for) decodes as `Code(-1)`.
    pub fn from_raw(status: libc::c_int) -> ExitStatus {
        if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(-1)
        }
    }

    /// True only for a normal exit with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(sig) => write!(f, "killed by {}", signal_name(sig)),
        }
    }
}

/// The conventional name of a signal number on this OS, e.g. `"SIGTERM"` for 15.
///
/// Numbers without a well-known name (real-time signals, out of range) give
/// `"signal <n>"`, e.g. `"signal 42"`.
pub fn signal_name(sig: i32) -> String {
    match known_signal_name(sig) {
        Some(name) => name.to_string(),
        None => format!("signal {sig}"),
    }
}

fn known_signal_name(sig: i32) -> Option<&'static str> {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGSYS => "SIGSYS",
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::SIGSTKFLT => "SIGSTKFLT",
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::SIGPWR => "SIGPWR",
        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        libc::SIGEMT => "SIGEMT",
        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        libc::SIGINFO => "SIGINFO",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a raw wait status the way the kernel does (same layout on Linux and macOS).
    fn exited(code: i32) -> libc::c_int {
        (code & 0xff) << 8
    }

    fn signaled(sig: i32) -> libc::c_int {
        sig & 0x7f
    }

    #[test]
    fn decodes_exit_codes() {
        assert_eq!(ExitStatus::from_raw(exited(0)), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_raw(exited(1)), ExitStatus::Code(1));
        assert_eq!(ExitStatus::from_raw(exited(255)), ExitStatus::Code(255));
        assert!(ExitStatus::from_raw(exited(0)).success());
        assert!(!ExitStatus::from_raw(exited(3)).success());
    }

    #[test]
    fn decodes_signals() {
        assert_eq!(
            ExitStatus::from_raw(signaled(libc::SIGSEGV)),
            ExitStatus::Signal(libc::SIGSEGV)
        );
        // Core-dump bit set.
        assert_eq!(
            ExitStatus::from_raw(signaled(libc::SIGABRT) | 0x80),
            ExitStatus::Signal(libc::SIGABRT)
        );
        assert!(!ExitStatus::Signal(libc::SIGTERM).success());
    }

    #[test]
    fn displays() {
        assert_eq!(ExitStatus::Code(1).to_string(), "exited with code 1");
        assert_eq!(
            ExitStatus::Signal(libc::SIGSEGV).to_string(),
            "killed by SIGSEGV"
        );
        assert_eq!(
            ExitStatus::Signal(libc::SIGKILL).to_string(),
            "killed by SIGKILL"
        );
        assert_eq!(ExitStatus::Signal(42).to_string(), "killed by signal 42");
    }

    #[test]
    fn names_all_classic_signals() {
        for sig in 1..32 {
            let name = signal_name(sig);
            assert!(name.starts_with("SIG"), "{sig} -> {name}");
        }
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(-3), "signal -3");
    }

    #[test]
    fn serializes() {
        assert_eq!(
            serde_json::to_string(&ExitStatus::Code(2)).unwrap(),
            r#"{"Code":2}"#
        );
    }
}
