//! The runtime-dir rule exposed to JavaScript, so the master and the CLI agree on where
//! control sockets live.

use std::path::Path;

use napi_derive::napi;

/// `BATON_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/baton`, else `<tmpdir>/baton-<uid>`.
#[napi]
pub fn resolve_runtime_dir(
    baton_runtime_dir: Option<String>,
    xdg_runtime_dir: Option<String>,
    tmpdir: String,
    uid: u32,
) -> String {
    baton_core::runtime_dir::resolve(
        baton_runtime_dir.as_deref(),
        xdg_runtime_dir.as_deref(),
        Path::new(&tmpdir),
        uid,
    )
    .display()
    .to_string()
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
