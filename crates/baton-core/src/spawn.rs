//! fork/exec of one worker process, waiting for it, and signalling it.
//!
//! All of baton's fork/exec `unsafe` lives here. The master is multi-threaded (Node, libuv,
//! our event loop), so between `fork` and `execve` the child runs only async-signal-safe
//! calls on memory prepared before the fork: no allocation, no locks, no panics.
//!
//! Worker fd layout (`docs/design.md#worker-protocol`): 0 = `/dev/null`, 1 and 2 = pipes
//! the master relays (`log_relay.rs`), 3..3+n = the listening sockets in order (systemd
//! `LISTEN_FDS` style), 3+n = the control channel (an `AF_UNIX` stream socketpair, also
//! Node's IPC channel).
//! Every other fd is closed.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::exit_status::ExitStatus;

/// What to run as a worker and how.
#[derive(Debug, Clone, Default)]
pub struct SpawnSpec {
    /// The program to execute (absolute path, e.g. the `node` binary). Not searched in PATH.
    pub program: PathBuf,
    /// `argv[1..]`; `argv[0]` is `program`.
    pub args: Vec<String>,
    /// The child's base environment. [`spawn`] removes from it `NOTIFY_SOCKET`,
    /// `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, `LISTEN_PIDFDID`, `NODE_CHANNEL_FD`,
    /// `NODE_CHANNEL_SERIALIZATION_MODE`, `NODE_UNIQUE_ID` (and `BATON_CONTROL_FD`), then
    /// adds the worker protocol variables.
    pub env: Vec<(String, String)>,
    /// Working directory of the child; `None` = the master's.
    pub cwd: Option<PathBuf>,
    /// Master-owned listening sockets; they become fds 3, 4, ... in this order.
    pub listen_fds: Vec<RawFd>,
    /// One name per listening socket (no ':'); joined with ':' into `LISTEN_FDNAMES`.
    pub listen_names: Vec<String>,
    /// Run as this user and group: `setgroups`, `setgid`, then `setuid`; then, when the uid
    /// is given (Linux), every capability set is emptied and `PR_SET_NO_NEW_PRIVS` set;
    /// only then the death
    /// signal (a credential change clears it). `setgroups` failing for lack of privilege
    /// is skipped only when the uid and gid are the master's own (nothing changes).
    pub credentials: Option<crate::identity::Credentials>,
    /// Open a pidfd for the child right after fork ([`SpawnedChild::pidfd`], Linux ≥ 5.3).
    pub pidfd: bool,
}

/// A started worker and the master's ends of its pipes. The caller must eventually reap
/// the worker with [`wait_exit`] (dropping this value neither kills nor reaps it).
#[derive(Debug)]
pub struct SpawnedChild {
    /// The worker's process id (also its process group id).
    pub pid: i32,
    /// Master end of the control socketpair (newline-delimited JSON); close-on-exec,
    /// non-blocking.
    pub control: OwnedFd,
    /// Read end of the worker's stdout pipe; close-on-exec, non-blocking.
    pub stdout: OwnedFd,
    /// Read end of the worker's stderr pipe; close-on-exec, non-blocking.
    pub stderr: OwnedFd,
    /// With [`SpawnSpec::pidfd`]: the worker's pidfd (close-on-exec; see `pidfd.rs`), or
    /// why it could not be opened. `None` when not asked for.
    pub pidfd: Option<io::Result<OwnedFd>>,
}

/// A worker that could not be started, naming the program and the failed step.
#[derive(Debug)]
pub struct SpawnError {
    /// The program that was to be run.
    pub program: String,
    /// The step that failed: `"prepare"`, `"open /dev/null"`, `"pipe"`, `"socketpair"`,
    /// `"fcntl"`, `"fork"`, `"read exec status"`, or in the child `"dup"`, `"setpgid"`,
    /// `"prctl"`, `"chdir"`, `"setgid"`, `"setgroups"`, `"setuid"`, `"execve"`.
    pub step: &'static str,
    /// The OS error (for `chdir`/`setgid`/`setgroups`/`setuid` its message also names the
    /// directory or id).
    pub source: io::Error,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.program;
        match self.step {
            "execve" => write!(f, "cannot start {p}: execve failed: {}", self.source),
            "dup" => write!(
                f,
                "cannot start {p}: cannot set up the worker's file descriptors (is every listening socket still open?): {}",
                self.source
            ),
            "chdir" | "setgid" | "setgroups" | "setuid" | "prepare" => {
                write!(f, "cannot start {p}: {}", self.source)
            }
            step => write!(f, "cannot start {p}: {step} failed: {}", self.source),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A signal baton sends to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: graceful stop.
    Term,
    /// `SIGKILL`: immediate stop.
    Kill,
    /// `SIGINT`.
    Int,
    /// `SIGHUP`.
    Hup,
}

impl Signal {
    /// The OS signal number.
    pub fn as_raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Int => libc::SIGINT,
            Signal::Hup => libc::SIGHUP,
        }
    }
}

/// Sends `sig` to the process `pid`. `ESRCH` (no such process) is returned as an error
/// like any other; callers that race with exits ignore it. `pid` must be positive
/// (process groups and "every process" are refused).
pub fn send_signal(pid: i32, sig: Signal) -> io::Result<()> {
    signal_child(pid, None, sig)
}

/// [`send_signal`], through the child's pidfd when there is one (`pidfd_send_signal`: once
/// the child is reaped this fails with `ESRCH` instead of reaching whoever has its pid
/// now; where `pidfd_send_signal` itself is refused with `ENOSYS`, the pid is used). `pid`
/// is checked the same way in both cases.
pub fn signal_child(pid: i32, pidfd: Option<BorrowedFd<'_>>, sig: Signal) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}: only a single positive pid is allowed"),
        ));
    }
    if let Some(fd) = pidfd {
        match crate::pidfd::send_signal(fd, sig.as_raw()) {
            // A filter that allows pidfd_open but not pidfd_send_signal: use the pid.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            done => return done,
        }
    }
    // SAFETY: kill() takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig.as_raw()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Blocks until the process `pid` (a child of this process) has exited, WITHOUT reaping
