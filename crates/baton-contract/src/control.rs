//! The control socket's final answer line (`baton status`, `reload`, `stop`, `scale`,
//! `upgrade`, `reopen-logs`, `logs`): `{"ok": true, ...}` or `{"ok": false, "error": ...}`.
//! The protocol is described in crates/baton-core/src/control.rs.

#[cfg(feature = "napi")]
use napi_derive::napi;
use serde::{Deserialize, Serialize};

use crate::reports::ReloadReport;
use crate::status::Status;

/// The last line a control request is answered with. Only `ok` is always present; the
/// other fields are left out unless the request's answer has them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "napi", napi(object))]
pub struct ControlAnswer {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why it did not (a sentence naming the field or state and what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `status`: the fleet's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `reload`: the reload's report (also on a failed reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReloadReport>,
    /// `stop` (and a followed `logs`): the fleet has stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<bool>,
    /// `reopen-logs`: how many files were reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened: Option<u32>,
    /// `scale`: the group scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `scale`: its new count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `upgrade`: what happened, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Test-only `test-freeze`: how long the loop was stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<i64>,
}

impl ControlAnswer {
    /// `{"ok": true}`.
    pub fn ok() -> ControlAnswer {
        ControlAnswer {
            ok: true,
            ..ControlAnswer::default()
        }
    }

    /// `{"ok": false, "error": message}`.
    pub fn error(message: impl Into<String>) -> ControlAnswer {
        ControlAnswer {
            ok: false,
            error: Some(message.into()),
            ..ControlAnswer::default()
        }
    }
}
