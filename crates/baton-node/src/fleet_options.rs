//! A fleet's options: `resolveSupervisorOptions`, their one check (when a Supervisor is
//! constructed, and when a config file is read), and `BindingFleetOptions`, a whole fleet
//! as JavaScript passes it, converted into `baton_core::config::FleetConfig`.

use std::path::PathBuf;
use std::time::Duration;

use baton_contract::options::{self as contract, OptionProblem, SupervisorOptions};
use baton_core::config::{Backoff, FleetConfig, GroupConfig};
use baton_core::log_rotate::Rotation;
use napi::{Error, Status};
use napi_derive::napi;

use crate::group_options::BindingGroupOptions;
use crate::listen_address::{self, ListenTarget};

/// The result of `resolveSupervisorOptions`: the fleet's options as checked (unset ones
/// unset, `health` in canonical form, `backoff` with its defaults, `groups` left out), or
/// the first problem.
#[napi(object)]
pub struct FleetCheck {
    /// The validated options.
    pub options: Option<SupervisorOptions>,
    /// `health` parsed: what the health endpoint listens on.
    pub health: Option<ListenTarget>,
    /// What is wrong, naming the field (`name`, `upgradeCommand[0]`).
    pub problem: Option<OptionProblem>,
}

/// Validate a fleet's options (their JSON, as the user wrote them; the functions `log` and
/// `beforeReload` are the host's): the one check of every fleet option
/// ([`contract::validate_supervisor`], crates/baton-contract/src/options.rs), plus the
/// `health` address parsed. Each group is checked by `resolveGroupOptions`.
#[napi]
pub fn resolve_supervisor_options(options_json: String) -> FleetCheck {
    match resolve_fleet(&options_json) {
        Ok((options, health)) => FleetCheck {
            options: Some(options),
            health,
            problem: None,
        },
        Err(problem) => FleetCheck {
            options: None,
            health: None,
            problem: Some(problem),
        },
    }
}

fn resolve_fleet(
    options_json: &str,
) -> Result<(SupervisorOptions, Option<ListenTarget>), OptionProblem> {
    let raw =
        serde_json::from_str::<serde_json::Value>(options_json).map_err(|e| OptionProblem {
            field: "options".into(),
            message: e.to_string(),
        })?;
    let mut options = contract::validate_supervisor(&raw)?;
    let health = options
        .health
        .as_deref()
        .map(listen_address::parse)
        .transpose()
        .map_err(|e| OptionProblem {
            field: "health".into(),
            message: e.to_string(),
        })?;
    if let Some(target) = &health {
        options.health = Some(target.address.clone());
    }
    Ok((options, health))
}

/// A fleet: its options, its groups, and what only the host knows.
#[napi(object, object_to_js = false)]
pub struct BindingFleetOptions {
    /// The fleet's options as `resolveSupervisorOptions` checked them, with what the host
    /// resolved filled in: `name`, `runtimeDir` and `logFile` (absolute), `upgradeCommand`
    /// (the host's own command line unless given). Their `groups` are not read: the groups
    /// are `groups` below. The status shows them as its `options`.
    pub options: SupervisorOptions,
    /// Groups in definition order.
    pub groups: Vec<BindingGroupOptions>,
    /// The host re-reads its configuration before every reload (`baton start` from a
    /// config file): control-socket reloads wait for `reloadTicket` / `failReload`.
    pub host_prepares_reloads: Option<bool>,
    /// Rotate the master's `logFile` at this size (`10M`, `1.5G`, bytes): the fleet's
    /// `logMaxSize`, or what every group sets alike (`masterLogRotation` in
    /// src/master/options.ts), keeping `master_log_max_files` rotated files (default 10).
    pub master_log_max_size: Option<String>,
    /// Rotated copies of the master's `logFile` kept (1 to 1000).
    pub master_log_max_files: Option<u32>,
    /// The working directory of the next master (`baton upgrade`).
    pub upgrade_cwd: Option<String>,
    /// This master replaces a running one: the `BATON_UPGRADE` value it was started with.
    pub handover: Option<String>,
}

/// Whether `value` is usable as a master or group name (1-64 characters of A-Z a-z 0-9
/// . _ -, not starting with '.').
#[napi]
pub fn is_valid_name(value: String) -> bool {
    contract::is_valid_name(&value)
}

impl TryFrom<BindingFleetOptions> for FleetConfig {
    type Error = Error;

    fn try_from(o: BindingFleetOptions) -> Result<Self, Error> {
        let groups = o
            .groups
            .into_iter()
            .map(GroupConfig::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = o.options;
        options.groups = None;
        let raw = options.backoff.as_ref().map(|b| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            if let Some(fields) = v.as_object_mut() {
                fields.retain(|_, v| !v.is_null());
            }
            v
        });
        let b = contract::validate_backoff(raw.as_ref())
            .map_err(|p| Error::new(Status::InvalidArg, p.to_string()))?;
        let required = |field: &str, value: Option<&String>| {
            value.cloned().ok_or_else(|| {
                Error::new(
                    Status::InvalidArg,
                    format!("{field}: missing (the host resolves it before the launch)"),
                )
            })
        };
        let ms = |v: Option<u32>| Duration::from_millis(u64::from(v.unwrap_or(0)));
        let master_log_rotation = match &o.master_log_max_size {
            None => None,
            Some(size) => Some(Rotation {
                max_bytes: baton_contract::size::parse_size(size)
                    .map_err(|e| Error::new(Status::InvalidArg, format!("logMaxSize: {e}")))?,
                keep: o
                    .master_log_max_files
                    .unwrap_or(contract::DEFAULT_LOG_MAX_FILES)
                    .clamp(1, contract::MAX_LOG_FILES),
            }),
        };
        Ok(FleetConfig {
            name: required("name", options.name.as_ref())?,
            runtime_dir: PathBuf::from(required("runtimeDir", options.runtime_dir.as_ref())?),
            groups,
            backoff: Backoff {
                initial: ms(b.initial),
                max: ms(b.max),
                reset_after: ms(b.reset_after),
            },
            host_prepares_reloads: o.host_prepares_reloads.unwrap_or(false),
            master_log: options.log_file.as_ref().map(PathBuf::from),
            master_log_rotation,
            upgrade_command: options.upgrade_command.clone().unwrap_or_default(),
            upgrade_cwd: o.upgrade_cwd.map(PathBuf::from),
            handover: o.handover,
            options: SupervisorOptions {
                backoff: Some(b),
                ..options
            },
        })
    }
}
