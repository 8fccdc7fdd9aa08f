//! How one line of output is written to its sink: as read (`text`, optionally after a
//! time stamp and a `group#id ` prefix), or as one JSON object (`json`). Pure: the time
//! comes in as an argument.
//!
//! Text: `[<time> ][<group>#<id> ]<line>\n`, the time ISO 8601 in UTC with milliseconds
//! (`2026-12-07T02:20:00.123Z`), the time the master read the line.
//! JSON: `{"time":..,"fleet":..,"group":..,"id":..,"pid":..,"stream":..,"msg":..}\n`,
//! `stream` `out`, `err` or `master`; `group`, `id` and `pid` are `null` where there is no
//! such thing; `msg` is the line without its newline, invalid UTF-8 replaced by U+FFFD and
//! control characters escaped, so every line parses on its own.

use std::time::SystemTime;

use crate::public_json::iso8601;

/// How a group's lines are written (its `logTime`, `logFormat` and `logPrefix`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFormat {
    /// One JSON object per line (`logFormat: 'json'`).
    pub json: bool,
    /// Start each text line with the time it was read (`logTime`).
    pub time: bool,
    /// Start each text line with `group#id ` (`logPrefix`), after the time.
    pub prefix: bool,
}

impl LineFormat {
    /// Bytes go to the sink as they were read, not line by line.
    pub fn is_raw(&self) -> bool {
        !self.json && !self.time && !self.prefix
    }
}

/// Where a line comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The fleet (master) name.
    pub fleet: &'a str,
    /// The worker's group; `None` for the master's own lines.
    pub group: Option<&'a str>,
    /// The worker's slot id.
    pub id: Option<u32>,
    /// The worker's pid (the master's for its own lines).
    pub pid: Option<u32>,
    /// `out`, `err` or `master`.
    pub stream: &'a str,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    fleet: &'a str,
    group: Option<&'a str>,
    id: Option<u32>,
    pid: Option<u32>,
    stream: &'a str,
    msg: &'a str,
}

/// Append `text` (one line, without its newline) to `out` as `format` says, newline
/// included.
pub fn write_line(
    out: &mut Vec<u8>,
    format: LineFormat,
    origin: &Origin<'_>,
    time: SystemTime,
    text: &[u8],
) {
    if format.json {
        let msg = String::from_utf8_lossy(text);
        let line = JsonLine {
            time: &iso8601(time),
            fleet: origin.fleet,
            group: origin.group,
            id: origin.id,
            pid: origin.pid,
            stream: origin.stream,
            msg: &msg,
        };
        // Serializing strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
        return;
    }
    if format.time {
        out.extend_from_slice(iso8601(time).as_bytes());
        out.push(b' ');
    }
    if format.prefix {
        if let (Some(group), Some(id)) = (origin.group, origin.id) {
            out.extend_from_slice(format!("{group}#{id} ").as_bytes());
        }
    }
    out.extend_from_slice(text);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const WORKER: Origin<'static> = Origin {
        fleet: "shop",
        group: Some("web"),
        id: Some(2),
        pid: Some(4242),
        stream: "err",
    };

    fn at() -> SystemTime {
        // 2026-12-07T02:20:00.123Z
        UNIX_EPOCH + Duration::from_millis(1_796_610_000_123)
    }

    fn line(format: LineFormat, origin: &Origin<'_>, text: &[u8]) -> String {
        let mut out = Vec::new();
        write_line(&mut out, format, origin, at(), text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_start_with_the_time_then_the_prefix() {
        let f = |time, prefix| LineFormat {
            json: false,
            time,
            prefix,
        };
        assert_eq!(
            line(f(true, true), &WORKER, b"hello"),
            "2026-12-07T02:20:00.123Z web#2 hello\n"
        );
        assert_eq!(
            line(f(true, false), &WORKER, b"hello"),
            "2026-12-07T02:20:00.123Z hello\n"
        );
        assert_eq!(line(f(false, true), &WORKER, b"hello"), "web#2 hello\n");
        assert!(f(false, false).is_raw());
        assert!(!f(true, false).is_raw());
    }

    #[test]
    fn json_lines_have_the_seven_keys_and_escape_what_json_needs() {
        let json = LineFormat {
            json: true,
            time: true,
            prefix: true,
        };
        let text = b"say \"hi\"\\\there\x1b[31m\x00 \xff\xfe end";
        let out = line(json, &WORKER, text);
        assert!(
            out.ends_with("}\n") && out.matches('\n').count() == 1,
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-12-07T02:20:00.123Z",
                "fleet": "shop",
                "group": "web",
                "id": 2,
                "pid": 4242,
                "stream": "err",
                "msg": "say \"hi\"\\\there\u{1b}[31m\u{0} \u{fffd}\u{fffd} end",
            })
        );
        // No raw control byte reaches the file: the escape is spelled out.
        assert!(!out.trim_end().bytes().any(|b| b < 0x20), "{out}");
        assert!(out.contains("\\u001b[31m") && out.contains("\\t"), "{out}");
        // The keys come in this order.
        assert!(out.starts_with("{\"time\":\"2026-12-07T02:20:00.123Z\",\"fleet\":\"shop\",\"group\":\"web\",\"id\":2,\"pid\":4242,\"stream\":\"err\",\"msg\":"), "{out}");
    }

    #[test]
    fn the_masters_json_lines_name_no_worker() {
        let master = Origin {
            fleet: "shop",
            group: None,
            id: None,
            pid: Some(1),
            stream: "master",
        };
        let json = LineFormat {
            json: true,
            ..LineFormat::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(line(json, &master, b"listening").trim_end()).unwrap();
        assert_eq!(v["group"], serde_json::Value::Null);
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["pid"], 1);
        assert_eq!(v["stream"], "master");
        assert_eq!(v["msg"], "listening");
    }
}
