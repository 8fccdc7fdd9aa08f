//! Worker output as the loop sees it. The loop never reads a worker's stdout or stderr:
//! it hands both pipes to the log relay (`log_relay.rs`, its own thread) at spawn, tells
//! it when a worker has exited, and reports the exit to the state machine once the relay
//! has drained the pipes and answered with the stderr tail ([`Msg::Drained`]). `logs` and
//! `reopen-logs` clients are handed over to the relay too.

use super::*;
use crate::config::GroupConfig;
use crate::log_line::LineFormat;
use crate::log_relay::{Drained, LogRelay, Reply, WorkerOutput};
use crate::log_ring::Stream;
use crate::log_sink::{self, MasterLog, Rotation, Sink, SinkSettings};
use baton_contract::options::LogFormat;

/// How long after an exit the loop waits for the relay's answer before it reports the
/// exit without a stderr tail (the relay itself gives up on the pipes after
/// `log_relay::DRAIN_WAIT`; this only guards against a relay that stopped answering).
const DRAIN_OVERDUE: Duration = Duration::from_secs(2);

/// Redirect the master's own output (daemon mode), start the relay, and open every
/// group's log files, so that a file that cannot be opened fails the launch.
pub(super) fn start_relay(
    config: &FleetConfig,
    tx: Sender<Msg>,
    waker: Arc<Waker>,
) -> Result<Arc<LogRelay>, LaunchError> {
    let on_log: log_sink::LogFn = {
        let (tx, waker) = (tx.clone(), waker.clone());
        Arc::new(move |line| {
            let _ = tx.send(Msg::Log(line));
            let _ = waker.wake();
        })
    };
    let master_log = match &config.master_log {
        Some(path) => Some(
            MasterLog::open(path, config.master_log_rotation, on_log.clone())
                .map_err(|e| launch_error(format!("log: {e}")))?,
        ),
        None => None,
    };
    let relay = LogRelay::start(
        config.groups.len(),
        master_log,
        {
            let (tx, waker) = (tx.clone(), waker.clone());
            Box::new(move |drained| {
                let _ = tx.send(Msg::Drained(drained));
                let _ = waker.wake();
            })
        },
        on_log,
    )
    .map_err(|e| launch_error(format!("cannot start the log relay: {e}")))?;
    for g in &config.groups {
        for stream in Stream::BOTH {
            sink_of(&relay, config, g, stream).map_err(launch_error)?;
        }
    }
    for line in configure_sinks(&relay, config) {
        let _ = tx.send(Msg::Log(line));
        let _ = waker.wake();
    }
    Ok(Arc::new(relay))
}

/// The sink of one stream of a group; the error names the group and the option.
fn sink_of(
    relay: &LogRelay,
    config: &FleetConfig,
    g: &GroupConfig,
    stream: Stream,
) -> Result<Option<Arc<Sink>>, String> {
    let (option, target) = match stream {
        Stream::Stdout => ("stdout", &g.stdout),
        Stream::Stderr => ("stderr", &g.stderr),
    };
    relay
        .sink(target, stream, &sink_settings(config, g))
        .map_err(|e| format!("group \"{}\": {option}: {e}", g.rules.name))
}

/// How a group's sinks rotate (`logMaxSize`, `logMaxFiles`) and write their own notes
/// (`logTime`, `logFormat`).
fn sink_settings(config: &FleetConfig, g: &GroupConfig) -> SinkSettings {
    let o = &g.options;
    let rotation = o
        .log_max_size
        .as_deref()
        .and_then(|s| baton_contract::size::parse_size(s).ok())
        .map(|max_bytes| Rotation {
            max_bytes,
            keep: o
                .log_max_files
                .unwrap_or(crate::log_rotate::DEFAULT_KEEP)
                .max(1),
        });
    SinkSettings {
        rotation,
        format: line_format(g),
        fleet: Arc::from(config.name.as_str()),
    }
}

fn line_format(g: &GroupConfig) -> LineFormat {
    LineFormat {
        json: g.options.log_format == Some(LogFormat::Json),
        time: g.options.log_time == Some(true),
        prefix: g.log_prefix,
    }
}

/// Give every open sink the settings of the first group (in definition order) that writes
/// to it: one file, one rotation, however many streams and groups write to it. Returns a
/// line for each file that a later group names with another `logMaxSize`/`logMaxFiles`.
fn configure_sinks(relay: &LogRelay, config: &FleetConfig) -> Vec<String> {
    let mut done: Vec<(Arc<Sink>, String, Option<Rotation>)> = Vec::new();
    let mut conflicts = Vec::new();
    for g in &config.groups {
        let settings = sink_settings(config, g);
        for stream in Stream::BOTH {
            let Ok(Some(sink)) = sink_of(relay, config, g, stream) else {
                continue;
            };
            if let Some((_, first, rotation)) = done.iter().find(|(s, ..)| Arc::ptr_eq(s, &sink)) {
                if *rotation != settings.rotation && *first != g.rules.name {
                    conflicts.push(format!(
                        "groups \"{first}\" and \"{}\" both write to {} with a different logMaxSize or logMaxFiles: it rotates as \"{first}\" says (give each group its own file, or the same settings)",
                        g.rules.name,
                        sink.name()
                    ));
                }
                continue;
            }
            sink.configure(settings.clone());
            done.push((sink, g.rules.name.clone(), settings.rotation));
        }
    }
    conflicts.dedup();
    conflicts
}

