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
//! ```
//!
//! A failed reload answers `{"ok":false,"error":"...","report":{...}}`.

use serde_json::{json, Value};

use crate::log_relay::LogsRequest;

/// `lines` of a `logs` request when it gives none.
pub const DEFAULT_LOG_LINES: usize = 15;
/// The most `lines` a `logs` request may ask for.
pub const MAX_LOG_LINES: u64 = 1_000_000;

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
                follow: value.get("follow").and_then(Value::as_bool).unwrap_or(false),
                group,
            }))
        }
        "reopen-logs" => Ok(Request::ReopenLogs),
        other => Err(format!(
            "unknown control command \"{other}\" (expected status, reload, stop, logs or reopen-logs)"
        )),
    }
}

/// The final line for an error.
pub fn error_line(message: &str) -> String {
    line(&json!({ "ok": false, "error": message }))
}

/// Serialize a JSON value as one protocol line.
pub fn line(value: &Value) -> String {
    let mut s = value.to_string();
    s.push('\n');
    s
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
    }

    #[test]
    fn lines_end_with_newline() {
        assert_eq!(error_line("x"), "{\"error\":\"x\",\"ok\":false}\n");
    }
}
