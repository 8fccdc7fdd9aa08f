//! Who may change a file a root master reads: a config file (`baton.config.*`) is code and
//! options run as root, so a worker's user that can write it, or any directory above it,
//! could drop the group's `uid` or run code in the master.
//!
//! The rule (kept simple, POSIX permission bits only; ACLs are not read): a path is
//! writable by a user with uid `U` and groups `G` when
//! - it belongs to `U` (an owner can always `chmod` it), or
//! - it is group-writable and its group is in `G`, or
//! - it is writable by others,
//!
//! except that a sticky directory (`/tmp`) counts only through its owner: there a user can
//! neither rename nor remove an entry it does not own, and the entry below is checked
//! itself. Symbolic links are not judged (their own mode means nothing): the path as
//! given is checked component by component, and the file it resolves to with every
//! directory above that too.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::identity::{describe_gid, describe_uid, Credentials};

/// A user a group's workers run as, with its groups.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The group (of workers) that runs as this user, for messages.
    pub group: String,
    /// Its credentials.
    pub credentials: Credentials,
}

/// Why `path` is writable by `w`, if it is.
fn writable_by(meta: &std::fs::Metadata, uid: u32, gids: &[u32]) -> Option<String> {
    if meta.uid() == uid {
        return Some(format!("belongs to {}", describe_uid(uid)));
    }
    let mode = meta.mode();
    if meta.is_dir() && mode & 0o1000 != 0 {
        return None;
    }
    if mode & 0o020 != 0 && gids.contains(&meta.gid()) {
        return Some(format!(
            "is writable by its group, {}, which {} is in (mode {:04o})",
            describe_gid(meta.gid()),
            describe_uid(uid),
            mode & 0o7777
        ));
    }
    if mode & 0o002 != 0 {
        return Some(format!(
            "is writable by everyone (mode {:04o})",
            mode & 0o7777
        ));
    }
    None
}

/// `path`, then every directory above it up to `/`.
fn chain(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = Some(path);
    while let Some(q) = p {
        if !q.as_os_str().is_empty() {
            out.push(q.to_path_buf());
        }
        p = q.parent();
    }
    out
}

/// Refuses `file` when one of `writers` may write it or a directory above it (the path as
/// given and the path it resolves to). The error (to be prefixed with the file's path)
/// names the path at fault, its owner or group, the group of workers, the rule, and what
/// to do. Writers with uid 0 or no uid change are
/// skipped (they are root already).
pub fn check_not_writable(file: &Path, writers: &[Writer]) -> Result<(), String> {
    let relevant: Vec<&Writer> = writers
        .iter()
        .filter(|w| matches!(w.credentials.uid, Some(uid) if uid != 0))
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    let mut paths = chain(file);
    if let Ok(real) = std::fs::canonicalize(file) {
        for p in chain(&real) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    for p in &paths {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) => {
                return Err(format!(
                    "cannot inspect {} to check who may change the config file {}: {e}",
                    p.display(),
                    file.display()
                ))
            }
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        for w in &relevant {
            let Some(uid) = w.credentials.uid else {
                continue;
            };
            if let Some(why) = writable_by(&meta, uid, &w.credentials.groups) {
                let what = if p.as_path() == file {
                    String::from("it")
                } else {
                    format!("{} (a directory above it)", p.display())
                };
                return Err(format!(
                    "refused: {what} {why}, and group \"{}\" runs its workers as {}; a root master reads this file (its options, and its code as root), so no user a group runs as may change it or a directory above it. Make the file and every directory above it owned by root and not writable by that user (chown root, chmod go-w), or move the file",
                    w.group,
                    describe_uid(uid),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn writer(uid: u32, groups: Vec<u32>) -> Writer {
        Writer {
            group: "web".into(),
            credentials: Credentials {
                uid: Some(uid),
                gid: groups.first().copied().unwrap_or(uid),
                groups,
                user_env: vec![],
                master_env: vec![],
            },
        }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn owner_group_and_others_bits() {
        let t = TempDir::new("writers", 0o755);
        let file = t.0.join("baton.config.json");
        std::fs::write(&file, "{}").unwrap();
        chmod(&file, 0o644);
        let me = std::fs::metadata(&file).unwrap();
        let (owner, group) = (me.uid(), me.gid());
        let stranger = owner.wrapping_add(4321);
        // Nobody else may write it (the temp dir's parents are root's or sticky).
        check_not_writable(&file, &[writer(stranger, vec![stranger])]).unwrap();
        // Its owner may.
        let e = check_not_writable(&file, &[writer(owner, vec![group])]);
        if owner != 0 {
            let e = e.unwrap_err();
            assert!(
                e.contains("it belongs to uid") && e.contains("group \"web\""),
                "{e}"
            );
        } else {
            e.unwrap(); // a root writer is skipped
        }
        // Group-writable, and the writer is in that group.
        chmod(&file, 0o664);
        let e = check_not_writable(&file, &[writer(stranger, vec![stranger, group])]).unwrap_err();
        assert!(
            e.contains("writable by its group") && e.contains("0664"),
            "{e}"
        );
        check_not_writable(&file, &[writer(stranger, vec![stranger])]).unwrap();
        // Writable by everyone: the directory above it.
        chmod(&file, 0o644);
        chmod(&t.0, 0o777);
        let e = check_not_writable(&file, &[writer(stranger, vec![stranger])]).unwrap_err();
        assert!(
            e.contains("a directory above it") && e.contains("everyone"),
            "{e}"
        );
        // Sticky: only its owner counts.
        chmod(&t.0, 0o1777);
        check_not_writable(&file, &[writer(stranger, vec![stranger])]).unwrap();
    }

    #[test]
    fn a_link_is_judged_by_what_it_points_to() {
        let t = TempDir::new("writers", 0o755);
        let real_dir = t.0.join("real");
        std::fs::create_dir(&real_dir).unwrap();
        chmod(&real_dir, 0o777);
        let file = real_dir.join("c.json");
        std::fs::write(&file, "{}").unwrap();
        chmod(&file, 0o644);
        let link = t.0.join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let stranger = std::fs::metadata(&file).unwrap().uid().wrapping_add(4321);
        let e = check_not_writable(&link, &[writer(stranger, vec![stranger])]).unwrap_err();
        assert!(e.contains(&real_dir.display().to_string()), "{e}");
    }
}
