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
use std::time::{Duration, Instant, SystemTime};

use crate::log_line::{self, LineFormat, Origin};
pub use crate::log_rotate::Rotation;
use crate::log_rotate::{self, Step};

/// Bytes a sink buffers before it drops.
pub const SINK_BUFFER_BYTES: usize = 1 << 20;

/// `PIPE_BUF` (4096 on Linux, 512 on macOS): writes up to this size to a pipe are not
/// interleaved with other writers' (the master's own log lines).
const ATOMIC_WRITE: usize = if cfg!(target_os = "linux") { 4096 } else { 512 };

/// Permission bits of a log file baton creates (before the umask).
pub const LOG_FILE_MODE: u32 = 0o640;

enum Target {
    /// The master's own fd 1 or 2 (not owned), and the master's log file they point at.
    Fd(RawFd, Option<Arc<MasterLog>>),
    /// A log file, reopened in place by [`Sink::reopen`] and rotated by the writer.
    File {
        path: PathBuf,
        log: Mutex<Arc<OpenLog>>,
    },
}

/// The file a file sink writes to now.
struct OpenLog {
    file: File,
    /// The directory it was opened in and its name there (where it is rotated); `None`
    /// for what is not a regular file (a FIFO, `/dev/null`): that is never rotated.
    at: Option<(Arc<Dir>, OsString)>,
    /// Device and inode, to tell whether the name still stands for this file.
    id: (u64, u64),
    /// Bytes in it: its size at open plus what this sink wrote.
    size: AtomicU64,
}

impl OpenLog {
    #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
    fn new(file: File, at: Option<(Arc<Dir>, OsString)>) -> io::Result<OpenLog> {
        let st = fstat(file.as_raw_fd())?;
        let regular = st.st_mode as u32 & libc::S_IFMT as u32 == libc::S_IFREG as u32;
        Ok(OpenLog {
            file,
            at: at.filter(|_| regular),
            id: (st.st_dev as u64, st.st_ino as u64),
            size: AtomicU64::new(st.st_size.max(0) as u64),
        })
    }
}

/// How a sink writes what is its own (the dropped-bytes note) and when it rotates; set by
/// [`Sink::configure`].
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    /// Rotation by size (`logMaxSize`, `logMaxFiles`); file sinks only.
    pub rotation: Option<Rotation>,
    /// The format of the sink's own note lines (`logTime`, `logFormat`).
    pub format: LineFormat,
    /// The fleet's name (in a JSON note).
    pub fleet: Arc<str>,
}

/// Where a sink's messages for the master's log go (a rotation refused).
pub type LogFn = Arc<dyn Fn(String) + Send + Sync>;

/// How long after a refused rotation the writer tries again.
const ROTATION_RETRY: Duration = Duration::from_secs(10);

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
    settings: Mutex<SinkSettings>,
    on_log: Option<LogFn>,
    /// Rotations made.
    rotations: AtomicU64,
    /// The writer's own: a refused rotation is tried again after this instant, and its
    /// reason is logged once until a rotation succeeds.
    refused: Mutex<(Option<Instant>, Option<String>)>,
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
    open_walk(path).map(|(file, _)| file)
}

