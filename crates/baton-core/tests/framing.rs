//! Property tests of the two framings a peer's bytes go through: the control socket's
//! request line (`control::RequestBuffer` + `control::parse_request`) and a worker's
//! control channel (`lines::LineBuffer`). Whatever the bytes and however they are split
//! into reads: nothing panics, no more than the limit is held, and the result is the one
//! the whole stream defines.

use baton_core::control::{parse_request, Framed, Request, RequestBuffer, MAX_REQUEST_BYTES};
use baton_core::lines::LineBuffer;
use proptest::prelude::*;

/// Split `bytes` at the (sorted, deduplicated) cut points.
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(bytes[start..p].to_vec());
        start = p;
    }
    out.push(bytes[start..].to_vec());
    out
}

/// What a `RequestBuffer` must say once it has seen all of `stream`.
fn expected_framing(stream: &[u8]) -> Framed {
    match stream.iter().position(|b| *b == b'\n') {
        Some(pos) if pos < MAX_REQUEST_BYTES => {
            Framed::Line(String::from_utf8_lossy(&stream[..pos]).into_owned())
        }
        _ if stream.len() >= MAX_REQUEST_BYTES => Framed::TooLong,
        _ => Framed::Partial,
    }
}

/// Feed chunks until the buffer decides (as the control server does).
fn frame(chunks: &[Vec<u8>]) -> Framed {
    let mut buf = RequestBuffer::default();
    let mut last = Framed::Partial;
    for c in chunks {
        last = buf.push(c);
        if last != Framed::Partial {
            break;
        }
    }
    last
}

/// Bytes with few newlines, or big runs of one byte (to reach the 64 KiB limit cheaply).
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (0usize..200, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (
            MAX_REQUEST_BYTES - 150..MAX_REQUEST_BYTES + 150,
            any::<u8>()
        )
            .prop_map(|(n, b)| vec![if b == b'\n' { b'x' } else { b }; n]),
    ]
}

/// A JSON value of any shape (nested objects and arrays, unicode strings, huge numbers).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".*".prop_map(serde_json::Value::String),
        Just(serde_json::json!("status")),
        Just(serde_json::json!("reload")),
        Just(serde_json::json!("stop")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("cmd".to_string()),
                    Just("force".to_string()),
                    ".{0,8}".boxed()
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid request, its JSON text (random key order, whitespace, extra fields) and what it means.
fn valid_request() -> impl Strategy<Value = (String, Request)> {
    let cmd = prop_oneof![
        Just(Request::Status),
        Just(Request::Reload),
        any::<bool>().prop_map(|force| Request::Stop { force }),
        Just(Request::ReopenLogs),
        Just(Request::Upgrade),
    ];
    (
        cmd,
        any::<bool>(),
        "[ \t]{0,3}",
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(req, extra_first, ws, extra)| {
            let mut fields = vec![format!(
                "\"cmd\":{ws}\"{}\"",
                match req {
                    Request::Status => "status",
                    Request::Reload => "reload",
                    Request::Stop { .. } => "stop",
                    Request::ReopenLogs => "reopen-logs",
                    Request::Upgrade => "upgrade",
                    // Not generated above (they carry their own fields).
                    Request::Logs(_) | Request::Scale { .. } | Request::TestFreeze { .. } =>
                        unreachable!("not generated"),
                }
            )];
            if let Request::Stop { force } = req {
                fields.push(format!("\"force\":{force}"));
            }
            if let Some(name) = extra {
                let field = format!("\"x{name}\":[1,{{\"a\":\"\u{e9}\u{1F600}\"}}]");
                if extra_first {
                    fields.insert(0, field);
                } else {
                    fields.push(field);
                }
            }
            (
                format!("{ws}{{{}}}{ws}", fields.join(&format!(",{ws}"))),
                req,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any bytes, any split: the framing is the whole stream's, and parsing never panics.
    #[test]
    fn request_framing_matches_the_whole_stream(stream in junk(), tail in junk(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let mut all = stream;
        all.extend_from_slice(&tail);
        let got = frame(&chunks(&all, &cuts));
        prop_assert_eq!(&got, &expected_framing(&all));
        if let Framed::Line(line) = got {
            let _ = parse_request(&line);
        }
    }

    /// A valid request line, followed by anything, split anywhere, is that request.
    #[test]
    fn a_valid_request_in_random_framing_is_parsed((text, req) in valid_request(), after in junk(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let mut stream = text.clone().into_bytes();
        stream.push(b'\n');
        stream.extend_from_slice(&after);
        match frame(&chunks(&stream, &cuts)) {
            Framed::Line(line) => {
                prop_assert_eq!(&line, &text);
                prop_assert_eq!(parse_request(&line), Ok(req));
            }
            other => prop_assert!(false, "framed as {:?}", other),
        }
    }

    /// Any JSON value and any string: parse_request answers Ok or a sentence, never panics;
    /// Ok only for an object whose "cmd" is a known command.
    #[test]
    fn parse_request_never_panics(value in json_value(), text in ".*", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let line = value.to_string();
        match parse_request(&line) {
            Ok(_) => prop_assert!(matches!(value.get("cmd").and_then(|c| c.as_str()), Some("status" | "reload" | "stop"))),
            Err(e) => prop_assert!(!e.is_empty()),
        }
        let _ = parse_request(&text);
        let _ = parse_request(&String::from_utf8_lossy(&raw));
    }

    /// A worker's channel: the lines out are the stream's complete lines of at most the
    /// limit, however the stream is split; the buffer never holds more than the limit.
    #[test]
    fn channel_lines_match_the_whole_stream(parts in proptest::collection::vec(prop_oneof![junk(), Just(b"\n".to_vec()), Just(b"{\"type\":\"ready\"}\n".to_vec())], 0..8), cuts in proptest::collection::vec(any::<usize>(), 0..16), limit in prop_oneof![Just(16usize), Just(1024), Just(64 * 1024)]) {
        let stream: Vec<u8> = parts.concat();
        let mut buf = LineBuffer::new(limit);
        let mut got: Vec<Vec<u8>> = Vec::new();
        for c in chunks(&stream, &cuts) {
            buf.push(&c, |l| got.push(l.to_vec()));
            prop_assert!(buf.held() <= limit);
        }
        let mut pieces: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
        pieces.pop(); // after the last newline: not a line yet
        let expected: Vec<Vec<u8>> = pieces.into_iter().filter(|p| p.len() <= limit).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 60_000] {
        let line = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse_request(&line).is_err());
        let line = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(parse_request(&line).is_err());
    }
}
