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
//! ```
//!
//! A failed reload answers `{"ok":false,"error":"...","report":{...}}`.

use serde_json::{json, Value};

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Answer with the status JSON.
    Status,
    /// Run a reload and answer with its report.
    Reload,
    /// Stop the fleet and answer when every worker has exited.
    Stop { force: bool },
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
        other => Err(format!(
            "unknown control command \"{other}\" (expected status, reload or stop)"
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
        assert!(parse_request("{}").unwrap_err().contains("cmd"));
    }

    #[test]
    fn lines_end_with_newline() {
        assert_eq!(error_line("x"), "{\"error\":\"x\",\"ok\":false}\n");
    }
}
