//! `BindingFleetOptions`: a whole fleet as JavaScript passes it, converted into
//! `baton_core::config::FleetConfig`.

use std::path::PathBuf;
use std::time::Duration;

use baton_core::config::{Backoff, FleetConfig, GroupConfig};
use napi::Error;
use napi_derive::napi;

use crate::group_options::BindingGroupOptions;

/// A fleet: its name, runtime dir, groups and restart backoff.
#[napi(object, object_to_js = false)]
pub struct BindingFleetOptions {
    /// Master name (control socket and pid file names).
    pub name: String,
    /// Runtime directory (already resolved by the TypeScript layer).
    pub runtime_dir: String,
    /// Groups in definition order.
    pub groups: Vec<BindingGroupOptions>,
    /// First crash-restart delay in milliseconds.
    pub backoff_initial_ms: u32,
    /// Largest crash-restart delay in milliseconds.
    pub backoff_max_ms: u32,
    /// Uptime in milliseconds after which the backoff resets.
    pub backoff_reset_ms: u32,
    /// The host re-reads its configuration before every reload (`baton start` from a
    /// config file): control-socket reloads wait for `reloadTicket` / `failReload`.
    pub host_prepares_reloads: Option<bool>,
    /// The master's own stdout and stderr go to this file (absolute), reopened by
    /// `reopenLogs` / `baton reopen-logs` (daemon mode).
    pub log_file: Option<String>,
    /// `baton upgrade`: the command line that starts the next master, program first
    /// (the host's own: `process.execPath`, `execArgv`, `argv`; or `upgradeCommand`).
    pub upgrade_command: Option<Vec<String>>,
    /// The working directory of the next master.
    pub upgrade_cwd: Option<String>,
    /// This master replaces a running one: the `BATON_UPGRADE` value it was started with.
    pub handover: Option<String>,
}

impl TryFrom<BindingFleetOptions> for FleetConfig {
    type Error = Error;

    fn try_from(o: BindingFleetOptions) -> Result<Self, Error> {
        let groups = o
            .groups
            .into_iter()
            .map(GroupConfig::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FleetConfig {
            name: o.name,
            runtime_dir: PathBuf::from(o.runtime_dir),
            groups,
            backoff: Backoff {
                initial: Duration::from_millis(u64::from(o.backoff_initial_ms)),
                max: Duration::from_millis(u64::from(o.backoff_max_ms)),
                reset_after: Duration::from_millis(u64::from(o.backoff_reset_ms)),
            },
            host_prepares_reloads: o.host_prepares_reloads.unwrap_or(false),
            master_log: o.log_file.map(PathBuf::from),
            upgrade_command: o.upgrade_command.unwrap_or_default(),
            upgrade_cwd: o.upgrade_cwd.map(PathBuf::from),
            handover: o.handover,
        })
    }
}
