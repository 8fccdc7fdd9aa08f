//! Listening sockets, created once in the master and kept for its whole life.
//!
//! The master binds and listens; workers inherit the sockets as fds 3.. and accept
//! themselves (`docs/design.md#pitfalls`). The one exception is
//! [`Listener::accept_pending`]: a per-slot socket (`balance: 'reuseport'`) whose slot has
//! no ready worker has its stragglers accepted by the master and handed to a ready worker
//! (see `event_loop/steering.rs`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::ListenAddr;

/// A bound, listening socket owned by the master.
///
/// For a Unix socket, dropping the `Listener` removes the socket file it created (only if
/// the path still refers to the same inode).
#[derive(Debug)]
pub struct Listener {
    /// The address as configured.
    pub addr: ListenAddr,
    /// The address actually bound, in [`ListenAddr`]'s display form, e.g.
    /// `127.0.0.1:41234` (the real port when 0 was asked), `[::]:3000` or `unix:/p`.
    pub local: String,
    socket: Socket,
    port: Option<u16>,
    unix_path_to_remove: Option<UnixFileId>,
    origin: Origin,
}

/// Where a listening socket came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// baton bound it.
    Bound,
    /// systemd passed it (socket activation, `socket_activation/`).
    Inherited {
        /// The fd number it was passed as.
        fd: RawFd,
        /// Its `LISTEN_FDNAMES` name, if any.
        name: Option<String>,
    },
}

/// The socket file we created, identified by device and inode so that `Drop` never
/// removes a file someone else put at the same path later.
#[derive(Debug)]
struct UnixFileId {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listener {
    /// A listening socket systemd passed (already checked by `socket_activation::claim`).
    /// Its Unix socket file, if any, is never removed: systemd owns it.
    pub fn inherited(
        addr: ListenAddr,
        socket: OwnedFd,
        local: String,
        port: Option<u16>,
        fd: RawFd,
        name: Option<String>,
    ) -> Listener {
        let mut listener = Listener::adopted(addr, socket, local, Origin::Inherited { fd, name });
        listener.port = port;
        listener
    }

    /// A listening socket the previous master passed (`baton upgrade`, `upgrade.rs`):
    /// `local` is the address it is bound to. Its Unix socket file, if any, is left in
    /// place on drop until [`Listener::own_file`]: the previous master still serves on it.
    pub fn adopted(addr: ListenAddr, socket: OwnedFd, local: String, origin: Origin) -> Listener {
        let port = match crate::addr::parse(&local) {
            Ok(ListenAddr::Tcp { port, .. }) => Some(port),
            _ => None,
        };
        Listener {
            addr,
            local,
            socket: Socket::from(socket),
            port,
            unix_path_to_remove: None,
            origin,
        }
    }

    /// Remove the Unix socket file now at this listener's path when it closes (the master
    /// that bound it handed it over, `baton upgrade`). Not for a socket systemd passed.
    pub fn own_file(&mut self) {
        if let (ListenAddr::Unix(path), Origin::Bound) = (&self.addr, &self.origin) {
            self.unix_path_to_remove = std::fs::symlink_metadata(path).ok().map(|m| UnixFileId {
                path: path.clone(),
                dev: m.dev(),
                ino: m.ino(),
            });
        }
    }

    /// Leave the Unix socket file in place when this listener closes: the next master
    /// serves on it now (`baton upgrade`).
    pub fn disown_file(&mut self) {
        self.unix_path_to_remove = None;
    }

    /// Where this socket came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The raw listening socket fd (FD_CLOEXEC set; `spawn` passes it to workers).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The bound TCP port (the real one when 0 was asked); `None` for Unix sockets.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Make `accept` on this socket return `WouldBlock` instead of waiting. The flag
    /// belongs to the open file, which workers share: Node (libuv) sets it anyway when it
    /// listens on an inherited fd, so only call it for sockets whose workers run Node.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.socket.set_nonblocking(true)
    }

