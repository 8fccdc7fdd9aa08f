//! systemd's notify protocol (`sd_notify(3)`): when the master runs under a unit with
//! `Type=notify` or `Type=notify-reload`, systemd sets `NOTIFY_SOCKET` to a Unix datagram
//! socket (a path, or `@name` in the abstract namespace) and waits for `READY=1`; a reload
//! is announced with `RELOADING=1` plus `MONOTONIC_USEC=` and ends with `READY=1`, a stop
//! with `STOPPING=1`, and `STATUS=` lines show in `systemctl status`.
//!
//! The master sends, from the loop (see `event_loop`): `READY=1`, `MAINPID=` and a status
//! when every worker is first ready; `RELOADING=1` + `MONOTONIC_USEC=` when a reload pass
//! begins and `READY=1` with the outcome in `STATUS=` when it ends (done, aborted or
//! cancelled); `STOPPING=1` when the fleet starts to stop. Workers never inherit
//! `NOTIFY_SOCKET` (`spawn.rs` removes it). Sending is best effort: a lost datagram is
//! logged once, never fatal.
//!
//! This module's one `unsafe` is the `clock_gettime` in [`monotonic_usec`].

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// Linux abstract namespace (`NOTIFY_SOCKET=@name`), without the `@`.
    Abstract(Vec<u8>),
}

/// A connection-less sender to systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

impl Notifier {
    /// A notifier for the `NOTIFY_SOCKET` value `value` (`None` or empty: not under
    /// systemd). The error names the variable and the cause.
    pub fn new(value: Option<&str>) -> Option<Result<Notifier, String>> {
        let value = value.filter(|v| !v.is_empty())?;
        let target = match value.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(PathBuf::from(value)),
        };
        Some(
            UnixDatagram::unbound()
                .map(|socket| Notifier { socket, target })
                .map_err(|e| {
                    format!("NOTIFY_SOCKET={value}: cannot create a datagram socket: {e}")
                }),
        )
    }

    /// Send one notification: newline-separated `KEY=value` assignments.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Target::Path(path) => self.socket.send_to(state.as_bytes(), path).map(|_| ()),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                self.socket
                    .send_to_addr(state.as_bytes(), &addr)
                    .map(|_| ())
            }
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract socket names exist only on Linux",
            )),
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC=` is read against.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A `STATUS=` value on one line (systemd shows one line).
pub fn status_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("baton-notify-{}-{name}", std::process::id()))
    }

    #[test]
    fn unset_or_empty_means_not_under_systemd() {
        assert!(Notifier::new(None).is_none());
        assert!(Notifier::new(Some("")).is_none());
    }

    #[test]
    fn sends_datagrams_to_a_path() {
        let path = temp_path("path");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str()).unwrap().unwrap();
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_datagrams_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("baton-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(&format!("@{name}"))).unwrap().unwrap();
        n.send("STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::new(temp_path("missing").to_str())
            .unwrap()
            .unwrap();
        assert!(n.send("READY=1").is_err());
    }

    #[test]
    fn monotonic_usec_grows_and_status_is_one_line() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
        assert_eq!(
            status_line("reload failed:\n  exited  with code 1"),
            "reload failed: exited with code 1"
        );
    }
}
