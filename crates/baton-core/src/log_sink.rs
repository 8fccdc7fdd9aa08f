//! Where worker output goes: the master's stdout or stderr, or a log file, each behind a
//! bounded buffer drained by its own writer thread.
//!
//! [`Sink::push`] never blocks: it appends to the buffer, or, when the buffer holds
//! [`SINK_BUFFER_BYTES`] already, drops the bytes and counts them. The writer thread is
//! the only one that ever waits on the destination (a terminal, a pipe nobody reads, a
//! slow disk), so a slow reader delays nothing but its own sink. After a drop, the next
//! write starts with a line saying how many bytes were lost.
//!
//! Files are opened `O_APPEND` (created 0640) and can be reopened (`baton reopen-logs`,
//! after logrotate renamed them): writes after [`Sink::reopen`] returns go to the new file.
//! [`redirect_stdio`] points the master's own fds 1 and 2 at a file (daemon mode); it is
//! the one place that replaces them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes a sink buffers before it drops.
pub const SINK_BUFFER_BYTES: usize = 1 << 20;

/// `PIPE_BUF` (4096 on Linux, 512 on macOS): writes up to this size to a pipe are not
/// interleaved with other writers' (the master's own log lines).
const ATOMIC_WRITE: usize = if cfg!(target_os = "linux") { 4096 } else { 512 };

/// Permission bits of a log file baton creates (before the umask).
pub const LOG_FILE_MODE: u32 = 0o640;

enum Target {
    /// The master's own fd 1 or 2 (not owned).
    Fd(RawFd),
    /// A log file, reopened in place by [`Sink::reopen`].
    File {
        path: PathBuf,
        file: Mutex<Arc<File>>,
    },
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The writer holds bytes it took from `chunks`.
    writing: bool,
    closed: bool,
    /// Dropped since the last note in the output.
    unnoted: u64,
}

/// One destination of worker output (see the module documentation).
pub struct Sink {
    name: String,
    target: Target,
    state: Mutex<State>,
    /// Signalled when data arrives or the sink closes (the writer waits on it).
    wake_writer: Condvar,
    /// Signalled when the writer has written everything (flush waits on it).
    drained: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("name", &self.name).finish()
    }
}

/// Open `path` for appending, creating it with [`LOG_FILE_MODE`]; the error names it.
pub fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

/// Point the master's fds 1 and 2 at `path` (opened as [`open_log_file`] does). Called at
/// launch in daemon mode and again on reopen; writes in progress finish in the old file.
pub fn redirect_stdio(path: &Path) -> io::Result<()> {
    let file = open_log_file(path)?;
    for target in [1, 2] {
        // SAFETY: dup2 on an fd we own (file) onto 1 or 2: it atomically replaces what the
        // standard fd refers to; nothing in the master holds 1 or 2 as an owned value.
        if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot redirect fd {target} to {}: {e}", path.display()),
            ));
        }
    }
    Ok(())
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A writer that panicked left consistent data behind (plain counters and queues).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    /// A sink writing to the master's fd 1 (`"stdout"`) or 2 (`"stderr"`).
    pub fn std_fd(fd: RawFd) -> io::Result<Arc<Sink>> {
        let name = if fd == 1 { "stdout" } else { "stderr" };
        Sink::start(name.to_string(), Target::Fd(fd), SINK_BUFFER_BYTES)
    }

    /// A sink appending to the file at `path` (opened now: the error names the path).
    pub fn file(path: &Path) -> io::Result<Arc<Sink>> {
        Sink::file_with_capacity(path, SINK_BUFFER_BYTES)
    }

    fn file_with_capacity(path: &Path, capacity: usize) -> io::Result<Arc<Sink>> {
        let file = open_log_file(path)?;
        Sink::start(
            path.display().to_string(),
            Target::File {
                path: path.to_path_buf(),
                file: Mutex::new(Arc::new(file)),
            },
            capacity,
        )
    }

    fn start(name: String, target: Target, capacity: usize) -> io::Result<Arc<Sink>> {
        let sink = Arc::new(Sink {
            name,
            target,
            state: Mutex::new(State::default()),
            wake_writer: Condvar::new(),
            drained: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let writer = sink.clone();
        thread::Builder::new()
            .name("baton-log-writer".into())
            .stack_size(128 * 1024)
            .spawn(move || writer.run())
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start a log writer thread: {e}"))
            })?;
        Ok(sink)
    }

    /// What it writes to: `stdout`, `stderr` or the file's path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queue `bytes`; returns false (and counts them) when the buffer is full. Never blocks
    /// on the destination.
    pub fn push(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let mut st = lock(&self.state);
        if st.closed || st.bytes + bytes.len() > self.capacity {
            st.unnoted += bytes.len() as u64;
            drop(st);
            self.dropped
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return false;
        }
        st.bytes += bytes.len();
        st.chunks.push_back(bytes.to_vec());
        drop(st);
        self.wake_writer.notify_one();
        true
    }

    /// Bytes dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes the destination refused (a closed pipe, a full disk).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Reopen a file sink at its path (after a rename by logrotate). No-op for fds.
    pub fn reopen(&self) -> io::Result<()> {
        if let Target::File { path, file } = &self.target {
            let fresh = Arc::new(open_log_file(path)?);
            *file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
        Ok(())
    }

    /// Wait until everything queued is written, at most `timeout`; true if it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        while st.bytes > 0 || st.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .drained
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Stop accepting bytes; the writer exits once the buffer is written.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.wake_writer.notify_all();
    }

    fn run(&self) {
        loop {
            let (batch, note) = {
                let mut st = lock(&self.state);
                while st.chunks.is_empty() && !st.closed {
                    st = self.wake_writer.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.chunks.is_empty() {
                    return; // closed and written
                }
                let mut batch = Vec::new();
                while let Some(chunk) = st.chunks.front() {
                    if !batch.is_empty() && batch.len() + chunk.len() > 64 * 1024 {
                        break;
                    }
                    let chunk = st.chunks.pop_front().unwrap_or_default();
                    st.bytes -= chunk.len();
                    if batch.is_empty() {
                        batch = chunk;
                    } else {
                        batch.extend_from_slice(&chunk);
                    }
                }
                st.writing = true;
                let note = std::mem::take(&mut st.unnoted);
                (batch, note)
            };
            if note > 0 {
                let line = format!(
                    "[baton] {note} bytes of worker output dropped: {} did not keep up\n",
                    self.name
                );
                let _ = self.write_all(line.as_bytes());
            }
            if self.write_all(&batch).is_err() {
                self.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            let mut st = lock(&self.state);
            st.writing = false;
            if st.bytes == 0 {
                self.drained.notify_all();
            }
        }
    }

    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.target {
            Target::Fd(fd) => write_fd(*fd, bytes),
            Target::File { file, .. } => {
                let current = file.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (&*current).write_all(bytes)
            }
        }
    }
}

