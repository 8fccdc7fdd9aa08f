//! baton-core: the supervisor behind `baton`, with no knowledge of napi or JavaScript.
//!
//! Layout, from pure to I/O:
//! - [`fleet`]: the supervision and reload rules as a pure, sans-IO state machine
//!   (events and time in, actions out). Read this first.
//! - [`balance`]: how new connections are weighted across serving slots, and when a
//!   worker sheds keep-alive connections (pure).
//! - [`config`], [`addr`], [`exit_status`]: plain data; [`reconfigure`]: what a re-read
//!   config file changes and which of it a reload applies (pure).
//! - [`listen`], [`group_sockets`], [`steer`] (reuseport BPF steering), [`handoff`] (passing
//!   a connection's fd to a worker), [`identity`] (user and group lookup), [`spawn`],
//!   [`pidfd`] (exits and signals through process fds), [`runtime_dir`], [`peer`],
//!   [`proc_info`]: OS plumbing, each the one place for its `unsafe`; [`writers`]: who may
//!   change a file a root master reads.
//! - [`log_relay`] (worker output off the loop, on its own thread), [`log_sink`] (bounded
//!   buffers in front of stdout, stderr and log files), [`log_ring`] (lines and the ring of
//!   recent output, pure).
//! - [`sd_notify`]: systemd's notify protocol (`NOTIFY_SOCKET`); [`socket_activation`]: the
//!   master's listening sockets passed by systemd (`LISTEN_FDS`), and which group each serves.
//! - [`reaper`]: reaps orphans when the master is PID 1 (a container) or a subreaper.
//! - [`event_loop`]: the driver thread that runs a [`fleet::Fleet`] against real processes.
//! - [`control`]: the control-socket protocol served to the `baton` CLI; [`lines`]: newline
//!   framing with a limit for the workers' control channels.
//! - [`public_json`]: what users see (events, reload reports, status, control answers),
//!   built as the contract types of `baton-contract` and serialized there, the one place
//!   the core writes JSON.

pub mod addr;
pub mod balance;
pub mod config;
pub mod control;
pub mod event_loop;
pub mod exit_status;
pub mod fleet;
pub mod group_sockets;
pub mod handoff;
pub mod identity;
pub mod lines;
pub mod listen;
pub mod log_line;
pub mod log_relay;
pub mod log_ring;
pub mod log_rotate;
pub mod log_sink;
pub mod metrics;
pub mod outbox;
pub mod peer;
pub mod pidfd;
pub mod proc_info;
pub mod public_json;
pub mod reaper;
pub mod reconfigure;
pub mod runtime_dir;
pub mod sd_notify;
pub mod socket_activation;
pub mod spawn;
pub mod steer;
#[cfg(test)]
mod test_dir;
pub mod upgrade;
pub mod writers;
