//! The runtime-dir rules exposed to JavaScript, so the master and the CLI agree on where
//! control sockets live and on what the CLI may trust there (`baton_core::runtime_dir`),
//! and the check of who may change a config file a root master reads
//! (`baton_core::writers`).

use std::path::Path;

use baton_core::identity::{self, Who};
use baton_core::runtime_dir::Entry;
use baton_core::writers::{self, Writer};
use napi::{Error, Result};
use napi_derive::napi;

/// `BATON_RUNTIME_DIR`, else `/run/baton` for root, else `~/.baton` (`home`: `$HOME`, else
/// the user database's), else `<tmpdir>/baton-<uid>`.
#[napi]
pub fn resolve_runtime_dir(
    baton_runtime_dir: Option<String>,
    uid: u32,
    home: Option<String>,
    tmpdir: String,
) -> String {
    baton_core::runtime_dir::resolve(
        baton_runtime_dir.as_deref(),
        uid,
        home.as_deref().map(Path::new),
        Path::new(&tmpdir),
    )
    .display()
    .to_string()
}

/// Where older versions kept the runtime dir (`$XDG_RUNTIME_DIR/baton`,
/// `<tmpdir>/baton-<uid>`), searched by the CLI for fleets they started.
#[napi]
pub fn legacy_runtime_dirs(
    xdg_runtime_dir: Option<String>,
    tmpdir: String,
    uid: u32,
) -> Vec<String> {
    baton_core::runtime_dir::legacy_dirs(xdg_runtime_dir.as_deref(), Path::new(&tmpdir), uid)
        .into_iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// What `checkRuntimePath` checks.
#[napi(string_enum = "lowercase")]
pub enum RuntimeEntry {
    /// The runtime directory.
    Dir,
    /// A control socket.
    Socket,
    /// A pid file.
    Pid,
    /// A start record or a log file.
    File,
}

/// The CLI's check before it trusts a path in the runtime dir, for the CLI's effective
/// `uid`: true when it is there and trusted, false when absent; throws the refusal (path,
/// owner, rule, what to do).
#[napi]
pub fn check_runtime_path(path: String, kind: RuntimeEntry, uid: u32) -> Result<bool> {
    let entry = match kind {
        RuntimeEntry::Dir => Entry::Dir,
        RuntimeEntry::Socket => Entry::Socket,
        RuntimeEntry::Pid => Entry::PidFile,
        RuntimeEntry::File => Entry::File,
    };
    baton_core::runtime_dir::check_trusted(Path::new(&path), uid, entry).map_err(Error::from_reason)
}

/// Create the runtime dir (mode 0700) or check an existing one, as the master does.
#[napi]
pub fn ensure_runtime_dir(dir: String) -> Result<()> {
    baton_core::runtime_dir::ensure_dir(Path::new(&dir))
        .map_err(|e| Error::from_reason(e.to_string()))
}

/// A group's user, for `checkConfigWriters`.
#[napi(object)]
pub struct ConfigGroupUser {
    /// The group's name.
    pub group: String,
    /// Its `uid` option (digits or a name), if any.
    pub uid: Option<String>,
    /// Its `gid` option, if any.
    pub gid: Option<String>,
}

/// Throws when a user that one of `groups` runs as may change `file` or a directory above
/// it (see `baton_core::writers`). Groups whose user cannot be looked up are skipped: the
/// options check reports them.
#[napi]
pub fn check_config_writers(file: String, groups: Vec<ConfigGroupUser>) -> Result<()> {
    let writers: Vec<Writer> = groups
        .into_iter()
        .filter_map(|g| {
            let uid = g.uid.as_deref().map(Who::parse);
            let gid = g.gid.as_deref().map(Who::parse);
            let credentials = identity::resolve(uid.as_ref(), gid.as_ref()).ok()??;
            Some(Writer {
                group: g.group,
                credentials,
            })
        })
        .collect();
    writers::check_not_writable(Path::new(&file), &writers).map_err(Error::from_reason)
}

/// What the runtime dir says about a master (`probeMaster`).
#[napi(string_enum = "lowercase")]
pub enum MasterState {
    /// A live master holds its pid-file lock.
    Running,
    /// A dead master's pid file (and maybe control socket) is left behind.
    Stale,
    /// No master of that name.
    Absent,
}

/// The answer of `probeMaster`.
#[napi(object)]
pub struct MasterProbe {
    pub state: MasterState,
    /// The pid in the pid file, if any.
    pub pid: Option<i32>,
    /// A stale master's pid file and control socket were removed.
    pub cleaned: bool,
}

/// Whether master `name` runs (its pid file is locked); with `clean`, remove the pid file
/// and control socket a killed master left behind.
#[napi]
pub fn probe_master(runtime_dir: String, name: String, clean: bool) -> MasterProbe {
    use baton_core::runtime_dir::MasterProbe as Core;
    match baton_core::runtime_dir::probe_master(Path::new(&runtime_dir), &name, clean) {
        Core::Running { pid } => MasterProbe {
            state: MasterState::Running,
            pid,
            cleaned: false,
        },
        Core::Stale { pid, cleaned } => MasterProbe {
            state: MasterState::Stale,
            pid,
            cleaned,
        },
        Core::Absent => MasterProbe {
            state: MasterState::Absent,
            pid: None,
            cleaned: false,
        },
    }
}
