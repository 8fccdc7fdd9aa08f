//! Group and fleet options as users write them, with each field's default and range
//! ([`GROUP_FIELDS`], [`BACKOFF_FIELDS`], [`FLEET_FIELDS`]) and the one validation of them
//! ([`validate_group`], [`validate_backoff`], [`validate_supervisor`]).
//!
//! Adding a group option: a field of [`GroupOptions`] with its doc comment (it becomes the
//! TypeScript doc of `GroupOptions` in `native/index.d.cts`) and its row in
//! [`GROUP_FIELDS`]. The core reads it from `GroupConfig::options`;
//! `__test__/option-contract.spec.ts` fails until the CLI, the config loader and the
//! status carry it, and `fields_match_the_struct` below until the row exists. A fleet
//! option likewise: a field of [`SupervisorOptions`] and its row in [`FLEET_FIELDS`].

use std::collections::HashMap;
use std::fmt;

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most workers one group may have (`count`), and most a reload replaces at once
/// (`parallel`).
pub const MAX_WORKERS: u32 = 1024;
/// Longest timeout in milliseconds (`readyTimeout`, `stopTimeout`, `minUptime`,
/// `backoff.*`): one hour.
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;
/// The default `readyTimeout` in milliseconds.
pub const DEFAULT_READY_TIMEOUT_MS: u32 = 30_000;
/// The default `stopTimeout` in milliseconds.
pub const DEFAULT_STOP_TIMEOUT_MS: u32 = 2_000;
/// The default `backlog`: Node's own default for `server.listen()`.
pub const DEFAULT_BACKLOG: u32 = 511;
/// The default `minUptime` in milliseconds.
pub const DEFAULT_MIN_UPTIME_MS: u32 = 1_000;
/// Rotated log files kept when `logMaxSize` is set and `logMaxFiles` is not.
pub const DEFAULT_LOG_MAX_FILES: u32 = 10;
/// The most rotated log files `logMaxFiles` may keep.
pub const MAX_LOG_FILES: u32 = 1000;
/// The default `instanceVar`, as PM2 names it.
pub const DEFAULT_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";
/// The default `balance`: `reuseport` on Linux, where the kernel spreads connections over
/// per-slot sockets; `shared` elsewhere.
pub const DEFAULT_BALANCE: &str = if cfg!(target_os = "linux") {
    "reuseport"
} else {
    "shared"
};

/// The order in which a reload replaces the workers of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]
pub enum Order {
    /// Spawn the replacement, wait until it is ready, then stop the old worker (default).
    #[default]
    StartFirst,
    /// Stop the old worker, wait for its exit, then spawn the replacement (Workerman's order).
    StopFirst,
}

impl Order {
    /// The option's value as the user writes it.
    pub fn name(self) -> &'static str {
        match self {
            Order::StartFirst => "start-first",
            Order::StopFirst => "stop-first",
        }
    }
}

/// How connections are spread across a group's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "napi", napi(string_enum = "lowercase"))]
pub enum Balance {
    /// One socket per address that every worker accepts on (the default off Linux).
    Shared,
    /// One `SO_REUSEPORT` socket per address and worker slot, held by the master (the
    /// default on Linux).
    Reuseport,
    /// The sockets of `reuseport`, each client address always to the same worker slot
    /// while it serves (Linux).
    Sticky,
}

/// How worker output lines are written to their sinks (`logFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "napi", napi(string_enum = "lowercase"))]
pub enum LogFormat {
    /// As the worker wrote them (after `logTime`'s time stamp and `logPrefix`'s prefix).
    #[default]
    Text,
    /// One JSON object per line: `time`, `fleet`, `group`, `id`, `pid`, `stream`
    /// (`out`/`err`) and `msg`.
    Json,
}

/// How a worker becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "napi", napi(string_enum = "lowercase"))]
pub enum Readiness {
    /// Any ready, including the drop-in preload's once the app's own `listen()` is
    /// listening (default).
    #[default]
    Listen,
    /// An explicit ready only: `process.send('ready')`, `worker.ready()` or
    /// `worker.listen()` (PM2's `wait_ready`).
    Message,
    /// Once up for `minUptime` ms, whatever it says: for processes that never listen, like
    /// queue consumers (PM2's `min_uptime`).
    Uptime,
}