/// it (`waitid(WNOWAIT)`): it stays a zombie, so its pid cannot be recycled and a signal
/// sent to it meanwhile reaches nobody else. The supervision loop, told of the exit, reaps
/// it with [`wait_exit`] (which then returns at once) and sends it nothing after that.
pub fn wait_exited(pid: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to wait for pid {pid}: only a single positive pid is allowed"),
        ));
    }
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid and writable for the duration of the call; P_PID with a
        // positive pid waits for that one child only.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Blocks until the process `pid` (a child of this process) exits and reaps it.
///
/// Waits on exactly that pid (never `waitpid(-1)`, which would steal libuv's children;
/// `docs/design.md#pitfalls`), retrying on `EINTR`.
pub fn wait_exit(pid: i32) -> io::Result<ExitStatus> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to wait for pid {pid}: only a single positive pid is allowed"),
        ));
    }
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the duration of the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            crate::reaper::untrack_child(pid);
            return Ok(ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            crate::reaper::untrack_child(pid);
            return Err(err);
        }
    }
}

/// Environment variables never passed through from the base environment: they belong to
/// the master (systemd, Node IPC) or are set by [`spawn`] itself.
const REMOVED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_PIDFDID",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
    "BATON_CONTROL_FD",
    "BATON_UPGRADE",
];

const LISTEN_PID_PREFIX: &str = "LISTEN_PID=";
/// Room for the digits of any pid (u64::MAX has 20 digits).
const PID_DIGITS: usize = 20;

/// Child-side failure steps, reported through the exec-error pipe as an index.
const CHILD_STEPS: &[&str] = &[
    "dup",
    "setpgid",
    "prctl",
    "chdir",
    "setgid",
    "setgroups",
    "setuid",
    "execve",
    "capset",
    "no_new_privs",
];
const STEP_DUP: u32 = 0;
const STEP_SETPGID: u32 = 1;
#[cfg(any(target_os = "linux", target_os = "android"))]
const STEP_PRCTL: u32 = 2;
const STEP_CHDIR: u32 = 3;
const STEP_SETGID: u32 = 4;
const STEP_SETGROUPS: u32 = 5;
const STEP_SETUID: u32 = 6;
const STEP_EXECVE: u32 = 7;
#[cfg(any(target_os = "linux", target_os = "android"))]
const STEP_CAPS: u32 = 8;
#[cfg(any(target_os = "linux", target_os = "android"))]
const STEP_NNP: u32 = 9;

/// Highest signal number whose disposition the child resets.
const MAX_SIGNAL: libc::c_int = if cfg!(any(target_os = "linux", target_os = "android")) {
    64
} else {
    31
};

/// Upper bound for the close() loop used when close_range is unavailable.
const CLOSE_LOOP_CAP: libc::rlim_t = 65536;

/// Starts a worker as described by `spec` (see the module documentation for its fds and
/// [`SpawnSpec::env`] for its environment) and returns once it has exec'd.
///
/// Environment added: `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID` (only when there is at
/// least one listening socket), `BATON_CONTROL_FD` and `NODE_CHANNEL_FD` (= 3+n) and
/// `NODE_CHANNEL_SERIALIZATION_MODE=json`.
///
/// The child gets its own process group, an empty signal mask and default signal
/// dispositions. On Linux it also gets `PR_SET_PDEATHSIG(SIGTERM)`: that fires when the
/// *thread* that called `spawn` exits, so call it from a thread that lives as long as the
/// master (the event loop thread).
///
/// A failure in the child before or at `execve` is reported back as a [`SpawnError`]
/// naming the step (the child is reaped); no fd is leaked on any path.
pub fn spawn(spec: &SpawnSpec) -> Result<SpawnedChild, SpawnError> {
    spawn_inner(spec, false)
}

