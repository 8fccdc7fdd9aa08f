//! The relay against real pipes, sinks and Unix sockets.

use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream as StdUnixStream;

fn pipe() -> (OwnedFd, File) {
    let (r, w) = std::io::pipe().unwrap();
    let r: OwnedFd = r.into();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    (r, File::from(OwnedFd::from(w)))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-relay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Setup {
    relay: LogRelay,
    drained: Receiver<Drained>,
}

fn setup() -> Setup {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let relay = LogRelay::start(
        1,
        None,
        Box::new(move |d| {
            let _ = tx.lock().unwrap().send(d);
        }),
        Arc::new(|_| {}),
    )
    .unwrap();
    Setup { relay, drained: rx }
}

/// A worker whose stdout goes to `out` and stderr to `err`; returns the write ends.
fn add(s: &Setup, key: u64, prefix: bool, sinks: [Option<Arc<Sink>>; 2]) -> (File, File) {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    s.relay.add(WorkerOutput {
        key,
        group: 0,
        group_name: Arc::from("web"),
        id: key as u32,
        fleet: Arc::from("fleet"),
        pid: 1000 + key as u32,
        format: crate::log_line::LineFormat {
            prefix,
            ..Default::default()
        },
        pipes: [out_r, err_r],
        sinks,
    });
    (out_w, err_w)
}

fn logs(s: &Setup, request: LogsRequest) -> BufReader<StdUnixStream> {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    s.relay.logs(theirs, request);
    BufReader::new(ours)
}

fn next_json(r: &mut BufReader<StdUnixStream>) -> serde_json::Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn prefixed_file_sink_tail_and_drain_after_exit() {
    let dir = temp_dir("prefix");
    let path = dir.join("web.log");
    let s = setup();
    let sink = s
        .relay
        .sink(
            &LogTarget::File(path.clone()),
            Stream::Stdout,
            &Default::default(),
        )
        .unwrap();
    let (mut out, mut err) = add(&s, 3, true, [sink.clone(), sink]);
    out.write_all(b"hello\nwor").unwrap();
    err.write_all(b"oops\n").unwrap();
    out.write_all(b"ld\nno newline").unwrap();
    drop(out);
    drop(err);
    s.relay.exited(3);
    let d = s.drained.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(d.key, 3);
    assert_eq!(d.stderr_tail, "oops\n");
    s.relay.shutdown(Duration::from_secs(5));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "web#3 hello",
            "web#3 no newline",
            "web#3 oops",
            "web#3 world"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_is_reported_after_the_drain_wait_when_a_child_keeps_the_pipe() {
    let s = setup();
    let (mut out, _err_kept_open) = add(&s, 1, false, [None, None]);
    out.write_all(b"x\n").unwrap();
    let started = Instant::now();
    s.relay.exited(1);
    let d = s.drained.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(started.elapsed() >= DRAIN_WAIT - Duration::from_millis(5));
    assert_eq!(d.stderr_tail, "");
    let mut reader = logs(
        &s,
        LogsRequest {
            lines: 10,
            follow: false,
            group: None,
        },
    );
    let v = next_json(&mut reader);
    assert_eq!(v["event"]["text"], "x");
    assert_eq!(next_json(&mut reader), json!({ "ok": true }));
    // (That the relay closed its read end is not checked by writing: another test's fork
    // may hold a copy of it for a moment.)
    s.relay.shutdown(Duration::from_secs(1));
}

#[test]
fn ignore_still_feeds_the_ring_and_logs_follow_new_lines() {
    let s = setup();
    let (mut out, mut err) = add(&s, 0, false, [None, None]);
    for i in 0..5 {
        out.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }
    // The last 3 lines, in order, then the end of the answer.
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut r = logs(
                &s,
                LogsRequest {
                    lines: 3,
                    follow: false,
                    group: None,
                },
            );
            let mut got = Vec::new();
            loop {
                let v = next_json(&mut r);
                if v.get("ok").is_some() {
                    break;
                }
                got.push(v["event"]["text"].as_str().unwrap().to_string());
            }
            if got.last().map(String::as_str) == Some(want) {
                return got;
            }
            assert!(Instant::now() < deadline, "{got:?}");
            thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(wait_for("line 4"), vec!["line 2", "line 3", "line 4"]);
    let mut follow = logs(
        &s,
        LogsRequest {
            lines: 1,
            follow: true,
            group: Some("web".into()),
        },
    );
    assert_eq!(next_json(&mut follow)["event"]["text"], "line 4");
    err.write_all(b"late\n").unwrap();
    let v = next_json(&mut follow);
    assert_eq!(v["event"]["text"], "late");
    assert_eq!(v["event"]["stream"], "stderr");
    assert_eq!(v["event"]["group"], "web");
    let mut other = logs(
        &s,
        LogsRequest {
            lines: 5,
            follow: false,
            group: Some("jobs".into()),
        },
    );
    assert_eq!(next_json(&mut other), json!({ "ok": true }));
    s.relay.shutdown(Duration::from_secs(1));
    assert_eq!(
        next_json(&mut follow),
        json!({ "ok": true, "stopped": true })
    );
}

#[test]
fn a_full_sink_drops_and_counts_per_group_without_stalling_the_reader() {
    let dir = temp_dir("full");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that never reads: the sink's writer blocks once the FIFO is full.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    use std::os::unix::fs::OpenOptionsExt;
    let s = setup();
    let sink = s
        .relay
        .sink(
            &LogTarget::File(fifo.clone()),
            Stream::Stdout,
            &Default::default(),
        )
        .unwrap();
    let (mut out, _err) = add(&s, 0, false, [sink, None]);
    let line = [b"y".repeat(1023), b"\n".to_vec()].concat();
    // 8 MiB: far more than the FIFO and the sink's buffer hold. The writes only finish if
    // the relay keeps reading.
    for _ in 0..8 * 1024 {
        out.write_all(&line).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.relay.dropped(0) == 0 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        s.relay.dropped(0) >= 4 * 1024 * 1024,
        "{}",
        s.relay.dropped(0)
    );
    s.relay.shutdown(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reopen_moves_file_sinks_to_a_new_file() {
    let dir = temp_dir("reopen");
    let path = dir.join("out.log");
    let s = setup();
    let sink = s
        .relay
        .sink(
            &LogTarget::File(path.clone()),
            Stream::Stdout,
            &Default::default(),
        )
        .unwrap();
    let (mut out, _err) = add(&s, 0, false, [sink.clone(), None]);
    out.write_all(b"first\n").unwrap();
    let wait_file = |p: &Path, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(p).unwrap_or_default() != want {
            assert!(Instant::now() < deadline, "{}", p.display());
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_file(&path, "first\n");
    std::fs::rename(&path, dir.join("out.log.1")).unwrap();
    let (tx, rx) = mpsc::channel();
    s.relay.reopen(Reply::Channel(tx));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(1));
    out.write_all(b"second\n").unwrap();
    wait_file(&path, "second\n");
    wait_file(&dir.join("out.log.1"), "first\n");
    s.relay.shutdown(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// stdout and stderr naming one file share one sink, so one writer thread rotates it: once
/// per crossing of the size, not once per stream.
#[test]
fn one_file_for_both_streams_is_one_sink_rotated_once() {
    let dir = temp_dir("rotate-shared");
    let path = dir.join("both.log");
    let s = setup();
    let settings = log_sink::SinkSettings {
        rotation: Some(log_sink::Rotation {
            max_bytes: 1000,
            keep: 50,
        }),
        ..Default::default()
    };
    let target = LogTarget::File(path.clone());
    let out = s.relay.sink(&target, Stream::Stdout, &settings).unwrap();
    let err = s.relay.sink(&target, Stream::Stderr, &settings).unwrap();
    let (Some(out), Some(err)) = (out, err) else {
        panic!("no sinks")
    };
    assert!(Arc::ptr_eq(&out, &err));
    let (mut w_out, mut w_err) = add(&s, 1, true, [Some(out.clone()), Some(err)]);
    for i in 0..100 {
        // 50 bytes a line with the "web#1 " prefix.
        writeln!(w_out, "out {i:03} {}", "o".repeat(35)).unwrap();
        writeln!(w_err, "err {i:03} {}", "e".repeat(35)).unwrap();
    }
    drop(w_out);
    drop(w_err);
    s.relay.exited(1);
    s.drained.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(out.flush(Duration::from_secs(5)));
    // 10,000 bytes in files of 1000: 9 rotations, each file full.
    assert_eq!(out.rotations(), 9);
    for k in 1..=9 {
        let file = std::fs::read_to_string(dir.join(format!("both.log.{k}"))).unwrap();
        assert_eq!(file.len(), 1000, "both.log.{k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
