//! Plain configuration data for a fleet: what the binding hands to the core.
//!
//! Validation of user input (field names, ranges) happens once, at the edge
//! (`baton_contract::options::validate_group`, called by the binding's `TryFrom`
//! conversions); these types hold already-checked values.

use std::path::PathBuf;
use std::time::Duration;

use crate::addr::ListenAddr;
use crate::identity::Credentials;

pub use baton_contract::options::{GroupOptions, Order, SupervisorOptions};

/// How connections are spread across the workers of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// One socket per address, shared by every worker: idle workers race to accept.
    Shared,
    /// One `SO_REUSEPORT` socket per address and slot (Linux): the kernel spreads
    /// connections by hash.
    ReusePort,
    /// The sockets of [`Balance::ReusePort`], steered by the client's source address
    /// (`steer::sticky`): every connection of one client address goes to the same slot
    /// while it serves (Socket.IO's long-polling, sessions held in memory).
    Sticky,
}

impl Balance {
    /// Whether TCP addresses get one `SO_REUSEPORT` socket per slot.
    pub fn per_slot(self) -> bool {
        matches!(self, Balance::ReusePort | Balance::Sticky)
    }

    /// The option's value as the user writes it.
    pub fn name(self) -> &'static str {
        match self {
            Balance::Shared => "shared",
            Balance::ReusePort => "reuseport",
            Balance::Sticky => "sticky",
        }
    }
}

/// How a worker of a group becomes ready (the `readiness` group option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readiness {
    /// Any ready message counts, including the drop-in preload's after the app's own
    /// `listen()` (the default).
    #[default]
    Listen,
    /// Only an explicit ready counts (`process.send('ready')`, `worker.ready()`,
    /// `worker.listen()`): the drop-in preload sends none of its own (PM2's `wait_ready`).
    /// The core cannot tell the two apart on the channel; the worker learns the mode from
    /// [`READINESS_ENV`].
    Message,
    /// Ready once the worker has been up this long (PM2's `min_uptime`), whatever it says:
    /// for processes that never listen. A worker that exits sooner has failed.
    Uptime(Duration),
}

/// The variable the core sets in every worker's environment to the group's readiness
/// (`listen`, `message` or `uptime`): the drop-in preload (`src/worker/preload.ts`) reads it.
pub const READINESS_ENV: &str = "BATON_READINESS";

impl Readiness {
    /// The option's value: `listen`, `message` or `uptime`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Readiness::Listen => "listen",
            Readiness::Message => "message",
            Readiness::Uptime(_) => "uptime",
        }
    }

    /// `minUptime` of an `uptime` group.
    pub fn min_uptime(&self) -> Option<Duration> {
        match self {
            Readiness::Uptime(d) => Some(*d),
            _ => None,
        }
    }
}

/// Where one of a worker's output streams goes (`stdout` / `stderr` group options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// The master's own fd 1 (for stdout) or fd 2 (for stderr).
    #[default]
    Inherit,
    /// Nowhere (the master still keeps the lines for `baton logs` and the stderr tail).
    Ignore,
    /// Appended to this file (absolute path), reopened by `baton reopen-logs`.
    File(PathBuf),
}

/// Crash-restart backoff: `initial * 2^(n-1)` for the n-th consecutive quick failure,
/// capped at `max`; a worker that stayed up for `reset_after` resets the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart after a crash.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Uptime after which a crash no longer counts as part of a crash loop.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restarting a slot that failed `failures` times in a row (>= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// The rules of one group that the pure state machine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRules {
    /// Group name (unique within a fleet).
    pub name: String,
    /// Number of worker slots.
    pub count: u32,
    /// Whether a reload replaces this group's workers (false: they get a `reload` message).
    pub reloadable: bool,
    /// Replacement order during a reload.
    pub order: Order,
    /// How many of the group's slots a reload replaces at once (>= 1; values above `count`
    /// act as `count`).
    pub parallel: u32,
    /// A worker not ready this long after spawn has failed.
    pub ready_timeout: Duration,
    /// A worker asked to stop is killed after this long.
    pub stop_timeout: Duration,
    /// How a worker becomes ready.
    pub readiness: Readiness,
}

