//! Group and fleet options as users write them.

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};

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
