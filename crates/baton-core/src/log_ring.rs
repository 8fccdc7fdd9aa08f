//! Worker output as lines: the line assembly shared by the ring and by prefixed sinks, and
//! the master's bounded memory of recent lines (`baton logs`). Pure: no I/O, no clock
//! (time comes in as an argument).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Which of a worker's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

impl Stream {
    /// Both streams, in fd order.
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// 0 for stdout, 1 for stderr (an index into per-stream arrays).
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// A line longer than this is cut into pieces of this size (a worker that never writes a
/// newline must not grow a buffer without bound).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits a byte stream into lines. A line is emitted without its `\n`; a line longer
/// than the limit is emitted in pieces; [`LineBuf::finish`] emits what is left (a last line
/// without newline, when the worker exits).
#[derive(Debug)]
pub struct LineBuf {
    pending: Vec<u8>,
    max: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf::new(MAX_LINE_BYTES)
    }
}

impl LineBuf {
    /// A buffer that cuts lines at `max` bytes (at least 1).
    pub fn new(max: usize) -> LineBuf {
        LineBuf {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feed bytes; `out` receives every complete line.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(pos) if self.pending.len() + pos <= self.max => {
                    if self.pending.is_empty() {
                        out(&bytes[..pos]);
                    } else {
                        self.pending.extend_from_slice(&bytes[..pos]);
                        out(&self.pending);
                        self.pending.clear();
                    }
                    bytes = &bytes[pos + 1..];
                }
                _ => {
                    let room = self.max - self.pending.len();
                    let take = room.min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() >= self.max {
                        out(&self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// Emit the partial line, if any.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            out(&self.pending);
            self.pending.clear();
        }
    }
}

/// One line of worker output.
#[derive(Debug, Clone)]
pub struct Line {
    /// Grows by one per line, across the master's life.
    pub seq: u64,
    /// When the master read it.
    pub time: SystemTime,
    /// The worker's group.
    pub group: Arc<str>,
    /// The worker's slot id.
    pub id: u32,
    /// The stream it came from.
    pub stream: Stream,
    /// The line, without its newline (nor a `\r` before it); not necessarily UTF-8.
    pub text: Vec<u8>,
}

/// Bytes counted per line on top of its text (the record itself), so a flood of empty
/// lines is bounded too.
const LINE_OVERHEAD: usize = 64;

/// The most recent lines of every worker, bounded in bytes: the oldest go first.
#[derive(Debug)]
pub struct Ring {
    lines: VecDeque<Line>,
    bytes: usize,
    capacity: usize,
    next_seq: u64,
}

impl Ring {
    /// A ring holding at most `capacity` bytes (text plus a fixed overhead per line).
    pub fn new(capacity: usize) -> Ring {
        Ring {
            lines: VecDeque::new(),
            bytes: 0,
            capacity,
            next_seq: 1,
        }
    }

    /// Append a line (evicting the oldest ones to stay within the capacity) and return it.
    pub fn push(
        &mut self,
        time: SystemTime,
        group: &Arc<str>,
        id: u32,
        stream: Stream,
        text: &[u8],
    ) -> &Line {
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let cost = text.len() + LINE_OVERHEAD;
        while self.bytes + cost > self.capacity {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len() + LINE_OVERHEAD,
                None => break,
            }
        }
        let line = Line {
            seq: self.next_seq,
            time,
            group: group.clone(),
            id,
            stream,
            text: text.to_vec(),
        };
        self.next_seq += 1;
        self.bytes += cost;
        self.lines.push_back(line);
        &self.lines[self.lines.len() - 1]
    }

    /// The last `n` lines (of `group` only, when given), oldest first.
    pub fn last(&self, n: usize, group: Option<&str>) -> Vec<&Line> {
        let mut picked: Vec<&Line> = self
            .lines
            .iter()
            .rev()
            .filter(|l| group.is_none_or(|g| &*l.group == g))
            .take(n)
            .collect();
        picked.reverse();
        picked
    }

    /// Lines held and the bytes they count for.
    pub fn usage(&self) -> (usize, usize) {
        (self.lines.len(), self.bytes)
    }
}

/// A line as the control socket sends it (`baton logs`): `{"type":"output",...}`, the
/// contract's `OutputLine` (crates/baton-contract/src/events.rs) written without copying
/// the line.
#[derive(Debug, Serialize)]
pub struct OutputEvent<'a> {
    /// Always `"output"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The worker's group.
    pub group: &'a str,
    /// The worker's slot id.
    pub id: u32,
    /// `stdout` or `stderr`.
    pub stream: Stream,
    /// When the master read it (ISO-8601).
    pub time: String,
    /// The line (invalid UTF-8 replaced).
    pub text: std::borrow::Cow<'a, str>,
}

impl<'a> OutputEvent<'a> {
    /// The event for `line`.
    pub fn of(line: &'a Line) -> OutputEvent<'a> {
        OutputEvent {
            kind: "output",
            group: &line.group,
            id: line.id,
            stream: line.stream,
            time: crate::public_json::iso8601(line.time),
            text: String::from_utf8_lossy(&line.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &mut LineBuf, input: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in input {
            buf.feed(chunk, &mut |l| {
                out.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut buf = LineBuf::new(100);
        assert_eq!(lines(&mut buf, &[b"a\nb", b"c\n\nd"]), vec!["a", "bc", ""]);
        let mut rest = Vec::new();
        buf.finish(&mut |l| rest.push(l.to_vec()));
        assert_eq!(rest, vec![b"d".to_vec()]);
        buf.finish(&mut |_| panic!("nothing left"));
    }

    #[test]
    fn cuts_long_lines() {
        let mut buf = LineBuf::new(4);
        assert_eq!(
            lines(&mut buf, &[b"abcdefghij\nxy", b"z\n"]),
            vec!["abcd", "efgh", "ij", "xyz"]
        );
        // Exactly the limit before the newline: one line, then an empty one is not made up.
        let mut buf = LineBuf::new(4);
        assert_eq!(lines(&mut buf, &[b"abcd\n"]), vec!["abcd"]);
    }

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let group: Arc<str> = Arc::from("web");
        let mut ring = Ring::new(3 * (LINE_OVERHEAD + 10));
        for i in 0..10 {
            let text = format!("line {i:05}");
            ring.push(
                SystemTime::UNIX_EPOCH,
                &group,
                0,
                Stream::Stdout,
                text.as_bytes(),
            );
        }
        let (count, bytes) = ring.usage();
        assert_eq!(count, 3);
        assert!(bytes <= 3 * (LINE_OVERHEAD + 10));
        let last: Vec<String> = ring
            .last(2, None)
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect();
        assert_eq!(last, vec!["line 00008", "line 00009"]);
        assert_eq!(ring.last(100, None).len(), 3);
        assert_eq!(ring.last(100, None)[2].seq, 10);
    }

    #[test]
    fn ring_filters_by_group_and_strips_cr() {
        let (web, jobs): (Arc<str>, Arc<str>) = (Arc::from("web"), Arc::from("jobs"));
        let mut ring = Ring::new(1 << 20);
        ring.push(SystemTime::UNIX_EPOCH, &web, 0, Stream::Stdout, b"w1\r");
        ring.push(SystemTime::UNIX_EPOCH, &jobs, 1, Stream::Stderr, b"j1");
        ring.push(SystemTime::UNIX_EPOCH, &web, 1, Stream::Stdout, b"w2");
        let got: Vec<&[u8]> = ring
            .last(5, Some("web"))
            .iter()
            .map(|l| l.text.as_slice())
            .collect();
        assert_eq!(got, vec![b"w1".as_slice(), b"w2".as_slice()]);
        let event = serde_json::to_value(OutputEvent::of(ring.last(1, Some("jobs"))[0])).unwrap();
        assert_eq!(
            event,
            serde_json::json!({
                "type": "output", "group": "jobs", "id": 1, "stream": "stderr",
                "time": "1970-01-01T00:00:00.000Z", "text": "j1"
            })
        );
        // It is the contract's OutputLine, field for field (unknown fields are refused).
        let line: baton_contract::events::OutputLine =
            serde_json::from_value(event.clone()).unwrap();
        assert_eq!(serde_json::to_value(line).unwrap(), event);
    }

    #[test]
    fn a_line_larger_than_the_ring_is_kept_alone() {
        let group: Arc<str> = Arc::from("web");
        let mut ring = Ring::new(10);
        ring.push(SystemTime::UNIX_EPOCH, &group, 0, Stream::Stdout, b"a");
        ring.push(SystemTime::UNIX_EPOCH, &group, 0, Stream::Stdout, b"bbbb");
        assert_eq!(ring.usage().0, 1);
        assert_eq!(ring.last(5, None)[0].text, b"bbbb");
    }
}
