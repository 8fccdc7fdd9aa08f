//! The control-socket protocol spoken between the master and the `baton` CLI.
//!
//! Newline-delimited JSON over a Unix stream socket in the runtime dir. The client sends
//! one request line; the master answers with zero or more `{"event": ...}` lines (reload
//! progress) and exactly one final line with `"ok"`:
//!
//! ```text
//! -> {"cmd":"status"}                 <- {"ok":true,"status":{...}}
//! -> {"cmd":"reload"}                 <- {"event":{"type":"reload:start",...}} ... {"ok":true,"report":{...}}
//! -> {"cmd":"stop","force":false}     <- {"ok":true,"stopped":true}   (after every worker exited)
//! -> {"cmd":"logs","lines":15,"follow":false}
//!                                     <- {"event":{"type":"output","group":"web","id":0,"stream":"stdout","time":...,"text":"..."}} ... {"ok":true}
//! -> {"cmd":"logs","lines":15,"follow":true,"group":"web"}
//!                                     <- the same lines, then every new one, {"event":{"type":"output:dropped","lines":N}}
//!                                        when the client reads too slowly, and {"ok":true,"stopped":true} when the master stops
//! -> {"cmd":"reopen-logs"}            <- {"ok":true,"reopened":N}
//! -> {"cmd":"scale","group":"web","count":4}
//!                                     <- {"ok":true,"group":"web","count":4}   (once every
//!                                        new worker is ready / every removed one exited)
//! -> {"cmd":"upgrade"}                <- {"ok":true,"message":"upgraded ..."}   (once the new
//!                                        master serves and this one's workers drained)
//! ```
//!
//! `group` may be left out (or null) when the fleet has one group.
//!
//! A failed reload answers `{"ok":false,"error":"...","report":{...}}`.
//!
//! While a request waits (a reload, a stop, a scale), the master sends `{"heartbeat":true}` every
//! [`HEARTBEAT_INTERVAL`], so a client can tell a long reload from a master that stopped
//! answering (SIGSTOP, a wedged host) and give up after a few missed beats.
//!
//! Limits, enforced as bytes arrive: a request line is at most [`MAX_REQUEST_BYTES`]; a
//! client that has not sent a whole line within [`REQUEST_TIMEOUT`] is dropped; at most
//! [`MAX_CLIENTS`] connections are open at once; a client that does not read its answers
//! is dropped once [`MAX_PENDING_OUTPUT`] bytes wait for it.

use std::time::Duration;

use serde_json::Value;

use crate::public_json::{self, ControlAnswer};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Time a client has to send its request line after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Open control connections at most; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 64;
/// Bytes queued for a client that does not read before it is dropped.
pub const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
/// Interval of the `{"heartbeat":true}` lines sent to clients waiting for an answer.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The heartbeat line.
pub const HEARTBEAT_LINE: &str = "{\"heartbeat\":true}\n";

/// Collects the bytes of one request line, enforcing [`MAX_REQUEST_BYTES`] as they come.
#[derive(Debug, Default)]
pub struct RequestBuffer {
    buf: Vec<u8>,
}

/// What a [`RequestBuffer`] holds after some bytes arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// No newline yet, and still within the limit.
    Partial,
    /// The request line (without its newline). Bytes after it are ignored: one request per
    /// connection.
    Line(String),
    /// The limit was passed before a newline came.
    TooLong,
}

impl RequestBuffer {
    /// Add bytes; at most `MAX_REQUEST_BYTES` are ever held.
    pub fn push(&mut self, bytes: &[u8]) -> Framed {
        let room = MAX_REQUEST_BYTES - self.buf.len();
        let take = &bytes[..bytes.len().min(room)];
        if let Some(pos) = take.iter().position(|b| *b == b'\n') {
            self.buf.extend_from_slice(&take[..pos]);
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            return Framed::Line(line);
        }
        self.buf.extend_from_slice(take);
        if self.buf.len() >= MAX_REQUEST_BYTES {
            Framed::TooLong
        } else {
            Framed::Partial
        }
    }
}

