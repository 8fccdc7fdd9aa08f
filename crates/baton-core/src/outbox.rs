//! What the master has to say to one worker, queued until its control channel can take it.
//!
//! The channel is a non-blocking stream socket read by a process the master does not
//! trust. A write may take part of a message, or nothing, at any time; the rest must
//! follow before any other message, or the worker's JSON-lines stream tears. So every
//! message goes through an [`Outbox`]: [`Outbox::flush`] writes as much as the socket
//! takes now and keeps the rest, in order; the caller flushes again when the socket is
//! writable (the event loop asks the poller for `WRITABLE` while the outbox holds
//! something, `event_loop/workers.rs`). Nothing here sleeps or blocks.
//!
//! A message may carry an fd (`SCM_RIGHTS`, `handoff.rs`); it travels with the message's
//! first byte, so a message whose first byte went out has its fd delivered.
//!
//! The outbox is bounded: [`Outbox::push`] refuses a message that would take it past its
//! limit (a worker that never reads its channel), and the caller then gives up on the
//! channel rather than grow without bound.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, OwnedFd};

use crate::handoff;

struct Message {
    bytes: Vec<u8>,
    /// Bytes of it already written.
    sent: usize,
    /// Sent with the first byte, then closed (the receiver has its own copy).
    fd: Option<OwnedFd>,
}

/// See the module documentation.
pub struct Outbox {
    queue: VecDeque<Message>,
    /// Bytes queued and not written yet.
    bytes: usize,
    limit: usize,
}

/// [`Outbox::push`] refused a message: the outbox would hold more than its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// Bytes the outbox held.
    pub queued: usize,
}

impl Outbox {
    /// An empty outbox that holds at most `limit` unwritten bytes.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Queue a message (with an fd to pass along, if any). An empty message is ignored
    /// (an fd needs a byte to travel with).
    pub fn push(&mut self, bytes: Vec<u8>, fd: Option<OwnedFd>) -> Result<(), Full> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.bytes + bytes.len() > self.limit {
            return Err(Full { queued: self.bytes });
        }
        self.bytes += bytes.len();
        self.queue.push_back(Message { bytes, sent: 0, fd });
        Ok(())
    }

    /// Write what `channel` takes now, in order. `Ok(true)`: everything went out;
    /// `Ok(false)`: the socket is full, flush again once it is writable. An error other
    /// than "would block" (the worker closed its end) is returned; what is queued stays.
    pub fn flush<S>(&mut self, channel: &S) -> io::Result<bool>
    where
        S: AsFd,
        for<'a> &'a S: Write,
    {
        while let Some(front) = self.queue.front_mut() {
            let rest = &front.bytes[front.sent..];
            let written = match (&front.fd, front.sent) {
                (Some(fd), 0) => handoff::send_with_fd(channel.as_fd(), rest, fd.as_fd()),
                _ => {
                    let mut w = channel;
                    w.write(rest)
                }
            };
            match written {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    front.sent += n;
                    self.bytes -= n;
                    // The fd went with the first byte: close the master's copy.
                    front.fd = None;
                    if front.sent == front.bytes.len() {
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued and not written yet.
    pub fn queued(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineBuffer;
    use proptest::prelude::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Read what is there; the lines completed so far go to `out`.
    fn drain(reader: &UnixStream, frames: &mut LineBuffer, out: &mut Vec<Vec<u8>>, max: usize) {
        let mut buf = vec![0u8; max.max(1)];
        let mut r = reader;
        match r.read(&mut buf) {
            Ok(n) => frames.push(&buf[..n], |l| out.push(l.to_vec())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }

    proptest! {
        /// However the socket takes them (a reader that reads in random small bites while
        /// the writer pushes more), every message arrives whole, once, in order.
        #[test]
        fn messages_arrive_whole_and_in_order(
            sizes in proptest::collection::vec(1usize..40_000, 1..40),
            bites in proptest::collection::vec(1usize..70_000, 1..50),
        ) {
            let (writer, reader) = pair();
            let mut outbox = Outbox::new(usize::MAX);
            let sent: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut line = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
                    line.resize(line.len() + n, b'a' + (i % 26) as u8);
                    line.extend_from_slice(b"\"}");
                    line
                })
                .collect();
            let mut frames = LineBuffer::new(1 << 20);
            let mut got = Vec::new();
            for (i, line) in sent.iter().enumerate() {
                let mut framed = line.clone();
                framed.push(b'\n');
                outbox.push(framed, None).unwrap();
                outbox.flush(&writer).unwrap();
                drain(&reader, &mut frames, &mut got, bites[i % bites.len()]);
            }
            let mut rounds = 0;
            while !outbox.flush(&writer).unwrap() || got.len() < sent.len() {
                drain(&reader, &mut frames, &mut got, 65_536);
                rounds += 1;
                prop_assert!(rounds < 100_000);
            }
            prop_assert_eq!(outbox.queued(), 0);
            prop_assert_eq!(got, sent);
        }
    }

    #[test]
    fn a_reader_that_never_reads_fills_the_outbox_up_to_its_limit() {
        let (writer, _reader) = pair();
        let mut outbox = Outbox::new(64 * 1024);
        let line = vec![b'x'; 1000];
        let mut refused = None;
        for i in 0..10_000 {
            if let Err(full) = outbox.push(line.clone(), None) {
                refused = Some((i, full));
                break;
            }
            assert!(outbox.flush(&writer).is_ok());
        }
        let (_, full) = refused.expect("the outbox refuses once full");
        assert!(full.queued <= 64 * 1024);
        assert!(full.queued > 63 * 1024);
        assert!(!outbox.is_empty());
    }

    #[test]
    fn an_fd_travels_with_the_first_byte_only() {
        let (writer, reader) = pair();
        let (fd_a, _fd_b) = UnixStream::pair().unwrap();
        let mut outbox = Outbox::new(1 << 20);
        outbox
            .push(b"{\"a\":1}\n".to_vec(), Some(OwnedFd::from(fd_a)))
            .unwrap();
        assert!(outbox.flush(&writer).unwrap());
        let mut buf = [0u8; 64];
        let mut r = &reader;
        let n = r.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"a\":1}\n");
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_hang() {
        let (writer, reader) = pair();
        drop(reader);
        let mut outbox = Outbox::new(1 << 20);
        outbox.push(b"x\n".to_vec(), None).unwrap();
        assert!(outbox.flush(&writer).is_err());
    }
}