    /// How many connections wait in this listening TCP socket's accept queue (handshake
    /// done, not yet accepted by a worker); `None` for a Unix socket, off Linux, or when
    /// the kernel does not say. The master adds it to a slot's load: a worker that falls
    /// behind holds few accepted connections but a long queue (see `balance.rs`).
    pub fn queued(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            // A Unix socket has no port and no TCP accept queue.
            self.port?;
            // SAFETY: `tcp_info` is plain old data (integers only), so all zeroes is a valid
            // value; getsockopt writes at most `len` bytes into it and the fd is ours and
            // open for the duration of the call.
            let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = unsafe {
                libc::getsockopt(
                    self.socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    (&mut info as *mut libc::tcp_info).cast(),
                    &mut len,
                )
            };
            // For a socket in LISTEN, the kernel reports its accept queue's length in
            // `tcpi_unacked` (and the queue's limit in `tcpi_sacked`).
            const TCP_LISTEN: u8 = 10;
            if rc != 0 || info.tcpi_state != TCP_LISTEN {
                return None;
            }
            Some(info.tcpi_unacked)
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// Accept one queued connection, non-blocking and close-on-exec; `Ok(None)` when the
    /// queue is empty. The socket must be non-blocking ([`Listener::set_nonblocking`]).
    /// `ECONNABORTED` (the client gave up while queued) is skipped.
    pub fn accept_pending(&self) -> io::Result<Option<OwnedFd>> {
        loop {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let accepted = self
                .socket
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .map(|(s, _)| s);
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let accepted = self
                .socket
                .accept()
                .and_then(|(s, _)| s.set_nonblocking(true).map(|()| s));
            match accepted {
                Ok(conn) => return Ok(Some(conn.into())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(id) = &self.unix_path_to_remove {
            if let Ok(meta) = std::fs::symlink_metadata(&id.path) {
                if meta.dev() == id.dev && meta.ino() == id.ino {
                    let _ = std::fs::remove_file(&id.path);
                }
            }
        }
    }
}

/// Why a listen address could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenErrorKind {
    /// Another socket already holds the address (`EADDRINUSE`, or a live Unix socket).
    AddrInUse,
    /// The OS refused (`EACCES`/`EPERM`): a privileged port, or a directory we cannot write.
    PermissionDenied,
    /// The IP address is not one of this host's (`EADDRNOTAVAIL`).
    AddrNotAvailable,
    /// The host name did not resolve.
    Resolve,
    /// A Unix socket path exists and is something other than a socket.
    NotASocket,
    /// Anything else; see `source`.
    Other,
}

/// A listen address that could not be bound, with the reason and what to do about it.
///
/// `Display` is a complete sentence including the OS error where it adds information.
#[derive(Debug)]
pub struct ListenError {
    /// The address that failed, in display form (for an all-interfaces address, the
    /// socket address actually tried, e.g. `[::]:80` or `0.0.0.0:80`).
    pub addr: String,
    /// The classified reason.
    pub kind: ListenErrorKind,
    /// The underlying OS error.
    pub source: io::Error,
}

impl ListenError {
    fn new(addr: impl Into<String>, source: io::Error) -> ListenError {
        let kind = classify(&source);
        ListenError {
            addr: addr.into(),
            kind,
            source,
        }
    }
}

fn classify(e: &io::Error) -> ListenErrorKind {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => ListenErrorKind::AddrInUse,
        Some(libc::EACCES) | Some(libc::EPERM) => ListenErrorKind::PermissionDenied,
        Some(libc::EADDRNOTAVAIL) => ListenErrorKind::AddrNotAvailable,
        _ => ListenErrorKind::Other,
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parsed = crate::addr::parse(&self.addr).ok();
        let unix_path = match &parsed {
            Some(ListenAddr::Unix(p)) => Some(p.display().to_string()),
            _ => None,
        };
        let port = match &parsed {
            Some(ListenAddr::Tcp { port, .. }) => Some(*port),
            _ => None,
        };
        let addr = &self.addr;
        match self.kind {
            ListenErrorKind::AddrInUse => match unix_path {
                Some(p) => write!(
                    f,
                    "cannot listen on {addr}: address already in use (another process is listening on {p}; stop it or pick another path)"
                ),
                None => write!(
                    f,
                    "cannot listen on {addr}: address already in use (another process holds it; pick another port or stop that process)"
                ),
            },
            ListenErrorKind::PermissionDenied => match (unix_path, port) {
                (Some(p), _) => write!(
                    f,
                    "cannot listen on {addr}: permission denied (check that you may create {p} in its directory)"
                ),
                (None, Some(port)) if port != 0 && port < 1024 => write!(
                    f,
                    "cannot listen on {addr}: permission denied (ports below 1024 need privileges)"
                ),
                _ => write!(f, "cannot listen on {addr}: permission denied ({})", self.source),
            },
            ListenErrorKind::AddrNotAvailable => write!(
                f,
                "cannot listen on {addr}: address not available on this host (use one of this host's addresses, or :{} for all interfaces)",
                port.unwrap_or(0)
            ),
            ListenErrorKind::Resolve => {
                let host = match &parsed {
                    Some(ListenAddr::Tcp { host, .. }) => host.as_str(),
                    _ => addr.as_str(),
                };
                write!(
                    f,
                    "cannot resolve host \"{host}\" in listen address {addr} ({})",
                    self.source
                )
            }
            ListenErrorKind::NotASocket => {
                let p = unix_path.unwrap_or_else(|| addr.clone());
                write!(
                    f,
                    "cannot listen on {addr}: {p} exists and is not a socket (remove it or pick another path)"
                )
            }
            ListenErrorKind::Other => write!(f, "cannot listen on {addr}: {}", self.source),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Options for [`bind_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    /// The `listen()` backlog.
    pub backlog: i32,
    /// Set `SO_REUSEPORT` before binding (TCP only; for one socket per worker slot on
    /// Linux, `docs/design.md#process-model`). Ignored for Unix sockets.
    pub reuse_port: bool,
}

/// Binds and listens on `addr` with the given backlog (`SO_REUSEADDR` on, like Node;
/// close-on-exec set). See [`bind_with`].
pub fn bind(addr: &ListenAddr, backlog: i32) -> Result<Listener, ListenError> {
    bind_with(
        addr,
        &BindOptions {
            backlog,
            reuse_port: false,
        },
    )
}

/// Binds and listens on `addr`.
///
/// - TCP: the host is resolved and the first resolved address that binds is used. An
///   empty host binds `[::]` dual-stack (`IPV6_V6ONLY` off), falling back to `0.0.0.0`
///   when IPv6 is unavailable.
/// - Unix: an existing socket file nobody listens on (stale) is replaced; a live one is
///   [`ListenErrorKind::AddrInUse`]; a non-socket file is [`ListenErrorKind::NotASocket`].
pub fn bind_with(addr: &ListenAddr, opts: &BindOptions) -> Result<Listener, ListenError> {
    match addr {
        ListenAddr::Tcp { host, port } => bind_tcp(addr, host, *port, opts),
        ListenAddr::Unix(path) => bind_unix(addr, path, opts.backlog),
    }
}

fn bind_tcp(
    addr: &ListenAddr,
    host: &str,
    port: u16,
    opts: &BindOptions,
) -> Result<Listener, ListenError> {
    let candidates: Vec<SocketAddr> = if host.is_empty() {
        vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
        ]
    } else {
        let resolved = (host, port).to_socket_addrs().map_err(|e| ListenError {
            addr: addr.to_string(),
            kind: ListenErrorKind::Resolve,
            source: e,
        })?;
        let mut list: Vec<SocketAddr> = Vec::new();
        for sa in resolved {
            if !list.contains(&sa) {
                list.push(sa);
            }
        }
        if list.is_empty() {
            return Err(ListenError {
                addr: addr.to_string(),
                kind: ListenErrorKind::Resolve,
                source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
            });
        }
        list
    };

    let mut first_err: Option<ListenError> = None;
    for sa in &candidates {
        // For an all-interfaces address, name the socket address tried ([::]:80).
        let shown = if host.is_empty() {
            ListenAddr::Tcp {
                host: sa.ip().to_string(),
                port,
            }
            .to_string()
        } else {
            addr.to_string()
        };
        match bind_tcp_one(sa, opts) {
            Ok((socket, local)) => {
                let local_port = local.port();
                return Ok(Listener {
                    addr: addr.clone(),
                    local: ListenAddr::Tcp {
                        host: local.ip().to_string(),
                        port: local_port,
                    }
                    .to_string(),
                    socket,
                    port: Some(local_port),
                    unix_path_to_remove: None,
                    origin: Origin::Bound,
                });
            }
            Err(e) => {
                let unavailable = matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT)
                        | Some(libc::EADDRNOTAVAIL)
                        | Some(libc::EPROTONOSUPPORT)
                );
                let err = ListenError::new(shown, e);
                // Keep the most telling error: a real failure (in use, denied) beats
                // "this address family is not available here".
                match &first_err {
                    None => first_err = Some(err),
                    Some(prev)
                        if !unavailable
                            && matches!(
                                prev.source.raw_os_error(),
                                Some(libc::EAFNOSUPPORT)
                                    | Some(libc::EADDRNOTAVAIL)
                                    | Some(libc::EPROTONOSUPPORT)
                            ) =>
                    {
                        first_err = Some(err)
                    }
                    Some(_) => {}
                }
                // For all interfaces, only fall back to 0.0.0.0 when IPv6 is unavailable.
                if host.is_empty() && !unavailable {
                    break;
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        ListenError::new(addr.to_string(), io::Error::other("no address to bind"))
    }))
}

fn bind_tcp_one(sa: &SocketAddr, opts: &BindOptions) -> io::Result<(Socket, SocketAddr)> {
    // socket2 sets FD_CLOEXEC (atomically on Linux).
    let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
    if sa.is_ipv6() && sa.ip().is_unspecified() {
        // Dual stack, like Node's listen on '::'.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&SockAddr::from(*sa))?;
    socket.listen(opts.backlog)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
    Ok((socket, local))
}

/// The longest Unix socket path the OS accepts, in bytes (without the NUL).
pub(crate) const UNIX_PATH_MAX: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

fn bind_unix(addr: &ListenAddr, path: &Path, backlog: i32) -> Result<Listener, ListenError> {
    let shown = addr.to_string();
    let len = path.as_os_str().len();
    if len > UNIX_PATH_MAX {
        return Err(ListenError {
            addr: shown,
            kind: ListenErrorKind::Other,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the path is {len} bytes, longer than the {UNIX_PATH_MAX}-byte limit for Unix socket paths; use a shorter path"
                ),
            ),
        });
    }

    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match probe_unix_socket(path) {
            Probe::Live => {
                return Err(ListenError {
                    addr: shown,
                    kind: ListenErrorKind::AddrInUse,
                    source: io::Error::from_raw_os_error(libc::EADDRINUSE),
                })
            }
            Probe::Stale => match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ListenError::new(shown, e)),
            },
            Probe::Error(e) => return Err(ListenError::new(shown, e)),
        },
        Ok(_) => {
            return Err(ListenError {
                addr: shown,
                kind: ListenErrorKind::NotASocket,
                source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ListenError::new(shown, e)),
    }

    let sockaddr = SockAddr::unix(path).map_err(|e| ListenError::new(shown.clone(), e))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| ListenError::new(shown.clone(), e))?;
    socket
        .bind(&sockaddr)
        .map_err(|e| ListenError::new(shown.clone(), e))?;
    // From here on the file is ours: record its identity first so that a failing listen()
    // still removes it (through Drop).
    let id = std::fs::symlink_metadata(path).ok().map(|m| UnixFileId {
        path: path.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
    });
    let listener = Listener {
        addr: addr.clone(),
        local: ListenAddr::Unix(path.to_path_buf()).to_string(),
        socket,
        port: None,
        unix_path_to_remove: id,
        origin: Origin::Bound,
    };
    listener
        .socket
        .listen(backlog)
        .map_err(|e| ListenError::new(shown, e))?;
    Ok(listener)
}