fn spawn_inner(spec: &SpawnSpec, force_close_loop: bool) -> Result<SpawnedChild, SpawnError> {
    let program_name = spec.program.display().to_string();
    let fail = |step: &'static str, source: io::Error| SpawnError {
        program: program_name.clone(),
        step,
        source,
    };
    let invalid = |msg: String| fail("prepare", io::Error::new(io::ErrorKind::InvalidInput, msg));

    // ---- Validate and build everything the child needs, before fork. ----
    let n = spec.listen_fds.len();
    if spec.listen_names.len() != n {
        return Err(invalid(format!(
            "{} listen names given for {} listening sockets; they must match one to one",
            spec.listen_names.len(),
            n
        )));
    }
    if let Some(name) = spec.listen_names.iter().find(|s| s.contains(':')) {
        return Err(invalid(format!(
            "listen name \"{name}\" contains ':', which separates names in LISTEN_FDNAMES"
        )));
    }
    if let Some(fd) = spec.listen_fds.iter().find(|fd| **fd < 0) {
        return Err(invalid(format!("invalid listening socket fd {fd}")));
    }
    let n_c = libc::c_int::try_from(n)
        .ok()
        .filter(|n| *n < 1 << 20)
        .ok_or_else(|| invalid(format!("too many listening sockets ({n})")))?;

    let program = cstring(spec.program.as_os_str(), "program path").map_err(invalid)?;
    let mut argv_owned = Vec::with_capacity(spec.args.len() + 1);
    argv_owned.push(program.clone());
    for a in &spec.args {
        argv_owned.push(cstring(OsStr::new(a), "argument").map_err(invalid)?);
    }
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());

    let control_fd = 3 + n_c;
    let mut env_bufs: Vec<Vec<u8>> = Vec::with_capacity(spec.env.len() + 6);
    for (k, v) in &spec.env {
        if REMOVED_ENV.contains(&k.as_str()) {
            continue;
        }
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(format!(
                "invalid environment variable {k:?} (names must be non-empty without '=' or NUL; values without NUL)"
            )));
        }
        env_bufs.push(env_entry(k, v));
    }
    let mut listen_pid_index = None;
    if n > 0 {
        env_bufs.push(env_entry("LISTEN_FDS", &n.to_string()));
        env_bufs.push(env_entry("LISTEN_FDNAMES", &spec.listen_names.join(":")));
        listen_pid_index = Some(env_bufs.len());
        env_bufs.push(env_entry("LISTEN_PID", &"0".repeat(PID_DIGITS)));
    }
    env_bufs.push(env_entry("BATON_CONTROL_FD", &control_fd.to_string()));
    env_bufs.push(env_entry("NODE_CHANNEL_FD", &control_fd.to_string()));
    env_bufs.push(env_entry("NODE_CHANNEL_SERIALIZATION_MODE", "json"));
    // The child patches the pid digits in place (no allocation after fork). `as_mut_ptr`
    // and the `as_ptr` calls below do not invalidate each other.
    let listen_pid_digits: *mut u8 = match listen_pid_index {
        Some(i) => env_bufs[i][LISTEN_PID_PREFIX.len()..].as_mut_ptr(),
        None => std::ptr::null_mut(),
    };
    let mut envp: Vec<*const libc::c_char> = env_bufs
        .iter()
        .map(|b| b.as_ptr().cast::<libc::c_char>())
        .collect();
    envp.push(std::ptr::null());

    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring(dir.as_os_str(), "working directory").map_err(invalid)?),
        None => None,
    };

    // ---- The fds (all close-on-exec in the master, so no other child inherits them). ----
    let devnull: OwnedFd = File::open("/dev/null")
        .map_err(|e| fail("open /dev/null", e))?
        .into();
    let (stdout_r, stdout_w) = std::io::pipe().map_err(|e| fail("pipe", e))?;
    let (stdout_r, stdout_w): (OwnedFd, OwnedFd) = (stdout_r.into(), stdout_w.into());
    let (stderr_r, stderr_w) = std::io::pipe().map_err(|e| fail("pipe", e))?;
    let (stderr_r, stderr_w): (OwnedFd, OwnedFd) = (stderr_r.into(), stderr_w.into());
    let (control_parent, control_child) = UnixStream::pair().map_err(|e| fail("socketpair", e))?;
    control_parent
        .set_nonblocking(true)
        .map_err(|e| fail("fcntl", e))?;
    let (control_parent, control_child): (OwnedFd, OwnedFd) =
        (control_parent.into(), control_child.into());
    set_nonblocking(stdout_r.as_raw_fd()).map_err(|e| fail("fcntl", e))?;
    set_nonblocking(stderr_r.as_raw_fd()).map_err(|e| fail("fcntl", e))?;
    let (exec_r, exec_w) = std::io::pipe().map_err(|e| fail("pipe", e))?;
    let (exec_r, exec_w): (OwnedFd, OwnedFd) = (exec_r.into(), exec_w.into());

    let mut sources: Vec<RawFd> = Vec::with_capacity(n + 4);
    let mut targets: Vec<RawFd> = Vec::with_capacity(n + 4);
    sources.push(devnull.as_raw_fd());
    targets.push(0);
    sources.push(stdout_w.as_raw_fd());
    targets.push(1);
    sources.push(stderr_w.as_raw_fd());
    targets.push(2);
    for (i, fd) in spec.listen_fds.iter().enumerate() {
        sources.push(*fd);
        targets.push(3 + i as RawFd);
    }
    sources.push(control_child.as_raw_fd());
    targets.push(control_fd);
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let groups: Vec<libc::gid_t> = spec
        .credentials
        .as_ref()
        .map(|c| c.groups.iter().map(|g| *g as libc::gid_t).collect())
        .unwrap_or_default();
    // An unprivileged master may only keep its own identity; then a failing setgroups
    // (EPERM: no CAP_SETGID) is no loss, as the worker keeps the master's own groups.
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (my_uid, my_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let own_identity = spec
        .credentials
        .as_ref()
        .is_some_and(|c| c.uid.is_none_or(|u| u == my_uid) && c.gid == my_gid);

    let plan = ChildPlan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_pid_digits,
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        gid: spec.credentials.as_ref().map(|c| c.gid),
        uid: spec.credentials.as_ref().and_then(|c| c.uid),
        groups: &groups,
        set_groups: spec.credentials.is_some(),
        drop_privileges: spec.credentials.as_ref().is_some_and(|c| c.uid.is_some()),
        own_identity,
        sources: &sources,
        targets: &targets,
        exec_err_fd: exec_w.as_raw_fd(),
        // The exec-error pipe sits right above the last target; everything above it is
        // closed.
        err_target: control_fd + 1,
        close_loop_limit: close_loop_limit(),
        force_close_loop,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        master_pid: std::process::id() as libc::pid_t,
        default_action: default_sigaction(),
        empty_set: empty_sigset(),
    };

    // ---- fork ----
    let pid = fork_with_signals_blocked(&plan, &mut scratch).map_err(|e| fail("fork", e))?;
    // Not reaped yet, so the number names our child: its pidfd is the child's.
    let pidfd = spec.pidfd.then(|| crate::pidfd::open(pid));

    // Parent: close the child's ends, then learn whether exec succeeded.
    drop(exec_w);
    drop(stdout_w);
    drop(stderr_w);
    drop(control_child);
    drop(devnull);

    match read_exec_report(&exec_r) {
        Ok(None) => Ok(SpawnedChild {
            pid,
            control: control_parent,
            stdout: stdout_r,
            stderr: stderr_r,
            pidfd,
        }),
        Ok(Some((errno, step))) => {
            let _ = wait_exit(pid);
            let os = io::Error::from_raw_os_error(errno);
            let step_name = CHILD_STEPS.get(step as usize).copied().unwrap_or("exec");
            let source = match step {
                STEP_CHDIR => io::Error::new(
                    os.kind(),
                    format!(
                        "cannot change directory to {}: {os}",
                        spec.cwd.as_deref().unwrap_or(Path::new("?")).display()
                    ),
                ),
                STEP_SETGID | STEP_SETGROUPS => io::Error::new(
                    os.kind(),
                    format!(
                        "cannot switch to group id {} ({step_name}): {os} (running as another user or group needs a privileged master)",
                        spec.credentials.as_ref().map_or(0, |c| c.gid)
                    ),
                ),
                STEP_SETUID => io::Error::new(
                    os.kind(),
                    format!(
                        "cannot switch to user id {} (setuid): {os} (running as another user needs a privileged master)",
                        spec.credentials.as_ref().and_then(|c| c.uid).unwrap_or(0)
                    ),
                ),
                _ => os,
            };
            Err(fail(step_name, source))
        }
        Err(e) => {
            // Could not learn the outcome: do not leave a half-started worker behind.
            let _ = send_signal(pid, Signal::Kill);
            let _ = wait_exit(pid);
            Err(fail("read exec status", e))
        }
    }
}

