//! The runtime directory: where a master keeps its control socket (`<name>.sock`) and its
//! locked pid file (`<name>.pid`), so that the CLI can find it and two masters of one name
//! cannot run (`docs/design.md#control-socket-and-runtime-dir`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Root's runtime directory (`/run/baton`; `/var/run/baton` where there is no `/run`,
/// as on macOS).
pub fn root_dir() -> PathBuf {
    if Path::new("/run").is_dir() {
        PathBuf::from("/run/baton")
    } else {
        PathBuf::from("/var/run/baton")
    }
}

/// Picks the runtime directory, the one rule the master and the CLI share:
/// `BATON_RUNTIME_DIR` if non-empty, else [`default_dir`].
pub fn resolve(
    env_override: Option<&str>,
    uid: u32,
    home: Option<&Path>,
    tmpdir: &Path,
) -> PathBuf {
    match env_override {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => default_dir(uid, home, tmpdir),
    }
}

/// The default runtime directory: [`root_dir`] for root; `<home>/.baton` for other users,
/// `home` being `$HOME` when usable, else the home directory of the user database;
/// `<tmpdir>/baton-<uid>` when neither is usable (see [`usable_home`]).
///
/// Not `$XDG_RUNTIME_DIR`, which systemd-logind deletes when the user's last session ends
/// (a fleet started over SSH lost its control socket at logout), and not a shared tmpdir
/// for root, where another local user can create the directory first.
pub fn default_dir(uid: u32, home: Option<&Path>, tmpdir: &Path) -> PathBuf {
    if uid == 0 {
        return root_dir();
    }
    let home = home
        .filter(|h| usable_home(h, uid))
        .map(Path::to_path_buf)
        .or_else(|| crate::identity::home_dir(uid).filter(|h| usable_home(h, uid)));
    match home {
        Some(h) => h.join(".baton"),
        None => tmpdir.join(format!("baton-{uid}")),
    }
}

/// A home directory baton may keep `.baton` in: an absolute path to an existing directory
/// owned by `uid` and writable by its owner (not `/nonexistent`, not the home of the user
/// that `sudo` came from).
pub fn usable_home(home: &Path, uid: u32) -> bool {
    if !home.is_absolute() {
        return false;
    }
    match std::fs::metadata(home) {
        Ok(m) => m.is_dir() && m.uid() == uid && m.mode() & 0o200 != 0,
        Err(_) => false,
    }
}

/// The places older versions of baton kept their runtime directory
/// (`$XDG_RUNTIME_DIR/baton`, then `<tmpdir>/baton-<uid>`), where the CLI still looks for
/// fleets they started. New masters never go there unless `BATON_RUNTIME_DIR` says so.
pub fn legacy_dirs(xdg: Option<&str>, tmpdir: &Path, uid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(xdg) = xdg.filter(|x| !x.is_empty()) {
        dirs.push(Path::new(xdg).join("baton"));
    }
    let tmp = tmpdir.join(format!("baton-{uid}"));
    if !dirs.contains(&tmp) {
        dirs.push(tmp);
    }
    dirs
}

/// What a path in the runtime directory is, for [`check_trusted`] and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The runtime directory itself.
    Dir,
    /// A control socket (`<name>.sock`).
    Socket,
    /// A pid file (`<name>.pid`).
    PidFile,
    /// A start record (`<name>.start.json`) or a daemon's log (`<name>.log`).
    File,
}

impl Entry {
    fn noun(self) -> &'static str {
        match self {
            Entry::Dir => "runtime directory",
            Entry::Socket => "control socket",
            Entry::PidFile => "pid file",
            Entry::File => "file",
        }
    }
}

