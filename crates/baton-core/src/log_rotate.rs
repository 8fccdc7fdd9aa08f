//! Size rotation of a log file (`logMaxSize`, `logMaxFiles`), the pure part: where in the
//! bytes to be written the file is rotated, and which renames one rotation makes. The
//! sink's writer thread (`log_sink.rs`) does the writing, the checks and the renames.
//!
//! A file is rotated only at a line boundary, so that no line is split across two files:
//! the writer writes the whole lines that still fit under the limit, rotates, and goes on
//! in the new file. A single line longer than the limit goes whole into a file of its own
//! (then the file is rotated); bytes without a newline yet (raw output in the middle of a
//! line) are written where the line began, and the file is rotated after its newline. A
//! file therefore never exceeds the limit, except by the one line that did not fit.
//!
//! One rotation of `FILE` keeping `N` files: `FILE.N` is removed, `FILE.k` becomes
//! `FILE.(k+1)` for k = N-1 down to 1, `FILE` becomes `FILE.1` (the newest), and a new
//! `FILE` is opened.

use std::ffi::{OsStr, OsString};

/// When and how a file sink rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file would grow past this many bytes (`logMaxSize`).
    pub max_bytes: u64,
    /// Rotated files kept, `FILE.1` to `FILE.<keep>` (`logMaxFiles`, at least 1).
    pub keep: u32,
}

/// The `logMaxFiles` of a group that sets `logMaxSize` but no count (as in
/// crates/baton-contract/src/options.rs).
pub const DEFAULT_KEEP: u32 = baton_contract::options::DEFAULT_LOG_MAX_FILES;

/// What the writer does next with the bytes it has (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write the first `n` bytes, no rotation.
    Write(usize),
    /// Write the first `n` bytes (they end with a newline), then rotate.
    WriteThenRotate(usize),
    /// Rotate before writing anything (the next line does not fit).
    RotateFirst,
}

/// The next step for `bytes`, the file holding `size` bytes, `mid_line` when the last
/// byte written to it was not a newline.
pub fn plan(size: u64, mid_line: bool, max_bytes: u64, bytes: &[u8]) -> Step {
    let len = bytes.len();
    if size.saturating_add(len as u64) <= max_bytes {
        return Step::Write(len);
    }
    let room = usize::try_from(max_bytes.saturating_sub(size)).unwrap_or(usize::MAX);
    let fits = &bytes[..room.min(len)];
    if !mid_line || size == 0 {
        // Whole lines that still fit, up to the last newline under the limit.
        if let Some(nl) = fits.iter().rposition(|b| *b == b'\n') {
            return Step::WriteThenRotate(nl + 1);
        }
        if size > 0 {
            return Step::RotateFirst;
        }
    } else if let Some(nl) = fits.iter().rposition(|b| *b == b'\n') {
        // The rest of the current line and more whole lines fit.
        return Step::WriteThenRotate(nl + 1);
    }
    // The line does not fit even in an empty file, or the current line goes on: it goes
    // whole into this file, and the file is rotated after it.
    match bytes.iter().position(|b| *b == b'\n') {
        Some(nl) => Step::WriteThenRotate(nl + 1),
        None => Step::Write(len),
    }
}

/// The name of rotated file `k` of `name` (`out.log.3`).
pub fn rotated_name(name: &OsStr, k: u32) -> OsString {
    let mut n = name.to_os_string();
    n.push(format!(".{k}"));
    n
}

