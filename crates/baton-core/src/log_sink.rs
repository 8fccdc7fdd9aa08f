//! Where worker output goes: the master's stdout or stderr, or a log file, each behind a
//! bounded buffer drained by its own writer thread.
//!
//! [`Sink::push`] never blocks: it appends to the buffer, or, when the buffer holds
//! [`SINK_BUFFER_BYTES`] already, drops the bytes and counts them. The writer thread is
//! the only one that ever waits on the destination (a terminal, a pipe nobody reads, a
//! slow disk), so a slow reader delays nothing but its own sink. After a drop, the next
//! write starts with a line saying how many bytes were lost.
//!
//! Files are opened `O_APPEND` (created 0640) under the rule of [`open_checked`] (no link
//! or special file a worker's user could have placed is followed or written), and can be reopened (`baton reopen-logs`,
//! after logrotate renamed them): writes after [`Sink::reopen`] returns go to the new file.
//! [`redirect_stdio`] points the master's own fds 1 and 2 at a file (daemon mode); it is
//! the one place that replaces them.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
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

/// Open `path` for appending, creating it with [`LOG_FILE_MODE`], under the rule of
/// [`open_checked`]; the error names the path, and for a refusal the rule.
pub fn open_log_file(path: &Path) -> io::Result<File> {
    open_checked(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

/// How many symbolic links one open may follow (as the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// The rule every file the master opens for writing goes through: trust follows who can
/// write the directory. A worker's user must not be able to make the master (root) write
/// somewhere else by placing a link or a special file on the way.
///
/// - The path is walked one component at a time with `openat` (`O_DIRECTORY|O_NOFOLLOW`),
///   so no directory is entered through a link the kernel followed unseen.
/// - A directory is *trusted* when it is owned by root or the master's user and neither
///   its group nor other users may write it. Otherwise another user can replace its
///   entries.
/// - A symbolic link (in the path or as the last component) is followed only when it sits
///   in a trusted directory and is owned by root or the master's user: the admin placed it
///   (`/dev/stdout`, a `current -> releases/7` link). Its target is walked by the same
///   rule. The `/proc/<pid>/fd/N` links behind `/dev/stdout` (Linux) are opened by the
///   kernel, as they name open files, not paths.
/// - The file itself is opened `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC|O_NOCTTY|O_APPEND`
///   (created 0640), so neither a link nor a FIFO with no reader can redirect or block the
///   open; then `fstat`. In an untrusted directory it must be a regular file with a single
///   link (no hard link to a file elsewhere), owned by the master's user or by the
///   directory's owner (the app user's own log). In a trusted directory, whatever the admin
///   named (a FIFO, `/dev/null`, a pipe behind `/dev/stdout`) is used.
/// - `O_NONBLOCK` is cleared once open: the sink's own writer thread waits on the file,
///   nothing else does.
pub fn open_checked(path: &Path) -> io::Result<File> {
    let root: &Path = if path.is_absolute() {
        Path::new("/")
    } else {
        Path::new(".")
    };
    let mut dir = Dir::open_at(None, root, root.to_path_buf())?;
    let mut pending: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            let parent = dir
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or(dir.path.clone());
            dir = Dir::open_at(Some(&dir), Path::new(".."), parent)?;
            continue;
        }
        let last = pending.is_empty();
        let opened = if last {
            dir.open_file(&name)
        } else {
            let child = dir.path.join(&name);
            Dir::open_at(Some(&dir), Path::new(&name), child).map(Opened::Dir)
        };
        match opened {
            Ok(Opened::Dir(d)) => dir = d,
            Ok(Opened::File(file)) => return Ok(file),
            Err(e) if is_link_error(&e) && dir.is_symlink(&name)? => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                dir.may_follow(&name)?;
                #[cfg(target_os = "linux")]
                if last && dir.on_procfs() {
                    return dir.open_magic_link(&name);
                }
                let target = dir.read_link(&name)?;
                let mut rest = components(&target);
                rest.extend(pending);
                pending = rest;
                if target.is_absolute() {
                    dir = Dir::open_at(None, Path::new("/"), PathBuf::from("/"))?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::InvalidInput,
        "the path names a directory, not a file",
    ))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `O_NOFOLLOW` met a link (`ELOOP`; `ENOTDIR` with `O_DIRECTORY`; `EMLINK` on the BSDs).
fn is_link_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EMLINK)
    )
}

enum Opened {
    Dir(Dir),
    File(File),
}

/// A directory on the walk: its fd, its path (for messages) and who else may write it.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    owner: u32,
    /// `None` when only root or the master's user may write it; else who else may.
    writers: Option<String>,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data for which all-zero is valid; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open fd we hold; st is a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn master_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Who besides root and the master's user may write a directory with this `stat`.
#[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
fn other_writers(st: &libc::stat) -> Option<String> {
    let mode = st.st_mode as u32 & 0o7777;
    if st.st_uid != 0 && st.st_uid != master_uid() {
        Some(format!("its owner, uid {}", st.st_uid))
    } else if mode & 0o002 != 0 {
        Some(format!("every user (mode {mode:o})"))
    } else if mode & 0o020 != 0 {
        Some(format!("group {} (mode {mode:o})", st.st_gid))
    } else {
        None
    }
}

