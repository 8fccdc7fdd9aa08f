//! `NativeSupervisor`: a running fleet. Its status reaches JavaScript as the contract's
//! typed `Status` object; events as JSON strings (the contract types of
//! crates/baton-contract, serialized once by the core's `public_json`) through a
//! thread-safe function; the reloads the host prepares itself reach it through
//! another, private one; commands go to the core's loop thread.

use baton_core::config::FleetConfig;
use baton_core::event_loop::{self, Handle, Host, Pending};
use baton_core::listen::Origin;
use baton_core::public_json;
use napi::bindgen_prelude::AsyncTask;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;

use crate::fleet_options::BindingFleetOptions;

/// Event callback: receives each event as a JSON string (a `SupervisorEvent`).
pub type EventCallback = ThreadsafeFunction<String, (), String, Status, false>;

/// Reload-request callback: receives the ticket of each `baton reload` the host prepares
/// itself (`hostPreparesReloads`); it answers with `reloadTicket` or `failReload`.
pub type ReloadRequestCallback = ThreadsafeFunction<i64, (), i64, Status, false>;

/// A bound listen address (`supervisor.addresses()`, exported as `BoundAddress`).
#[napi(object)]
pub struct BindingBoundAddress {
    /// Group name.
    pub group: String,
    /// The address as configured.
    pub configured: String,
    /// The address actually bound (a real port for `:0`), or the address of systemd's socket.
    pub bound: String,
    /// `inherited`: systemd passed the socket (socket activation, `LISTEN_FDS`); `bound`:
    /// baton bound it.
    #[napi(ts_type = "'bound' | 'inherited'")]
    pub from: String,
    /// The fd number systemd passed the socket as (inherited only).
    pub fd: Option<i32>,
    /// The socket's name in `LISTEN_FDNAMES` (`FileDescriptorName=`; inherited only, when
    /// named).
    pub fd_name: Option<String>,
}

/// A running fleet in this process (the master).
#[napi]
pub struct NativeSupervisor {
    handle: Handle,
}

fn ticket_of(ticket: i64) -> Result<u64> {
    u64::try_from(ticket).map_err(|_| {
        Error::new(
            Status::InvalidArg,
            format!("ticket: {ticket} is not a reload ticket"),
        )
    })
}

fn failure(message: String) -> Error {
    Error::new(Status::GenericFailure, message)
}

/// The work of `launchSupervisor`, run on a libuv worker thread: binding listen
/// addresses may resolve host names, which must not block the JavaScript thread.
pub struct LaunchTask {
    job: Option<(FleetConfig, EventCallback, ReloadRequestCallback)>,
}

impl Task for LaunchTask {
    type Output = Handle;
    type JsValue = NativeSupervisor;

    fn compute(&mut self) -> Result<Handle> {
        let (config, on_event, on_reload_request) = self
            .job
            .take()
            .ok_or_else(|| failure("this launch already ran".to_string()))?;
        let host = Host {
            events: Box::new(move |event| {
                let json = public_json::to_json(&event);
                on_event.call(json, ThreadsafeFunctionCallMode::NonBlocking);
            }),
            prepare_reload: Box::new(move |ticket| {
                let ticket = i64::try_from(ticket).unwrap_or(i64::MAX);
                on_reload_request.call(ticket, ThreadsafeFunctionCallMode::NonBlocking);
            }),
        };
        event_loop::launch(config, host).map_err(|e| failure(e.message))
    }

    fn resolve(&mut self, _env: Env, handle: Handle) -> Result<NativeSupervisor> {
        Ok(NativeSupervisor { handle })
    }
}

/// A master started by `baton upgrade`: set close-on-exec on every fd its handover (the
/// `BATON_UPGRADE` value) names, so no process it starts before `launchSupervisor` (a
/// config file's `child_process`) inherits the pid-file lock or a listening socket. Called
/// when the addon is loaded (src/native.ts).
#[napi]
pub fn seal_upgrade_fds(handover: String) {
    event_loop::seal_handover(&handover);
}

/// Bind every socket, take the pid-file lock and start the workers, off the JavaScript
/// thread. Invalid options throw at once; a socket, runtime dir or name that is unusable
/// rejects the promise (nothing spawned, nothing left behind). `onEvent` receives every
/// public event as a JSON `SupervisorEvent`; `onReloadRequest` receives the ticket of each
/// `baton reload` the host prepares itself (never a public event).
#[napi(
    ts_args_type = "options: BindingFleetOptions, onEvent: (json: string) => void, onReloadRequest: (ticket: number) => void",
    ts_return_type = "Promise<NativeSupervisor>"
)]
pub fn launch_supervisor(
    options: BindingFleetOptions,
    on_event: EventCallback,
    on_reload_request: ReloadRequestCallback,
) -> Result<AsyncTask<LaunchTask>> {
    let config = FleetConfig::try_from(options)?;
    Ok(AsyncTask::new(LaunchTask {
        job: Some((config, on_event, on_reload_request)),
    }))
}