impl LoopState {
    /// Hand a new worker's stdout and stderr to the relay.
    pub(super) fn hand_output(
        &mut self,
        key: WorkerKey,
        group: usize,
        slot: u32,
        pid: u32,
        pipes: [OwnedFd; 2],
    ) {
        let mut sinks = [None, None];
        for stream in Stream::BOTH {
            match sink_of(
                &self.relay,
                &self.config,
                &self.config.groups[group],
                stream,
            ) {
                Ok(sink) => sinks[stream.index()] = sink,
                Err(e) => self.log_once(format!(
                    "{e}; that output is dropped until the file can be opened"
                )),
            }
        }
        let g = &self.config.groups[group];
        self.relay.add(WorkerOutput {
            key,
            group,
            group_name: Arc::from(g.rules.name.as_str()),
            id: slot,
            fleet: Arc::from(self.config.name.as_str()),
            pid,
            format: line_format(g),
            pipes,
            sinks,
        });
    }

    /// Open the log files a re-read configuration names, so a bad path shows now.
    pub(super) fn open_reconfigured_sinks(&mut self) {
        let mut errors = Vec::new();
        for g in &self.config.groups {
            for stream in Stream::BOTH {
                if let Err(e) = sink_of(&self.relay, &self.config, g, stream) {
                    errors.push(format!(
                        "{e}; that output is dropped until the file can be opened"
                    ));
                }
            }
        }
        errors.extend(configure_sinks(&self.relay, &self.config));
        for e in errors {
            self.log_once(e);
        }
    }

    /// The worker has exited and is reaped (`exits.rs`): let the relay drain its output first.
    pub(super) fn on_exited(&mut self, key: WorkerKey, status: ExitStatus) {
        match self.workers.get_mut(&key) {
            Some(io) if io.exited.is_none() => {
                io.exited = Some((status, Instant::now()));
                self.relay.exited(key);
            }
            Some(_) => {}
            None => self.report_exit(key, status, String::new()),
        }
    }

    /// The relay has read everything the exited worker wrote.
    pub(super) fn on_drained(&mut self, drained: Drained) {
        let status = self
            .workers
            .get(&drained.key)
            .and_then(|io| io.exited.map(|(status, _)| status));
        if let Some(status) = status {
            self.report_exit(drained.key, status, drained.stderr_tail);
        }
    }

    fn report_exit(&mut self, key: WorkerKey, status: ExitStatus, stderr_tail: String) {
        self.close_worker_io(key);
        self.fleet.handle(
            Instant::now(),
            Input::Exited {
                key,
                status,
                stderr_tail,
            },
        );
    }

    /// Whether the worker has exited (its exit not reported yet): no signal may reach
    /// its pid, which may already belong to another process.
    pub(super) fn has_exited(&self, key: WorkerKey) -> bool {
        self.workers.get(&key).is_some_and(|io| io.exited.is_some())
    }

    /// When the oldest unanswered exit becomes overdue.
    pub(super) fn drain_deadline(&self) -> Option<Instant> {
        self.workers
            .values()
            .filter_map(|io| io.exited.map(|(_, at)| at + DRAIN_OVERDUE))
            .min()
    }

    /// Report the exits the relay did not answer in time.
    pub(super) fn drain_overdue(&mut self) {
        let now = Instant::now();
        let due: Vec<(WorkerKey, ExitStatus)> = self
            .workers
            .iter()
            .filter_map(|(key, io)| match io.exited {
                Some((status, at)) if now >= at + DRAIN_OVERDUE => Some((*key, status)),
                _ => None,
            })
            .collect();
        for (key, status) in due {
            self.log(&format!(
                "worker {key}: its output was not drained in time; its exit is reported without the stderr tail"
            ));
            self.report_exit(key, status, String::new());
        }
    }

    /// A `logs` or `reopen-logs` client: the relay serves it from now on.
    pub(super) fn hand_client_to_relay(&mut self, id: usize, request: Request) {
        let Some(stream) = self.clients.remove(id, self.poll.registry()) else {
            return;
        };
        self.sources.remove(&Token(id));
        let stream = std::os::unix::net::UnixStream::from(stream);
        match request {
            Request::Logs(request) => self.relay.logs(stream, request),
            _ => self.relay.reopen(Reply::Client(stream)),
        }
    }
}
