//! napi-rs binding for baton. It converts, nothing else: JavaScript options into
//! `baton_core` configuration (validated once by crates/baton-contract, errors naming the
//! field), and the core's JSON
//! events and status back to JavaScript. All behaviour lives in `baton-core`.
//!
//! One binding type per file:
//! - [`group_options`]: `resolveGroupOptions`, the check of a group's options, and
//!   `BindingGroupOptions` → `baton_core::config::GroupConfig`
//! - [`fleet_options`]: `resolveSupervisorOptions`, the check of a fleet's options,
//!   `isValidName`, and `BindingFleetOptions` →
//!   `baton_core::config::FleetConfig`
//! - [`supervisor`]: `NativeSupervisor`, a running fleet
//! - [`listen_address`]: `ListenTarget`, a listen address parsed for a listener the host
//!   opens itself (the health endpoint)
//! - [`runtime_dir`]: `resolveRuntimeDir`, where control sockets live, and `probeMaster`,
//!   whether a master runs (stale files of a killed master are cleaned)
#![deny(clippy::all)]

pub mod fleet_options;
pub mod group_options;
pub mod listen_address;
pub mod runtime_dir;
pub mod supervisor;