/// Options of one group of workers, as users write them. Validated by
/// [`validate_group`], which fills in every default: a group's status carries the result
/// as its `options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct GroupOptions {
    /// The worker script (resolved against `cwd`). Defaults, in `supervisor.group()`, to
    /// the current script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Number of workers. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Addresses the master listens on for this group: `host:port`, `:port`,
    /// `tcp://host:port`, `[::1]:port`, `unix:/path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<String>>,
    /// Extra environment variables for the workers (on top of the master's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<HashMap<String, String>>,
    /// Arguments passed to the script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Node options for the workers (e.g. `['--max-old-space-size=512']`). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_argv: Option<Vec<String>>,
    /// Working directory of the workers. Default: the master's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Whether a reload replaces these workers. `false`: they get `onWorkerReload` instead
    /// (the gateway pattern). Default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reloadable: Option<bool>,
    /// Drop-in mode: a worker's plain `listen(port)` (an app that does not import baton)
    /// gets a socket the master creates on first request and keeps across reloads
    /// (preload.ts, loaded with `--import`). Default true; `false` loads nothing into the
    /// workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_in: Option<bool>,
    /// How a worker becomes ready (see {@link Readiness}). Default `listen`. A reload of any
    /// mode is sequential and readiness-gated: under `uptime`, a replacement that exits
    /// before `minUptime` fails the reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// `readiness: 'uptime'`: milliseconds a worker must stay up to be ready (less than
    /// `readyTimeout`). Default 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_uptime: Option<u32>,
    /// Alias of `readiness: 'message'` (PM2's `wait_ready`): a worker is ready only when it
    /// sends `process.send('ready')` (or calls `worker.ready()` / `worker.listen()`), not
    /// when it has listened. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ready: Option<bool>,
    /// The environment variable every worker finds its id (0, 1, ...) in. Default
    /// `NODE_APP_INSTANCE`, as under PM2; PM2's `instance_var` renames it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_var: Option<String>,
    /// Milliseconds a new worker has to become ready. Default 30000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<u32>,
    /// Milliseconds a stopping worker has before SIGKILL. Default 2000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// Reload order. Default `start-first`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Workers a reload replaces at once, each readiness-gated. Default 1. `start-first`
    /// keeps at least `count` workers ready (at most `count + 2 × parallel` processes while
    /// old ones drain); `stop-first` keeps at least `count - parallel` ready (at most
    /// `count` processes). Values above `count` act as `count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// Listen backlog. Default 511.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// `reuseport` (default on Linux): one `SO_REUSEPORT` socket per address and worker
    /// slot, held by the master (listen addresses, and the app's own `listen(PORT)` in
    /// drop-in mode); new connections go only to slots with a ready worker, weighted
    /// towards the workers with fewer connections, and over-full workers shed keep-alive
    /// connections after a reload (docs/architecture.md, "Balancing").
    /// `sticky` (Linux): the sockets of `reuseport`, but the kernel picks the slot from the
    /// client's source address only, so every connection of one client address goes to the
    /// same worker slot while it serves (Socket.IO's long-polling, sessions held in memory;
    /// clients behind one NAT or proxy share a worker). Works with or without `listen` (a
    /// drop-in app's own `listen(PORT)` gets its slot's socket). The start fails if the
    /// kernel refuses the steering program.
    /// `shared` (default elsewhere): one socket per address that every worker accepts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// Run the workers as this user: a uid or a user name (the master must be root). Its
    /// primary group and supplementary groups come from the user database unless `gid` is
    /// given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Run the workers as this group: a gid or a group name (the master must be root for
    /// another group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Where the workers' stdout goes: `inherit` (the master's own stdout), `ignore`
    /// (discarded; `baton logs` and failure reports still see it), or a file path
    /// (appended to, created 0640, reopened by `baton reopen-logs`; relative paths are
    /// resolved like `script`). A file literally named `inherit` or `ignore` needs a `./`.
    /// Default `inherit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Where the workers' stderr goes (as `stdout`). Default `inherit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Prefix every line the workers write with `group#id ` (e.g. `web#2 listening`), on
    /// stdout and stderr alike. Lines are then buffered per worker: a last line without a
    /// newline is written when the worker exits (or once 16 KiB long). Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<bool>,
    /// Start every line the workers write with the time the master read it, ISO 8601 in
    /// UTC with milliseconds (`2026-12-07T02:20:00.123Z `), before any `logPrefix`. Lines
    /// are then buffered per worker, as with `logPrefix`. Default: the fleet's `logTime`,
    /// else false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_time: Option<bool>,
    /// `json`: write one JSON object per line the workers write, with the keys `time`,
    /// `fleet`, `group`, `id`, `pid`, `stream` (`out`/`err`) and `msg` (the line, invalid
    /// UTF-8 replaced), for Loki, Elasticsearch or `jq`. Default: the fleet's `logFormat`,
    /// else `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Rotate the group's `stdout`/`stderr` files by size: before a file would grow past
    /// this size (`10M`, `1.5G` or a number of bytes), it is renamed `FILE.1` (the newest;
    /// `FILE.1` becomes `FILE.2` and so on) and a new `FILE` is opened, at a line boundary,
    /// so no line is split or lost. Uncompressed. Default: the fleet's `logMaxSize`, else
    /// none (files grow until an outside tool such as logrotate rotates them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<String>,
    /// With `logMaxSize`: how many rotated files are kept (`FILE.1` to `FILE.N`; the oldest
    /// is removed), 1 to 1000. Default: the fleet's `logMaxFiles`, else 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
    /// Reload the fleet on a schedule: a cron expression of 5 fields (minute hour
    /// day-of-month month day-of-week) or 6 with a leading seconds field, in the master's
    /// local time zone (`TZ` honoured), e.g. `0 3 * * *` (03:00 every day). Each fire runs
    /// what `baton reload` runs (every reloadable group, one worker at a time, gated on
    /// readiness; a fire during a reload joins the next pass), and is logged. PM2's
    /// `cron_restart`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    /// Replace a worker whose resident memory (RSS) stays above this size for 3 s (sampled
    /// every second): `512M`, `1.5G` (K/M/G 1024-based) or a number of bytes. The
    /// replacement is graceful, like one slot of a reload in the group's `order`: under
    /// `start-first` its successor starts and is ready before the worker drains
    /// (`stop-first`: the worker drains, then its successor starts); one worker per group
    /// at a time, and never while a reload runs (the reload replaces it anyway). A worker of a
    /// non-reloadable group is only logged. Logged, and counted in the status
    /// (`counters.memoryReplacements`, the row's `lastReplaced`). PM2's
    /// `max_memory_restart`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
}