#[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT as u32 {
        m if m == libc::S_IFIFO as u32 => "a FIFO",
        m if m == libc::S_IFCHR as u32 => "a character device",
        m if m == libc::S_IFBLK as u32 => "a block device",
        m if m == libc::S_IFSOCK as u32 => "a socket",
        m if m == libc::S_IFDIR as u32 => "a directory",
        m if m == libc::S_IFLNK as u32 => "a symbolic link",
        _ => "a regular file",
    }
}

/// The refusal: names the path, who may write the directory, the rule and what to do.
fn refused(what: String, dir: &Dir, rule: &str) -> io::Error {
    io::Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "refused: {what} in {}, a directory that {} may write; {rule} (make the directory writable only by root or the master's user, or name a path in such a directory)",
            dir.path.display(),
            dir.writers.as_deref().unwrap_or("another user"),
        ),
    )
}

impl Dir {
    /// Open `name` under `at` (or the cwd/root for `None`) as a directory, not following
    /// a link.
    fn open_at(at: Option<&Dir>, name: &Path, path: PathBuf) -> io::Result<Dir> {
        let c = c_name(name.as_os_str())?;
        let at_fd = at.map_or(libc::AT_FDCWD, |d| d.fd.as_raw_fd());
        // SAFETY: at_fd is AT_FDCWD or a directory fd we hold; c is a valid C string.
        let fd = unsafe {
            libc::openat(
                at_fd,
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd())?;
        Ok(Dir {
            fd,
            path,
            owner: st.st_uid,
            writers: other_writers(&st),
        })
    }

    /// The entry `name` is a symbolic link (`fstatat` without following).
    #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
    fn is_symlink(&self, name: &OsStr) -> io::Result<bool> {
        Ok(self.lstat(name)?.st_mode as u32 & libc::S_IFMT as u32 == libc::S_IFLNK as u32)
    }

    fn lstat(&self, name: &OsStr) -> io::Result<libc::stat> {
        let c = c_name(name)?;
        // SAFETY: as in fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: our directory fd, a valid C string and out pointer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Refuse to follow the link `name` unless the admin placed it (see [`open_checked`]).
    fn may_follow(&self, name: &OsStr) -> io::Result<()> {
        let what = || format!("{} is a symbolic link", Path::new(name).display());
        if self.writers.is_some() {
            return Err(refused(
                what(),
                self,
                "baton follows a symbolic link only in a directory that only root or the master's user can write",
            ));
        }
        let owner = self.lstat(name)?.st_uid;
        if owner != 0 && owner != master_uid() {
            return Err(io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "refused: {} in {} is owned by uid {owner}; baton follows only links owned by root or the master's user",
                    what(),
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        let c = c_name(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: our directory fd, a valid C string, buf has buf.len() writable bytes.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    #[cfg(target_os = "linux")]
    fn on_procfs(&self) -> bool {
        const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
        // SAFETY: statfs is plain data; fstatfs writes it for our fd.
        let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: our directory fd and a valid out pointer.
        let ok = unsafe { libc::fstatfs(self.fd.as_raw_fd(), &mut sf) } == 0;
        ok && sf.f_type as libc::c_long == PROC_SUPER_MAGIC
    }

    /// A `/proc/<pid>/fd/N` link (already allowed by [`Dir::may_follow`]): the kernel
    /// opens the file it stands for.
    #[cfg(target_os = "linux")]
    fn open_magic_link(&self, name: &OsStr) -> io::Result<File> {
        self.open_final(name, 0).map(|(file, _)| file)
    }

    fn open_final(&self, name: &OsStr, extra: libc::c_int) -> io::Result<(File, libc::stat)> {
        let c = c_name(name)?;
        let flags = libc::O_WRONLY
            | libc::O_APPEND
            | libc::O_NONBLOCK
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | extra;
        // SAFETY: our directory fd, a valid C string; the mode is read only with O_CREAT.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags,
                LOG_FILE_MODE as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Err(io::Error::new(
                    e.kind(),
                    "it is a FIFO that nobody reads (baton does not wait for a reader), or a socket, which cannot be opened as a file",
                ));
            }
            return Err(e);
        }
        // SAFETY: openat returned a fresh fd that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let st = fstat(file.as_raw_fd())?;
        // The sink's writer thread may wait on the file: clear O_NONBLOCK.
        // SAFETY: fcntl on the fd we own.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        Ok((file, st))
    }

    /// Open (or create) the last component and check what it is (see [`open_checked`]).
    #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS, nlink_t u16 too
    fn open_file(&self, name: &OsStr) -> io::Result<Opened> {
        let (file, st) = self.open_final(name, libc::O_CREAT | libc::O_NOFOLLOW)?;
        if self.writers.is_none() {
            return Ok(Opened::File(file));
        }
        let shown = Path::new(name).display();
        let mode = st.st_mode as u32;
        if mode & libc::S_IFMT as u32 != libc::S_IFREG as u32 {
            return Err(refused(
                format!("{shown} is {}", file_kind(mode)),
                self,
                "there baton appends only to regular files",
            ));
        }
        if st.st_nlink != 1 {
            return Err(refused(
                format!("{shown} has {} hard links", st.st_nlink),
                self,
                "there baton appends only to a file with a single link (a hard link may lead to any file of the same filesystem)",
            ));
        }
        if st.st_uid != master_uid() && st.st_uid != self.owner {
            return Err(refused(
                format!("{shown} is owned by uid {}", st.st_uid),
                self,
                "there baton appends only to a file owned by the master's user or by the directory's owner",
            ));
        }
        Ok(Opened::File(file))
    }
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
    use std::fs::OpenOptions;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

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

    fn untrusted_dir(tag: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir(tag);
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        open
    }

    fn assert_refused(e: io::Error, path: &Path, words: &str) {
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("refused") && text.contains(words), "{text}");
        assert!(text.contains("may write"), "{text}");
    }

    /// (a) The last component a symlink in a directory others may write: not followed, the
    /// target is untouched.
    #[test]
    fn a_link_in_a_directory_others_may_write_is_not_followed() {
        let open = untrusted_dir("link");
        let secret = open.parent().unwrap().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        let path = open.join("out.log");
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let e = Sink::file(&path).unwrap_err();
        assert_refused(e, &path, "symbolic link");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// (b) A FIFO: with no reader the open fails at once instead of blocking; with one it
    /// is refused as not a regular file.
    #[test]
    fn a_fifo_in_a_directory_others_may_write_neither_blocks_nor_is_used() {
        let open = untrusted_dir("fifo");
        let path = open.join("out.log");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let started = Instant::now();
        let e = open_log_file(&path).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("nobody reads"), "{e}");
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        assert_refused(open_log_file(&path).unwrap_err(), &path, "a FIFO");
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// (c) A hard link to a file elsewhere.
    #[test]
    fn a_hard_link_in_a_directory_others_may_write_is_refused() {
        let open = untrusted_dir("hardlink");
        let secret = open.parent().unwrap().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        let path = open.join("out.log");
        std::fs::hard_link(&secret, &path).unwrap();
        assert_refused(open_log_file(&path).unwrap_err(), &path, "2 hard links");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// (d) A directory on the way replaced by a link.
    #[test]
    fn a_directory_on_the_way_replaced_by_a_link_is_not_followed() {
        let open = untrusted_dir("dirlink");
        let elsewhere = open.parent().unwrap().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, open.join("logs")).unwrap();
        let path = open.join("logs/out.log");
        assert_refused(
            open_log_file(&path).unwrap_err(),
            &path,
            "logs is a symbolic link",
        );
        assert!(!elsewhere.join("out.log").exists());
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// A file another user owns, in a directory neither it nor the master owns.
    #[test]
    fn a_file_of_a_third_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // chown needs root
        }
        let open = untrusted_dir("owner");
        let path = open.join("out.log");
        std::fs::write(&path, "").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert_refused(
            open_log_file(&path).unwrap_err(),
            &path,
            "owned by uid 65534",
        );
        // A plain file of its own in such a directory, or a new one, is fine.
        std::fs::remove_file(&path).unwrap();
        let mut f = open_log_file(&path).unwrap();
        f.write_all(b"ok\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ok\n");
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// What the admin placed in directories only it may write keeps working: a link to a
    /// file (also through a linked directory), /dev/null, /dev/stdout.
    #[test]
    fn links_and_devices_the_admin_placed_are_followed() {
        let dir = temp_dir("trusted");
        std::fs::create_dir(dir.join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.join("current")).unwrap();
        std::os::unix::fs::symlink("current/target.log", dir.join("out.log")).unwrap();
        let mut f = open_log_file(&dir.join("out.log")).unwrap();
        f.write_all(b"via links\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("real/target.log")).unwrap(),
            "via links\n"
        );
        let mut f = open_log_file(&dir.join("current/../current/./target.log")).unwrap();
        f.write_all(b"two\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("real/target.log")).unwrap(),
            "via links\ntwo\n"
        );
        let mut null = open_log_file(Path::new("/dev/null")).unwrap();
        null.write_all(b"x").unwrap();
        let stdout = open_log_file(Path::new("/dev/stdout"));
        assert!(stdout.is_ok(), "{stdout:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A refused reopen leaves the sink on the file it had open.
    #[test]
    fn a_refused_reopen_keeps_the_old_file() {
        let open = untrusted_dir("reopen-refused");
        let secret = open.parent().unwrap().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        let path = open.join("out.log");
        let sink = Sink::file(&path).unwrap();
        std::fs::rename(&path, open.join("out.log.1")).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert_refused(sink.reopen().unwrap_err(), &path, "symbolic link");
        assert!(sink.push(b"still here\n"));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.close();
        assert_eq!(
            std::fs::read_to_string(open.join("out.log.1")).unwrap(),
            "still here\n"
        );
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }
}