/// The renames of one rotation of `name` keeping `keep` files, in the order they are
/// made: `(from, Some(to))` renames, `(from, None)` removes.
pub fn moves(name: &OsStr, keep: u32) -> Vec<(OsString, Option<OsString>)> {
    let keep = keep.max(1);
    let mut out = vec![(rotated_name(name, keep), None)];
    for k in (1..keep).rev() {
        out.push((rotated_name(name, k), Some(rotated_name(name, k + 1))));
    }
    out.push((name.to_os_string(), Some(rotated_name(name, 1))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write `input` in chunks of `chunk` bytes to files of at most `max` bytes; returns
    /// the files, oldest first.
    fn simulate(input: &[u8], chunk: usize, max: u64) -> Vec<Vec<u8>> {
        let mut files = vec![Vec::new()];
        for mut bytes in input.chunks(chunk) {
            while !bytes.is_empty() {
                let cur = files.last().unwrap();
                let mid_line = cur.last().is_some_and(|b| *b != b'\n');
                match plan(cur.len() as u64, mid_line, max, bytes) {
                    Step::Write(n) => {
                        files.last_mut().unwrap().extend_from_slice(&bytes[..n]);
                        bytes = &bytes[n..];
                    }
                    Step::WriteThenRotate(n) => {
                        assert!(n > 0 && bytes[n - 1] == b'\n');
                        files.last_mut().unwrap().extend_from_slice(&bytes[..n]);
                        bytes = &bytes[n..];
                        files.push(Vec::new());
                    }
                    Step::RotateFirst => {
                        assert!(!files.last().unwrap().is_empty());
                        files.push(Vec::new());
                    }
                }
            }
        }
        files
    }

    fn numbered(lines: usize, width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..lines {
            let line = format!("line {i:06} ");
            out.extend_from_slice(line.as_bytes());
            out.extend(std::iter::repeat_n(
                b'x',
                width.saturating_sub(line.len() + 1),
            ));
            out.push(b'\n');
        }
        out
    }

    /// Every line lands whole in exactly one file, in order, and no file grows past the
    /// limit: for whole-line pushes and for raw chunks that cut lines anywhere.
    #[test]
    fn lines_are_never_split_and_files_stay_under_the_limit() {
        let input = numbered(5000, 80);
        for chunk in [80, 81, 1000, 4096, 65536, 7] {
            let files = simulate(&input, chunk, 4096);
            assert_eq!(files.concat(), input, "chunk {chunk}");
            // Whole lines: never past the limit. Raw chunks that cut lines: a line begun
            // under the limit is finished in the same file.
            let limit = if chunk % 80 == 0 { 4096 } else { 4096 + 79 };
            for f in &files[..files.len() - 1] {
                assert!(f.len() <= limit, "chunk {chunk}: {} bytes", f.len());
                assert!(f.len() > 4096 - 80, "chunk {chunk}: {} bytes", f.len());
                assert_eq!(f.last(), Some(&b'\n'), "chunk {chunk}");
            }
            if chunk % 80 == 0 {
                assert_eq!(files.len(), input.len().div_ceil(4096 / 80 * 80));
            }
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_goes_whole_into_a_file_of_its_own() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 300));
        input.extend_from_slice(b"\nafter\n");
        // Whole lines at once (as with logPrefix, logTime or JSON).
        let files = simulate(&input, 1000, 100);
        assert_eq!(files[0], b"short\n");
        assert_eq!(files[1].len(), 301);
        assert_eq!(files[2], b"after\n");
        // Raw chunks: the long line ends in the file it began in, which is rotated after it.
        for chunk in [1, 7, 64] {
            let files = simulate(&input, chunk, 100);
            assert_eq!(files.concat(), input, "chunk {chunk}");
            assert_eq!(files[0].len(), 6 + 301, "chunk {chunk}");
            assert_eq!(files[1], b"after\n", "chunk {chunk}");
        }
    }

    #[test]
    fn steps_at_the_boundaries() {
        assert_eq!(plan(0, false, 10, b"0123456789"), Step::Write(10));
        assert_eq!(
            plan(5, false, 10, b"ab\ncd\nef\n"),
            Step::WriteThenRotate(3)
        );
        assert_eq!(
            plan(4, false, 10, b"ab\ncd\nef\n"),
            Step::WriteThenRotate(6)
        );
        assert_eq!(plan(8, false, 10, b"abcd\n"), Step::RotateFirst);
        assert_eq!(
            plan(0, false, 10, b"0123456789abc\nz"),
            Step::WriteThenRotate(14)
        );
        // In the middle of a line: its end first, even past the limit.
        assert_eq!(plan(8, true, 10, b"abcd\nef\n"), Step::WriteThenRotate(5));
        assert_eq!(plan(8, true, 10, b"abcd"), Step::Write(4));
        assert_eq!(plan(u64::MAX, false, 10, b"a\n"), Step::RotateFirst);
    }

    #[test]
    fn one_rotation_shifts_every_file_by_one() {
        let show = |m: Vec<(OsString, Option<OsString>)>| {
            m.into_iter()
                .map(|(f, t)| match t {
                    Some(t) => format!("{}>{}", f.to_string_lossy(), t.to_string_lossy()),
                    None => format!("rm {}", f.to_string_lossy()),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            show(moves(OsStr::new("out.log"), 3)),
            "rm out.log.3 out.log.2>out.log.3 out.log.1>out.log.2 out.log>out.log.1"
        );
        assert_eq!(show(moves(OsStr::new("o"), 1)), "rm o.1 o>o.1");
    }
}