/// Crash-restart backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct BackoffOptions {
    /// First restart delay in ms. Default 100.
    pub initial: Option<u32>,
    /// Largest restart delay in ms (at least `initial`). Default 30000.
    pub max: Option<u32>,
    /// A worker up this many ms no longer counts as crash-looping. Default 10000.
    pub reset_after: Option<u32>,
}

/// Options of a Supervisor (a fleet) as users write them. The TypeScript
/// `SupervisorOptions` adds what only JavaScript has (`log`, `beforeReload`) and the
/// groups' JavaScript form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct SupervisorOptions {
    /// Master name: names the control socket (`baton status <name>`). Default: the main
    /// script's base name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Runtime dir for the control socket and pid file. Default: `BATON_RUNTIME_DIR`, else
    /// `/run/baton` for root, else `~/.baton` (`<tmpdir>/baton-<uid>` when the home
    /// directory is unusable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<String>,
    /// Groups by name. More can be added with `supervisor.group()`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<HashMap<String, GroupOptions>>,
    /// Handle SIGTERM/SIGINT (stop), a second SIGINT (force), SIGHUP/SIGUSR2 (reload).
    /// Default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle_signals: Option<bool>,
    /// Crash-restart backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffOptions>,
    /// Address of a health endpoint for readiness/liveness probes (`host:port`, `:port`,
    /// `[::1]:port`, `unix:/path`): every GET or HEAD answers 200 while the fleet is ready,
    /// 503 while it is not or while its status is stale, with
    /// `{"ready": bool, "groups": {"<name>": {"ready": n, "count": n}}}`
    /// (src/master/health.ts). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The health endpoint serves the full status JSON (`baton status --json`: paths, pids,
    /// the stderr tail of a failed reload) instead of the minimal body. Only for an address
    /// that no untrusted client can reach. Needs `health`. Default: false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<bool>,
    /// Send the master's own stdout and stderr (its log lines, and the output of groups
    /// whose `stdout`/`stderr` is `inherit`) to this file, appended to and reopened by
    /// `reopenLogs()` / `baton reopen-logs`. A master started in the background
    /// (`baton start --daemon`, `start -d`) uses `<runtime dir>/<name>.log` (or
    /// `--log FILE`). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    /// The command line `upgrade()` / `baton upgrade` starts the new master with, program
    /// first. Default: this master's own (`process.execPath`, `process.execArgv`,
    /// `process.argv`), run in its working directory, so the new master is the baton and
    /// Node installed now, reading its options or config file afresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_command: Option<Vec<String>>,
    /// The default `logTime` of every group that does not set its own; also starts the
    /// master's own log lines with the time. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_time: Option<bool>,
    /// The default `logFormat` of every group that does not set its own; `json` also
    /// writes the master's own log lines as JSON (`stream: "master"`, `group` and `id`
    /// null, `pid` the master's). Default `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// The default `logMaxSize` of every group that does not set its own; also rotates
    /// the master's `logFile` by size. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<String>,
    /// The default `logMaxFiles` of every group that does not set its own, and the rotated
    /// copies of `logFile` kept. Default 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
}

/// What a value of one option must be: its type, range and default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// An integer from `min` to `max`, `default` when unset.
    Integer { min: u32, max: u32, default: u32 },
    /// `true` or `false`, `default` when unset.
    Bool { default: bool },
    /// One of `values` (a string enum), `default` when unset.
    Choice {
        values: &'static [&'static str],
        default: &'static str,
    },
    /// A non-empty string (a path the TypeScript layer resolves); unset stays unset.
    Path,
    /// An array of strings, empty when unset.
    Strings,
    /// An object of environment variables (string values), empty when unset.
    Env,
    /// A numeric id (0 to 2^32-2) or a name, as a string; unset stays unset. `kind` is
    /// `user` or `group`.
    IdOrName { kind: &'static str },
    /// `inherit`, `ignore` or a file path, `inherit` when unset.
    Output,
    /// An environment variable name, not `BATON_*`, `default` when unset.
    VarName { default: &'static str },
    /// A cron expression ([`crate::cron::parse`]); unset stays unset.
    Cron,
    /// A size ([`crate::size::parse_size`]: `512M`, `1.5G`, or a number of bytes, which
    /// becomes its decimal string); unset stays unset.
    Size,
    /// A master or group name ([`is_valid_name`]).
    Name,
    /// An object of groups by name; each group is checked by [`validate_group`] once the
    /// host resolved its paths.
    Groups,
    /// The restart backoff ([`validate_backoff`], with [`BACKOFF_FIELDS`]).
    Backoff,
    /// A listen address as a string; the binding parses it into its canonical form
    /// (crates/baton-core/src/addr.rs), naming the field when it cannot.
    Address,
    /// A command line: a non-empty array of strings, the program first and not empty.
    Command,
}

/// One option: its name as users write it and its [`Rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The option's name, as in [`GroupOptions`] (camelCase).
    pub name: &'static str,
    /// Its type, range and default.
    pub rule: Rule,
}

const fn int(name: &'static str, min: u32, max: u32, default: u32) -> Field {
    Field {
        name,
        rule: Rule::Integer { min, max, default },
    }
}

const fn field(name: &'static str, rule: Rule) -> Field {
    Field { name, rule }
}