/// The CLI's rule before it connects to a control socket or reads a record: `path` (never
/// followed if it is a link) must be of the expected type, owned by `uid` (the CLI's own
/// uid; root trusts only root's files too) and not writable by group or others. `Ok(false)`
/// when nothing is there; `Err` names the path, its owner and the rule, and says what to do.
pub fn check_trusted(path: &Path, uid: u32, entry: Entry) -> Result<bool, String> {
    let noun = entry.noun();
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot inspect {noun} {shown}: {e}")),
    };
    let fix = if entry == Entry::Dir {
        format!("remove it (rm -r {shown}) or set BATON_RUNTIME_DIR to a directory you own")
    } else {
        format!("remove it (rm {shown}) or set BATON_RUNTIME_DIR to a directory you own")
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(format!(
            "refusing {noun} {shown}: it is a symbolic link, which baton never follows in a runtime directory (another user could have planted it); {fix}"
        ));
    }
    let right_type = match entry {
        Entry::Dir => ft.is_dir(),
        Entry::Socket => {
            use std::os::unix::fs::FileTypeExt;
            ft.is_socket()
        }
        Entry::PidFile | Entry::File => ft.is_file(),
    };
    if !right_type {
        return Err(format!(
            "refusing {noun} {shown}: it is not a {}; {fix}",
            match entry {
                Entry::Dir => "directory",
                Entry::Socket => "socket",
                _ => "regular file",
            }
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "refusing {noun} {shown}: it belongs to {}, not to you ({}); baton trusts a runtime directory and the sockets, pid files and start records in it only when they are yours (someone else may have created it to make baton run their commands); {fix}",
            crate::identity::describe_uid(meta.uid()),
            crate::identity::describe_uid(uid),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing {noun} {shown}: its mode {:04o} lets group or others write it (they could replace what baton reads there); run chmod go-w {shown}, or {fix}",
            meta.mode() & 0o7777
        ));
    }
    Ok(true)
}