fn cstring(s: &OsStr, what: &str) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("the {what} {s:?} contains a NUL byte"))
}

fn env_entry(k: &str, v: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(k.len() + v.len() + 2);
    b.extend_from_slice(k.as_bytes());
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    b.push(0);
    b
}

/// Reads the child's exec report: `None` = EOF (exec succeeded), `Some((errno, step))`.
fn read_exec_report(fd: &OwnedFd) -> io::Result<Option<(i32, u32)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer/length pair denotes the unfilled tail of `buf`.
        let rc = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast::<libc::c_void>(),
                buf.len() - got,
            )
        };
        if rc > 0 {
            got += rc as usize;
        } else if rc == 0 {
            break;
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
    match got {
        0 => Ok(None),
        8 => {
            let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let step = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            Ok(Some((errno, step)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated exec status from the child",
        )),
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The soft RLIMIT_NOFILE, capped, read before fork for the close() fallback.
fn close_loop_limit() -> RawFd {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let cur = if rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY {
        rl.rlim_cur.min(CLOSE_LOOP_CAP)
    } else {
        CLOSE_LOOP_CAP
    };
    cur as RawFd
}

fn default_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zero is a valid value; we then
    // set the handler to SIG_DFL and empty the mask through libc.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        sa
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

/// Everything the child needs, prepared before fork so that it never allocates.
struct ChildPlan<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null, or the `PID_DIGITS + 1` bytes after `LISTEN_PID=`.
    listen_pid_digits: *mut u8,
    /// Null or the working directory.
    cwd: *const libc::c_char,
    gid: Option<u32>,
    uid: Option<u32>,
    /// Every group of the worker (primary first), for `setgroups`.
    groups: &'a [libc::gid_t],
    /// Credentials were given: set the groups.
    set_groups: bool,
    /// A uid was given: after the switch clear every capability set and set
    /// `PR_SET_NO_NEW_PRIVS` (a `gid`-only worker stays the master's user, root included).
    /// Read on Linux only: macOS has neither capability sets nor `no_new_privs`, the
    /// `setuid` to another user is the whole drop there.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    drop_privileges: bool,
    /// The credentials are the master's own uid and gid: a `setgroups` refused for lack
    /// of privilege (EPERM) is skipped, the worker keeps the master's (same user's) groups.
    own_identity: bool,
    sources: &'a [RawFd],
    targets: &'a [RawFd],
    exec_err_fd: RawFd,
    err_target: RawFd,
    close_loop_limit: RawFd,
    force_close_loop: bool,
    /// The master's pid, to detect that it died before `PR_SET_PDEATHSIG` took effect.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    master_pid: libc::pid_t,
    default_action: libc::sigaction,
    empty_set: libc::sigset_t,
}

/// Forks with every signal blocked in the calling thread (so no master signal handler,
/// e.g. libuv's, runs in the child before the dispositions are reset), then restores the
/// caller's mask. Returns the child's pid in the parent; never returns in the child.
fn fork_with_signals_blocked(plan: &ChildPlan<'_>, scratch: &mut [RawFd]) -> io::Result<i32> {
    // SAFETY: sigset_t is plain data for which all-zero is a valid value.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is initialised by sigfillset; pthread_sigmask only reads `all` and
    // writes `old`, both valid.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: fork() is safe to call; in the child we only run `child_after_fork`, which
    // uses async-signal-safe calls on memory prepared before the fork and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see child_after_fork's contract.
        unsafe { child_after_fork(plan, scratch) }
    }
    let fork_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(fork_err);
    }
    // Ours to wait for (wait_exit): the orphan reaper leaves it alone.
    crate::reaper::track_child(pid);
    Ok(pid)
}

/// Reports `(errno, step)` on the exec-error pipe and exits with 127.
///
/// # Safety
/// Child only; async-signal-safe.
unsafe fn child_fail(report_fd: RawFd, errno: i32, step: u32) -> ! {
    let mut buf = [0u8; 8];
    let e = errno.to_ne_bytes();
    let s = step.to_ne_bytes();
    let mut i = 0;
    while i < 4 {
        buf[i] = e[i];
        buf[i + 4] = s[i];
        i += 1;
    }
    loop {
        let rc = libc::write(report_fd, buf.as_ptr().cast::<libc::c_void>(), buf.len());
        if rc >= 0 || errno_now() != libc::EINTR {
            break;
        }
    }
    libc::_exit(127)
}