/// The wait of `reopenLogs`, run on a libuv worker thread.
pub struct ReopenLogsTask {
    pending: Option<Pending<usize>>,
}

impl Task for ReopenLogsTask {
    type Output = u32;
    type JsValue = u32;

    fn compute(&mut self) -> Result<u32> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| failure("this reopen already ran".to_string()))?;
        let reopened = pending.wait().map_err(failure)?;
        Ok(u32::try_from(reopened).unwrap_or(u32::MAX))
    }

    fn resolve(&mut self, _env: Env, reopened: u32) -> Result<u32> {
        Ok(reopened)
    }
}

#[napi]
impl NativeSupervisor {
    /// Request a reload; returns the ticket named by the `reload:done` / `reload:failed` event.
    #[napi]
    pub fn reload(&self) -> Result<i64> {
        self.handle.reload().map(|t| t as i64).map_err(failure)
    }

    /// Run the reload whose ticket `onReloadRequest` received, once the host prepared it.
    #[napi]
    pub fn reload_ticket(&self, ticket: i64) -> Result<()> {
        self.handle
            .reload_ticket(ticket_of(ticket)?)
            .map_err(failure)
    }

    /// Answer the reload whose ticket `onReloadRequest` received with an error.
    #[napi]
    pub fn fail_reload(&self, ticket: i64, message: String) -> Result<()> {
        self.handle
            .fail_reload(ticket_of(ticket)?, message)
            .map_err(failure)
    }

    /// Apply a re-read configuration to the workers started from now on. Returns the
    /// changes found as JSON (`ConfigChange[]`); the next reload's report carries them too.
    #[napi]
    pub fn reconfigure(&self, options: BindingFleetOptions) -> Result<String> {
        let config = FleetConfig::try_from(options)?;
        self.handle
            .reconfigure(config)
            .map(|changes| public_json::to_json(&changes))
            .map_err(failure)
    }

    /// Change a group's worker count (`group`: `None` when the fleet has one group);
    /// returns the ticket named by the `scale:done` / `scale:failed` event.
    #[napi]
    pub fn scale(&self, group: Option<String>, count: u32) -> Result<i64> {
        self.handle
            .scale(group, count)
            .map(|t| t as i64)
            .map_err(failure)
    }

    /// Replace this master with a new one (`baton upgrade`); returns the ticket named by
    /// the `upgrade:done` / `upgrade:failed` event.
    #[napi]
    pub fn upgrade(&self) -> Result<i64> {
        self.handle.upgrade().map(|t| t as i64).map_err(failure)
    }

    /// Request a graceful stop, or an immediate one with `force`.
    #[napi]
    pub fn stop(&self, force: bool) -> Result<()> {
        self.handle.stop(force).map_err(failure)
    }

    /// Reopen every log file (groups' `stdout`/`stderr` files and the master's own log);
    /// resolves with how many were reopened. The wait for the log relay runs on a libuv
    /// worker thread, not the JavaScript thread.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn reopen_logs(&self) -> AsyncTask<ReopenLogsTask> {
        AsyncTask::new(ReopenLogsTask {
            pending: Some(self.handle.reopen_logs()),
        })
    }

    /// The status (the contract's `Status`: what `baton status --json` prints), handed to
    /// JavaScript as an object; never waits for the loop thread.
    #[napi]
    pub fn status(&self) -> Result<baton_contract::status::Status> {
        self.handle.status().map_err(failure)
    }

    /// Milliseconds since the supervisor loop last turned: the status `status()` returns is
    /// about this old. The loop turns at least once a second, so a few seconds means it is
    /// stuck (the health endpoint then answers 503).
    #[napi]
    pub fn status_age_ms(&self) -> f64 {
        self.handle.status_age().as_secs_f64() * 1000.0
    }

    /// The bound listen addresses.
    #[napi]
    pub fn bound(&self) -> Vec<BindingBoundAddress> {
        self.handle
            .bound
            .iter()
            .map(|b| {
                let (from, fd, fd_name) = match &b.origin {
                    Origin::Bound => ("bound", None, None),
                    Origin::Inherited { fd, name } => ("inherited", Some(*fd), name.clone()),
                };
                BindingBoundAddress {
                    group: b.group.clone(),
                    configured: b.configured.clone(),
                    bound: b.bound.clone(),
                    from: from.into(),
                    fd,
                    fd_name,
                }
            })
            .collect()
    }

    /// Path of the control socket.
    #[napi(getter)]
    pub fn control_path(&self) -> String {
        self.handle.control_path.display().to_string()
    }
}
