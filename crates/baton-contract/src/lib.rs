//! baton's contract: every type that crosses the napi seam or the control socket, declared
//! once. The core (crates/baton-core) builds and reads these values; the binding
//! (crates/baton-node, with the `napi` feature) hands them to JavaScript as they are, and
//! napi's generated `native/index.d.cts` is where the TypeScript types come from: src/
//! re-exports them instead of writing them again.
//!
//! The pattern for every type:
//! - `#[derive(Serialize, Deserialize)]` with `#[serde(rename_all = "camelCase")]` (enums:
//!   the value as the user writes it), so the control socket's JSON and napi's objects have
//!   the same field names;
//! - `#[cfg_attr(feature = "napi", napi(object))]` on structs and
//!   `#[cfg_attr(feature = "napi", napi(string_enum = "kebab-case"))]` on enums of names
//!   (the same case as the serde `rename_all`; napi ignores a variant's own `napi(value)`
//!   behind `cfg_attr`), with `#[cfg(feature = "napi")] use napi_derive::napi;` in the
//!   module;
//! - a doc comment on the type and every field: it becomes the TypeScript doc.
#![deny(clippy::all)]

pub mod control;
pub mod cron;
pub mod events;
pub mod options;
pub mod reports;
pub mod size;
pub mod status;
