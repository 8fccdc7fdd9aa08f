//! Watching workers exit, reaping them, and signalling them.
//!
//! On Linux ≥ 5.3 each worker's pidfd (opened right after fork, `pidfd.rs`) is one more
//! source of the loop's poller ([`Source::WorkerExit`]): when it is readable the worker is a
//! zombie, and the loop reaps it then and there (`waitpid` on its pid, which cannot be
//! recycled before that). Signals go through the pidfd (`pidfd_send_signal`), so a signal
//! sent after the reap reaches nobody, whoever has the pid by then. The pidfd is closed with
//! the worker's other fds once its exit is reported.
//!
//! Where `pidfd_open` fails (an older kernel, a seccomp filter, macOS), or with
//! `BATON_NO_PIDFD=1` in the master's environment (a test and diagnostic switch, read once
//! at launch), each worker gets a small waiter thread blocked in `waitid(WNOWAIT)` on its
//! pid, which tells the loop through its channel and `Waker`; the loop reaps it the same
//! way, and signals go to the pid, only while the worker has not been seen exiting.
//!
//! Both paths end in [`LoopState::reap`]: the same status, the same events.

use super::*;
use crate::pidfd;

/// Whether exits are watched through pidfds in this master: on Linux, unless
/// `BATON_NO_PIDFD` is set (to anything but empty or `0`).
pub(super) fn use_pidfd() -> bool {
    cfg!(target_os = "linux")
        && !std::env::var_os("BATON_NO_PIDFD").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A worker's pidfd and its poller token while it is registered.
pub(super) struct Pidfd {
    pub(super) fd: OwnedFd,
    pub(super) token: Option<Token>,
}

impl LoopState {
    /// Start watching a worker that was just spawned: its pidfd (from `spawn`) with the
    /// poller, or a waiter thread. `Err` when neither is possible (the caller kills it).
    /// Returns the pidfd to keep for signals.
    pub(super) fn watch_exit(
        &mut self,
        key: WorkerKey,
        pid: i32,
        opened: Option<io::Result<OwnedFd>>,
    ) -> Result<Option<Pidfd>, String> {
        let fd = match opened {
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => {
                self.log_once(format!(
                    "cannot open a pidfd for a worker ({e}); exits are watched by one thread per worker"
                ));
                None
            }
            None => None,
        };
        if let Some(fd) = fd {
            let raw = fd.as_raw_fd();
            if let Some(token) = self.register_source(&mut SourceFd(&raw), Source::WorkerExit(key))
            {
                return Ok(Some(Pidfd {
                    fd,
                    token: Some(token),
                }));
            }
            // Not watched, but still good for signals.
            self.start_waiter(key, pid)?;
            return Ok(Some(Pidfd { fd, token: None }));
        }
        self.start_waiter(key, pid)?;
        Ok(None)
    }

    /// The fallback: a thread that waits for the exit without reaping, then wakes the loop.
    fn start_waiter(&mut self, key: WorkerKey, pid: i32) -> Result<(), String> {
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        thread::Builder::new()
            .name(format!("baton-wait-{pid}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                // Not reaped here: the loop reaps it when it handles the exit, so
                // until then the pid cannot be recycled under a pending signal.
                let status = spawn::wait_exited(pid);
                let _ = tx.send(Msg::Exited { key, pid, status });
                let _ = waker.wake();
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start a waiter thread for pid {pid}: {e}"))
    }

    /// A worker's pidfd is readable: it has exited; reap it.
    pub(super) fn on_pidfd_readable(&mut self, key: WorkerKey) {
        let Some(io) = self.workers.get(&key) else {
            return;
        };
        let Some(p) = io.pidfd.as_ref().filter(|p| p.token.is_some()) else {
            return;
        };
        let pid = io.pid;
        match pidfd::has_exited(p.fd.as_fd()) {
            Ok(true) => {}
            Ok(false) => return, // not an exit (the poller reports each change once)
            Err(e) => {
                // Cannot tell: let a waiter thread find out instead.
                self.log(&format!(
                    "cannot poll the pidfd of worker {key} ({e}); watching it with a thread"
                ));
                self.stop_watching_pidfd(key);
                if let Err(message) = self.start_waiter(key, pid) {
                    self.log(&format!("{message}; reaping it now"));
                    self.reap(key, pid, Ok(()));
                }
                return;
            }
        }
        self.stop_watching_pidfd(key);
        self.reap(key, pid, Ok(()));
    }

    /// Deregister a worker's pidfd from the poller (it stays open, for signals).
    fn stop_watching_pidfd(&mut self, key: WorkerKey) {
        let Some(p) = self.workers.get_mut(&key).and_then(|io| io.pidfd.as_mut()) else {
            return;
        };
        if let Some(token) = p.token.take() {
            let raw = p.fd.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            self.sources.remove(&token);
        }
    }

    /// The worker `key` (`pid`) has exited (`waited`: how watching it went): reap it, then
    /// hold the exit until the relay has drained its output (`output.rs`).
    pub(super) fn reap(&mut self, key: WorkerKey, pid: i32, waited: io::Result<()>) {
        let status = match waited.and_then(|()| spawn::wait_exit(pid)) {
            Ok(s) => s,
            Err(e) => {
                self.log(&format!("waiting for worker {key} failed: {e}"));
                ExitStatus::Code(-1)
            }
        };
        self.on_exited(key, status);
    }

    /// Send `sig` to worker `key` (`pid`), unless it has been seen exiting: through its
    /// pidfd when it has one, else to its pid (not reaped yet, so still its own).
    pub(super) fn signal_worker(&self, key: WorkerKey, pid: i32, sig: Signal) {
        if self.has_exited(key) {
            return;
        }
        let pidfd = self
            .workers
            .get(&key)
            .and_then(|io| io.pidfd.as_ref())
            .map(|p| p.fd.as_fd());
        let _ = spawn::signal_child(pid, pidfd, sig);
    }

    /// After a panic of the loop: SIGKILL every worker not reaped yet and reap it.
    pub(super) fn kill_and_reap_all(&mut self) {
        let alive: Vec<(WorkerKey, i32)> = self
            .fleet
            .snapshot()
            .workers
            .iter()
            .filter_map(|row| Some((row.key?, row.pid?)))
            .filter(|(key, _)| !self.has_exited(*key))
            .collect();
        for (key, pid) in &alive {
            self.signal_worker(*key, *pid, Signal::Kill);
        }
        for (_, pid) in alive {
            let _ = spawn::wait_exit(pid); // SIGKILLed: returns at once
        }
    }
}
