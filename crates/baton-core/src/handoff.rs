//! Handing an accepted connection to a worker over its control channel.
//!
//! The control channel is Node's IPC channel in `json` serialization mode (see
//! `spawn.rs`), so the master speaks Node's own handle protocol: one line
//!
//! ```text
//! {"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"type":"baton:connection","fd":3},"key":null}
//! ```
//!
//! sent with `sendmsg()` carrying the connection's fd in an `SCM_RIGHTS` control message.
//! Node (lib/internal/child_process.js, `setupChannel`) keeps the fd that arrives with a
//! read, pairs it with the next `NODE_HANDLE` line, wraps it in a `net.Socket` (the fd is
//! a TCP socket, so libuv opens it as one) and emits `process.on('message', msg, socket)`
//! with `msg` the inner object. It answers `{"cmd":"NODE_HANDLE_ACK"}` (or `..._NACK` when
//! the fd did not arrive) on the channel; the master's line parser ignores both. `fd` is
//! the worker's inherited listening fd the connection was queued on, so the runtime
//! (`src/worker/worker.ts`) emits it on the server listening there; a connection queued on a
//! drop-in socket (the app's own `listen(port)`, `event_loop/drop_in.rs`), which the
//! worker did not inherit, carries `"port":P` instead ([`Target::Port`]).
//!
//! All of this module's `unsafe` is the `sendmsg` in [`send_with_fd`] (and the
//! `recvmsg` of its test).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The `NODE_HANDLE` line (with its newline) announcing a connection queued on the
/// worker's inherited listening fd `listen_fd` (3, 4, ...).
pub fn handle_line(listen_fd: i32) -> String {
    format!(
        "{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{{\"type\":\"baton:connection\",\"fd\":{listen_fd}}},\"key\":null}}\n"
    )
}

/// Which of the worker's servers takes a handed-off connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The one listening on this inherited fd (3, 4, ...).
    Fd(i32),
    /// The one listening on this port on a socket the master gave for its own
    /// `listen(port)` (drop-in mode, `event_loop/drop_in.rs`).
    Port(u16),
}

/// The `NODE_HANDLE` line (with its newline) announcing a connection for `target`:
/// `"fd":N` or `"port":P` in the message.
pub fn target_line(target: Target) -> String {
    match target {
        Target::Fd(fd) => handle_line(fd),
        Target::Port(port) => format!(
            "{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{{\"type\":\"baton:connection\",\"port\":{port}}},\"key\":null}}\n"
        ),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
// No MSG_NOSIGNAL on macOS; Node ignores SIGPIPE in the master, so EPIPE is returned.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// Writes `bytes` to the stream socket `channel` with `fd` attached (`SCM_RIGHTS`); the
/// receiver gets its own copy of `fd`, the caller still owns (and should close) this one.
/// Returns how many bytes were written (the fd travels with the first one); on a
/// non-blocking socket that is full, `WouldBlock` and nothing was sent.
pub fn send_with_fd(
    channel: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an fd must travel with at least one byte",
        ));
    }
    let raw = fd.as_raw_fd();
    let fd_len = std::mem::size_of::<libc::c_int>() as libc::c_uint;
    // u64 words: aligned for cmsghdr; 32 bytes hold CMSG_SPACE(4) on every platform.
    let mut space = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let control_len = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    assert!(control_len <= std::mem::size_of_val(&space));
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    // SAFETY: msg_control points at `control_len` zeroed, aligned bytes we own, enough for
    // one header and one int (asserted above), so CMSG_FIRSTHDR is non-null and CMSG_DATA
    // has room for the fd. sendmsg reads `bytes` (valid for its length through `iov`) and
    // the control buffer, all alive for the call; `channel` and `fd` are open (borrowed).
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        libc::sendmsg(channel.as_raw_fd(), &msg, SEND_FLAGS)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lines_name_the_fd_or_the_drop_in_port() {
        let fd: serde_json::Value =
            serde_json::from_str(target_line(Target::Fd(4)).trim_end()).unwrap();
        assert_eq!(fd["cmd"], "NODE_HANDLE");
        assert_eq!(
            fd["msg"],
            serde_json::json!({"type": "baton:connection", "fd": 4})
        );
        let line = target_line(Target::Port(3000));
        assert!(line.ends_with('\n'));
        let port: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(port["type"], "net.Socket");
        assert_eq!(
            port["msg"],
            serde_json::json!({"type": "baton:connection", "port": 3000})
        );
    }
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    /// Reads up to `buf.len()` bytes and at most one fd (the receiving side of Node's
    /// channel, as libuv does it).
    fn recv_with_fd(
        channel: BorrowedFd<'_>,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<OwnedFd>)> {
        let mut space = [0u64; 4];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as in send_with_fd; recvmsg writes at most iov_len bytes into `buf` and
        // at most msg_controllen bytes into `space`, both ours and alive for the call. A
        // received fd is read from CMSG_DATA only when the header says SCM_RIGHTS with
        // room for one int, and is then owned by us.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&space) as _;
            let n = libc::recvmsg(channel.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut fd = None;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as _) as usize
            {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            Ok((n as usize, fd))
        }
    }

    #[test]
    fn the_line_is_nodes_handle_message() {
        let line = handle_line(4);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["cmd"], "NODE_HANDLE");
        assert_eq!(v["type"], "net.Socket");
        assert_eq!(
            v["msg"],
            serde_json::json!({ "type": "baton:connection", "fd": 4 })
        );
        assert!(v["key"].is_null());
    }

    #[test]
    fn an_accepted_connection_travels_with_its_line() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (master, worker) = UnixStream::pair().unwrap();

        let line = handle_line(3);
        let sent = send_with_fd(master.as_fd(), line.as_bytes(), accepted.as_fd()).unwrap();
        assert_eq!(sent, line.len());
        drop(accepted); // the master closes its copy after sending

        let mut buf = [0u8; 256];
        let (n, fd) = recv_with_fd(worker.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], line.as_bytes());
        let mut received = TcpStream::from(fd.expect("an fd arrived with the line"));
        // It is the very connection: bytes flow both ways with the client.
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        received.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        received.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        // Closing the last copy ends the connection for the client.
        drop(received);
        assert_eq!(client.read(&mut got).unwrap(), 0);
    }

    #[test]
    fn a_closed_channel_is_an_error_not_a_signal() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (master, worker) = UnixStream::pair().unwrap();
        drop(worker);
        let err = send_with_fd(master.as_fd(), b"x\n", accepted.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{err}");
    }

    #[test]
    fn a_full_channel_would_block_and_sends_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (mut master, worker) = UnixStream::pair().unwrap();
        master.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 4096];
        loop {
            match master.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let err =
            send_with_fd(master.as_fd(), handle_line(3).as_bytes(), accepted.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(worker);
    }
}