/// The error answer for a request line over the limit.
pub fn too_long_message() -> String {
    format!("control request longer than {MAX_REQUEST_BYTES} bytes: send one JSON line")
}
/// A `baton logs` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    /// Recent lines to send first.
    pub lines: usize,
    /// Keep sending new lines until the client or the master goes.
    pub follow: bool,
    /// Only this group's lines.
    pub group: Option<String>,
}

/// `lines` of a `logs` request when it gives none.
pub const DEFAULT_LOG_LINES: usize = 15;
/// The most `lines` a `logs` request may ask for.
pub const MAX_LOG_LINES: u64 = 1_000_000;

/// The most workers a group can be scaled to (the same bound as the `count` option:
/// `MAX_WORKERS` in src/defaults.ts).
pub const MAX_COUNT: u64 = 1024;

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Answer with the status JSON.
    Status,
    /// Run a reload and answer with its report.
    Reload,
    /// Stop the fleet and answer when every worker has exited.
    Stop { force: bool },
    /// Send recent output lines (and follow new ones).
    Logs(LogsRequest),
    /// Reopen every log file (after logrotate renamed them).
    ReopenLogs,
    /// Change a group's worker count; answer once it is reached.
    Scale { group: Option<String>, count: u32 },
    /// Replace the master (`baton upgrade`); answer once the new one serves and the old
    /// workers have drained.
    Upgrade,
    /// Test-only: stall the loop thread for this many milliseconds (honoured only when
    /// the master was started with `BATON_TEST_HOOKS=1`; otherwise answered like an
    /// unknown command). Lets __test__/health.spec.ts see a stuck loop.
    TestFreeze { ms: u64 },
}

/// Parse one request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("control request is not valid JSON: {e}"))?;
    let cmd = value
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or_else(|| "control request has no \"cmd\" string".to_string())?;
    match cmd {
        "status" => Ok(Request::Status),
        "reload" => Ok(Request::Reload),
        "stop" => Ok(Request::Stop {
            force: value.get("force").and_then(Value::as_bool).unwrap_or(false),
        }),
        "logs" => {
            let lines = match value.get("lines") {
                None => DEFAULT_LOG_LINES,
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= MAX_LOG_LINES)
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        format!("lines: expected a whole number from 0 to {MAX_LOG_LINES}, got {v}")
                    })?,
            };
            let group = match value.get("group") {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) => Some(g.clone()),
                Some(v) => return Err(format!("group: expected a group name, got {v}")),
            };
            Ok(Request::Logs(LogsRequest {
                lines,
                follow: value
                    .get("follow")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                group,
            }))
        }
        "reopen-logs" => Ok(Request::ReopenLogs),
        "upgrade" => Ok(Request::Upgrade),
        "scale" => {
            let count = value
                .get("count")
                .and_then(Value::as_u64)
                .filter(|n| (1..=MAX_COUNT).contains(n))
                .ok_or_else(|| {
                    let got = value.get("count").cloned().unwrap_or(Value::Null);
                    format!("count: expected a whole number of workers from 1 to {MAX_COUNT}, got {got}")
                })?;
            let group = match value.get("group") {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) => Some(g.clone()),
                Some(v) => return Err(format!("group: expected a group name, got {v}")),
            };
            Ok(Request::Scale {
                group,
                count: count as u32,
            })
        }
        "test-freeze" => Ok(Request::TestFreeze {
            ms: value.get("ms").and_then(Value::as_u64).unwrap_or(0),
        }),
        other => Err(unknown_command(other)),
    }
}

/// The error for a command this master does not know.
pub fn unknown_command(other: &str) -> String {
    format!(
            "unknown control command \"{other}\" (expected status, reload, stop, logs, reopen-logs, scale or upgrade)"
    )
}