/// Errors about the runtime directory, pid file and control socket. Messages name the
/// path and say what to do.
#[derive(Debug)]
pub enum RuntimeDirError {
    /// The directory could not be created or inspected.
    CreateDir {
        /// The runtime directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path exists and is not a directory.
    NotADirectory {
        /// The runtime directory.
        dir: PathBuf,
    },
    /// The directory belongs to another user.
    WrongOwner {
        /// The runtime directory.
        dir: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our effective uid.
        uid: u32,
    },
    /// The directory is writable by group or others.
    InsecureMode {
        /// The runtime directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A master name that is not allowed; the text says why.
    InvalidName(String),
    /// Another master of this name holds the pid-file lock.
    AlreadyRunning {
        /// The master's name.
        name: String,
        /// The pid recorded in its pid file, if readable.
        pid: Option<i32>,
    },
    /// The pid file could not be opened, locked or written.
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The runtime directory is a symbolic link (never followed: in a shared /tmp another
    /// user could point it anywhere).
    Symlink {
        /// The directory path.
        dir: PathBuf,
    },
    /// The control socket path is too long for a Unix socket address.
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest length the OS accepts.
        max: usize,
    },
    /// The control socket could not be created.
    ControlSocket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for RuntimeDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeDirError::CreateDir { dir, source } => write!(
                f,
                "cannot create runtime directory {}: {source} (set BATON_RUNTIME_DIR to a directory you can write)",
                dir.display()
            ),
            RuntimeDirError::NotADirectory { dir } => write!(
                f,
                "runtime directory {} exists and is not a directory (remove it or set BATON_RUNTIME_DIR elsewhere)",
                dir.display()
            ),
            RuntimeDirError::WrongOwner { dir, owner, uid } => write!(
                f,
                "runtime directory {} belongs to {}, not to you ({}); baton uses a runtime directory only when it is yours (someone else may have created it first): remove it or set BATON_RUNTIME_DIR to a directory you own",
                dir.display(),
                crate::identity::describe_uid(*owner),
                crate::identity::describe_uid(*uid),
            ),
            RuntimeDirError::InsecureMode { dir, mode } => write!(
                f,
                "runtime directory {} has mode {:04o} and is writable by other users; run: chmod 700 {}",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ),
            RuntimeDirError::Symlink { dir } => write!(
                f,
                "runtime directory {} is a symbolic link, which baton does not follow (another user could have planted it); remove it or set BATON_RUNTIME_DIR to a real directory you own",
                dir.display()
            ),
            RuntimeDirError::InvalidName(msg) => f.write_str(msg),
            RuntimeDirError::AlreadyRunning { name, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "a baton master named \"{name}\" is already running (pid {pid}); stop it first with: baton stop {name}"
                ),
                None => write!(
                    f,
                    "a baton master named \"{name}\" is already running; stop it first with: baton stop {name}"
                ),
            },
            RuntimeDirError::PidFile { path, source } => {
                write!(f, "cannot use pid file {}: {source}", path.display())
            }
            RuntimeDirError::SocketPathTooLong { path, len, max } => write!(
                f,
                "control socket path {} is {len} bytes, longer than the {max}-byte limit for Unix socket paths; set BATON_RUNTIME_DIR to a shorter directory",
                path.display()
            ),
            RuntimeDirError::ControlSocket { path, source } => {
                write!(f, "cannot create control socket {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for RuntimeDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeDirError::CreateDir { source, .. }
            | RuntimeDirError::PidFile { source, .. }
            | RuntimeDirError::ControlSocket { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (and missing parents) with mode 0700, or checks an existing one: it must
/// be a directory owned by the current user and not writable by group or others (an
/// existing 0755 directory is fine).
pub fn ensure_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    let is_link = |d: &Path| {
        std::fs::symlink_metadata(d)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    };
    if is_link(dir) {
        return Err(RuntimeDirError::Symlink {
            dir: dir.to_path_buf(),
        });
    }
    let create = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    if let Err(e) = create {
        if dir.exists() && !dir.is_dir() {
            return Err(RuntimeDirError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        return Err(RuntimeDirError::CreateDir {
            dir: dir.to_path_buf(),
            source: e,
        });
    }
    // lstat: the checks below are about the directory itself, never a link's target. Once
    // it is ours and not writable by others, nobody else can swap it (in a sticky /tmp
    // only the owner may rename or remove an entry).
    let meta = std::fs::symlink_metadata(dir).map_err(|e| RuntimeDirError::CreateDir {
        dir: dir.to_path_buf(),
        source: e,
    })?;
    if meta.file_type().is_symlink() {
        return Err(RuntimeDirError::Symlink {
            dir: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(RuntimeDirError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let uid = effective_uid();
    if meta.uid() != uid {
        return Err(RuntimeDirError::WrongOwner {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(RuntimeDirError::InsecureMode {
            dir: dir.to_path_buf(),
            mode: meta.mode(),
        });
    }
    Ok(())
}

/// Checks a master name: 1..=64 characters of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn validate_name(name: &str) -> Result<(), String> {
    let allowed = "letters, digits, '.', '_' and '-'";
    if name.is_empty() {
        return Err(format!("the name is empty; use 1 to 64 {allowed}"));
    }
    if name.len() > 64 {
        return Err(format!(
            "the name \"{name}\" is {} characters long; use at most 64 {allowed}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the name {name:?} contains {c:?}; use only {allowed}"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("the name \"{name}\" must not start with '.'"));
    }
    Ok(())
}

/// The control socket path of master `name`: `<dir>/<name>.sock`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

fn pid_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

/// The locked pid file of a running master; dropping it removes the file and releases the
/// lock.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
    /// Dropping removes the file: false for a pid file passed on to, or not yet taken
    /// over from, another master (`baton upgrade`).
    remove_on_drop: bool,
}

enum LockResult {
    Locked,
    WouldBlock,
}

fn flock(file: &File, op: libc::c_int) -> io::Result<LockResult> {
    loop {
        // SAFETY: flock on an fd owned by `file`, integer arguments only.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(LockResult::Locked);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EWOULDBLOCK || code == libc::EAGAIN => {
                return Ok(LockResult::WouldBlock)
            }
            _ => return Err(e),
        }
    }
}

fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|p| *p > 0)
}

impl PidFile {
    /// Creates (mode 0600) and exclusively locks `<dir>/<name>.pid`, then writes our pid.
    ///
    /// Fails with [`RuntimeDirError::AlreadyRunning`] when another master holds the lock.
    pub fn acquire(dir: &Path, name: &str) -> Result<PidFile, RuntimeDirError> {
        validate_name(name).map_err(RuntimeDirError::InvalidName)?;
        let path = pid_path(dir, name);
        let pid_err = |source: io::Error| RuntimeDirError::PidFile {
            path: path.clone(),
            source,
        };
        // A previous owner removes the file before releasing its lock, so the inode we
        // lock may already be unlinked: check, and retry on the new file.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(pid_err)?;
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(pid_err)? {
                LockResult::WouldBlock => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(RuntimeDirError::AlreadyRunning {
                        name: name.to_string(),
                        pid: parse_pid(&text),
                    });
                }
                LockResult::Locked => {}
            }
            let ours = file.metadata().map_err(pid_err)?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(pid_err(e)),
            }
            file.set_len(0).map_err(pid_err)?;
            file.seek(SeekFrom::Start(0)).map_err(pid_err)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(pid_err)?;
            return Ok(PidFile {
                path,
                file,
                remove_on_drop: true,
            });
        }
        Err(pid_err(io::Error::other(
            "the pid file keeps being replaced by another process",
        )))
    }

    /// The pid file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open (and locked) file's fd, to pass to the next master.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The pid file of master `name` passed by the previous master (`baton upgrade`) as
    /// the open file `fd`, which carries its `flock`. It must still be the file at the
    /// path. It is left in place on drop until [`PidFile::take_over`].
    pub fn adopt(dir: &Path, name: &str, fd: OwnedFd) -> Result<PidFile, RuntimeDirError> {
        let path = pid_path(dir, name);
        let pid_err = |source: io::Error| RuntimeDirError::PidFile {
            path: path.clone(),
            source,
        };
        let file = File::from(fd);
        let ours = file.metadata().map_err(pid_err)?;
        let now = std::fs::metadata(&path).map_err(pid_err)?;
        if ours.dev() != now.dev() || ours.ino() != now.ino() {
            return Err(pid_err(io::Error::other(
                "the pid file passed by the previous master is not the one at this path",
            )));
        }
        // Converting a lock this open file already holds succeeds at once; one that is not
        // held (a stray fd) is taken, or refused when another master holds it.
        if let LockResult::WouldBlock =
            flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(pid_err)?
        {
            return Err(RuntimeDirError::AlreadyRunning {
                name: name.to_string(),
                pid: read_pid(dir, name),
            });
        }
        Ok(PidFile {
            path,
            file,
            remove_on_drop: false,
        })
    }

    /// This master now owns the fleet: write its pid, and remove the file on drop.
    pub fn take_over(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file
            .write_all(format!("{}\n", std::process::id()).as_bytes())?;
        self.remove_on_drop = true;
        Ok(())
    }

    /// The next master owns the file now: dropping this one only closes our fd (the lock
    /// stays with the next master's fd of the same open file).
    pub fn hand_over(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Remove first, then release the lock by closing (a waiting acquirer re-checks
        // the inode). Only remove the file if it still is the one we locked.
        if let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::metadata(&self.path)) {
            if ours.dev() == now.dev() && ours.ino() == now.ino() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The pid recorded in `<dir>/<name>.pid`, if the file exists and holds a pid.
pub fn read_pid(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(pid_path(dir, name))
        .ok()
        .and_then(|t| parse_pid(&t))
}

/// True when a live master holds the lock on `<dir>/<name>.pid`.
pub fn is_locked(dir: &Path, name: &str) -> bool {
    let file = match File::open(pid_path(dir, name)) {
        Ok(f) => f,
        Err(_) => return false,
    };
    // A shared lock conflicts only with the master's exclusive one; closing `file`
    // releases ours.
    matches!(
        flock(&file, libc::LOCK_SH | libc::LOCK_NB),
        Ok(LockResult::WouldBlock)
    )
}

/// What the runtime dir says about master `name` (see [`probe_master`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterProbe {
    /// A live master holds the pid-file lock.
    Running { pid: Option<i32> },
    /// The pid file exists but nobody holds its lock: the master was killed (kill -9, a
    /// crash) and left its pid file and control socket behind. `cleaned`: both were
    /// removed by this probe.
    Stale { pid: Option<i32>, cleaned: bool },
    /// No pid file: no master of that name.
    Absent,
}

/// Whether master `name` is running; with `clean`, remove what a dead master left
/// behind. Cleaning holds the pid file's lock while it removes the control socket and
/// then the pid file, so a master starting at that moment cannot lose its fresh socket
/// (it fails to take the lock instead, as with any other running master).
pub fn probe_master(dir: &Path, name: &str, clean: bool) -> MasterProbe {
    let path = pid_path(dir, name);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(_) => return MasterProbe::Absent,
    };
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let pid = parse_pid(&text);
    let op = if clean { libc::LOCK_EX } else { libc::LOCK_SH };
    match flock(&file, op | libc::LOCK_NB) {
        Ok(LockResult::WouldBlock) => MasterProbe::Running { pid },
        Err(_) => MasterProbe::Running { pid }, // cannot tell: do not touch it
        Ok(LockResult::Locked) if !clean => MasterProbe::Stale {
            pid,
            cleaned: false,
        },
        Ok(LockResult::Locked) => {
            // Only if the file we locked is still the one at the path.
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(ours), Ok(now)) => ours.dev() == now.dev() && ours.ino() == now.ino(),
                _ => false,
            };
            if !same {
                return MasterProbe::Absent;
            }
            let sock = socket_path(dir, name);
            let sock_gone = match std::fs::remove_file(&sock) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::NotFound,
            };
            let cleaned = sock_gone && std::fs::remove_file(&path).is_ok();
            MasterProbe::Stale { pid, cleaned }
        }
    }
}

/// Binds the control socket at `path` and makes it mode 0600.
///
/// The caller holds the pid-file lock, so any file already at `path` is stale and is
/// removed first.
pub fn bind_control_socket(path: &Path) -> Result<UnixListener, RuntimeDirError> {
    let len = path.as_os_str().len();
    let max = crate::listen::UNIX_PATH_MAX;
    if len > max {
        return Err(RuntimeDirError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
            max,
        });
    }
    let sock_err = |source: io::Error| RuntimeDirError::ControlSocket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(sock_err(e));
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use std::os::unix::net::UnixStream;

    #[test]
    fn resolve_order() {
        let t = TempDir::new("rt", 0o700);
        let tmp = Path::new("/tmp");
        let me = effective_uid();
        // BATON_RUNTIME_DIR wins for everyone.
        assert_eq!(resolve(Some("/x"), 0, None, tmp), PathBuf::from("/x"));
        assert_eq!(
            resolve(Some("/x"), 1000, Some(&t.0), tmp),
            PathBuf::from("/x")
        );
        // Root: /run/baton, never the shared tmpdir, whatever HOME says.
        assert_eq!(resolve(Some(""), 0, Some(&t.0), tmp), root_dir());
        assert_eq!(resolve(None, 0, None, tmp), root_dir());
        if Path::new("/run").is_dir() {
            assert_eq!(root_dir(), PathBuf::from("/run/baton"));
        }
        // Another user: ~/.baton when the home is theirs.
        if me != 0 {
            assert_eq!(resolve(None, me, Some(&t.0), tmp), t.0.join(".baton"));
        } else {
            std::os::unix::fs::chown(&t.0, Some(4321), None).unwrap();
            assert_eq!(resolve(None, 4321, Some(&t.0), tmp), t.0.join(".baton"));
        }
        // A home that is not usable: the tmpdir (uid 4322 has no passwd entry here).
        assert_eq!(
            resolve(None, 4322, Some(Path::new("/nonexistent")), tmp),
            PathBuf::from("/tmp/baton-4322")
        );
        assert_eq!(
            resolve(None, 4322, Some(&t.0), tmp),
            PathBuf::from("/tmp/baton-4322"),
            "a home owned by someone else"
        );
        assert_eq!(
            resolve(None, 4322, Some(Path::new("relative")), tmp),
            PathBuf::from("/tmp/baton-4322")
        );
    }

    #[test]
    fn legacy_places() {
        let tmp = Path::new("/tmp");
        assert_eq!(
            legacy_dirs(Some("/run/user/5"), tmp, 5),
            vec![
                PathBuf::from("/run/user/5/baton"),
                PathBuf::from("/tmp/baton-5")
            ]
        );
        assert_eq!(
            legacy_dirs(Some(""), tmp, 0),
            vec![PathBuf::from("/tmp/baton-0")]
        );
        assert_eq!(
            legacy_dirs(None, tmp, 7),
            vec![PathBuf::from("/tmp/baton-7")]
        );
    }

    #[test]
    fn trusted_entries_are_ours_and_private() {
        let t = TempDir::new("rt", 0o700);
        let me = effective_uid();
        assert_eq!(
            check_trusted(&t.0.join("absent"), me, Entry::Dir),
            Ok(false)
        );
        assert_eq!(check_trusted(&t.0, me, Entry::Dir), Ok(true));
        let file = t.0.join("web.start.json");
        std::fs::write(&file, "{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_trusted(&file, me, Entry::File), Ok(true));
        let e = check_trusted(&file, me, Entry::Socket).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_trusted(&file, me, Entry::File).unwrap_err();
        assert!(e.contains("0666") && e.contains("chmod go-w"), "{e}");
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = check_trusted(&link, me, Entry::File).unwrap_err();
        assert!(
            e.contains("symbolic link") && e.contains("BATON_RUNTIME_DIR"),
            "{e}"
        );
        let e = check_trusted(&t.0, me + 1, Entry::Dir).unwrap_err();
        assert!(
            e.contains(&format!("belongs to uid {me}"))
                && e.contains(&format!("not to you (uid {}", me + 1)),
            "{e}"
        );
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = check_trusted(&t.0, me, Entry::Dir).unwrap_err();
        assert!(e.contains("0770") && e.contains("rm -r"), "{e}");
    }

    #[test]
    fn ensure_dir_creates_0700_and_accepts_0755() {
        let t = TempDir::new("rt", 0o700);
        let dir = t.0.join("a/b");
        ensure_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        ensure_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
    }

    #[test]
    fn ensure_dir_rejects_writable_by_others_and_files() {
        let t = TempDir::new("rt", 0o700);
        let dir = t.0.join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&dir).unwrap_err();
        assert!(matches!(e, RuntimeDirError::InsecureMode { .. }));
        assert!(e.to_string().contains("chmod 700"), "{e}");
        let file = t.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let e = ensure_dir(&file).unwrap_err();
        assert!(matches!(e, RuntimeDirError::NotADirectory { .. }), "{e:?}");
        assert!(e.to_string().contains(&file.display().to_string()));
    }

    #[test]
    fn ensure_dir_never_follows_a_symlink() {
        let t = TempDir::new("rt", 0o700);
        let real = t.0.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.0.join("baton-1000");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = ensure_dir(&link).unwrap_err();
        assert!(matches!(e, RuntimeDirError::Symlink { .. }), "{e:?}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A dangling link (nothing to create through it) too.
        let dangling = t.0.join("dangling");
        std::os::unix::fs::symlink(t.0.join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            ensure_dir(&dangling).unwrap_err(),
            RuntimeDirError::Symlink { .. }
        ));
        assert!(
            !t.0.join("nowhere").exists(),
            "nothing was created through the link"
        );
    }

    #[test]
    fn ensure_dir_rejects_foreign_owner() {
        if effective_uid() != 0 {
            // "/" belongs to root.
            let e = ensure_dir(Path::new("/")).unwrap_err();
            assert!(matches!(e, RuntimeDirError::WrongOwner { .. }), "{e:?}");
            return;
        }
        let t = TempDir::new("rt", 0o700);
        let dir = t.0.join("foreign");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = ensure_dir(&dir).unwrap_err();
        assert!(
            matches!(e, RuntimeDirError::WrongOwner { owner: 65534, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("set BATON_RUNTIME_DIR"));
    }

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("my-app_2.v1").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        let e = validate_name("a/b").unwrap_err();
        assert!(
            e.contains("\"a/b\"") && e.contains("letters, digits"),
            "{e}"
        );
        assert!(validate_name("a b").is_err());
        assert!(validate_name("é").is_err());
    }

    #[test]
    fn a_dead_masters_files_are_stale_and_cleaned_but_a_live_ones_are_not() {
        let t = TempDir::new("rt", 0o700);
        assert_eq!(probe_master(&t.0, "web", true), MasterProbe::Absent);
        let live = PidFile::acquire(&t.0, "web").unwrap();
        let sock = socket_path(&t.0, "web");
        std::fs::write(&sock, "").unwrap();
        let me = Some(std::process::id() as i32);
        assert_eq!(
            probe_master(&t.0, "web", true),
            MasterProbe::Running { pid: me }
        );
        assert!(sock.exists() && live.path().exists());
        // What kill -9 leaves: the files, no lock.
        std::mem::forget(live);
        std::fs::write(pid_path(&t.0, "stale"), "4242\n").unwrap();
        std::fs::write(socket_path(&t.0, "stale"), "").unwrap();
        assert_eq!(
            probe_master(&t.0, "stale", false),
            MasterProbe::Stale {
                pid: Some(4242),
                cleaned: false
            }
        );
        assert!(socket_path(&t.0, "stale").exists());
        assert_eq!(
            probe_master(&t.0, "stale", true),
            MasterProbe::Stale {
                pid: Some(4242),
                cleaned: true
            }
        );
        assert!(!socket_path(&t.0, "stale").exists());
        assert!(!pid_path(&t.0, "stale").exists());
        assert_eq!(probe_master(&t.0, "stale", true), MasterProbe::Absent);
    }

    #[test]
    fn pid_file_lock_lifecycle() {
        let t = TempDir::new("rt", 0o700);
        assert!(!is_locked(&t.0, "web"));
        assert_eq!(read_pid(&t.0, "web"), None);
        let pf = PidFile::acquire(&t.0, "web").unwrap();
        let mode = std::fs::metadata(pf.path()).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0);
        assert_eq!(read_pid(&t.0, "web"), Some(std::process::id() as i32));
        assert!(is_locked(&t.0, "web"));

        let e = PidFile::acquire(&t.0, "web").unwrap_err();
        match &e {
            RuntimeDirError::AlreadyRunning { name, pid } => {
                assert_eq!(name, "web");
                assert_eq!(*pid, Some(std::process::id() as i32));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!(
                "a baton master named \"web\" is already running (pid {}); stop it first with: baton stop web",
                std::process::id()
            )
        );
        // Another name is independent.
        let other = PidFile::acquire(&t.0, "api").unwrap();

        let path = pf.path().to_path_buf();
        drop(pf);
        assert!(!path.exists());
        assert!(!is_locked(&t.0, "web"));
        let again = PidFile::acquire(&t.0, "web").unwrap();
        drop(again);
        drop(other);
    }

    #[test]
    fn stale_pid_file_is_taken_over() {
        let t = TempDir::new("rt", 0o700);
        std::fs::write(t.0.join("web.pid"), "999999\n").unwrap();
        assert!(!is_locked(&t.0, "web"));
        assert_eq!(read_pid(&t.0, "web"), Some(999999));
        let pf = PidFile::acquire(&t.0, "web").unwrap();
        assert_eq!(read_pid(&t.0, "web"), Some(std::process::id() as i32));
        drop(pf);
    }

    #[test]
    fn acquire_validates_name() {
        let t = TempDir::new("rt", 0o700);
        assert!(matches!(
            PidFile::acquire(&t.0, "../x"),
            Err(RuntimeDirError::InvalidName(_))
        ));
    }

    #[test]
    fn control_socket_is_0600_and_replaces_stale() {
        let t = TempDir::new("rt", 0o700);
        let path = socket_path(&t.0, "web");
        assert_eq!(path, t.0.join("web.sock"));
        drop(UnixListener::bind(&path).unwrap());
        let l = bind_control_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _c = UnixStream::connect(&path).unwrap();
        l.accept().unwrap();
    }

    #[test]
    fn control_socket_path_too_long() {
        let dir = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let e = bind_control_socket(&socket_path(&dir, "web")).unwrap_err();
        assert!(matches!(e, RuntimeDirError::SocketPathTooLong { .. }));
        assert!(e.to_string().contains("shorter directory"), "{e}");
    }
}