/// The calling thread's errno (async-signal-safe: reads a thread-local int).
fn errno_now() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child between fork and exec. Only async-signal-safe calls; no allocation; no
/// panicking operations (all indexing is within bounds by construction).
///
/// # Safety
/// Must be called only in a freshly forked child, with `plan` and `scratch` prepared by
/// `spawn_inner` (same lengths for sources/targets/scratch, valid C strings/arrays).
unsafe fn child_after_fork(plan: &ChildPlan<'_>, scratch: &mut [RawFd]) -> ! {
    let mut report_fd = plan.exec_err_fd;

    // 1. LISTEN_PID=<our pid>, written in place.
    if !plan.listen_pid_digits.is_null() {
        write_pid_digits(plan.listen_pid_digits, libc::getpid());
    }

    // 2. Default signal dispositions (signals stay blocked until just before exec).
    let mut sig = 1;
    while sig <= MAX_SIGNAL {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // Errors (e.g. glibc's reserved real-time signals) are irrelevant.
            libc::sigaction(sig, &plan.default_action, std::ptr::null_mut());
        }
        sig += 1;
    }

    // 3. Own process group: a terminal Ctrl-C reaches only the master.
    if libc::setpgid(0, 0) != 0 {
        child_fail(report_fd, errno_now(), STEP_SETPGID);
    }

    // 4. fds. First copy every source (and the error pipe) above all targets, so that no
    //    dup2 below can clobber a source that happens to sit on a target number. Each
    //    dup2 then has distinct old/new fds and so always yields a fresh fd without
    //    FD_CLOEXEC (the dup2(3, 3) pitfall, docs/design.md#pitfalls); we clear the flag anyway.
    let above = plan.err_target + 1;
    let err_tmp = libc::fcntl(plan.exec_err_fd, libc::F_DUPFD, above);
    if err_tmp < 0 {
        child_fail(report_fd, errno_now(), STEP_DUP);
    }
    let count = plan.sources.len();
    let mut i = 0;
    while i < count {
        let fd = libc::fcntl(plan.sources[i], libc::F_DUPFD, above);
        if fd < 0 {
            child_fail(report_fd, errno_now(), STEP_DUP);
        }
        scratch[i] = fd;
        i += 1;
    }
    if dup2_retry(err_tmp, plan.err_target) < 0
        || libc::fcntl(plan.err_target, libc::F_SETFD, libc::FD_CLOEXEC) < 0
    {
        child_fail(report_fd, errno_now(), STEP_DUP);
    }
    report_fd = plan.err_target;
    let mut i = 0;
    while i < count {
        let target = plan.targets[i];
        if dup2_retry(scratch[i], target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
            child_fail(report_fd, errno_now(), STEP_DUP);
        }
        i += 1;
    }
    close_from(above, plan.close_loop_limit, plan.force_close_loop);

    // 5. Working directory, then identity: groups, group, user, in that order (each
    //    needs the privilege the next one drops).
    if !plan.cwd.is_null() && libc::chdir(plan.cwd) != 0 {
        child_fail(report_fd, errno_now(), STEP_CHDIR);
    }
    if plan.set_groups
        && libc::setgroups(plan.groups.len() as _, plan.groups.as_ptr()) != 0
        && !(plan.own_identity && errno_now() == libc::EPERM)
    {
        child_fail(report_fd, errno_now(), STEP_SETGROUPS);
    }
    if let Some(gid) = plan.gid {
        if libc::setgid(gid as libc::gid_t) != 0 {
            child_fail(report_fd, errno_now(), STEP_SETGID);
        }
    }
    if let Some(uid) = plan.uid {
        if libc::setuid(uid as libc::uid_t) != 0 {
            child_fail(report_fd, errno_now(), STEP_SETUID);
        }
    }

    // 5b. Nothing of the master's privileges survives the switch (Linux): every
    //     capability set emptied (a non-root master given ambient capabilities keeps its
    //     permitted set across a setuid to another non-root uid, and would pass ambient
    //     and inheritable ones through exec), and no exec may gain privileges again
    //     (set-user-ID binaries, file capabilities).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if plan.drop_privileges {
        clear_capabilities(report_fd);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            child_fail(report_fd, errno_now(), STEP_NNP);
        }
    }

    // 6. Die with the master (Linux). After the identity change, which clears the death
    //    signal; then check the parent again, in case the master died before prctl.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
            child_fail(report_fd, errno_now(), STEP_PRCTL);
        }
        if libc::getppid() != plan.master_pid {
            libc::_exit(1);
        }
    }

    // 7. Empty signal mask, then exec.
    libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_set, std::ptr::null_mut());
    libc::execve(plan.program, plan.argv, plan.envp);
    child_fail(report_fd, errno_now(), STEP_EXECVE)
}

/// `struct __user_cap_header_struct` of `capset(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of `capset(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empty the effective, permitted and inheritable capability sets (`capset`, version 3:
/// two 32-bit words) and the ambient set (`PR_CAP_AMBIENT_CLEAR_ALL`; `EINVAL` before
/// Linux 4.3, which had no ambient set, is fine). Dropping capabilities needs none.
///
/// # Safety
/// Child only; async-signal-safe (raw system calls on stack memory).
#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn clear_capabilities(report_fd: RawFd) {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    if libc::syscall(
        libc::SYS_capset,
        &mut header as *mut CapHeader,
        data.as_ptr(),
    ) != 0
    {
        child_fail(report_fd, errno_now(), STEP_CAPS);
    }
    if libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    ) != 0
        && errno_now() != libc::EINVAL
    {
        child_fail(report_fd, errno_now(), STEP_CAPS);
    }
}

/// # Safety
/// Child only; async-signal-safe.
unsafe fn dup2_retry(from: RawFd, to: RawFd) -> libc::c_int {
    loop {
        let rc = libc::dup2(from, to);
        if rc >= 0 || errno_now() != libc::EINTR {
            return rc;
        }
    }
}

