//! What a re-read configuration changes, and which of it a reload can apply (pure).
//!
//! `baton reload` of a fleet started from a config file re-reads the file first. The new
//! configuration is compared with the running one, group by group (groups are matched by
//! name):
//! - per-worker settings (script, args, execArgv, env, cwd, uid/gid, the timeouts, the
//!   reload's order and parallel, stdout/stderr/logPrefix/logTime/logFormat, the restart
//!   backoff) take effect for the workers the reload starts; `logMaxSize`/`logMaxFiles`
//!   for the files from the reload on;
//! - settings that shape the fleet itself (a group's count, listen addresses, balance,
//!   backlog, reloadable; groups added or removed; the fleet's name or runtime dir) need a
//!   restart of the master. They are kept as they are and reported, never ignored silently.
//!
//! [`plan`] returns the structured list of [`Change`]s and the configuration to run with;
//! rendering them as text happens at the edge (`public_json`). Environment changes name
//! the variables, never their values (they may hold secrets).

use crate::config::{FleetConfig, GroupConfig};

/// A setting that differs between the running and the re-read configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// The group exists in only one of the two configurations.
    Group,
    /// The worker script.
    Script,
    /// Arguments after the script.
    Args,
    /// Node options before the script.
    ExecArgv,
    /// The program (the `node` binary).
    Program,
    /// Environment variables.
    Env,
    /// Working directory.
    Cwd,
    /// Run-as user id.
    Uid,
    /// Run-as group id.
    Gid,
    /// Time a new worker has to become ready.
    ReadyTimeout,
    /// Grace period before SIGKILL.
    StopTimeout,
    /// Reload order.
    Order,
    /// Workers a reload replaces at once.
    Parallel,
    /// Number of workers.
    Count,
    /// Listen addresses (and their names).
    Listen,
    /// Connection balancing.
    Balance,
    /// Listen backlog.
    Backlog,
    /// Whether a reload replaces the group's workers.
    Reloadable,
    /// Where the workers' stdout goes.
    Stdout,
    /// Where the workers' stderr goes.
    Stderr,
    /// Whether output lines are prefixed with `group#id`.
    LogPrefix,
    /// Whether output lines start with the time (`logTime`).
    LogTime,
    /// How output lines are written (`logFormat`).
    LogFormat,
    /// The size the log files are rotated at (`logMaxSize`).
    LogMaxSize,
    /// Rotated log files kept (`logMaxFiles`).
    LogMaxFiles,
    /// How a worker becomes ready (`readiness`, `minUptime`).
    Readiness,
    /// The variable holding the worker id (`instanceVar`).
    InstanceVar,
    /// The fleet's crash-restart backoff.
    Backoff,
    /// The fleet's name.
    Name,
    /// The fleet's runtime dir.
    RuntimeDir,
}

impl Setting {
    /// The option's name as users write it in a config file.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Group => "group",
            Setting::Script => "script",
            Setting::Args => "args",
            Setting::ExecArgv => "execArgv",
            Setting::Program => "program",
            Setting::Env => "env",
            Setting::Cwd => "cwd",
            Setting::Uid => "uid",
            Setting::Gid => "gid",
            Setting::ReadyTimeout => "readyTimeout",
            Setting::StopTimeout => "stopTimeout",
            Setting::Order => "order",
            Setting::Parallel => "parallel",
            Setting::Count => "count",
            Setting::Listen => "listen",
            Setting::Balance => "balance",
            Setting::Backlog => "backlog",
            Setting::Reloadable => "reloadable",
            Setting::Stdout => "stdout",
            Setting::Stderr => "stderr",
            Setting::LogPrefix => "logPrefix",
            Setting::LogTime => "logTime",
            Setting::LogFormat => "logFormat",
            Setting::LogMaxSize => "logMaxSize",
            Setting::LogMaxFiles => "logMaxFiles",
            Setting::Readiness => "readiness",
            Setting::InstanceVar => "instanceVar",
            Setting::Backoff => "backoff",
            Setting::Name => "name",
            Setting::RuntimeDir => "runtimeDir",
        }
    }
}

/// Whether a reload applies a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The workers this reload starts use the new value.
    NewWorkers,
    /// Kept as it is until the master is restarted.
    NeedsRestart,
}

/// One difference between the running and the re-read configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The group it concerns; `None` for fleet-level settings.
    pub group: Option<String>,
    /// What changed.
    pub setting: Setting,
    /// Whether the reload applies it.
    pub effect: Effect,
    /// Details users can read without secrets leaking.
    pub detail: Detail,
}