/// [`open_checked`], also returning the directory the file was opened in (an fd, reached
/// by the same rule) and its name there; `None` for a `/proc/<pid>/fd/N` link.
fn open_walk(path: &Path) -> io::Result<(File, Option<(Dir, OsString)>)> {
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
            Ok(Opened::File(file)) => return Ok((file, Some((dir, name)))),
            Err(e) if is_link_error(&e) && dir.is_symlink(&name)? => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                dir.may_follow(&name)?;
                #[cfg(target_os = "linux")]
                if last && dir.on_procfs() {
                    return dir.open_magic_link(&name).map(|file| (file, None));
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

    /// Remove the entry `name` (a link itself, never what it points to).
    fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: our directory fd and a valid C string.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Rename the entry `from` to `to` in this directory (entries, not what a link points
    /// to: a link is moved as a link, one at `to` is replaced, not followed).
    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: our directory fd (both sides) and valid C strings.
        if unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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
    point_stdio_at(&open_log_file(path)?, path)
}

/// Point the master's fds 1 and 2 at `file` (opened from `path`, for messages).
fn point_stdio_at(file: &File, path: &Path) -> io::Result<()> {
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

/// The master's own log file (`logFile`, `--log`, daemon mode): the master's fds 1 and 2
/// point at it, and with a [`Rotation`] it is rotated by size as the sinks' files are
/// ([`rotate_file`]). Its writers are the sinks of `inherit` output (fds 1 and 2), which
/// rotate it at line boundaries as a file sink does, and the master's own lines (the host
/// writes each whole, in one `write`, to fd 2), for which a thread checks the size once a
/// second, leaving the file alone while an `inherit` sink is inside a line. A rotation
/// points fds 1 and 2 at the new file with `dup2`: a write goes whole to the old file or
/// to the new one. So the file may exceed the size by the master's own lines of the last
/// second.
pub struct MasterLog {
    path: PathBuf,
    rotation: Option<Rotation>,
    /// Serializes reopen and rotation; what a rotation needs.
    state: Mutex<MasterState>,
    /// Bit `fd`: the `inherit` sink of fd 1 or 2 last wrote a partial line.
    mid_line: AtomicU64,
    on_log: LogFn,
}

#[derive(Default)]
struct MasterState {
    /// The directory the file was opened in and its name there (`None`: not a regular
    /// file, never rotated).
    at: Option<(Arc<Dir>, OsString)>,
    retry_at: Option<Instant>,
    last_refusal: Option<String>,
}

impl std::fmt::Debug for MasterLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterLog")
            .field("path", &self.path)
            .finish()
    }
}

impl MasterLog {
    /// Open `path` under the rule of [`open_checked`], point fds 1 and 2 at it, and with a
    /// rotation start the thread that checks its size once a second.
    pub fn open(
        path: &Path,
        rotation: Option<Rotation>,
        on_log: LogFn,
    ) -> io::Result<Arc<MasterLog>> {
        let log = Arc::new(MasterLog {
            path: path.to_path_buf(),
            rotation,
            state: Mutex::new(MasterState::default()),
            mid_line: AtomicU64::new(0),
            on_log,
        });
        log.reopen()?;
        if rotation.is_some() {
            let weak = Arc::downgrade(&log);
            thread::Builder::new()
                .name("baton-log-rotate".into())
                .stack_size(128 * 1024)
                .spawn(move || loop {
                    thread::sleep(Duration::from_secs(1));
                    match weak.upgrade() {
                        Some(log) => log.check(),
                        None => return,
                    }
                })
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot start the log rotation thread: {e}"),
                    )
                })?;
        }
        Ok(log)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the file at its path again and point fds 1 and 2 at it (`baton reopen-logs`).
    #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
    pub fn reopen(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (file, at) = open_walk(&self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", self.path.display()),
            )
        })?;
        point_stdio_at(&file, &self.path)?;
        let regular = fstat(file.as_raw_fd())
            .is_ok_and(|f| f.st_mode as u32 & libc::S_IFMT as u32 == libc::S_IFREG as u32);
        *st = MasterState {
            at: at.filter(|_| regular).map(|(d, n)| (Arc::new(d), n)),
            ..MasterState::default()
        };
        Ok(())
    }

    /// Write `bytes` to the master's `fd` (1 or 2, an `inherit` sink), rotating the file
    /// at line boundaries as a file sink does (`log_rotate.rs`).
    #[allow(clippy::unnecessary_cast)] // off_t, dev_t, ino_t differ by platform
    fn write(&self, fd: RawFd, mut bytes: &[u8], mid_line: &mut bool) -> io::Result<()> {
        let bit = 1u64 << (fd & 63);
        // A rotation that changed nothing (refused, or fd 1 and 2 apart): write on.
        let mut stuck = false;
        while !bytes.is_empty() {
            let now = fstat(fd).ok();
            let rotation = self.rotation.filter(|_| !stuck && self.may_rotate());
            let step = match (rotation, &now) {
                (Some(r), Some(st)) => {
                    log_rotate::plan(st.st_size.max(0) as u64, *mid_line, r.max_bytes, bytes)
                }
                _ => Step::Write(bytes.len()),
            };
            let n = match step {
                Step::Write(n) | Step::WriteThenRotate(n) => n,
                Step::RotateFirst => 0,
            };
            if n > 0 {
                if *mid_line {
                    self.mid_line.fetch_or(bit, Ordering::Relaxed);
                }
                let written = write_fd(fd, &bytes[..n]);
                *mid_line = bytes[n - 1] != b'\n';
                if *mid_line {
                    self.mid_line.fetch_or(bit, Ordering::Relaxed);
                } else {
                    self.mid_line.fetch_and(!bit, Ordering::Relaxed);
                }
                written?;
                bytes = &bytes[n..];
            }
            if let (Step::WriteThenRotate(_) | Step::RotateFirst, Some(st)) = (step, now) {
                let id = (st.st_dev as u64, st.st_ino as u64);
                self.rotate(id);
                let after = fstat(fd).map(|st| (st.st_dev as u64, st.st_ino as u64));
                stuck = step == Step::RotateFirst && after.ok() == Some(id);
            }
        }
        Ok(())
    }

    /// The file is a regular file, and no rotation was refused lately.
    fn may_rotate(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.at.is_some() && st.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// The thread's check: rotate when fd 1 has reached the size (the master's own lines
    /// are not checked as they are written), unless an `inherit` sink is inside a line.
    #[allow(clippy::unnecessary_cast)] // off_t, dev_t, ino_t differ by platform
    fn check(&self) {
        let Some(r) = self.rotation else { return };
        let Ok(st) = fstat(1) else { return };
        if (st.st_size.max(0) as u64) < r.max_bytes || self.mid_line.load(Ordering::Relaxed) != 0 {
            return;
        }
        self.rotate((st.st_dev as u64, st.st_ino as u64));
    }

    /// Rotate the file, if fd 1 still points at the file `id` (else another writer
    /// rotated it already). A refusal is logged once and tried again after
    /// [`ROTATION_RETRY`].
    #[allow(clippy::unnecessary_cast)] // dev_t, ino_t differ by platform
    fn rotate(&self, id: (u64, u64)) {
        let Some(r) = self.rotation else { return };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(now) = fstat(1) else { return };
        if (now.st_dev as u64, now.st_ino as u64) != id
            || st.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        let Some((dir, name)) = st.at.clone() else {
            return;
        };
        let done = rotate_file(&dir, &name, id, r.keep).and_then(|done| {
            let (Rotated::Rotated(file) | Rotated::Reopened(file)) = done;
            point_stdio_at(&file, &self.path).map_err(|e| e.to_string())
        });
        match done {
            Ok(()) => {
                st.retry_at = None;
                st.last_refusal = None;
            }
            Err(why) => {
                st.retry_at = Some(Instant::now() + ROTATION_RETRY);
                if st.last_refusal.as_deref() != Some(why.as_str()) {
                    st.last_refusal = Some(why.clone());
                    drop(st);
                    (self.on_log)(format!(
                        "log rotation of {}: {why}; the master's output goes on to the file it has open (tried again in {} s)",
                        self.path.display(),
                        ROTATION_RETRY.as_secs()
                    ));
                }
            }
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A writer that panicked left consistent data behind (plain counters and queues).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    /// A sink writing to the master's fd 1 (`"stdout"`) or 2 (`"stderr"`).
    pub fn std_fd(fd: RawFd) -> io::Result<Arc<Sink>> {
        Sink::std_fd_to(fd, None)
    }

    /// [`Sink::std_fd`] when fds 1 and 2 point at the master's log file `master` (which
    /// it then checks for rotation after each write that ends a line).
    pub fn std_fd_to(fd: RawFd, master: Option<Arc<MasterLog>>) -> io::Result<Arc<Sink>> {
        let name = if fd == 1 { "stdout" } else { "stderr" };
        Sink::start(
            name.to_string(),
            Target::Fd(fd, master),
            SINK_BUFFER_BYTES,
            None,
        )
    }

    /// A sink appending to the file at `path` (opened now: the error names the path).
    pub fn file(path: &Path) -> io::Result<Arc<Sink>> {
        Sink::file_logging(path, None)
    }

    /// [`Sink::file`], with `on_log` for lines for the master's log (a refused rotation).
    pub fn file_logging(path: &Path, on_log: Option<LogFn>) -> io::Result<Arc<Sink>> {
        Sink::file_with_capacity(path, SINK_BUFFER_BYTES, on_log)
    }

    fn file_with_capacity(
        path: &Path,
        capacity: usize,
        on_log: Option<LogFn>,
    ) -> io::Result<Arc<Sink>> {
        let log = open_log(path)?;
        Sink::start(
            path.display().to_string(),
            Target::File {
                path: path.to_path_buf(),
                log: Mutex::new(Arc::new(log)),
            },
            capacity,
            on_log,
        )
    }

    fn start(
        name: String,
        target: Target,
        capacity: usize,
        on_log: Option<LogFn>,
    ) -> io::Result<Arc<Sink>> {
        let sink = Arc::new(Sink {
            name,
            target,
            state: Mutex::new(State::default()),
            wake_writer: Condvar::new(),
            drained: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            settings: Mutex::new(SinkSettings::default()),
            on_log,
            rotations: AtomicU64::new(0),
            refused: Mutex::new((None, None)),
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
        if let Target::File { path, log } = &self.target {
            let fresh = Arc::new(open_log(path)?);
            *log.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = (None, None);
        }
        Ok(())
    }

    /// Set how the sink rotates and writes its own notes; takes effect with the next
    /// bytes written.
    pub fn configure(&self, settings: SinkSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Its rotation (`None`: never rotated).
    pub fn rotation(&self) -> Option<Rotation> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotation
    }

    /// Rotations made so far.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
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
        // The last byte written was not a newline: the file is in the middle of a line.
        let mut mid_line = false;
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
                let text = format!(
                    "[baton] {note} bytes of worker output dropped: {} did not keep up",
                    self.name
                );
                let line = self.note_line(&text, mid_line);
                let _ = self.write_out(&line, &mut mid_line);
            }
            if self.write_out(&batch, &mut mid_line).is_err() {
                self.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            let mut st = lock(&self.state);
            st.writing = false;
            if st.bytes == 0 {
                self.drained.notify_all();
            }
        }
    }

    /// One of the sink's own lines, as its settings say (a JSON object with
    /// `stream: "master"` under `logFormat: 'json'`), on a line of its own.
    fn note_line(&self, text: &str, mid_line: bool) -> Vec<u8> {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut line = Vec::new();
        if mid_line {
            line.push(b'\n');
        }
        let origin = Origin {
            fleet: &settings.fleet,
            group: None,
            id: None,
            pid: Some(std::process::id()),
            stream: "master",
        };
        let format = LineFormat {
            prefix: false,
            ..settings.format
        };
        log_line::write_line(
            &mut line,
            format,
            &origin,
            SystemTime::now(),
            text.as_bytes(),
        );
        line
    }

    /// Write `bytes`, rotating a file sink at line boundaries as its settings say
    /// (`log_rotate.rs`).
    fn write_out(&self, mut bytes: &[u8], mid_line: &mut bool) -> io::Result<()> {
        let Target::File { log, .. } = &self.target else {
            if let Target::Fd(fd, master) = &self.target {
                match master {
                    Some(master) => master.write(*fd, bytes, mid_line)?,
                    None => {
                        write_fd(*fd, bytes)?;
                        *mid_line = bytes.last().map_or(*mid_line, |b| *b != b'\n');
                    }
                }
            }
            return Ok(());
        };
        while !bytes.is_empty() {
            let current = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let rotation = self
                .rotation()
                .filter(|_| current.at.is_some() && self.may_rotate());
            let size = current.size.load(Ordering::Relaxed);
            let step = match rotation {
                Some(r) => log_rotate::plan(size, *mid_line, r.max_bytes, bytes),
                None => Step::Write(bytes.len()),
            };
            let n = match step {
                Step::Write(n) | Step::WriteThenRotate(n) => n,
                Step::RotateFirst => 0,
            };
            if n > 0 {
                (&current.file).write_all(&bytes[..n])?;
                current.size.fetch_add(n as u64, Ordering::Relaxed);
                *mid_line = bytes[n - 1] != b'\n';
                bytes = &bytes[n..];
            }
            if let (Some(r), Step::WriteThenRotate(_) | Step::RotateFirst) = (rotation, step) {
                self.rotate(log, &current, r);
            }
        }
        Ok(())
    }

    /// No rotation was refused lately.
    fn may_rotate(&self) -> bool {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.0.is_none_or(|at| Instant::now() >= at)
    }

    /// Rotate the file `current` (see [`Sink::rotate_once`]); a refusal is logged once
    /// and tried again after [`ROTATION_RETRY`], the output going on to the same file.
    fn rotate(&self, log: &Mutex<Arc<OpenLog>>, current: &OpenLog, r: Rotation) {
        match self.rotate_once(current, r) {
            Ok((fresh, rotated)) => {
                *log.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = (None, None);
                if rotated {
                    self.rotations.fetch_add(1, Ordering::Relaxed);
                } else if let Some(on_log) = &self.on_log {
                    on_log(format!(
                        "log rotation of {}: the file was renamed or replaced (by logrotate, or the other master during an upgrade); not rotated, output goes on to the file now at that name",
                        self.name
                    ));
                }
            }
            Err(why) => {
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                refused.0 = Some(Instant::now() + ROTATION_RETRY);
                if refused.1.as_deref() != Some(why.as_str()) {
                    refused.1 = Some(why.clone());
                    drop(refused);
                    if let Some(on_log) = &self.on_log {
                        on_log(format!(
                            "log rotation of {}: {why}; output goes on to {} (tried again in {} s)",
                            self.name,
                            self.name,
                            ROTATION_RETRY.as_secs()
                        ));
                    }
                }
            }
        }
    }

    /// One rotation of the file `current` ([`rotate_file`]): the file to write to, and
    /// whether it was a rotation (not a reopen).
    fn rotate_once(&self, current: &OpenLog, r: Rotation) -> Result<(OpenLog, bool), String> {
        let Some((dir, name)) = &current.at else {
            return Err("not a regular file".into());
        };
        let (file, rotated) = match rotate_file(dir, name, current.id, r.keep)? {
            Rotated::Rotated(file) => (file, true),
            Rotated::Reopened(file) => (file, false),
        };
        let fresh =
            OpenLog::new(file, Some((dir.clone(), name.clone()))).map_err(|e| e.to_string())?;
        Ok((fresh, rotated))
    }
}

/// One rotation of `name` in `dir`: check every name it touches, shift `FILE.k` to
/// `FILE.(k+1)` and `FILE` to `FILE.1`, open a new `FILE` and return it. Every step is
/// made in the directory the file was opened in (its fd, reached under the rule of
/// [`open_checked`]), on entries: a link is never followed. Every `FILE.k` must be a
/// regular file or absent: anything else a worker's user may have placed (a link to a
/// file of root's, a FIFO, a directory) stops the rotation, named in the error. What
/// changes after the check is renamed or removed as an entry, never opened; the new `FILE`
/// is opened as every log file is.
///
/// When `FILE` is no longer the file `id` (device, inode) written to (logrotate, or the
/// other master during a `baton upgrade`, renamed it), nothing is renamed: the file now at
/// `FILE` (or a new one) is opened instead, as `baton reopen-logs` would
/// ([`Rotated::Reopened`]).
#[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
fn rotate_file(dir: &Dir, name: &OsStr, id: (u64, u64), keep: u32) -> Result<Rotated, String> {
    let shown = |n: &OsStr| dir.path.join(n).display().to_string();
    let open_new = || match dir.open_file(name) {
        Ok(Opened::File(file)) => Ok(file),
        Ok(Opened::Dir(_)) => Err(format!("{} is a directory", shown(name))),
        Err(e) => Err(format!("cannot open {}: {e}", shown(name))),
    };
    match dir.lstat(name) {
        Ok(st) if (st.st_dev as u64, st.st_ino as u64) == id => {}
        Ok(_) => return open_new().map(Rotated::Reopened),
        Err(e) if e.kind() == ErrorKind::NotFound => return open_new().map(Rotated::Reopened),
        Err(e) => return Err(format!("cannot check {}: {e}", shown(name))),
    }
    // The rotated names that exist: only those are renamed (FILE.1 to FILE.k of N).
    let mut present = std::collections::HashSet::new();
    for k in 1..=keep {
        let old = log_rotate::rotated_name(name, k);
        match dir.lstat(&old) {
            Ok(st) if st.st_mode as u32 & libc::S_IFMT as u32 == libc::S_IFREG as u32 => {
                present.insert(old);
            }
            Ok(st) => {
                return Err(format!(
                    "refused: {} is {}; baton rotates only regular files, and neither follows nor replaces anything else a worker's user may have placed (remove it)",
                    shown(&old),
                    file_kind(st.st_mode as u32)
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot check {}: {e}", shown(&old))),
        }
    }
    for (from, to) in log_rotate::moves(name, keep) {
        if from != *name && !present.contains(&from) {
            continue;
        }
        let done = match &to {
            None => dir.unlink(&from),
            Some(to) => dir.rename(&from, to),
        };
        match done {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && from != *name => {}
            Err(e) => {
                return Err(match to {
                    None => format!("cannot remove {}: {e}", shown(&from)),
                    Some(to) => format!("cannot rename {} to {}: {e}", shown(&from), shown(&to)),
                })
            }
        }
    }
    open_new().map(Rotated::Rotated).map_err(|e| {
        format!(
            "renamed {} to {}, but {e}",
            shown(name),
            shown(&log_rotate::rotated_name(name, 1)),
        )
    })
}

/// What [`rotate_file`] did; either way, the file to write to from now on.
enum Rotated {
    /// Rotated: a new, empty `FILE`.
    Rotated(File),
    /// `FILE` was renamed or replaced by someone else: the file now at that name.
    Reopened(File),
}

/// Open a log file (as [`open_log_file`]) with what rotating it needs.
fn open_log(path: &Path) -> io::Result<OpenLog> {
    let (file, at) = open_walk(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    OpenLog::new(file, at.map(|(d, n)| (Arc::new(d), n)))
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
        let sink = Sink::file_with_capacity(&fifo, 64 * 1024, None).unwrap();
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

    fn rotating(max_bytes: u64, keep: u32) -> SinkSettings {
        SinkSettings {
            rotation: Some(Rotation { max_bytes, keep }),
            ..SinkSettings::default()
        }
    }

    /// Lines of 50 bytes, `n` of them from `from`.
    fn fifty(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .flat_map(|i| format!("line {i:05} {}\n", "x".repeat(38)).into_bytes())
            .collect()
    }

    #[test]
    fn a_file_sink_rotates_at_line_boundaries_and_keeps_n_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("out.log");
        let sink = Sink::file(&path).unwrap();
        sink.configure(rotating(1000, 3));
        // Whole lines one by one, then a raw chunk that cuts lines anywhere.
        for i in 0..60 {
            assert!(sink.push(&fifty(i, 1)));
        }
        let rest = fifty(60, 40);
        assert!(sink.push(&rest[..777]));
        assert!(sink.push(&rest[777..]));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.close();
        // 5000 bytes, 20 lines a file: FILE and 4 rotations, of which 3 are kept.
        assert_eq!(sink.rotations(), 4);
        assert!(!dir.join("out.log.4").exists());
        let mut all = Vec::new();
        for name in ["out.log.3", "out.log.2", "out.log.1", "out.log"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(bytes.len(), 1000, "{name}");
            all.extend(bytes);
        }
        assert_eq!(all, fifty(20, 80));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A link a worker's user placed at a rotated name: not followed, not replaced, the
    /// rotation stops and says why, and the lines go on to the file.
    #[test]
    fn a_link_at_a_rotated_name_stops_the_rotation_and_is_logged() {
        let open = untrusted_dir("rotate-link");
        let secret = open.parent().unwrap().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        let path = open.join("out.log");
        std::fs::write(open.join("out.log.1"), "older\n").unwrap();
        std::os::unix::fs::symlink(&secret, open.join("out.log.2")).unwrap();
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let log: LogFn = {
            let said = said.clone();
            Arc::new(move |line| said.lock().unwrap().push(line))
        };
        let sink = Sink::file_logging(&path, Some(log)).unwrap();
        sink.configure(rotating(1000, 3));
        assert!(sink.push(&fifty(0, 50)));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.close();
        assert_eq!(sink.rotations(), 0);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
        assert_eq!(std::fs::read(&path).unwrap(), fifty(0, 50));
        assert_eq!(
            std::fs::read_to_string(open.join("out.log.1")).unwrap(),
            "older\n"
        );
        let said = said.lock().unwrap();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("refused"), "{}", said[0]);
        assert!(
            said[0].contains(&format!(
                "{} is a symbolic link",
                open.join("out.log.2").display()
            )),
            "{}",
            said[0]
        );
        let _ = std::fs::remove_dir_all(open.parent().unwrap());
    }

    /// logrotate (or the other master during an upgrade) renamed the file: when the size
    /// is reached the sink renames nothing and moves to the file now at the name.
    #[test]
    fn a_file_renamed_away_is_not_rotated_but_reopened() {
        let dir = temp_dir("rotate-renamed");
        let path = dir.join("out.log");
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let log: LogFn = {
            let said = said.clone();
            Arc::new(move |line| said.lock().unwrap().push(line))
        };
        let sink = Sink::file_logging(&path, Some(log)).unwrap();
        sink.configure(rotating(1000, 3));
        assert!(sink.push(&fifty(0, 10)));
        assert!(sink.flush(Duration::from_secs(5)));
        std::fs::rename(&path, dir.join("out.log-20261207")).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        assert!(sink.push(&fifty(10, 15)));
        assert!(sink.flush(Duration::from_secs(5)));
        sink.close();
        assert_eq!(sink.rotations(), 0);
        assert!(!dir.join("out.log.1").exists());
        assert_eq!(
            std::fs::read(dir.join("out.log-20261207")).unwrap(),
            fifty(0, 20)
        );
        let mut now = b"new\n".to_vec();
        now.extend(fifty(20, 5));
        assert_eq!(std::fs::read(&path).unwrap(), now);
        let said = said.lock().unwrap();
        assert!(
            said.len() == 1 && said[0].contains("renamed or replaced"),
            "{said:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_sinks_own_note_follows_the_log_format() {
        let dir = temp_dir("note");
        let sink = Sink::file(&dir.join("out.log")).unwrap();
        assert_eq!(
            sink.note_line("[baton] 5 bytes", false),
            b"[baton] 5 bytes\n"
        );
        assert_eq!(sink.note_line("x", true), b"\nx\n");
        sink.configure(SinkSettings {
            format: LineFormat {
                json: true,
                ..LineFormat::default()
            },
            fleet: Arc::from("shop"),
            ..SinkSettings::default()
        });
        let line = sink.note_line("[baton] 5 bytes", false);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["stream"], "master");
        assert_eq!(v["fleet"], "shop");
        assert_eq!(v["msg"], "[baton] 5 bytes");
        assert_eq!(v["pid"], std::process::id());
        sink.close();
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
