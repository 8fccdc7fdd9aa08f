//! `BindingGroupOptions`: one group as JavaScript passes it (already validated by the
//! TypeScript layer), converted into `baton_core::config::GroupConfig`.

use std::path::PathBuf;
use std::time::Duration;

use baton_core::config::{Balance, GroupConfig, GroupRules, LogTarget, Order, Readiness};
use baton_core::identity::{self, Who};
use napi::{Error, Status};
use napi_derive::napi;

/// One group of workers.
#[napi(object, object_to_js = false)]
pub struct BindingGroupOptions {
    /// Group name.
    pub name: String,
    /// Program to execute (the master's `process.execPath`).
    pub program: String,
    /// Node options before the script.
    pub exec_argv: Vec<String>,
    /// The worker script (absolute).
    pub script: String,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// Full environment of the workers as `[key, value]` pairs.
    pub env: Vec<Vec<String>>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Number of worker slots.
    pub count: u32,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// One name per listen address (`LISTEN_FDNAMES`).
    pub listen_names: Vec<String>,
    /// Whether a reload replaces this group's workers.
    pub reloadable: bool,
    /// The order in which a reload replaces the workers of one slot.
    pub order: Order,
    /// Workers a reload replaces at once (>= 1).
    pub parallel: u32,
    /// Milliseconds a new worker has to become ready.
    pub ready_timeout_ms: u32,
    /// Milliseconds a stopping worker has before SIGKILL.
    pub stop_timeout_ms: u32,
    /// Listen backlog.
    pub backlog: i32,
    /// Run workers as this user: a numeric uid or a user name.
    pub uid: Option<String>,
    /// Run workers as this group: a numeric gid or a group name.
    pub gid: Option<String>,
    /// `shared` (one socket per address) or `reuseport` (one per address and slot, Linux).
    pub balance: String,
    /// Workers' stdout: `inherit` (default), `ignore` or an absolute file path.
    pub stdout: Option<String>,
    /// Workers' stderr: `inherit` (default), `ignore` or an absolute file path.
    pub stderr: Option<String>,
    /// Prefix every output line with `group#id `.
    pub log_prefix: Option<bool>,
    /// How a worker becomes ready: `listen` (default), `message` or `uptime`.
    pub readiness: Option<String>,
    /// `uptime` readiness: milliseconds a worker must stay up (default 1000).
    pub min_uptime_ms: Option<u32>,
    /// The variable holding the worker id (default `NODE_APP_INSTANCE`).
    pub instance_var: Option<String>,
    /// Drop-in mode: answer the workers' `baton:listen` requests (default true; the
    /// preload is loaded by the TypeScript layer through `execArgv`).
    pub drop_in: Option<bool>,
}

fn log_target(field: &str, group: &str, value: Option<String>) -> Result<LogTarget, Error> {
    match value.as_deref() {
        None | Some("inherit") => Ok(LogTarget::Inherit),
        Some("ignore") => Ok(LogTarget::Ignore),
        Some(path) if path.starts_with('/') => Ok(LogTarget::File(PathBuf::from(path))),
        Some(other) => Err(invalid(
            field,
            group,
            format!("\"{other}\" is not inherit, ignore or an absolute file path"),
        )),
    }
}

fn invalid(field: &str, group: &str, reason: impl std::fmt::Display) -> Error {
    Error::new(
        Status::InvalidArg,
        format!("groups[\"{group}\"].{field}: {reason}"),
    )
}

impl TryFrom<BindingGroupOptions> for GroupConfig {
    type Error = Error;

    fn try_from(o: BindingGroupOptions) -> Result<Self, Error> {
        let balance = match o.balance.as_str() {
            "shared" => Balance::Shared,
            "reuseport" => Balance::ReusePort,
            "sticky" => Balance::Sticky,
            other => {
                return Err(invalid(
                    "balance",
                    &o.name,
                    format!("\"{other}\" is not shared, reuseport or sticky"),
                ))
            }
        };
        let listen = o
            .listen
            .iter()
            .map(|a| baton_core::addr::parse(a).map_err(|e| invalid("listen", &o.name, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if o.listen_names.len() != listen.len() {
            return Err(invalid(
                "listen",
                &o.name,
                "one name is needed per listen address",
            ));
        }
        let env = o
            .env
            .into_iter()
            .map(|pair| match <[String; 2]>::try_from(pair) {
                Ok([k, v]) => Ok((k, v)),
                Err(_) => Err(invalid(
                    "env",
                    &o.name,
                    "each entry must be a [key, value] pair",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (uid, gid) = (
            o.uid.as_deref().map(Who::parse),
            o.gid.as_deref().map(Who::parse),
        );
        let credentials = identity::resolve(uid.as_ref(), gid.as_ref()).map_err(|e| {
            let field = match e.field {
                identity::Field::Uid => "uid",
                identity::Field::Gid => "gid",
            };
            invalid(field, &o.name, e.message)
        })?;
        let readiness = match o.readiness.as_deref() {
            None | Some("listen") => Readiness::Listen,
            Some("message") => Readiness::Message,
            Some("uptime") => Readiness::Uptime(Duration::from_millis(u64::from(
                o.min_uptime_ms.unwrap_or(1000),
            ))),
            Some(other) => {
                return Err(invalid(
                    "readiness",
                    &o.name,
                    format!("\"{other}\" is not listen, message or uptime"),
                ))
            }
        };
        let instance_var = match o.instance_var {
            None => baton_core::config::DEFAULT_INSTANCE_VAR.to_string(),
            Some(v)
                if !v.is_empty()
                    && !v.starts_with("BATON_")
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                v
            }
            Some(v) => {
                return Err(invalid(
                    "instanceVar",
                    &o.name,
                    format!("\"{v}\" is not a variable name (A-Z a-z 0-9 _, not BATON_*)"),
                ))
            }
        };
        let stdout = log_target("stdout", &o.name, o.stdout)?;
        let stderr = log_target("stderr", &o.name, o.stderr)?;
        Ok(GroupConfig {
            rules: GroupRules {
                name: o.name,
                count: o.count,
                reloadable: o.reloadable,
                order: o.order,
                parallel: o.parallel.max(1),
                ready_timeout: Duration::from_millis(u64::from(o.ready_timeout_ms)),
                stop_timeout: Duration::from_millis(u64::from(o.stop_timeout_ms)),
                readiness,
            },
            program: PathBuf::from(o.program),
            exec_argv: o.exec_argv,
            script: PathBuf::from(o.script),
            args: o.args,
            env,
            cwd: o.cwd.map(PathBuf::from),
            listen,
            listen_names: o.listen_names,
            backlog: o.backlog,
            credentials,
            balance,
            stdout,
            stderr,
            log_prefix: o.log_prefix.unwrap_or(false),
            instance_var,
            drop_in: o.drop_in.unwrap_or(true),
        })
    }
}
