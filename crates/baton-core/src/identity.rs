//! Who a group's workers run as: a user and group given by name or id, turned into the
//! credentials a worker takes between fork and exec (`spawn.rs`).
//!
//! The lookup happens once, before any fork (it reads the user and group databases, which
//! may mean files, NSS modules and locks: nothing a forked child of a threaded process may
//! touch). The rules, as `su`/systemd's `User=` do them:
//! - `uid` alone: the user's primary group from its passwd entry, and its supplementary
//!   groups from the group database (`getgrouplist`). A numeric uid without a passwd entry
//!   is an error that asks for `gid` too: guessing would leave the worker in gid 0.
//! - `uid` and `gid`: that group as primary, plus the user's supplementary groups if the
//!   user has a passwd entry.
//! - `gid` alone: the user stays; the group becomes the only group.
//!
//! In the child the order is `setgroups` → `setgid` → `setuid` (each needs the privilege
//! the next one drops). Every `unsafe` block of the lookups is here.

use std::ffi::{CStr, CString};

/// A user or group as configured: a numeric id, or a name to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A numeric id.
    Id(u32),
    /// A name in the user or group database.
    Name(String),
}

impl Who {
    /// Digits are an id, anything else a name (as `chown` reads them).
    pub fn parse(text: &str) -> Who {
        match text.parse::<u32>() {
            Ok(id) => Who::Id(id),
            Err(_) => Who::Name(text.to_string()),
        }
    }
}

/// The credentials a worker switches to before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id, when the user changes.
    pub uid: Option<u32>,
    /// The primary group id.
    pub gid: u32,
    /// Every group the worker is in (the primary one included), for `setgroups`.
    pub groups: Vec<u32>,
    /// With a uid: the target user's [`USER_VARIABLES`] from its passwd entry (`None`
    /// without an entry). Empty for a `gid`-only switch.
    pub user_env: Vec<(String, Option<String>)>,
    /// The master's own values of [`USER_VARIABLES`] when resolved: a worker value equal
    /// to one of them was inherited from the master (root's), not set by the group.
    pub master_env: Vec<(String, String)>,
}

/// The variables that name the user: a worker whose uid changes gets its user's.
pub const USER_VARIABLES: [&str; 4] = ["HOME", "USER", "LOGNAME", "SHELL"];

impl Credentials {
    /// The environment of a worker that runs as another user (a no-op without a uid):
    /// every `SUDO_*` variable removed (`SUDO_USER`, `SUDO_UID`, `SUDO_GID`,
    /// `SUDO_COMMAND`: they describe the admin's session, not the worker's), and `HOME`,
    /// `USER`, `LOGNAME`, `SHELL` set from the target user's passwd entry (removed when it
    /// has none) unless the group's `env` set them to a value of its own.
    pub fn apply_env(&self, env: &mut Vec<(String, String)>) {
        if self.uid.is_none() {
            return;
        }
        env.retain(|(k, _)| !k.starts_with("SUDO_"));
        for (name, value) in &self.user_env {
            let master = self
                .master_env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v);
            let current = env.iter().position(|(k, _)| k == name);
            let inherited = match current {
                None => true,
                Some(i) => Some(&env[i].1) == master,
            };
            if !inherited {
                continue;
            }
            if let Some(i) = current {
                env.remove(i);
            }
            if let Some(v) = value {
                env.push((name.clone(), v.clone()));
            }
        }
    }
}

/// Which option an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The `uid` option.
    Uid,
    /// The `gid` option.
    Gid,
}

/// Why the credentials could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    /// The option at fault.
    pub field: Field,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A passwd entry's parts we need.
