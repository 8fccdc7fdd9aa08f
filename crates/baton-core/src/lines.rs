//! Newline framing of a peer's byte stream with a length limit (a worker's control
//! channel).
//!
//! Complete lines come out without their newline, however the bytes were split into
//! reads. A line longer than the limit is dropped whole, up to and including its newline:
//! its tail is never taken for a message of its own (a worker that wrote 100 KB of junk
//! and then `{"type":"ready"}` on the same line is not ready), and no more than the limit
//! is ever held. The buffer gives its memory back once a long partial line is done.

/// Capacity kept between lines; a larger buffer is freed once it is empty.
const KEPT_CAPACITY: usize = 8 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    limit: usize,
    /// Inside a line already over the limit: skip up to its newline.
    discarding: bool,
    dropped: u64,
}

impl LineBuffer {
    /// A buffer that accepts lines of at most `limit` bytes (newline excluded).
    pub fn new(limit: usize) -> LineBuffer {
        LineBuffer {
            buf: Vec::new(),
            limit,
            discarding: false,
            dropped: 0,
        }
    }

    /// Add the bytes of one read; `line` is called with each complete line, in order.
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) {
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let part = &rest[..pos];
            rest = &rest[pos + 1..];
            if self.discarding {
                self.discarding = false;
            } else if self.buf.len() + part.len() > self.limit {
                self.dropped += 1;
                self.buf.clear();
            } else if self.buf.is_empty() {
                line(part);
            } else {
                self.buf.extend_from_slice(part);
                line(&self.buf);
                self.buf.clear();
            }
        }
        if !self.discarding {
            if self.buf.len() + rest.len() > self.limit {
                self.dropped += 1;
                self.discarding = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(rest);
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > KEPT_CAPACITY {
            self.buf = Vec::new();
        }
    }

    /// Lines dropped for being longer than the limit, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes held (the start of a line whose newline has not come yet).
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(b: &mut LineBuffer, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        b.push(bytes, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        out
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut b = LineBuffer::new(100);
        assert!(lines(&mut b, b"{\"type\":").is_empty());
        assert_eq!(
            lines(&mut b, b"\"ready\"}\nab"),
            vec!["{\"type\":\"ready\"}"]
        );
        assert_eq!(lines(&mut b, b"c\n\nd\n"), vec!["abc", "", "d"]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_tail_of_an_oversized_line_is_not_a_message() {
        let mut b = LineBuffer::new(10);
        assert!(lines(&mut b, b"xxxxxxxxxxxxxxxxxxxxxxxx").is_empty());
        assert!(b.held() <= 10);
        // The same line goes on, then ends with what looks like a message: dropped.
        assert!(lines(&mut b, b"{\"type\":\"ready\"}\n").is_empty());
        assert_eq!(lines(&mut b, b"ok\n"), vec!["ok"]);
        assert_eq!(b.dropped(), 1);
        // Over the limit within one read, newline included.
        assert_eq!(lines(&mut b, b"01234567890\nfine\n"), vec!["fine"]);
        assert_eq!(b.dropped(), 2);
        // Exactly at the limit is accepted.
        assert_eq!(lines(&mut b, b"0123456789\n"), vec!["0123456789"]);
    }

    #[test]
    fn memory_is_given_back_after_a_long_partial_line() {
        let mut b = LineBuffer::new(1 << 20);
        lines(&mut b, &vec![b'x'; 512 * 1024]);
        assert!(b.buf.capacity() >= 512 * 1024);
        lines(&mut b, b"\n");
        assert_eq!(b.buf.capacity(), 0);
    }
}