enum Probe {
    Live,
    Stale,
    Error(io::Error),
}

/// Is someone listening on the socket file at `path`? A non-blocking connect never hangs
/// on a full backlog (EAGAIN then also means "live").
fn probe_unix_socket(path: &Path) -> Probe {
    let attempt = || -> io::Result<()> {
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        sock.connect(&SockAddr::unix(path)?)
    };
    match attempt() {
        Ok(()) => Probe::Live,
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => Probe::Stale,
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Probe::Live,
            _ => Probe::Error(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tcp(host: &str, port: u16) -> ListenAddr {
        ListenAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "baton-listen-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn binds_ephemeral_port_and_accepts_connections() {
        let l = bind(&tcp("127.0.0.1", 0), 128).unwrap();
        let port = l.port().unwrap();
        assert_ne!(port, 0);
        assert_eq!(l.local, format!("127.0.0.1:{port}"));
        // The kernel completes the handshake although nobody accepts.
        TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(l.fd() >= 0);
    }

    #[test]
    fn fd_is_cloexec() {
        let l = bind(&tcp("127.0.0.1", 0), 16).unwrap();
        // SAFETY: F_GETFD on an fd we own, no memory involved.
        let flags = unsafe { libc::fcntl(l.fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
    }

    #[test]
    fn second_bind_is_addr_in_use() {
        let l = bind(&tcp("127.0.0.1", 0), 16).unwrap();
        let port = l.port().unwrap();
        let e = bind(&tcp("127.0.0.1", port), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::AddrInUse);
        assert_eq!(
            e.to_string(),
            format!("cannot listen on 127.0.0.1:{port}: address already in use (another process holds it; pick another port or stop that process)")
        );
    }

    #[test]
    fn all_interfaces_binds_and_reports_in_use() {
        let l = bind(&tcp("", 0), 16).unwrap();
        let port = l.port().unwrap();
        assert!(l.local == format!("[::]:{port}") || l.local == format!("0.0.0.0:{port}"));
        TcpStream::connect(("127.0.0.1", port)).unwrap();
        let e = bind(&tcp("", port), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn reuse_port_allows_two_sockets() {
        let opts = BindOptions {
            backlog: 16,
            reuse_port: true,
        };
        let a = bind_with(&tcp("127.0.0.1", 0), &opts).unwrap();
        let b = bind_with(&tcp("127.0.0.1", a.port().unwrap()), &opts).unwrap();
        assert_eq!(a.port(), b.port());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn queued_counts_the_connections_waiting_in_the_accept_queue() {
        let l = bind(&tcp("127.0.0.1", 0), 16).unwrap();
        l.set_nonblocking().unwrap();
        assert_eq!(l.queued(), Some(0));
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", l.port().unwrap())).unwrap())
            .collect();
        // Loopback handshakes complete within the connect calls; give the kernel a bounded
        // while to queue the last one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while l.queued() != Some(3) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(l.queued(), Some(3));
        assert!(l.accept_pending().unwrap().is_some());
        assert_eq!(l.queued(), Some(2));
        drop(clients);
        // A Unix socket has no TCP accept queue to report.
        let dir = temp_dir();
        let u = bind(&ListenAddr::Unix(dir.join("q.sock")), 16).unwrap();
        assert_eq!(u.queued(), None);
        drop(u);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accept_pending_takes_queued_connections_and_never_waits() {
        let l = bind(&tcp("127.0.0.1", 0), 16).unwrap();
        l.set_nonblocking().unwrap();
        assert!(l.accept_pending().unwrap().is_none());
        let mut client = TcpStream::connect(("127.0.0.1", l.port().unwrap())).unwrap();
        // The handshake is complete for the client; wait (on readiness) for the server side.
        let mut poll = mio::Poll::new().unwrap();
        let fd = l.fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        let conn = loop {
            if let Some(c) = l.accept_pending().unwrap() {
                break c;
            }
            poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                .unwrap();
            assert!(!events.is_empty(), "no connection within 5 s");
        };
        // SAFETY: F_GETFL/F_GETFD on an fd we own, no memory involved.
        let (fl, fd) = unsafe {
            (
                libc::fcntl(conn.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(conn.as_raw_fd(), libc::F_GETFD),
            )
        };
        assert!(fl & libc::O_NONBLOCK != 0 && fd & libc::FD_CLOEXEC != 0);
        let mut conn = std::net::TcpStream::from(conn);
        use std::io::{Read, Write};
        client.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        conn.set_nonblocking(false).unwrap();
        conn.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        assert!(l.accept_pending().unwrap().is_none());
    }

    #[test]
    fn unresolvable_host() {
        let e = bind(&tcp("nope.invalid", 80), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::Resolve);
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "cannot resolve host \"nope.invalid\" in listen address nope.invalid:80"
            ),
            "{msg}"
        );
    }

    #[test]
    fn foreign_address_not_available() {
        // TEST-NET-1 (RFC 5737) is never assigned to a local interface.
        let e = bind(&tcp("192.0.2.1", 0), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::AddrNotAvailable);
        assert!(e
            .to_string()
            .starts_with("cannot listen on 192.0.2.1:0: address not available on this host"));
    }

    #[test]
    fn error_messages() {
        let denied = ListenError::new("0.0.0.0:80", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.kind, ListenErrorKind::PermissionDenied);
        assert_eq!(
            denied.to_string(),
            "cannot listen on 0.0.0.0:80: permission denied (ports below 1024 need privileges)"
        );
        let na = ListenError::new(
            "10.9.9.9:80",
            io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
        );
        assert_eq!(
            na.to_string(),
            "cannot listen on 10.9.9.9:80: address not available on this host (use one of this host's addresses, or :80 for all interfaces)"
        );
    }

    #[test]
    fn ipv6_loopback_if_available() {
        match bind(&tcp("::1", 0), 16) {
            Ok(l) => {
                let port = l.port().unwrap();
                assert_eq!(l.local, format!("[::1]:{port}"));
                TcpStream::connect(("::1", port)).unwrap();
            }
            Err(e) => {
                // No IPv6 on this host: skip.
                assert!(
                    matches!(
                        e.source.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL) | Some(libc::EAFNOSUPPORT)
                    ),
                    "{e}"
                );
                eprintln!("skipping: IPv6 unavailable: {e}");
            }
        }
    }

    #[test]
    fn unix_socket_bind_connect_and_cleanup() {
        let dir = temp_dir();
        let path = dir.join("a.sock");
        let l = bind(&ListenAddr::Unix(path.clone()), 16).unwrap();
        assert_eq!(l.local, format!("unix:{}", path.display()));
        assert_eq!(l.port(), None);
        UnixStream::connect(&path).unwrap();
        drop(l);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_unix_socket_is_replaced() {
        let dir = temp_dir();
        let path = dir.join("stale.sock");
        // Bind and close a std listener: the file stays, nobody listens.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = bind(&ListenAddr::Unix(path.clone()), 16).unwrap();
        UnixStream::connect(&path).unwrap();
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_unix_socket_is_addr_in_use() {
        let dir = temp_dir();
        let path = dir.join("live.sock");
        let _owner = UnixListener::bind(&path).unwrap();
        let e = bind(&ListenAddr::Unix(path.clone()), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::AddrInUse);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        // The live owner's file is untouched.
        UnixStream::connect(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regular_file_is_not_a_socket() {
        let dir = temp_dir();
        let path = dir.join("file.sock");
        std::fs::write(&path, b"x").unwrap();
        let e = bind(&ListenAddr::Unix(path.clone()), 16).unwrap_err();
        assert_eq!(e.kind, ListenErrorKind::NotASocket);
        assert_eq!(
            e.to_string(),
            format!(
                "cannot listen on unix:{p}: {p} exists and is not a socket (remove it or pick another path)",
                p = path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drop_keeps_a_replaced_file() {
        let dir = temp_dir();
        let path = dir.join("replaced.sock");
        let l = bind(&ListenAddr::Unix(path.clone()), 16).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else").unwrap();
        drop(l);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_long_unix_path() {
        let path = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        let e = bind(&ListenAddr::Unix(path), 16).unwrap_err();
        assert!(e.to_string().contains("use a shorter path"), "{e}");
    }
}