struct User {
    name: CString,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

/// Look up the credentials for `uid`/`gid`; `None` when neither is set.
pub fn resolve(uid: Option<&Who>, gid: Option<&Who>) -> Result<Option<Credentials>, IdentityError> {
    let err = |field, message: String| IdentityError { field, message };
    let user = match uid {
        None => None,
        Some(Who::Name(name)) => Some(user_by_name(name).ok_or_else(|| {
            err(
                Field::Uid,
                format!("no user named \"{name}\" in the user database; give an existing user name or a numeric uid"),
            )
        })?),
        Some(Who::Id(id)) => match user_by_id(*id) {
            Some(u) => Some(u),
            None if gid.is_some() => None,
            None => {
                return Err(err(
                    Field::Uid,
                    format!("user id {id} has no entry in the user database, so its group is unknown; set gid too"),
                ))
            }
        },
    };
    let group_id = match gid {
        None => None,
        Some(Who::Id(id)) => Some(*id),
        Some(Who::Name(name)) => Some(group_by_name(name).ok_or_else(|| {
            err(
                Field::Gid,
                format!("no group named \"{name}\" in the group database; give an existing group name or a numeric gid"),
            )
        })?),
    };
    let uid_value = match (uid, &user) {
        (None, _) => None,
        (Some(_), Some(u)) => Some(u.uid),
        (Some(Who::Id(id)), None) => Some(*id),
        (Some(Who::Name(_)), None) => None, // unreachable: a name resolved or failed above
    };
    let Some(primary) = group_id.or(user.as_ref().map(|u| u.gid)) else {
        return Ok(None);
    };
    let mut groups = vec![primary];
    if let Some(u) = &user {
        for g in group_list(&u.name, primary) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    let user_env = match (uid_value, &user) {
        (None, _) => Vec::new(),
        (Some(_), None) => USER_VARIABLES
            .iter()
            .map(|k| (k.to_string(), None))
            .collect(),
        (Some(_), Some(u)) => {
            let name = u.name.to_string_lossy().into_owned();
            let shell = Some(u.shell.clone()).filter(|s| !s.is_empty());
            vec![
                (
                    "HOME".to_string(),
                    Some(u.home.clone()).filter(|h| !h.is_empty()),
                ),
                ("USER".to_string(), Some(name.clone())),
                ("LOGNAME".to_string(), Some(name)),
                ("SHELL".to_string(), shell),
            ]
        }
    };
    let master_env = USER_VARIABLES
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect();
    Ok(Some(Credentials {
        uid: uid_value,
        gid: primary,
        groups,
        user_env,
        master_env,
    }))
}

/// The name of user `uid` in the user database, for messages (`None` without an entry).
pub fn user_name(uid: u32) -> Option<String> {
    user_by_id(uid).map(|u| u.name.to_string_lossy().into_owned())
}

/// The home directory of user `uid` in the user database, if it has an entry.
pub fn home_dir(uid: u32) -> Option<std::path::PathBuf> {
    user_by_id(uid)
        .map(|u| std::path::PathBuf::from(u.home))
        .filter(|d| !d.as_os_str().is_empty())
}

/// The name of group `gid` in the group database, for messages.
pub fn group_name(gid: u32) -> Option<String> {
    lookup_group(|grp, buf, result| {
        // SAFETY: grp and result point to live locals; buf has buf.len() writable bytes.
        unsafe { libc::getgrgid_r(gid as libc::gid_t, grp, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|(_, name)| name)
}

/// `uid 65534 (nobody)`, or `uid 65534` without a user entry.
pub fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// `gid 65534 (nogroup)`, or `gid 65534` without a group entry.
pub fn describe_gid(gid: u32) -> String {
    match group_name(gid) {
        Some(name) => format!("gid {gid} ({name})"),
        None => format!("gid {gid}"),
    }
}

const BUF_START: usize = 1024;
const BUF_MAX: usize = 1 << 20;

fn user_by_name(name: &str) -> Option<User> {
    let cname = CString::new(name).ok()?;
    lookup_user(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call: cname is a C string, pwd and result
        // point to live locals, buf has buf.len() writable bytes.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn user_by_id(uid: u32) -> Option<User> {
    lookup_user(|pwd, buf, result| {
        // SAFETY: as in user_by_name.
        unsafe { libc::getpwuid_r(uid as libc::uid_t, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

/// Call a `getpw*_r` function, growing the buffer on ERANGE.
fn lookup_user(
    call: impl Fn(*mut libc::passwd, &mut [libc::c_char], *mut *mut libc::passwd) -> libc::c_int,
) -> Option<User> {
    let mut size = BUF_START;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: passwd is plain data for which all-zero is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && size < BUF_MAX {
            size *= 4;
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a C string inside buf, alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned();
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null pw_dir/pw_shell points to a C string inside buf.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        return Some(User {
            home: text(pwd.pw_dir),
            shell: text(pwd.pw_shell),
            name,
            uid: pwd.pw_uid as u32,
            gid: pwd.pw_gid as u32,
        });
    }
}

fn group_by_name(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    lookup_group(|grp, buf, result| {
        // SAFETY: cname is a C string; grp and result point to live locals; buf has
        // buf.len() writable bytes.
        unsafe { libc::getgrnam_r(cname.as_ptr(), grp, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|(gid, _)| gid)
}

/// Call a `getgr*_r` function, growing the buffer on ERANGE: the group's id and name.
fn lookup_group(
    call: impl Fn(*mut libc::group, &mut [libc::c_char], *mut *mut libc::group) -> libc::c_int,
) -> Option<(u32, String)> {
    let mut size = BUF_START;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: group is plain data for which all-zero is a valid value.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = call(&mut grp, &mut buf, &mut result);
        if rc == libc::ERANGE && size < BUF_MAX {
            size *= 4;
            continue;
        }
        if rc != 0 || result.is_null() || grp.gr_name.is_null() {
            return None;
        }
        // SAFETY: on success gr_name points to a C string inside buf, alive here.
        let name = unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned();
        return Some((grp.gr_gid as u32, name));
    }
}

/// The groups `user` belongs to (with `primary`), from the group database.
// The casts are identities on Linux (gid_t) and real on macOS (c_int).
#[allow(clippy::unnecessary_cast)]
fn group_list(user: &CStr, primary: u32) -> Vec<u32> {
    let mut n: libc::c_int = 32;
    loop {
        let mut groups: Vec<GroupListItem> = vec![0; n as usize];
        let mut count = n;
        // SAFETY: user is a C string; groups has `count` writable entries; count is a live
        // local that getgrouplist updates.
        let rc = unsafe {
            libc::getgrouplist(
                user.as_ptr(),
                primary as GroupListItem,
                groups.as_mut_ptr(),
                &mut count,
            )
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups.into_iter().map(|g| g as u32).collect();
        }
        // Too small: glibc tells the size needed in count; others do not, so grow.
        if n >= 65_536 {
            return vec![primary];
        }
        n = if count > n { count } else { n * 4 };
    }
}

#[cfg(target_vendor = "apple")]
type GroupListItem = libc::c_int;
#[cfg(not(target_vendor = "apple"))]
type GroupListItem = libc::gid_t;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ids_and_names() {
        assert_eq!(Who::parse("65534"), Who::Id(65534));
        assert_eq!(Who::parse("nobody"), Who::Name("nobody".into()));
        assert_eq!(Who::parse("-1"), Who::Name("-1".into()));
    }

    #[test]
    fn nothing_to_change() {
        assert_eq!(resolve(None, None), Ok(None));
    }

    #[test]
    fn root_by_name_and_id_has_its_primary_group() {
        // Every Unix has root (uid 0) with a passwd entry.
        let by_name = resolve(Some(&Who::Name("root".into())), None)
            .unwrap()
            .unwrap();
        let by_id = resolve(Some(&Who::Id(0)), None).unwrap().unwrap();
        assert_eq!(by_name, by_id);
        assert_eq!(by_name.uid, Some(0));
        assert_eq!(by_name.groups[0], by_name.gid);
    }

    #[test]
    fn uid_alone_takes_the_users_group_not_root() {
        let Some(nobody) = user_by_name("nobody") else {
            return; // no such user on this system
        };
        let c = resolve(Some(&Who::Name("nobody".into())), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.uid, Some(nobody.uid));
        assert_eq!(c.gid, nobody.gid);
        assert!(!c.groups.contains(&0) || nobody.gid == 0, "{c:?}");
    }

    #[test]
    fn unknown_names_and_ids_name_the_field() {
        let e = resolve(Some(&Who::Name("no-such-user-xyz".into())), None).unwrap_err();
        assert_eq!(e.field, Field::Uid);
        assert!(e.message.contains("no-such-user-xyz"), "{e}");
        let e = resolve(None, Some(&Who::Name("no-such-group-xyz".into()))).unwrap_err();
        assert_eq!(e.field, Field::Gid);
        let e = resolve(Some(&Who::Id(3_999_999_999)), None).unwrap_err();
        assert!(e.message.contains("set gid too"), "{e}");
        // With a gid, an id without an entry is fine.
        let c = resolve(Some(&Who::Id(3_999_999_999)), Some(&Who::Id(3_999_999_998)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone()),
            (Some(3_999_999_999), 3_999_999_998, vec![3_999_999_998])
        );
        // No passwd entry: root's HOME, USER, LOGNAME and SHELL are removed.
        assert!(c.user_env.iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn gid_alone_is_the_only_group() {
        let c = resolve(None, Some(&Who::Id(4242))).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (None, 4242, vec![4242]));
        assert!(c.user_env.is_empty());
    }

    fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A worker switched to another user gets that user's HOME, USER, LOGNAME and SHELL
    /// instead of root's, keeps what its group set itself, and loses SUDO_*.
    #[test]
    fn a_worker_of_another_user_gets_its_user_env_and_no_sudo() {
        let c = Credentials {
            uid: Some(65534),
            gid: 65534,
            groups: vec![65534],
            user_env: vec![
                ("HOME".into(), Some("/nonexistent".into())),
                ("USER".into(), Some("nobody".into())),
                ("LOGNAME".into(), Some("nobody".into())),
                ("SHELL".into(), None),
            ],
            master_env: env_of(&[("HOME", "/root"), ("USER", "root"), ("SHELL", "/bin/bash")]),
        };
        let mut env = env_of(&[
            ("HOME", "/root"),
            ("USER", "root"),
            ("LOGNAME", "app-set"),
            ("SHELL", "/bin/bash"),
            ("SUDO_USER", "admin"),
            ("SUDO_UID", "1000"),
            ("SUDO_GID", "1000"),
            ("SUDO_COMMAND", "/usr/bin/baton start"),
            ("PATH", "/usr/bin"),
        ]);
        c.apply_env(&mut env);
        env.sort();
        assert_eq!(
            env,
            env_of(&[
                ("HOME", "/nonexistent"),
                ("LOGNAME", "app-set"),
                ("PATH", "/usr/bin"),
                ("USER", "nobody"),
            ])
        );
        // gid only: nothing changes.
        let gid_only = Credentials {
            uid: None,
            ..c.clone()
        };
        let mut env = env_of(&[("HOME", "/root"), ("SUDO_USER", "admin")]);
        gid_only.apply_env(&mut env);
        assert_eq!(env, env_of(&[("HOME", "/root"), ("SUDO_USER", "admin")]));
    }

    #[test]
    fn the_user_env_comes_from_the_passwd_entry() {
        let Some(root) = user_by_id(0) else { return };
        let c = resolve(Some(&Who::Id(0)), None).unwrap().unwrap();
        assert!(c
            .user_env
            .contains(&("HOME".to_string(), Some(root.home.clone()))));
        assert!(c
            .user_env
            .contains(&("USER".to_string(), Some("root".to_string()))));
    }
}
