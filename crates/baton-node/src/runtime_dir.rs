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