/// Every field of [`GroupOptions`], in declaration order, with its rule: the one place a
/// default or a range is written.
pub const GROUP_FIELDS: &[Field] = &[
    field("script", Rule::Path),
    int("count", 1, MAX_WORKERS, 1),
    field("listen", Rule::Strings),
    field("env", Rule::Env),
    field("args", Rule::Strings),
    field("execArgv", Rule::Strings),
    field("cwd", Rule::Path),
    field("reloadable", Rule::Bool { default: true }),
    field("dropIn", Rule::Bool { default: true }),
    field(
        "readiness",
        Rule::Choice {
            values: &["listen", "message", "uptime"],
            default: "listen",
        },
    ),
    int("minUptime", 0, MAX_TIMEOUT_MS, DEFAULT_MIN_UPTIME_MS),
    field("waitReady", Rule::Bool { default: false }),
    field(
        "instanceVar",
        Rule::VarName {
            default: DEFAULT_INSTANCE_VAR,
        },
    ),
    int("readyTimeout", 1, MAX_TIMEOUT_MS, DEFAULT_READY_TIMEOUT_MS),
    int("stopTimeout", 1, MAX_TIMEOUT_MS, DEFAULT_STOP_TIMEOUT_MS),
    field(
        "order",
        Rule::Choice {
            values: &["start-first", "stop-first"],
            default: "start-first",
        },
    ),
    int("parallel", 1, MAX_WORKERS, 1),
    int("backlog", 1, 65_535, DEFAULT_BACKLOG),
    field(
        "balance",
        Rule::Choice {
            values: &["shared", "reuseport", "sticky"],
            default: DEFAULT_BALANCE,
        },
    ),
    field("uid", Rule::IdOrName { kind: "user" }),
    field("gid", Rule::IdOrName { kind: "group" }),
    field("stdout", Rule::Output),
    field("stderr", Rule::Output),
    field("logPrefix", Rule::Bool { default: false }),
    LOG_TIME,
    LOG_FORMAT,
    LOG_MAX_SIZE,
    LOG_MAX_FILES,
    field("cronRestart", Rule::Cron),
    field("maxMemory", Rule::Size),
];

// The log options a group and the fleet both take, with one rule each.
const LOG_TIME: Field = field("logTime", Rule::Bool { default: false });
const LOG_FORMAT: Field = field(
    "logFormat",
    Rule::Choice {
        values: &["text", "json"],
        default: "text",
    },
);
const LOG_MAX_SIZE: Field = field("logMaxSize", Rule::Size);
const LOG_MAX_FILES: Field = int("logMaxFiles", 1, MAX_LOG_FILES, DEFAULT_LOG_MAX_FILES);

/// Every field of [`BackoffOptions`] with its rule (`max` is also at least `initial`).
pub const BACKOFF_FIELDS: &[Field] = &[
    int("initial", 1, MAX_TIMEOUT_MS, 100),
    int("max", 1, MAX_TIMEOUT_MS, 30_000),
    int("resetAfter", 1, 86_400_000, 10_000),
];

/// Every field of [`SupervisorOptions`], in declaration order, with its rule. Unlike a
/// group's, an unset fleet option stays unset: its default comes from the host (the main
/// script's name, the runtime dir of `BATON_RUNTIME_DIR`, the host's own command line) or,
/// for `logTime` / `logFormat`, from the groups.
pub const FLEET_FIELDS: &[Field] = &[
    field("name", Rule::Name),
    field("runtimeDir", Rule::Path),
    field("groups", Rule::Groups),
    field("handleSignals", Rule::Bool { default: true }),
    field("backoff", Rule::Backoff),
    field("health", Rule::Address),
    field("healthDetail", Rule::Bool { default: false }),
    field("logFile", Rule::Path),
    field("upgradeCommand", Rule::Command),
    LOG_TIME,
    LOG_FORMAT,
    LOG_MAX_SIZE,
    LOG_MAX_FILES,
];

/// Options of the TypeScript `SupervisorOptions` that only JavaScript has (functions):
/// [`validate_supervisor`] accepts them and leaves them to the host (src/master/options.ts).
pub const HOST_FIELDS: &[&str] = &["log", "beforeReload"];