/// Write everything to a pipe/terminal/file fd we do not own, in pieces of at most
/// [`ATOMIC_WRITE`] bytes cut after a newline where possible (so the master's own lines
/// are not spliced into a worker's), waiting while a non-blocking fd is full.
fn write_fd(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut len = bytes.len().min(ATOMIC_WRITE);
        if len < bytes.len() {
            if let Some(nl) = bytes[..len].iter().rposition(|b| *b == b'\n') {
                len = nl + 1;
            }
        }
        // SAFETY: fd is the master's fd 1 or 2, open for the master's life; bytes is a
        // valid readable buffer of at least len bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), len) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            ErrorKind::Interrupted => {}
            ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a timeout so a hung fd is retried, not spun on.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-sink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_sink_appends_and_reopens_after_a_rename() {
        let dir = temp_dir("reopen");
        let path = dir.join("out.log");
        std::fs::write(&path, "before\n").unwrap();
        let sink = Sink::file(&path).unwrap();
        assert!(sink.push(b"one\n"));
        assert!(sink.flush(Duration::from_secs(5)));
        std::fs::rename(&path, dir.join("out.log.1")).unwrap();
        assert!(sink.push(b"two\n"));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.reopen().unwrap();
        assert!(sink.push(b"three\n"));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.close();
        assert_eq!(
            std::fs::read_to_string(dir.join("out.log.1")).unwrap(),
            "before\none\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "created {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_errors_name_the_path() {
        let e = Sink::file(Path::new("/nonexistent-baton-dir/x.log")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent-baton-dir/x.log"),
            "{e}"
        );
    }

    /// A FIFO nobody reads stands for a stuck destination: pushes never block, the
    /// overflow is counted, and once the reader comes the note tells what was lost.
    #[test]
    fn a_stuck_destination_drops_and_counts_without_blocking() {
        let dir = temp_dir("stuck");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Open the read end first (non-blocking) so opening for writing does not wait.
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let sink = Sink::file_with_capacity(&fifo, 64 * 1024).unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let started = Instant::now();
        let mut refused = 0;
        for _ in 0..1000 {
            if !sink.push(&line) {
                refused += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(refused > 0);
        assert_eq!(sink.dropped(), refused * 1024);
        // Drain the FIFO until a line pushed once there is room again has come through;
        // the notes in between account for every dropped byte.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pushed = false;
        while !String::from_utf8_lossy(&got).contains("after\n") {
            assert!(Instant::now() < deadline, "writer did not catch up");
            pushed = pushed || sink.push(b"after\n");
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let text = String::from_utf8_lossy(&got);
        let noted: u64 = text
            .lines()
            .filter_map(|l| l.strip_prefix("[baton] "))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(
            noted,
            sink.dropped(),
            "{}",
            &text[text.len().saturating_sub(300)..]
        );
        assert!(noted >= refused * 1024);
        sink.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