/// Closes every fd >= `first`: `close_range` on Linux, else (or on ENOSYS) a close loop
/// up to `limit`.
///
/// # Safety
/// Child only; async-signal-safe.
unsafe fn close_from(first: RawFd, limit: RawFd, force_loop: bool) {
    #[cfg(target_os = "linux")]
    {
        if !force_loop
            && libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            ) == 0
        {
            return;
        }
    }
    let _ = force_loop;
    let mut fd = first;
    while fd < limit {
        libc::close(fd);
        fd += 1;
    }
}

/// Writes the decimal digits of `pid` followed by a NUL at `dst` (room for
/// `PID_DIGITS + 1` bytes).
///
/// # Safety
/// `dst` must point to at least `PID_DIGITS + 1` writable bytes. Async-signal-safe.
unsafe fn write_pid_digits(dst: *mut u8, pid: libc::pid_t) {
    let mut tmp = [0u8; PID_DIGITS];
    let mut n = pid.unsigned_abs() as u64;
    let mut start = PID_DIGITS;
    loop {
        start -= 1;
        tmp[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    let mut j = 0;
    while start + j < PID_DIGITS {
        *dst.add(j) = tmp[start + j];
        j += 1;
    }
    *dst.add(j) = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    fn base_env() -> Vec<(String, String)> {
        vec![
            ("PATH".into(), "/usr/bin:/bin:/usr/sbin:/sbin".into()),
            ("NOTIFY_SOCKET".into(), "/run/systemd/notify".into()),
            ("LISTEN_FDS".into(), "7".into()),
            ("LISTEN_PID".into(), "1".into()),
            ("NODE_UNIQUE_ID".into(), "x".into()),
            ("NODE_CHANNEL_FD".into(), "9".into()),
            ("KEEP_ME".into(), "kept".into()),
        ]
    }

    fn sh(script: &str) -> SpawnSpec {
        SpawnSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: base_env(),
            ..SpawnSpec::default()
        }
    }

    fn blocking(fd: OwnedFd) -> File {
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            assert!(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0);
        }
        File::from(fd)
    }

    /// Runs to completion, returning (stderr text, exit status).
    fn run(spec: &SpawnSpec) -> (String, ExitStatus) {
        let child = spawn(spec).unwrap();
        let mut out = String::new();
        blocking(child.stderr).read_to_string(&mut out).unwrap();
        (out, wait_exit(child.pid).unwrap())
    }

    fn is_cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn environment_with_listen_fds() {
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut spec = sh(
            r#"echo "$$|$LISTEN_PID|$LISTEN_FDS|$LISTEN_FDNAMES|$BATON_CONTROL_FD|$NODE_CHANNEL_FD|$NODE_CHANNEL_SERIALIZATION_MODE|${NOTIFY_SOCKET-unset}|${NODE_UNIQUE_ID-unset}|$KEEP_ME" >&2"#,
        );
        spec.listen_fds = vec![l1.as_raw_fd(), l2.as_raw_fd()];
        spec.listen_names = vec!["web".into(), "admin".into()];
        let (out, status) = run(&spec);
        assert_eq!(status, ExitStatus::Code(0), "{out}");
        let fields: Vec<&str> = out.trim_end().split('|').collect();
        assert_eq!(fields.len(), 10, "{out}");
        assert_eq!(
            fields[0], fields[1],
            "LISTEN_PID must equal the child's pid: {out}"
        );
        assert_eq!(
            &fields[2..],
            &["2", "web:admin", "5", "5", "json", "unset", "unset", "kept"],
            "{out}"
        );
    }

    #[test]
    fn environment_without_listen_fds() {
        let spec = sh(
            r#"echo "${LISTEN_PID-unset}|${LISTEN_FDS-unset}|${LISTEN_FDNAMES-unset}|$BATON_CONTROL_FD|$NODE_CHANNEL_FD" >&2"#,
        );
        let (out, status) = run(&spec);
        assert!(status.success());
        assert_eq!(out, "unset|unset|unset|3|3\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn child_has_exactly_the_expected_fds() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // `ls` runs in its own process, so its directory fd does not show up in the
        // shell's table; `exec 1>&2` avoids the fd dash saves for a `>&2` redirection.
        let mut spec = sh(r#"exec 1>&2; ls /proc/$$/fd; readlink /proc/$$/fd/3 /proc/$$/fd/0"#);
        spec.listen_fds = vec![l.as_raw_fd()];
        spec.listen_names = vec!["web".into()];
        let (out, status) = run(&spec);
        assert!(status.success(), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..5], &["0", "1", "2", "3", "4"], "{out}");
        let parent_link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        assert_eq!(lines[5], parent_link.to_str().unwrap(), "{out}");
        assert_eq!(lines[6], "/dev/null", "{out}");
        assert_eq!(lines.len(), 7, "{out}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn close_loop_fallback_also_closes_everything() {
        let spec = sh(r#"exec 1>&2; ls /proc/$$/fd"#);
        let child = spawn_inner(&spec, true).unwrap();
        let mut out = String::new();
        blocking(child.stderr).read_to_string(&mut out).unwrap();
        assert!(wait_exit(child.pid).unwrap().success());
        assert_eq!(out, "0\n1\n2\n3\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn child_signal_state_and_process_group() {
        // The test process ignores SIGPIPE (Rust runtime) and the spawning thread blocks
        // every signal around fork: none of that may reach the worker. `exec grep` reads
        // the state the worker's program starts with (a waiting dash blocks signals).
        let spec = sh(
            r#"read -r line < /proc/$$/stat; set -- $line; echo "pid=$1 pgid=$5" >&2; exec grep -E '^(SigBlk|SigIgn)' /proc/self/status >&2"#,
        );
        let (out, status) = run(&spec);
        assert!(status.success(), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "SigBlk:\t0000000000000000", "{out}");
        // glibc reserves signals 32 and 33 (its sigaction refuses them, and it sets them
        // up itself in every process); everything else must be at its default.
        let ignored = u64::from_str_radix(lines[2].trim_start_matches("SigIgn:\t"), 16).unwrap();
        assert_eq!(ignored & !(0b11 << 31), 0, "{out}");
        let (pid, pgid) = lines[0].split_once(' ').unwrap();
        assert_eq!(
            &pid[4..],
            &pgid[5..],
            "worker must lead its own process group: {out}"
        );
    }

    #[test]
    fn parent_ends_are_cloexec_and_nonblocking() {
        let child = spawn(&sh("exit 0")).unwrap();
        for fd in [
            child.control.as_raw_fd(),
            child.stdout.as_raw_fd(),
            child.stderr.as_raw_fd(),
        ] {
            assert!(is_cloexec(fd));
            // SAFETY: F_GETFL on an fd we own.
            let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert!(fl & libc::O_NONBLOCK != 0);
        }
        assert_eq!(wait_exit(child.pid).unwrap(), ExitStatus::Code(0));
    }

    #[test]
    fn control_channel_both_ways() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut spec =
            sh(r#"echo "hello $BATON_CONTROL_FD" >&4; read -r line <&4; echo "got:$line" >&4"#);
        spec.listen_fds = vec![l.as_raw_fd()];
        spec.listen_names = vec!["web".into()];
        let child = spawn(&spec).unwrap();
        let stream = UnixStream::from(child.control);
        stream.set_nonblocking(false).unwrap();
        // Fail rather than hang if the channel is broken.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "hello 4\n");
        (&stream).write_all(b"{\"type\":\"stop\"}\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "got:{\"type\":\"stop\"}\n");
        assert!(wait_exit(child.pid).unwrap().success());
        // EOF once the worker is gone.
        line.clear();
        assert_eq!(reader.read_line(&mut line).unwrap(), 0);
    }

    #[test]
    fn stderr_is_relayed_and_stdin_is_dev_null() {
        let (out, status) = run(&sh("echo oops >&2; cat; echo done >&2"));
        assert!(status.success());
        assert_eq!(out, "oops\ndone\n");
    }

    #[test]
    fn stdout_is_a_pipe_of_its_own() {
        let child = spawn(&sh("echo out; echo err >&2")).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        blocking(child.stdout).read_to_string(&mut out).unwrap();
        blocking(child.stderr).read_to_string(&mut err).unwrap();
        assert!(wait_exit(child.pid).unwrap().success());
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    }

    #[test]
    fn missing_program_is_execve_error() {
        let spec = SpawnSpec {
            program: "/nonexistent/baton-test-node".into(),
            ..SpawnSpec::default()
        };
        let e = spawn(&spec).unwrap_err();
        assert_eq!(e.step, "execve");
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT));
        assert!(
            e.to_string().starts_with(
                "cannot start /nonexistent/baton-test-node: execve failed: No such file or directory"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_cwd_is_chdir_error() {
        let mut spec = sh("exit 0");
        spec.cwd = Some("/nonexistent/baton-dir".into());
        let e = spawn(&spec).unwrap_err();
        assert_eq!(e.step, "chdir");
        assert!(
            e.to_string().starts_with(
                "cannot start /bin/sh: cannot change directory to /nonexistent/baton-dir: "
            ),
            "{e}"
        );
    }

    #[test]
    fn cwd_is_applied() {
        let mut spec = sh("pwd >&2");
        spec.cwd = Some("/".into());
        assert_eq!(run(&spec).0, "/\n");
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut spec = sh("exit 0");
        spec.listen_fds = vec![0];
        assert_eq!(spawn(&spec).unwrap_err().step, "prepare");
        spec.listen_names = vec!["a:b".into()];
        assert!(spawn(&spec)
            .unwrap_err()
            .to_string()
            .contains("contains ':'"));
        // A closed fd cannot be passed on.
        spec.listen_fds = vec![1 << 20];
        spec.listen_names = vec!["web".into()];
        let e = spawn(&spec).unwrap_err();
        assert_eq!(e.step, "dup");
        assert!(e.to_string().contains("file descriptors"), "{e}");
        spec.listen_fds = vec![0];
        spec.listen_names = vec!["a:b".into()];
        let e = spawn(&spec).unwrap_err();
        assert!(e.to_string().contains("contains ':'"), "{e}");
        let mut spec = sh("exit 0");
        spec.args.push("nul\0byte".into());
        assert_eq!(spawn(&spec).unwrap_err().step, "prepare");
    }

    #[test]
    fn wait_exit_decodes_codes_and_signals() {
        let child = spawn(&sh("exit 3")).unwrap();
        assert_eq!(wait_exit(child.pid).unwrap(), ExitStatus::Code(3));
        let child = spawn(&sh("kill -SEGV $$")).unwrap();
        assert_eq!(
            wait_exit(child.pid).unwrap(),
            ExitStatus::Signal(libc::SIGSEGV)
        );
    }

    #[test]
    fn wait_exited_leaves_a_zombie_until_reaped() {
        let child = spawn(&sh("exit 7")).unwrap();
        wait_exited(child.pid).unwrap();
        // Still ours and unrecyclable: a zombie that kill(pid, 0) reaches.
        assert!(send_signal(child.pid, Signal::Term).is_ok());
        #[cfg(target_os = "linux")]
        {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid)).unwrap();
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            assert_eq!(state, Some('Z'));
        }
        assert_eq!(wait_exit(child.pid).unwrap(), ExitStatus::Code(7));
        assert!(
            send_signal(child.pid, Signal::Term).is_err(),
            "reaped: gone"
        );
    }

    #[test]
    fn send_signal_terminates() {
        // The child tells us (by closing its stderr) that it is about to exec sleep.
        let child = spawn(&sh("exec sleep 30")).unwrap();
        send_signal(child.pid, Signal::Term).unwrap();
        assert_eq!(
            wait_exit(child.pid).unwrap(),
            ExitStatus::Signal(libc::SIGTERM)
        );
        let e = send_signal(child.pid, Signal::Term).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert!(send_signal(0, Signal::Kill).is_err());
        assert!(send_signal(-1, Signal::Kill).is_err());
        assert!(wait_exit(-1).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pidfd_signals_the_child_and_nobody_after_it_is_reaped() {
        use std::os::fd::AsFd;
        let spec = SpawnSpec {
            pidfd: true,
            ..sh("exec sleep 30")
        };
        let child = spawn(&spec).unwrap();
        let pidfd = child.pidfd.unwrap().unwrap();
        signal_child(child.pid, Some(pidfd.as_fd()), Signal::Term).unwrap();
        assert_eq!(
            wait_exit(child.pid).unwrap(),
            ExitStatus::Signal(libc::SIGTERM)
        );
        let e = signal_child(child.pid, Some(pidfd.as_fd()), Signal::Kill).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        // The pid check holds with a pidfd too.
        assert!(signal_child(0, Some(pidfd.as_fd()), Signal::Kill).is_err());
        // Not asked for: none.
        let child = spawn(&sh("exit 0")).unwrap();
        assert!(child.pidfd.is_none());
        assert!(wait_exit(child.pid).unwrap().success());
    }

    #[test]
    fn run_as_other_user_when_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: not root");
            return;
        }
        let mut spec = sh(
            "echo $(id -u) $(id -g) $(id -G) >&2; grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs):' /proc/self/status >&2",
        );
        spec.credentials = Some(crate::identity::Credentials {
            uid: Some(65534),
            gid: 65534,
            groups: vec![65534],
            user_env: Vec::new(),
            master_env: Vec::new(),
        });
        let (out, status) = run(&spec);
        assert!(status.success(), "{out}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("65534 65534 65534"));
        // No capability left in any set, and no exec may gain privileges back.
        let rest: Vec<&str> = lines.collect();
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert!(
                rest.contains(&format!("{set}:\t0000000000000000").as_str()),
                "{set}: {out}"
            );
        }
        assert!(rest.contains(&"NoNewPrivs:\t1"), "{out}");
    }

    #[test]
    fn pid_digits() {
        let mut buf = [b'x'; PID_DIGITS + 1];
        // SAFETY: buf has PID_DIGITS + 1 bytes.
        unsafe { write_pid_digits(buf.as_mut_ptr(), 4_194_304) };
        assert_eq!(&buf[..8], b"4194304\0");
        // SAFETY: as above.
        unsafe { write_pid_digits(buf.as_mut_ptr(), 7) };
        assert_eq!(&buf[..2], b"7\0");
        // SAFETY: as above.
        unsafe { write_pid_digits(buf.as_mut_ptr(), i32::MAX) };
        assert_eq!(&buf[..11], b"2147483647\0");
    }

    /// Runs [`fd_probe`] alone in a fresh copy of this test binary: counting our own open
    /// fds and taking over fd 3 are only sound when no other test runs concurrently.
    #[cfg(target_os = "linux")]
    #[test]
    fn no_fd_leaks_and_fd3_pitfall_in_isolated_process() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "spawn::tests::fd_probe",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("BATON_SPAWN_FD_PROBE", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("fd probe ok"), "probe did not run: {text}");
    }

    #[cfg(target_os = "linux")]
    fn open_fds() -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[ignore = "run by no_fd_leaks_and_fd3_pitfall_in_isolated_process"]
    fn fd_probe() {
        use std::os::fd::FromRawFd;
        if std::env::var_os("BATON_SPAWN_FD_PROBE").is_none() {
            return;
        }
        // Part 1: no fd leaks, on success and on every error path.
        let before = open_fds();
        for _ in 0..5 {
            let (_, st) = run(&sh("exit 0"));
            assert!(st.success());
            let missing = SpawnSpec {
                program: "/nonexistent/x".into(),
                ..SpawnSpec::default()
            };
            assert_eq!(spawn(&missing).unwrap_err().step, "execve");
            let mut bad_cwd = sh("exit 0");
            bad_cwd.cwd = Some("/nonexistent".into());
            assert_eq!(spawn(&bad_cwd).unwrap_err().step, "chdir");
            let mut bad_names = sh("exit 0");
            bad_names.listen_fds = vec![0];
            assert_eq!(spawn(&bad_names).unwrap_err().step, "prepare");
        }
        assert_eq!(before, open_fds(), "fds leaked");

        // Part 2: a listening socket that already is fd 3 (and close-on-exec, like every
        // master socket) must reach the child as fd 3.
        let l = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let fd3 = if l.as_raw_fd() == 3 {
            l
        } else {
            // SAFETY: we own this process's fd table here (single test, isolated
            // process); whatever sat on fd 3 is not in use by this test.
            unsafe {
                assert_eq!(libc::dup2(l.as_raw_fd(), 3), 3);
                assert_eq!(libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC), 0);
            }
            drop(l);
            // SAFETY: fd 3 is now ours alone; the OwnedFd closes it at the end.
            unsafe { OwnedFd::from_raw_fd(3) }
        };
        assert!(is_cloexec(3));
        let mut spec = sh(r#"readlink /proc/$$/fd/3 >&2"#);
        spec.listen_fds = vec![3];
        spec.listen_names = vec!["web".into()];
        let (out, st) = run(&spec);
        assert!(st.success(), "{out}");
        let link = std::fs::read_link("/proc/self/fd/3").unwrap();
        assert_eq!(out.trim_end(), link.to_str().unwrap());
        assert!(
            is_cloexec(fd3.as_raw_fd()),
            "the master's fd 3 keeps FD_CLOEXEC"
        );
        drop(fd3);
        println!("fd probe ok");
    }
}