/// The final line for an error.
pub fn error_line(message: &str) -> String {
    public_json::line(&ControlAnswer::error(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse_request(r#"{"cmd":"status"}"#), Ok(Request::Status));
        assert_eq!(parse_request("{\"cmd\":\"reload\"}\n"), Ok(Request::Reload));
        assert_eq!(
            parse_request(r#"{"cmd":"stop","force":true}"#),
            Ok(Request::Stop { force: true })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"stop"}"#),
            Ok(Request::Stop { force: false })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"test-freeze","ms":7}"#),
            Ok(Request::TestFreeze { ms: 7 })
        );
        assert!(parse_request(r#"{"cmd":"dance"}"#)
            .unwrap_err()
            .contains("dance"));
        assert!(parse_request("nope").unwrap_err().contains("JSON"));
        assert_eq!(
            parse_request(r#"{"cmd":"logs"}"#),
            Ok(Request::Logs(LogsRequest {
                lines: DEFAULT_LOG_LINES,
                follow: false,
                group: None
            }))
        );
        assert_eq!(
            parse_request(r#"{"cmd":"logs","lines":3,"follow":true,"group":"web"}"#),
            Ok(Request::Logs(LogsRequest {
                lines: 3,
                follow: true,
                group: Some("web".into())
            }))
        );
        assert!(parse_request(r#"{"cmd":"logs","lines":-1}"#)
            .unwrap_err()
            .starts_with("lines:"));
        assert!(parse_request(r#"{"cmd":"logs","group":3}"#)
            .unwrap_err()
            .starts_with("group:"));
        assert_eq!(
            parse_request(r#"{"cmd":"reopen-logs"}"#),
            Ok(Request::ReopenLogs)
        );
        assert!(parse_request("{}").unwrap_err().contains("cmd"));
        assert_eq!(
            parse_request(r#"{"cmd":"scale","group":"web","count":4}"#),
            Ok(Request::Scale {
                group: Some("web".into()),
                count: 4
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"scale","count":1}"#),
            Ok(Request::Scale {
                group: None,
                count: 1
            })
        );
        for bad in ["0", "-1", "1.5", "\"2\"", "1025"] {
            let line = format!(r#"{{"cmd":"scale","count":{bad}}}"#);
            assert!(
                parse_request(&line).unwrap_err().starts_with("count:"),
                "{line}"
            );
        }
        assert!(parse_request(r#"{"cmd":"scale"}"#)
            .unwrap_err()
            .starts_with("count:"));
        assert!(parse_request(r#"{"cmd":"scale","count":2,"group":1}"#)
            .unwrap_err()
            .starts_with("group:"));
    }

    #[test]
    fn a_request_split_across_reads_is_joined() {
        let mut b = RequestBuffer::default();
        assert_eq!(b.push(b"{\"cmd\":"), Framed::Partial);
        assert_eq!(b.push(b"\"status\"}"), Framed::Partial);
        assert_eq!(
            b.push(b"\n"),
            Framed::Line("{\"cmd\":\"status\"}".to_string())
        );
    }

    #[test]
    fn the_first_of_several_lines_is_the_request() {
        let mut b = RequestBuffer::default();
        assert_eq!(
            b.push(b"{\"cmd\":\"status\"}\n{\"cmd\":\"stop\"}\n"),
            Framed::Line("{\"cmd\":\"status\"}".to_string())
        );
    }

    #[test]
    fn an_oversized_line_is_refused_without_holding_more_than_the_limit() {
        let mut b = RequestBuffer::default();
        let chunk = vec![b'x'; 40 * 1024];
        assert_eq!(b.push(&chunk), Framed::Partial);
        assert_eq!(b.push(&chunk), Framed::TooLong);
        assert!(b.buf.len() <= MAX_REQUEST_BYTES);
        // A newline beyond the limit does not rescue it.
        let mut b = RequestBuffer::default();
        let mut long = vec![b'x'; MAX_REQUEST_BYTES];
        long.push(b'\n');
        assert_eq!(b.push(&long), Framed::TooLong);
        // Exactly at the limit, newline included, is accepted.
        let mut b = RequestBuffer::default();
        let mut fits = vec![b'x'; MAX_REQUEST_BYTES - 1];
        fits.push(b'\n');
        assert!(matches!(b.push(&fits), Framed::Line(l) if l.len() == MAX_REQUEST_BYTES - 1));
    }

    #[test]
    fn the_heartbeat_is_one_json_line_without_ok_or_event() {
        let v: Value = serde_json::from_str(HEARTBEAT_LINE.trim_end()).unwrap();
        assert!(HEARTBEAT_LINE.ends_with('\n'));
        assert!(v.get("ok").is_none() && v.get("event").is_none());
    }

    #[test]
    fn lines_end_with_newline() {
        assert_eq!(error_line("x"), "{\"ok\":false,\"error\":\"x\"}\n");
    }
}