/// One group: its rules plus how to start its workers.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Rules for the state machine.
    pub rules: GroupRules,
    /// Program to execute (the master's `node`).
    pub program: PathBuf,
    /// Node options before the script (`execArgv`).
    pub exec_argv: Vec<String>,
    /// The worker script.
    pub script: PathBuf,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// Full base environment of the workers (baton adds its own variables).
    pub env: Vec<(String, String)>,
    /// Working directory of the workers.
    pub cwd: Option<PathBuf>,
    /// Addresses the master listens on for this group, in fd order (3, 4, ...).
    pub listen: Vec<ListenAddr>,
    /// One name per address, passed in `LISTEN_FDNAMES`.
    pub listen_names: Vec<String>,
    /// Listen backlog, restored by the worker runtime (default [`DEFAULT_BACKLOG`]).
    pub backlog: i32,
    /// Run the workers as this user and group (`identity.rs`); `None`: as the master.
    pub credentials: Option<Credentials>,
    /// How connections are spread across the workers.
    pub balance: Balance,
    /// Where the workers' stdout goes.
    pub stdout: LogTarget,
    /// Where the workers' stderr goes.
    pub stderr: LogTarget,
    /// Prefix every line the workers write with `group#id ` (line-buffered).
    pub log_prefix: bool,
    /// The variable every worker finds its id in (PM2's `instance_var`; default
    /// `NODE_APP_INSTANCE`).
    pub instance_var: String,
    /// Drop-in mode (`dropIn`): the master answers its workers' `baton:listen` requests
    /// (`event_loop/drop_in.rs`); without it every such request is refused.
    pub drop_in: bool,
    /// The group's options as validated, every default filled in (`validate_group`): the
    /// group's status shows them as its `options`.
    pub options: GroupOptions,
}

/// The default of [`GroupConfig::instance_var`], as PM2 names it.
pub const DEFAULT_INSTANCE_VAR: &str = baton_contract::options::DEFAULT_INSTANCE_VAR;

/// The default listen backlog of a group: Node's own default for `server.listen()`
/// (`DEFAULT_BACKLOG` in crates/baton-contract/src/options.rs).
pub const DEFAULT_BACKLOG: i32 = baton_contract::options::DEFAULT_BACKLOG as i32;

impl GroupConfig {
    /// `argv[1..]` of a worker: execArgv, the script, the script's args.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = self.exec_argv.clone();
        argv.push(self.script.display().to_string());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// A whole fleet: one master, its name and groups.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Master name: names the control socket and pid file.
    pub name: String,
    /// Directory holding the control socket and pid file.
    pub runtime_dir: PathBuf,
    /// Groups in definition order (the order of a reload).
    pub groups: Vec<GroupConfig>,
    /// Crash-restart backoff.
    pub backoff: Backoff,
    /// The host prepares every reload (it re-reads a config file): a `baton reload` from
    /// the control socket is handed to the host's `Host::prepare_reload` (a private
    /// callback, not an event) and runs when the host answers with `Handle::reload_ticket`
    /// (or `Handle::fail_reload`).
    pub host_prepares_reloads: bool,
    /// The master's own stdout and stderr go to this file (daemon mode): opened at launch
    /// and reopened by `baton reopen-logs`.
    pub master_log: Option<PathBuf>,
    /// Rotate `master_log` by size (the fleet's `logMaxSize`, `logMaxFiles`).
    pub master_log_rotation: Option<crate::log_rotate::Rotation>,
    /// `baton upgrade`: the command line that starts the next master (program first; the
    /// host passes its own, or `upgradeCommand`). Empty: upgrades are refused.
    pub upgrade_command: Vec<String>,
    /// The working directory of the next master.
    pub upgrade_cwd: Option<PathBuf>,
    /// This master replaces a running one: the handover it was given (the JSON of
    /// `upgrade::ENV`, see `upgrade.rs`). Used by `launch` only.
    pub handover: Option<String>,
    /// The fleet's options as checked and resolved by the host, shown as the status's
    /// `options` (the fields above are read from them; `groups` is left out).
    pub options: SupervisorOptions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(30), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }
}
