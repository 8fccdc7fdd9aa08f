//! One group as JavaScript passes it: the options users write ([`GroupOptions`], declared
//! once in crates/baton-contract/src/options.rs) plus what only the host knows (the
//! program, the full environment, the listen names), converted into
//! `baton_core::config::GroupConfig`. The options are validated here, once, by
//! [`resolve`]: `resolveGroupOptions` runs it when a group is added (so errors come before
//! anything starts) and the conversion runs it again on what it returned.

use std::path::PathBuf;
use std::time::Duration;

use baton_contract::options::{self as contract, GroupOptions, OptionProblem};
use baton_core::addr::ListenAddr;
use baton_core::config::{Balance, GroupConfig, GroupRules, LogTarget, Readiness};
use baton_core::identity::{self, Who};
use napi::{Error, Status};
use napi_derive::napi;
use serde_json::Value;

/// One group of workers, ready to launch.
#[napi(object, object_to_js = false)]
pub struct BindingGroupOptions {
    /// Group name.
    pub name: String,
    /// Program to execute (the master's `process.execPath`).
    pub program: String,
    /// Node options before the script: the drop-in preload's `--import` (when `dropIn`),
    /// then the options' `execArgv`.
    pub exec_argv: Vec<String>,
    /// Full environment of the workers as `[key, value]` pairs.
    pub env: Vec<Vec<String>>,
    /// One name per listen address (`LISTEN_FDNAMES`).
    pub listen_names: Vec<String>,
    /// The options as `resolveGroupOptions` returned them (paths absolute).
    pub options: GroupOptions,
}

/// The result of `resolveGroupOptions`: the options with every default filled in, or the
/// first problem.
#[napi(object)]
pub struct GroupCheck {
    /// The validated options (listen addresses in canonical form).
    pub options: Option<GroupOptions>,
    /// What is wrong, naming the field.
    pub problem: Option<OptionProblem>,
}

/// Validate a group's options and fill in every default: the one check of every group
/// option (crates/baton-contract/src/options.rs), plus the listen addresses parsed into
/// their canonical form. `optionsJson` is the group's options as JSON, after the
/// TypeScript layer resolved relative paths and the `listen` shorthands.
#[napi]
pub fn resolve_group_options(name: String, options_json: String) -> GroupCheck {
    let result = serde_json::from_str::<Value>(&options_json)
        .map_err(|e| OptionProblem {
            field: format!("groups.{name}"),
            message: e.to_string(),
        })
        .and_then(|raw| resolve(&name, &raw));
    match result {
        Ok((options, _)) => GroupCheck {
            options: Some(options),
            problem: None,
        },
        Err(problem) => GroupCheck {
            options: None,
            problem: Some(problem),
        },
    }
}

/// [`contract::validate_group`], then every listen address parsed (errors name
/// `groups.<name>.listen[i]`) and written back in canonical form.
pub fn resolve(name: &str, raw: &Value) -> Result<(GroupOptions, Vec<ListenAddr>), OptionProblem> {
    let mut options = contract::validate_group(name, raw)?;
    let listen = options
        .listen
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| {
            baton_core::addr::parse(a).map_err(|e| OptionProblem {
                field: format!("groups.{name}.listen[{i}]"),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    options.listen = Some(listen.iter().map(ListenAddr::to_string).collect());
    Ok((options, listen))
}

fn invalid(field: &str, group: &str, reason: impl std::fmt::Display) -> Error {
    Error::new(
        Status::InvalidArg,
        format!("groups.{group}.{field}: {reason}"),
    )
}

fn log_target(field: &str, group: &str, value: Option<&str>) -> Result<LogTarget, Error> {
    match value {
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

fn millis(ms: Option<u32>) -> Duration {
    Duration::from_millis(u64::from(ms.unwrap_or(0)))
}

impl TryFrom<BindingGroupOptions> for GroupConfig {
    type Error = Error;

    fn try_from(g: BindingGroupOptions) -> Result<Self, Error> {
        let mut raw = serde_json::to_value(&g.options)
            .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
        // Unset fields serialize as null; to the check, unset is absent.
        if let Some(fields) = raw.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        let (o, listen) =
            resolve(&g.name, &raw).map_err(|p| Error::new(Status::InvalidArg, p.to_string()))?;
        if g.listen_names.len() != listen.len() {
            return Err(invalid(
                "listen",
                &g.name,
                "one name is needed per listen address",
            ));
        }
        let env = g
            .env
            .into_iter()
            .map(|pair| match <[String; 2]>::try_from(pair) {
                Ok([k, v]) => Ok((k, v)),
                Err(_) => Err(invalid(
                    "env",
                    &g.name,
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
            invalid(field, &g.name, e.message)
        })?;
        let readiness = match o.readiness.unwrap_or_default() {
            contract::Readiness::Listen => Readiness::Listen,
            contract::Readiness::Message => Readiness::Message,
            contract::Readiness::Uptime => Readiness::Uptime(millis(o.min_uptime)),
        };
        let balance = match o.balance {
            Some(contract::Balance::Shared) => Balance::Shared,
            Some(contract::Balance::Reuseport) => Balance::ReusePort,
            Some(contract::Balance::Sticky) => Balance::Sticky,
            None => Balance::Shared,
        };
        let stdout = log_target("stdout", &g.name, o.stdout.as_deref())?;
        let stderr = log_target("stderr", &g.name, o.stderr.as_deref())?;
        let script = o
            .script
            .clone()
            .ok_or_else(|| invalid("script", &g.name, "expected the path of the worker script"))?;
        Ok(GroupConfig {
            rules: GroupRules {
                name: g.name,
                count: o.count.unwrap_or(1),
                reloadable: o.reloadable.unwrap_or(true),
                order: o.order.unwrap_or_default(),
                parallel: o.parallel.unwrap_or(1),
                ready_timeout: millis(o.ready_timeout),
                stop_timeout: millis(o.stop_timeout),
                readiness,
            },
            program: PathBuf::from(g.program),
            exec_argv: g.exec_argv,
            script: PathBuf::from(script),
            args: o.args.clone().unwrap_or_default(),
            env,
            cwd: o.cwd.as_ref().map(PathBuf::from),
            listen,
            listen_names: g.listen_names,
            backlog: o
                .backlog
                .map_or(baton_core::config::DEFAULT_BACKLOG, |b| b as i32),
            credentials,
            balance,
            stdout,
            stderr,
            log_prefix: o.log_prefix.unwrap_or(false),
            instance_var: o
                .instance_var
                .clone()
                .unwrap_or_else(|| contract::DEFAULT_INSTANCE_VAR.to_string()),
            drop_in: o.drop_in.unwrap_or(true),
            options: o,
        })
    }
}
