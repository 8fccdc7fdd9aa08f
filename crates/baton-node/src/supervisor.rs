//! `NativeSupervisor`: a running fleet. Events reach JavaScript as JSON strings through a
//! thread-safe function; commands go to the core's loop thread.

use baton_core::config::FleetConfig;
use baton_core::event_loop::{self, Handle};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Error, Result, Status};
use napi_derive::napi;

use crate::fleet_options::BindingFleetOptions;

/// Event callback: receives each event as a JSON string.
pub type EventCallback = ThreadsafeFunction<String, (), String, Status, false>;

/// One bound listen address.
#[napi(object)]
pub struct BindingBoundAddress {
    /// Group name.
    pub group: String,
    /// The address as configured.
    pub configured: String,
    /// The address actually bound (a real port for `:0`).
    pub bound: String,
}

/// A running fleet in this process (the master).
#[napi]
pub struct NativeSupervisor {
    handle: Handle,
}

fn failure(message: String) -> Error {
    Error::new(Status::GenericFailure, message)
}

#[napi]
impl NativeSupervisor {
    /// Bind every socket, take the pid-file lock and start the workers. Throws (nothing
    /// spawned, nothing left behind) when a socket, the runtime dir or the name is unusable.
    #[napi(
        factory,
        ts_args_type = "options: BindingFleetOptions, onEvent: (json: string) => void"
    )]
    pub fn launch(
        options: BindingFleetOptions,
        on_event: EventCallback,
    ) -> Result<NativeSupervisor> {
        let config = FleetConfig::try_from(options)?;
        let sink = Box::new(move |value: baton_core::public_json::Value| {
            on_event.call(value.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
        });
        let handle = event_loop::launch(config, sink).map_err(|e| failure(e.message))?;
        Ok(NativeSupervisor { handle })
    }

    /// Request a reload; returns the ticket named by the `reload:done` / `reload:failed` event.
    #[napi]
    pub fn reload(&self) -> Result<i64> {
        self.handle.reload().map(|t| t as i64).map_err(failure)
    }

    /// Request a graceful stop, or an immediate one with `force`.
    #[napi]
    pub fn stop(&self, force: bool) -> Result<()> {
        self.handle.stop(force).map_err(failure)
    }

    /// The status as a JSON string (design §7 contract).
    #[napi]
    pub fn status(&self) -> Result<String> {
        self.handle.status().map(|v| v.to_string()).map_err(failure)
    }

    /// The bound listen addresses.
    #[napi]
    pub fn bound(&self) -> Vec<BindingBoundAddress> {
        self.handle
            .bound
            .iter()
            .map(|(group, configured, bound)| BindingBoundAddress {
                group: group.clone(),
                configured: configured.clone(),
                bound: bound.clone(),
            })
            .collect()
    }

    /// Path of the control socket.
    #[napi(getter)]
    pub fn control_path(&self) -> String {
        self.handle.control_path.display().to_string()
    }
}