/// An option that is not valid: `field` names it as users write it (`groups.web.count`),
/// `message` says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "napi", napi(object))]
pub struct OptionProblem {
    /// The offending option, e.g. `groups.web.count`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl OptionProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        OptionProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for OptionProblem {}

/// Whether `value` is usable as a master or group name: 1-64 characters of A-Z a-z 0-9
/// . _ -, not starting with '.'.
pub fn is_valid_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The error for a name that [`is_valid_name`] refuses.
pub fn check_name(field: &str, value: &Value) -> Result<String, OptionProblem> {
    match value.as_str() {
        Some(v) if is_valid_name(v) => Ok(v.to_string()),
        _ => Err(OptionProblem::new(
            field,
            format!(
                "{value} is not a valid name (1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.')"
            ),
        )),
    }
}

/// `'a', 'b' or 'c'`
fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

fn is_var_name(v: &str) -> bool {
    let mut bytes = v.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !v.starts_with("BATON_")
}

fn is_id_name(v: &str) -> bool {
    let body = v.strip_suffix('$').unwrap_or(v);
    v.len() <= 256
        && matches!(body.bytes().next(), Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Check one value against its rule; returns the value with the default filled in
/// (`Value::Null` for an unset option without a default).
fn check(field: &str, rule: Rule, value: Option<&Value>) -> Result<Value, OptionProblem> {
    let Some(value) = value else {
        return Ok(match rule {
            Rule::Integer { default, .. } => Value::from(default),
            Rule::Bool { default } => Value::from(default),
            Rule::Choice { default, .. } => Value::from(default),
            Rule::VarName { default } => Value::from(default),
            Rule::Output => Value::from("inherit"),
            Rule::Strings => Value::Array(Vec::new()),
            Rule::Env => Value::Object(Map::new()),
            Rule::Path
            | Rule::IdOrName { .. }
            | Rule::Cron
            | Rule::Size
            | Rule::Name
            | Rule::Groups
            | Rule::Backoff
            | Rule::Address
            | Rule::Command => Value::Null,
        });
    };
    let bad = |message: String| Err(OptionProblem::new(field, message));
    match rule {
        Rule::Integer { min, max, .. } => match value.as_u64() {
            Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(value.clone()),
            _ => bad(format!("expected an integer from {min} to {max}, got {value}")),
        },
        Rule::Bool { .. } if value.is_boolean() => Ok(value.clone()),
        Rule::Bool { .. } => bad(format!("expected true or false, got {value}")),
        Rule::Choice { values, .. } => match value.as_str() {
            Some(v) if values.contains(&v) => Ok(value.clone()),
            _ => bad(format!("expected {}, got {value}", one_of(values))),
        },
        Rule::Path => match value.as_str() {
            Some(v) if !v.is_empty() => Ok(value.clone()),
            _ => bad(format!("expected a path, got {value}")),
        },
        Rule::Strings => match value.as_array() {
            Some(a) if a.iter().all(Value::is_string) => Ok(value.clone()),
            _ => bad("expected an array of strings".to_string()),
        },
        Rule::Env => {
            let Some(vars) = value.as_object() else {
                return bad("expected an object of environment variables".to_string());
            };
            for (k, v) in vars {
                if !v.is_string() {
                    return Err(OptionProblem::new(
                        format!("{field}.{k}"),
                        format!("expected a string, got {v}"),
                    ));
                }
            }
            Ok(value.clone())
        }
        Rule::IdOrName { kind } => match value {
            Value::Number(n) => match n.as_u64() {
                Some(id) if id <= u64::from(u32::MAX - 1) => Ok(Value::from(id.to_string())),
                _ => bad(format!(
                    "expected an integer from 0 to {}, got {value}",
                    u32::MAX - 1
                )),
            },
            Value::String(v) if is_id_name(v) => Ok(value.clone()),
            _ => bad(format!(
                "expected a numeric {kind} id or a {kind} name, got {value}"
            )),
        },
        Rule::Output => match value.as_str() {
            Some(v) if !v.is_empty() => Ok(value.clone()),
            _ => bad(format!(
                "expected 'inherit', 'ignore' or a file path, got {value}"
            )),
        },
        Rule::Cron => match value.as_str() {
            Some(v) => match crate::cron::parse(v) {
                Ok(_) => Ok(value.clone()),
                Err(why) => bad(format!("{value} is not a cron expression: {why}")),
            },
            None => bad(format!(
                "expected a cron expression such as \"0 3 * * *\", got {value}"
            )),
        },
        Rule::Size => {
            let text = match value {
                Value::Number(n) if n.is_u64() => n.to_string(),
                Value::String(v) => v.clone(),
                _ => return bad(format!("expected a size such as \"512M\", got {value}")),
            };
            match crate::size::parse_size(&text) {
                Ok(_) => Ok(Value::String(text)),
                Err(why) => bad(why),
            }
        }
        Rule::Name => check_name(field, value).map(Value::from),
        Rule::Groups if value.is_object() => Ok(value.clone()),
        Rule::Groups => bad(format!(
            "expected an object of groups by name, e.g. {{ \"web\": {{ \"script\": \"app.mjs\" }} }}, got {value}"
        )),
        Rule::Backoff => validate_backoff(Some(value)).and_then(|b| {
            serde_json::to_value(b).map_err(|e| OptionProblem::new(field, e.to_string()))
        }),
        Rule::Address => match value.as_str() {
            Some(v) if !v.is_empty() => Ok(value.clone()),
            _ => bad(format!(
                "expected an address string (host:port, :port, [::1]:port or unix:/path), got {value}"
            )),
        },
        Rule::Command => check_command(field, value),
        Rule::VarName { .. } => match value.as_str() {
            Some(v) if is_var_name(v) => Ok(value.clone()),
            _ => bad(format!(
                "expected an environment variable name (A-Z a-z 0-9 _, not starting with a digit or BATON_), got {value}"
            )),
        },
    }
}

/// A command line: a non-empty array of strings, the program first and not empty.
fn check_command(field: &str, value: &Value) -> Result<Value, OptionProblem> {
    const EXAMPLE: &str = r#"e.g. ["/usr/bin/node", "server.mjs"]"#;
    let Some(args) = value.as_array() else {
        return Err(OptionProblem::new(
            field,
            format!("expected a command line as an array of strings, program first ({EXAMPLE}), got {value}"),
        ));
    };
    if args.is_empty() {
        return Err(OptionProblem::new(
            field,
            format!("the command line is empty: give the program first ({EXAMPLE}), or leave {field} out to use this master's own"),
        ));
    }
    for (i, arg) in args.iter().enumerate() {
        match arg.as_str() {
            None => {
                return Err(OptionProblem::new(
                    format!("{field}[{i}]"),
                    format!(
                    "expected a string, got {arg}: every argument of the command line is a string"
                ),
                ))
            }
            Some("") if i == 0 => {
                return Err(OptionProblem::new(
                    format!("{field}[0]"),
                    format!("the program is empty: give its path first ({EXAMPLE})"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(value.clone())
}

/// Check every field of an options object against `fields`: unknown keys are refused;
/// returns the object with every default filled in. `at` is the object's own field
/// (`groups.web`, `backoff`).
fn check_object(
    at: &str,
    fields: &[Field],
    raw: &Value,
    expected: &str,
) -> Result<Map<String, Value>, OptionProblem> {
    let Some(obj) = raw.as_object() else {
        return Err(OptionProblem::new(at, expected));
    };
    if let Some(key) = obj.keys().find(|k| !fields.iter().any(|f| f.name == *k)) {
        let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
        return Err(OptionProblem::new(
            format!("{at}.{key}"),
            format!("unknown option (known: {})", known.join(", ")),
        ));
    }
    let mut out = Map::new();
    for f in fields {
        let value = check(&format!("{at}.{}", f.name), f.rule, obj.get(f.name))?;
        if !value.is_null() {
            out.insert(f.name.to_string(), value);
        }
    }
    Ok(out)
}

/// Validate one group's options (`raw`: as the user wrote them, after the TypeScript layer
/// resolved what only it can: relative paths, the `listen` shorthands) and fill in every
/// default. `waitReady: true` resolves to `readiness: 'message'` here, and only here.
/// Every error names the field (`groups.web.parallel`) and the rule.
pub fn validate_group(name: &str, raw: &Value) -> Result<GroupOptions, OptionProblem> {
    let at = format!("groups.{name}");
    check_name(&at, &Value::from(name))?;
    let mut o = check_object(
        &at,
        GROUP_FIELDS,
        raw,
        "expected an object of group options",
    )?;
    let readiness = o
        .get("readiness")
        .and_then(Value::as_str)
        .unwrap_or("listen")
        .to_string();
    let given_readiness = raw.get("readiness").is_some();
    if o.get("waitReady") == Some(&Value::Bool(true)) {
        if given_readiness && readiness != "message" {
            return Err(OptionProblem::new(
                format!("{at}.waitReady"),
                format!("waitReady: true means readiness 'message', but readiness is '{readiness}': keep one of the two"),
            ));
        }
        o.insert("readiness".into(), Value::from("message"));
    }
    o.insert(
        "waitReady".into(),
        Value::Bool(o.get("readiness").and_then(Value::as_str) == Some("message")),
    );
    let ms = |key: &str| o.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (min_uptime, ready_timeout) = (ms("minUptime"), ms("readyTimeout"));
    if readiness == "uptime" && min_uptime >= ready_timeout {
        return Err(OptionProblem::new(
            format!("{at}.minUptime"),
            format!("{min_uptime} ms is not less than readyTimeout ({ready_timeout} ms): a worker could never become ready; lower minUptime or raise readyTimeout"),
        ));
    }
    let balance = o
        .get("balance")
        .and_then(Value::as_str)
        .unwrap_or("shared")
        .to_string();
    if balance != "shared" && !cfg!(target_os = "linux") {
        return Err(OptionProblem::new(
            format!("{at}.balance"),
            format!("'{balance}' needs Linux (this system does not spread connections across SO_REUSEPORT sockets); use 'shared'"),
        ));
    }
    serde_json::from_value(Value::Object(o)).map_err(|e| OptionProblem::new(at, e.to_string()))
}

/// Validate the `backoff` options and fill in every default.
pub fn validate_backoff(raw: Option<&Value>) -> Result<BackoffOptions, OptionProblem> {
    let empty = Value::Object(Map::new());
    let o = check_object(
        "backoff",
        BACKOFF_FIELDS,
        raw.unwrap_or(&empty),
        "expected an object { initial, max, resetAfter }",
    )?;
    let backoff: BackoffOptions = serde_json::from_value(Value::Object(o))
        .map_err(|e| OptionProblem::new("backoff", e.to_string()))?;
    let (initial, max) = (backoff.initial.unwrap_or(0), backoff.max.unwrap_or(0));
    if max < initial {
        return Err(OptionProblem::new(
            "backoff.max",
            format!("expected an integer from {initial} to {MAX_TIMEOUT_MS}, got {max}"),
        ));
    }
    Ok(backoff)
}

/// Validate a fleet's options (`raw`: as the user wrote them, the JavaScript-only
/// [`HOST_FIELDS`] ignored): unknown keys are refused, every given field is checked against
/// its row of [`FLEET_FIELDS`], and `healthDetail` needs `health`. Unset fields stay unset
/// (see [`FLEET_FIELDS`]); `groups` is only checked to be an object and left out of the
/// result (each group is checked by [`validate_group`] once the host resolved its paths);
/// `backoff` comes back with its defaults filled in. `health` is a string here: the
/// binding parses it into its canonical form. Every error names the field and the rule.
pub fn validate_supervisor(raw: &Value) -> Result<SupervisorOptions, OptionProblem> {
    let Some(obj) = raw.as_object() else {
        return Err(OptionProblem::new(
            "options",
            format!("expected an object of supervisor options, got {raw}"),
        ));
    };
    let known = || {
        let names: Vec<&str> = FLEET_FIELDS.iter().map(|f| f.name).collect();
        [names.as_slice(), HOST_FIELDS].concat().join(", ")
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !FLEET_FIELDS.iter().any(|f| f.name == *k) && !HOST_FIELDS.contains(&k.as_str()))
    {
        return Err(OptionProblem::new(
            key.as_str(),
            format!("unknown option (known: {})", known()),
        ));
    }
    let mut out = Map::new();
    for f in FLEET_FIELDS {
        let Some(value) = obj.get(f.name) else {
            continue;
        };
        let value = check(f.name, f.rule, Some(value))?;
        if f.rule != Rule::Groups {
            out.insert(f.name.to_string(), value);
        }
    }
    if out.get("healthDetail") == Some(&Value::Bool(true)) && !out.contains_key("health") {
        return Err(OptionProblem::new(
            "healthDetail",
            "applies to the health endpoint only: set health to an address, or remove healthDetail",
        ));
    }
    serde_json::from_value(Value::Object(out))
        .map_err(|e| OptionProblem::new("options", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The field names serde derives for `T` (its `deserialize_struct` fields).
    fn serde_fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        struct Probe(Vec<&'static str>);
        #[derive(Debug)]
        struct Stop;
        impl fmt::Display for Stop {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<M: fmt::Display>(_: M) -> Self {
                Stop
            }
        }
        impl<'de> serde::Deserializer<'de> for &mut Probe {
            type Error = Stop;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0 = fields.to_vec();
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut probe = Probe(Vec::new());
        let _ = T::deserialize(&mut probe);
        probe.0
    }

    #[test]
    fn fields_match_the_struct() {
        let names: Vec<&str> = GROUP_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names, serde_fields::<GroupOptions>());
        let names: Vec<&str> = BACKOFF_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names, serde_fields::<BackoffOptions>());
        let names: Vec<&str> = FLEET_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names, serde_fields::<SupervisorOptions>());
    }

    #[test]
    fn fleet_options_as_given_stay_as_given() {
        let o = validate_supervisor(&json!({
            "name": "web",
            "runtimeDir": "/run/baton",
            "groups": { "web": { "script": "relative.mjs", "listen": { "a": ":1" } } },
            "handleSignals": false,
            "health": ":9000",
            "healthDetail": true,
            "logFile": "/var/log/baton.log",
            "upgradeCommand": ["/usr/bin/node", "app.mjs"],
            "logTime": true,
            "logFormat": "json",
            "log": false,
        }))
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("web"));
        assert_eq!(
            o.groups, None,
            "groups are checked one by one by validate_group"
        );
        assert_eq!(o.handle_signals, Some(false));
        assert_eq!(o.health.as_deref(), Some(":9000"));
        assert_eq!(o.upgrade_command.map(|c| c.len()), Some(2));
        assert_eq!(o.log_format, Some(LogFormat::Json));
        let unset = validate_supervisor(&json!({})).unwrap();
        assert_eq!(unset, SupervisorOptions::default(), "unset stays unset");
        let b = validate_supervisor(&json!({ "backoff": { "initial": 50 } })).unwrap();
        assert_eq!(b.backoff.and_then(|b| b.max), Some(30_000));
    }

    #[test]
    fn fleet_errors_name_the_field_and_the_rule() {
        let err = |raw: Value| validate_supervisor(&raw).unwrap_err().to_string();
        assert_eq!(
            err(json!({ "name": "a b" })),
            "name: \"a b\" is not a valid name (1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.')"
        );
        assert_eq!(
            err(json!({ "runtimeDir": "" })),
            "runtimeDir: expected a path, got \"\""
        );
        assert_eq!(
            err(json!({ "logFile": 5 })),
            "logFile: expected a path, got 5"
        );
        assert!(err(json!({ "groups": [] }))
            .starts_with("groups: expected an object of groups by name"));
        assert_eq!(
            err(json!({ "handleSignals": "no" })),
            "handleSignals: expected true or false, got \"no\""
        );
        assert!(err(json!({ "health": 42 })).starts_with("health: expected an address string"));
        assert!(err(json!({ "health": "" })).starts_with("health: expected an address string"));
        assert_eq!(
            err(json!({ "healthDetail": true })),
            "healthDetail: applies to the health endpoint only: set health to an address, or remove healthDetail"
        );
        assert_eq!(
            err(json!({ "health": ":0", "healthDetail": "yes" })),
            "healthDetail: expected true or false, got \"yes\""
        );
        assert!(
            err(json!({ "upgradeCommand": "node app.mjs" })).starts_with(
                "upgradeCommand: expected a command line as an array of strings, program first"
            )
        );
        assert!(err(json!({ "upgradeCommand": [] }))
            .starts_with("upgradeCommand: the command line is empty: give the program first"));
        assert!(err(json!({ "upgradeCommand": [""] }))
            .starts_with("upgradeCommand[0]: the program is empty: give its path first"));
        assert!(err(json!({ "upgradeCommand": ["node", 5] }))
            .starts_with("upgradeCommand[1]: expected a string, got 5"));
        assert_eq!(
            err(json!({ "logFormat": "xml" })),
            "logFormat: expected 'text' or 'json', got \"xml\""
        );
        assert_eq!(
            err(json!({ "backoff": { "initial": 0 } })),
            "backoff.initial: expected an integer from 1 to 3600000, got 0"
        );
        assert!(err(json!({ "bogus": 1 }))
            .starts_with("bogus: unknown option (known: name, runtimeDir, groups,"));
        assert!(err(json!({ "bogus": 1 }))
            .ends_with("logFormat, logMaxSize, logMaxFiles, log, beforeReload)"));
        assert!(err(json!(5)).starts_with("options: expected an object"));
        assert_eq!(
            err(json!({ "logMaxSize": "12X" })),
            "logMaxSize: expected a size such as 512M, 1.5G or a number of bytes, got \"12X\""
        );
        assert_eq!(
            err(json!({ "logMaxFiles": 0 })),
            "logMaxFiles: expected an integer from 1 to 1000, got 0"
        );
    }

    #[test]
    fn defaults_fill_every_field_but_the_unset_paths() {
        let o = validate_group("web", &json!({ "script": "/app.js" })).unwrap();
        assert_eq!(o.count, Some(1));
        assert_eq!(o.parallel, Some(1));
        assert_eq!(o.order, Some(Order::StartFirst));
        assert_eq!(o.readiness, Some(Readiness::Listen));
        assert_eq!(o.wait_ready, Some(false));
        assert_eq!(o.backlog, Some(DEFAULT_BACKLOG));
        assert_eq!(o.instance_var.as_deref(), Some(DEFAULT_INSTANCE_VAR));
        assert_eq!(o.stdout.as_deref(), Some("inherit"));
        assert_eq!(o.cwd, None);
        assert_eq!(o.uid, None);
        assert_eq!(o.cron_restart, None);
        let o = validate_group("web", &json!({ "cronRestart": "*/4 * * * * *" })).unwrap();
        assert_eq!(o.cron_restart.as_deref(), Some("*/4 * * * * *"));
        assert_eq!(o.max_memory, None);
        let o = validate_group("web", &json!({ "maxMemory": "1.5G" })).unwrap();
        assert_eq!(o.max_memory.as_deref(), Some("1.5G"));
        let o = validate_group("web", &json!({ "maxMemory": 83886080 })).unwrap();
        assert_eq!(o.max_memory.as_deref(), Some("83886080"));
    }

    #[test]
    fn errors_name_the_field_and_the_rule() {
        let err = |raw: Value| validate_group("web", &raw).unwrap_err().to_string();
        assert_eq!(
            err(json!({ "parallel": 0 })),
            "groups.web.parallel: expected an integer from 1 to 1024, got 0"
        );
        assert_eq!(
            err(json!({ "count": 1.5 })),
            "groups.web.count: expected an integer from 1 to 1024, got 1.5"
        );
        assert_eq!(
            err(json!({ "order": "random" })),
            "groups.web.order: expected 'start-first' or 'stop-first', got \"random\""
        );
        assert_eq!(
            err(json!({ "readiness": "soon" })),
            "groups.web.readiness: expected 'listen', 'message' or 'uptime', got \"soon\""
        );
        assert!(err(json!({ "cout": 1 }))
            .starts_with("groups.web.cout: unknown option (known: script, count,"));
        assert_eq!(
            err(json!({ "env": { "A": 1 } })),
            "groups.web.env.A: expected a string, got 1"
        );
        assert!(err(json!({ "waitReady": true, "readiness": "uptime" }))
            .starts_with("groups.web.waitReady: waitReady: true means readiness 'message'"));
        assert!(
            err(json!({ "readiness": "uptime", "minUptime": 5000, "readyTimeout": 3000 }))
                .starts_with(
                    "groups.web.minUptime: 5000 ms is not less than readyTimeout (3000 ms)"
                )
        );
        assert!(err(json!({ "cronRestart": "61 * * * *" }))
            .starts_with("groups.web.cronRestart: \"61 * * * *\" is not a cron expression: "));
        assert!(err(json!({ "cronRestart": "* * *" })).starts_with(
            "groups.web.cronRestart: \"* * *\" is not a cron expression: expected 5 fields"
        ));
        assert!(err(json!({ "cronRestart": 5 })).starts_with("groups.web.cronRestart: expected"));
        assert_eq!(
            err(json!({ "maxMemory": "12X" })),
            "groups.web.maxMemory: expected a size such as 512M, 1.5G or a number of bytes, got \"12X\""
        );
        assert!(err(json!({ "maxMemory": -5 })).starts_with("groups.web.maxMemory: expected"));
        assert!(err(json!({ "instanceVar": "BATON_ID" })).starts_with("groups.web.instanceVar:"));
        assert_eq!(
            err(json!({ "logMaxSize": "0" })),
            "groups.web.logMaxSize: \"0\" is zero: a size must be at least 1 byte"
        );
        assert_eq!(
            err(json!({ "logMaxFiles": 0 })),
            "groups.web.logMaxFiles: expected an integer from 1 to 1000, got 0"
        );
        assert!(validate_group("no spaces", &json!({}))
            .unwrap_err()
            .to_string()
            .starts_with("groups.no spaces: \"no spaces\" is not a valid name"));
    }

    #[test]
    fn wait_ready_is_readiness_message() {
        let o = validate_group("w", &json!({ "waitReady": true })).unwrap();
        assert_eq!(o.readiness, Some(Readiness::Message));
        let o = validate_group("w", &json!({ "readiness": "message" })).unwrap();
        assert_eq!(o.wait_ready, Some(true));
    }

    #[test]
    fn ids_become_strings() {
        let o = validate_group("w", &json!({ "uid": 0, "gid": "staff" })).unwrap();
        assert_eq!(o.uid.as_deref(), Some("0"));
        assert_eq!(o.gid.as_deref(), Some("staff"));
    }

    #[test]
    fn backoff_max_is_at_least_initial() {
        assert_eq!(
            validate_backoff(Some(&json!({ "initial": 0 })))
                .unwrap_err()
                .field,
            "backoff.initial"
        );
        assert_eq!(
            validate_backoff(Some(&json!({ "initial": 500, "max": 100 })))
                .unwrap_err()
                .field,
            "backoff.max"
        );
        assert_eq!(validate_backoff(None).unwrap().reset_after, Some(10_000));
    }
}