/// What is known about a change beyond its setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// The old and new values, rendered (not used for secrets).
    Values { from: String, to: String },
    /// Environment variables added, removed or changed (names only).
    EnvKeys(Vec<String>),
    /// A group that the re-read configuration adds.
    Added,
    /// A group that the re-read configuration no longer has.
    Removed,
}

/// The outcome of comparing two configurations.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every difference, in group order, then fleet-level ones.
    pub changes: Vec<Change>,
    /// The configuration to run with from now on: the running one with every
    /// [`Effect::NewWorkers`] change applied.
    pub config: FleetConfig,
}

/// A value as users would write it in a config file.
trait Shown {
    fn shown(&self) -> String;
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl Shown for std::path::PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Shown for u32 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for i32 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for bool {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for std::time::Duration {
    fn shown(&self) -> String {
        format!("{} ms", self.as_millis())
    }
}

impl Shown for crate::config::Order {
    fn shown(&self) -> String {
        match self {
            crate::config::Order::StartFirst => "start-first".into(),
            crate::config::Order::StopFirst => "stop-first".into(),
        }
    }
}

impl Shown for crate::config::Balance {
    fn shown(&self) -> String {
        self.name().into()
    }
}

impl Shown for crate::config::LogTarget {
    fn shown(&self) -> String {
        match self {
            crate::config::LogTarget::Inherit => "inherit".into(),
            crate::config::LogTarget::Ignore => "ignore".into(),
            crate::config::LogTarget::File(path) => path.display().to_string(),
        }
    }
}

impl Shown for crate::config::Readiness {
    fn shown(&self) -> String {
        match self {
            crate::config::Readiness::Uptime(d) => format!("uptime ({} ms)", d.as_millis()),
            other => other.as_str().into(),
        }
    }
}

impl Shown for crate::config::Backoff {
    fn shown(&self) -> String {
        format!(
            "initial {} ms, max {} ms, resetAfter {} ms",
            self.initial.as_millis(),
            self.max.as_millis(),
            self.reset_after.as_millis()
        )
    }
}

impl Shown for baton_contract::options::LogFormat {
    fn shown(&self) -> String {
        match self {
            baton_contract::options::LogFormat::Text => "text".into(),
            baton_contract::options::LogFormat::Json => "json".into(),
        }
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| "(default)".into(), Shown::shown)
    }
}

fn values(from: &impl Shown, to: &impl Shown) -> Detail {
    Detail::Values {
        from: from.shown(),
        to: to.shown(),
    }
}

/// Compare the running configuration with a re-read one.
pub fn plan(running: &FleetConfig, reread: &FleetConfig) -> Plan {
    let mut changes = Vec::new();
    let mut config = running.clone();
    for (index, old) in running.groups.iter().enumerate() {
        let name = &old.rules.name;
        match reread.groups.iter().find(|g| &g.rules.name == name) {
            Some(new) => {
                let (applied, found) = compare_group(old, new);
                config.groups[index] = applied;
                changes.extend(found);
            }
            None => changes.push(Change {
                group: Some(name.clone()),
                setting: Setting::Group,
                effect: Effect::NeedsRestart,
                detail: Detail::Removed,
            }),
        }
    }
    for new in &reread.groups {
        if !running
            .groups
            .iter()
            .any(|g| g.rules.name == new.rules.name)
        {
            changes.push(Change {
                group: Some(new.rules.name.clone()),
                setting: Setting::Group,
                effect: Effect::NeedsRestart,
                detail: Detail::Added,
            });
        }
    }
    let mut fleet_change = |setting, effect, detail| {
        changes.push(Change {
            group: None,
            setting,
            effect,
            detail,
        })
    };
    if running.backoff != reread.backoff {
        fleet_change(
            Setting::Backoff,
            Effect::NewWorkers,
            values(&running.backoff, &reread.backoff),
        );
        config.backoff = reread.backoff;
        config.options.backoff = reread.options.backoff.clone();
    }
    if running.name != reread.name {
        fleet_change(
            Setting::Name,
            Effect::NeedsRestart,
            values(&running.name, &reread.name),
        );
    }
    if running.runtime_dir != reread.runtime_dir {
        fleet_change(
            Setting::RuntimeDir,
            Effect::NeedsRestart,
            values(&running.runtime_dir, &reread.runtime_dir),
        );
    }
    Plan { changes, config }
}

/// The group to run with, and what differs.
fn compare_group(old: &GroupConfig, new: &GroupConfig) -> (GroupConfig, Vec<Change>) {
    let mut applied = old.clone();
    let mut changes = Vec::new();
    let group = Some(old.rules.name.clone());
    let mut note = |setting, effect, detail| {
        changes.push(Change {
            group: group.clone(),
            setting,
            effect,
            detail,
        })
    };
    macro_rules! per_worker {
        ($setting:expr, $($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                note($setting, Effect::NewWorkers, values(&old.$($field).+, &new.$($field).+));
                applied.$($field).+ = new.$($field).+.clone();
            }
        };
    }
    macro_rules! restart_only {
        ($setting:expr, $($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                note($setting, Effect::NeedsRestart, values(&old.$($field).+, &new.$($field).+));
            }
        };
    }
    per_worker!(Setting::Script, script);
    per_worker!(Setting::Args, args);
    per_worker!(Setting::ExecArgv, exec_argv);
    per_worker!(Setting::Program, program);
    if old.env != new.env {
        note(
            Setting::Env,
            Effect::NewWorkers,
            Detail::EnvKeys(env_keys(&old.env, &new.env)),
        );
        applied.env = new.env.clone();
    }
    per_worker!(Setting::Cwd, cwd);
    let uid = |g: &GroupConfig| g.credentials.as_ref().and_then(|c| c.uid);
    let gid = |g: &GroupConfig| g.credentials.as_ref().map(|c| c.gid);
    if uid(old) != uid(new) {
        note(
            Setting::Uid,
            Effect::NewWorkers,
            values(&uid(old), &uid(new)),
        );
    }
    if gid(old) != gid(new) {
        note(
            Setting::Gid,
            Effect::NewWorkers,
            values(&gid(old), &gid(new)),
        );
    }
    applied.credentials = new.credentials.clone();
    per_worker!(Setting::ReadyTimeout, rules.ready_timeout);
    per_worker!(Setting::StopTimeout, rules.stop_timeout);
    per_worker!(Setting::Order, rules.order);
    per_worker!(Setting::Parallel, rules.parallel);
    per_worker!(Setting::Stdout, stdout);
    per_worker!(Setting::Stderr, stderr);
    per_worker!(Setting::LogPrefix, log_prefix);
    // Applied with `options` below: the lines of the workers the reload starts, and the
    // files' rotation from the reload on (`event_loop/output.rs`).
    if old.options.log_time != new.options.log_time {
        note(
            Setting::LogTime,
            Effect::NewWorkers,
            values(&old.options.log_time, &new.options.log_time),
        );
    }
    if old.options.log_format != new.options.log_format {
        note(
            Setting::LogFormat,
            Effect::NewWorkers,
            values(&old.options.log_format, &new.options.log_format),
        );
    }
    if old.options.log_max_size != new.options.log_max_size {
        note(
            Setting::LogMaxSize,
            Effect::NewWorkers,
            values(&old.options.log_max_size, &new.options.log_max_size),
        );
    }
    if old.options.log_max_files != new.options.log_max_files {
        note(
            Setting::LogMaxFiles,
            Effect::NewWorkers,
            values(&old.options.log_max_files, &new.options.log_max_files),
        );
    }
    per_worker!(Setting::Readiness, rules.readiness);
    per_worker!(Setting::InstanceVar, instance_var);
    // Reported as the `execArgv` change it comes with (the preload's `--import`).
    applied.drop_in = new.drop_in;
    restart_only!(Setting::Count, rules.count);
    restart_only!(Setting::Reloadable, rules.reloadable);
    if old.listen != new.listen || old.listen_names != new.listen_names {
        let show = |g: &GroupConfig| {
            g.listen_names
                .iter()
                .zip(&g.listen)
                .map(|(n, a)| format!("{n}={a}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        note(
            Setting::Listen,
            Effect::NeedsRestart,
            Detail::Values {
                from: show(old),
                to: show(new),
            },
        );
    }
    restart_only!(Setting::Balance, balance);
    restart_only!(Setting::Backlog, backlog);
    // The status shows the options in force: the re-read ones, but those that need a
    // restart as they still are.
    applied.options = crate::config::GroupOptions {
        count: old.options.count,
        reloadable: old.options.reloadable,
        listen: old.options.listen.clone(),
        balance: old.options.balance,
        backlog: old.options.backlog,
        ..new.options.clone()
    };
    (applied, changes)
}

/// Names of the variables added, removed or changed, sorted.
fn env_keys(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let get = |env: &[(String, String)], key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut keys: Vec<String> = old
        .iter()
        .chain(new)
        .map(|(k, _)| k.clone())
        .filter(|k| get(old, k) != get(new, k))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backoff, Balance, GroupRules, LogTarget, Order};
    use std::path::PathBuf;
    use std::time::Duration;

    fn group(name: &str) -> GroupConfig {
        GroupConfig {
            rules: GroupRules {
                name: name.into(),
                count: 2,
                reloadable: true,
                order: Order::StartFirst,
                parallel: 1,
                ready_timeout: Duration::from_secs(30),
                stop_timeout: Duration::from_secs(2),
                readiness: Default::default(),
            },
            program: PathBuf::from("/usr/bin/node"),
            exec_argv: vec![],
            script: PathBuf::from("/srv/app.mjs"),
            args: vec![],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("TOKEN".into(), "s3cret".into()),
            ],
            cwd: None,
            listen: vec![crate::addr::parse("127.0.0.1:8080").unwrap()],
            listen_names: vec!["listen0".into()],
            backlog: 511,
            credentials: None,
            balance: Balance::ReusePort,
            stdout: LogTarget::Inherit,
            stderr: LogTarget::Inherit,
            log_prefix: false,
            instance_var: crate::config::DEFAULT_INSTANCE_VAR.to_string(),
            options: Default::default(),
            drop_in: true,
        }
    }

    fn fleet(groups: Vec<GroupConfig>) -> FleetConfig {
        FleetConfig {
            name: "app".into(),
            runtime_dir: PathBuf::from("/run/baton"),
            groups,
            backoff: Backoff::default(),
            host_prepares_reloads: false,
            master_log: None,
            master_log_rotation: None,
            upgrade_command: Vec::new(),
            upgrade_cwd: None,
            handover: None,
            options: Default::default(),
        }
    }

    #[test]
    fn nothing_changed() {
        let a = fleet(vec![group("web"), group("jobs")]);
        let p = plan(&a, &a.clone());
        assert!(p.changes.is_empty());
    }

    #[test]
    fn per_worker_settings_apply_and_env_names_no_values() {
        let a = fleet(vec![group("web")]);
        let mut b = a.clone();
        b.groups[0].env[1].1 = "changed".into();
        b.groups[0].env.push(("GREETING".into(), "hi".into()));
        b.groups[0].script = PathBuf::from("/srv/app2.mjs");
        b.groups[0].rules.stop_timeout = Duration::from_secs(5);
        b.groups[0].rules.parallel = 2;
        let p = plan(&a, &b);
        let settings: Vec<Setting> = p.changes.iter().map(|c| c.setting).collect();
        assert_eq!(
            settings,
            vec![
                Setting::Script,
                Setting::Env,
                Setting::StopTimeout,
                Setting::Parallel
            ]
        );
        assert!(p.changes.iter().all(|c| c.effect == Effect::NewWorkers));
        let env = p
            .changes
            .iter()
            .find(|c| c.setting == Setting::Env)
            .unwrap();
        assert_eq!(
            env.detail,
            Detail::EnvKeys(vec!["GREETING".into(), "TOKEN".into()])
        );
        assert!(!format!("{:?}", p.changes).contains("s3cret"));
        assert!(!format!("{:?}", p.changes).contains("changed"));
        assert_eq!(p.config.groups[0].env, b.groups[0].env);
        assert_eq!(p.config.groups[0].script, b.groups[0].script);
        assert_eq!(p.config.groups[0].rules, b.groups[0].rules);
    }

    #[test]
    fn output_settings_apply_to_new_workers() {
        let a = fleet(vec![group("web")]);
        let mut b = a.clone();
        b.groups[0].stdout = LogTarget::File(PathBuf::from("/var/log/web.log"));
        b.groups[0].stderr = LogTarget::Ignore;
        b.groups[0].log_prefix = true;
        let p = plan(&a, &b);
        let shown: Vec<(Setting, Effect, Detail)> = p
            .changes
            .iter()
            .map(|c| (c.setting, c.effect, c.detail.clone()))
            .collect();
        let v = |from: &str, to: &str| Detail::Values {
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            shown,
            vec![
                (
                    Setting::Stdout,
                    Effect::NewWorkers,
                    v("inherit", "/var/log/web.log")
                ),
                (Setting::Stderr, Effect::NewWorkers, v("inherit", "ignore")),
                (Setting::LogPrefix, Effect::NewWorkers, v("false", "true")),
            ]
        );
        assert_eq!(p.config.groups[0].stdout, b.groups[0].stdout);
        assert_eq!(p.config.groups[0].stderr, LogTarget::Ignore);
        assert!(p.config.groups[0].log_prefix);
    }

    #[test]
    fn log_line_and_rotation_settings_are_reported_and_applied() {
        let a = fleet(vec![group("web")]);
        let mut b = a.clone();
        b.groups[0].options.log_time = Some(true);
        b.groups[0].options.log_format = Some(baton_contract::options::LogFormat::Json);
        b.groups[0].options.log_max_size = Some("10M".into());
        b.groups[0].options.log_max_files = Some(5);
        let p = plan(&a, &b);
        let shown: Vec<(&str, Effect, Detail)> = p
            .changes
            .iter()
            .map(|c| (c.setting.key(), c.effect, c.detail.clone()))
            .collect();
        let v = |to: &str| Detail::Values {
            from: "(default)".into(),
            to: to.into(),
        };
        assert_eq!(
            shown,
            vec![
                ("logTime", Effect::NewWorkers, v("true")),
                ("logFormat", Effect::NewWorkers, v("json")),
                ("logMaxSize", Effect::NewWorkers, v("10M")),
                ("logMaxFiles", Effect::NewWorkers, v("5")),
            ]
        );
        assert_eq!(
            p.config.groups[0].options.log_max_size.as_deref(),
            Some("10M")
        );
    }

    #[test]
    fn readiness_and_instance_var_apply_to_new_workers() {
        let a = fleet(vec![group("jobs")]);
        let mut b = a.clone();
        b.groups[0].rules.readiness =
            crate::config::Readiness::Uptime(std::time::Duration::from_millis(1500));
        b.groups[0].instance_var = "INSTANCE_ID".into();
        let p = plan(&a, &b);
        let shown: Vec<(Setting, Effect, Detail)> = p
            .changes
            .iter()
            .map(|c| (c.setting, c.effect, c.detail.clone()))
            .collect();
        let v = |from: &str, to: &str| Detail::Values {
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            shown,
            vec![
                (
                    Setting::Readiness,
                    Effect::NewWorkers,
                    v("listen", "uptime (1500 ms)")
                ),
                (
                    Setting::InstanceVar,
                    Effect::NewWorkers,
                    v("NODE_APP_INSTANCE", "INSTANCE_ID")
                ),
            ]
        );
        assert_eq!(p.config.groups[0].rules, b.groups[0].rules);
        assert_eq!(p.config.groups[0].instance_var, "INSTANCE_ID");
    }

    #[test]
    fn fleet_shape_needs_a_restart_and_is_kept() {
        let a = fleet(vec![group("web"), group("jobs")]);
        let mut b = a.clone();
        b.groups[0].rules.count = 4;
        b.groups[0].listen = vec![crate::addr::parse("127.0.0.1:9090").unwrap()];
        b.groups[0].balance = Balance::Shared;
        b.groups.remove(1);
        b.groups.push(group("cron"));
        b.name = "other".into();
        let p = plan(&a, &b);
        let found: Vec<(Option<&str>, Setting, Effect)> = p
            .changes
            .iter()
            .map(|c| (c.group.as_deref(), c.setting, c.effect))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some("web"), Setting::Count, Effect::NeedsRestart),
                (Some("web"), Setting::Listen, Effect::NeedsRestart),
                (Some("web"), Setting::Balance, Effect::NeedsRestart),
                (Some("jobs"), Setting::Group, Effect::NeedsRestart),
                (Some("cron"), Setting::Group, Effect::NeedsRestart),
                (None, Setting::Name, Effect::NeedsRestart),
            ]
        );
        // The running shape is kept: same groups, count, addresses, balance, name.
        assert_eq!(p.config.groups.len(), 2);
        assert_eq!(p.config.groups[0].rules.count, 2);
        assert_eq!(p.config.groups[0].listen, a.groups[0].listen);
        assert_eq!(p.config.groups[0].balance, Balance::ReusePort);
        assert_eq!(p.config.name, "app");
    }

    #[test]
    fn env_keys_are_sorted_and_unique() {
        let old = vec![("B".into(), "1".into()), ("A".into(), "1".into())];
        let new = vec![("A".into(), "2".into()), ("C".into(), "1".into())];
        assert_eq!(env_keys(&old, &new), vec!["A", "B", "C"]);
    }
}
