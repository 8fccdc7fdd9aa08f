//! Status and readiness, published: [`StatusPublisher`] owns what the host and systemd see
//! of the fleet's state (the status [`Handle::status`] answers with, when the loop last
//! turned for the health endpoint's staleness check, systemd's `READY`/`RELOADING`/
//! `STOPPING`/`STATUS=`), and [`LoopState::status`] puts the status together from the
//! loop's parts (`public_json::status` is the one place it is assembled).

use std::cell::Cell;

use super::*;
use crate::config::LogTarget;
use crate::listen::Origin;
use crate::public_json::{
    GroupLogsStatus, GroupStatus, LogsStatus, SocketOrigin, SocketStatus, Status, StatusParts,
};
use crate::sd_notify;

/// The status as last published by the loop thread (without `rssBytes`).
pub(super) type StatusCache = Arc<Mutex<Option<Status>>>;

/// When the loop thread last finished a turn (it turns at least every [`HEARTBEAT`]).
pub(super) type Alive = Arc<Mutex<Instant>>;

/// Publishes the fleet's state: to the host (a cached status and a heartbeat, shared with
/// its [`Handle`]) and to systemd (`NOTIFY_SOCKET`).
pub(super) struct StatusPublisher {
    /// Shared with the host's [`Handle`]: the status it answers with.
    cache: StatusCache,
    /// When it was last published (a `Cell`: published from `&self` paths).
    published: Cell<Instant>,
    /// Something may have changed since the last publication.
    dirty: Cell<bool>,
    /// Shared with the host's [`Handle`]: when this loop last finished a turn.
    alive: Alive,
    /// systemd's notify socket, when the master runs under a notify unit.
    notifier: Option<Notifier>,
    /// `STOPPING=1` was sent (nothing is announced as ready after it), or this master's
    /// stop is not the unit's (it handed the fleet to a new master).
    stopping_notified: bool,
}

impl StatusPublisher {
    /// A publisher, and the cache and heartbeat its [`Handle`] reads.
    pub(super) fn new(notifier: Option<Notifier>) -> (StatusPublisher, StatusCache, Alive) {
        let cache: StatusCache = Arc::new(Mutex::new(None));
        let alive: Alive = Arc::new(Mutex::new(Instant::now()));
        let publisher = StatusPublisher {
            cache: cache.clone(),
            published: Cell::new(Instant::now()),
            dirty: Cell::new(true),
            alive: alive.clone(),
            notifier,
            stopping_notified: false,
        };
        (publisher, cache, alive)
    }

    /// Make `status` the one [`Handle::status`] answers with.
    pub(super) fn publish(&self, status: Status) {
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(status);
        }
        self.published.set(Instant::now());
        self.dirty.set(false);
    }

    /// Something may have changed (connection counts, ready workers between events).
    pub(super) fn mark_dirty(&self) {
        self.dirty.set(true);
    }

    /// Whether a publication nobody asked for is due ([`STATUS_REFRESH`] since the last).
    pub(super) fn refresh_due(&self) -> bool {
        self.published.get().elapsed() >= STATUS_REFRESH
    }

    /// How long the loop may wait before the next refresh, when something changed.
    pub(super) fn refresh_wait(&self) -> Option<Duration> {
        self.dirty.get().then(|| {
            (self.published.get() + STATUS_REFRESH).saturating_duration_since(Instant::now())
        })
    }

    /// Record that the loop is turning (read by [`Handle::status_age`]).
    pub(super) fn beat(&self) {
        if let Ok(mut at) = self.alive.lock() {
            *at = Instant::now();
        }
    }

    /// Whether the master runs under a systemd notify unit.
    pub(super) fn has_systemd(&self) -> bool {
        self.notifier.is_some()
    }

    /// Whether `STOPPING=1` was sent (or this master's stop is not the unit's).
    pub(super) fn stopping_notified(&self) -> bool {
        self.stopping_notified
    }

    /// From now on nothing is announced to systemd as ready: an upgrade handed the fleet
    /// to a new master, whose state the unit follows.
    pub(super) fn hand_over_systemd(&mut self) {
        self.stopping_notified = true;
    }

    /// `READY=1`, `MAINPID=` and a status line: the fleet serves.
    pub(super) fn systemd_ready(&mut self, master_pid: u32, text: &str) -> Result<(), String> {
        self.notify(&format!(
            "READY=1\nMAINPID={master_pid}\nSTATUS={}",
            sd_notify::status_line(text)
        ))
    }

    /// `RELOADING=1` with the monotonic time systemd asks for, and a status line.
    pub(super) fn systemd_reloading(&mut self, text: &str) -> Result<(), String> {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}",
            sd_notify::monotonic_usec(),
            sd_notify::status_line(text)
        ))
    }

    /// `READY=1` again after a reload (or a reload that did not start), unless stopping.
    pub(super) fn systemd_ready_again(&mut self, text: &str) -> Result<(), String> {
        if self.stopping_notified {
            return Ok(());
        }
        self.notify(&format!("READY=1\nSTATUS={}", sd_notify::status_line(text)))
    }

    /// `MAINPID=` of the master that serves from now on (an upgrade), with a status line.
    pub(super) fn systemd_main_pid(&mut self, pid: u32, text: &str) -> Result<(), String> {
        self.notify(&format!(
            "MAINPID={pid}\nSTATUS={}",
            sd_notify::status_line(text)
        ))
    }

    /// `STOPPING=1`, once.
    pub(super) fn systemd_stopping(&mut self) -> Result<(), String> {
        if self.notifier.is_none() || self.stopping_notified {
            return Ok(());
        }
        self.stopping_notified = true;
        self.notify("STOPPING=1\nSTATUS=stopping")
    }

    fn notify(&mut self, state: &str) -> Result<(), String> {
        let Some(n) = self.notifier.as_ref() else {
            return Ok(());
        };
        n.send(state).map_err(|e| {
            format!(
                "cannot notify systemd through NOTIFY_SOCKET ({e}); the unit may not see the fleet's state"
            )
        })
    }
}

fn target_name(target: &LogTarget) -> String {
    match target {
        LogTarget::Inherit => "inherit".to_string(),
        LogTarget::Ignore => "ignore".to_string(),
        LogTarget::File(path) => path.display().to_string(),
    }
}

impl LoopState {
    /// Publish the status for [`Handle::status`] (without `rssBytes`, read by the reader).
    pub(super) fn publish_status(&self) {
        self.publisher.publish(self.status(false));
    }

    /// The status; `rss`: read each worker's memory use (a /proc read per worker).
    pub(super) fn status(&self, rss: bool) -> Status {
        let names = Names {
            groups: &self.group_names,
        };
        let snap = self.fleet.snapshot();
        let mut dropped_total = 0;
        let groups: Vec<GroupStatus> = self
            .config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                // No sockets once `shutdown` released them.
                let sockets_of = self.listeners.get(i);
                let mut listen: Vec<String> = sockets_of
                    .map(|l| l.bound().into_iter().map(|(_, local)| local).collect())
                    .unwrap_or_default();
                listen.extend(
                    self.listeners
                        .get(i)
                        .into_iter()
                        .flat_map(|s| s.drop_in_first())
                        .map(|l| l.local.clone()),
                );
                let mut sockets: Vec<SocketStatus> = sockets_of
                    .into_iter()
                    .flat_map(|l| l.first_listeners())
                    .map(|l| {
                        let (from, fd, fd_name) = match l.origin() {
                            Origin::Bound => (SocketOrigin::Bound, None, None),
                            Origin::Inherited { fd, name } => {
                                (SocketOrigin::Inherited, Some(*fd), name.clone())
                            }
                        };
                        SocketStatus {
                            address: l.local.clone(),
                            configured: l.addr.to_string(),
                            from,
                            fd,
                            fd_name,
                        }
                    })
                    .collect();
                sockets.extend(self.drop_in_status(i));
                let dropped = self.relay.dropped(i);
                dropped_total += dropped;
                GroupStatus {
                    name: g.rules.name.clone(),
                    count: g.rules.count,
                    reloadable: g.rules.reloadable,
                    order: g.rules.order,
                    parallel: g.rules.parallel,
                    listen,
                    sockets,
                    balance: g.balance.name().to_string(),
                    stop_timeout_ms: public_json::ms(g.rules.stop_timeout),
                    ready_timeout_ms: public_json::ms(g.rules.ready_timeout),
                    readiness: g.rules.readiness.as_str().to_string(),
                    min_uptime_ms: g.rules.readiness.min_uptime().map(public_json::ms),
                    instance_var: g.instance_var.clone(),
                    logs: GroupLogsStatus {
                        stdout: target_name(&g.stdout),
                        stderr: target_name(&g.stderr),
                        prefix: g.log_prefix,
                        dropped_bytes: public_json::bytes(dropped),
                    },
                    options: shown_options(&g.options, g.rules.count),
                }
            })
            .collect();
        let extras = |key: Option<WorkerKey>, pid: Option<i32>| RowExtras {
            started_at: key
                .and_then(|k| self.workers.get(&k))
                .map(|io| io.started_at),
            rss_bytes: if rss {
                pid.and_then(crate::proc_info::rss_bytes)
            } else {
                None
            },
            connections: key
                .and_then(|k| self.workers.get(&k))
                .and_then(|io| io.connections),
            cpu: pid.and_then(|p| self.cpu.get(p)).map(cpu_figures),
        };
        let (generation, found) = &self.last_changes;
        let reported = snap.last_reload.as_ref().map(|r| r.generation);
        let last_changes: &[Change] = if reported == Some(*generation) {
            found
        } else {
            &[]
        };
        let parts = StatusParts {
            fleet_name: &self.config.name,
            master_pid: self.master_pid,
            groups,
            reaped_orphans: crate::reaper::reaped(),
            logs: LogsStatus {
                dropped_bytes: public_json::bytes(dropped_total),
                failed_bytes: public_json::bytes(self.relay.failed()),
                file: self.relay.master_log().map(|p| p.display().to_string()),
            },
            last_changes,
            master_cpu: i32::try_from(self.master_pid)
                .ok()
                .and_then(|p| self.cpu.get(p))
                .map(cpu_figures),
            counters: self.counters.snapshot(),
            options: &self.config.options,
        };
        let mut status = public_json::status(&names, parts, &snap, Instant::now(), &extras);
        if rss {
            add_master_resources(&mut status);
        }
        status
    }

    /// Sample the CPU time of every worker and of the master, when a sample is due (about
    /// once a second, on the loop's timer: `run` wakes for `cpu.next_at()`).
    pub(super) fn sample_cpu(&mut self, now: Instant) {
        if now < self.cpu.next_at() {
            return;
        }
        let workers = self.fleet.snapshot().workers;
        self.sample_memory(now, &workers);
        let mut pids: Vec<i32> = workers.iter().filter_map(|w| w.pid).collect();
        pids.extend(i32::try_from(self.master_pid).ok());
        if self
            .cpu
            .sample_if_due(now, pids, crate::proc_info::cpu_time)
        {
            self.publisher.mark_dirty();
        }
    }

    /// Feed the resident memory of every worker of a group with a `maxMemory` to the state
    /// machine, which decides what a stay above the limit means (`fleet.rs`, **Memory**).
    /// Called with the CPU sample, about once a second.
    fn sample_memory(&mut self, now: Instant, workers: &[crate::fleet::WorkerSnapshot]) {
        let limits: Vec<Option<u64>> = self
            .config
            .groups
            .iter()
            .map(|g| {
                let text = g.options.max_memory.as_deref()?;
                baton_contract::size::parse_size(text).ok()
            })
            .collect();
        if limits.iter().all(Option::is_none) {
            return;
        }
        for w in workers {
            let (Some(key), Some(pid)) = (w.key, w.pid) else {
                continue;
            };
            let Some(limit) = limits.get(w.group).copied().flatten() else {
                continue;
            };
            let Some(rss) = crate::proc_info::rss_bytes(pid) else {
                continue;
            };
            self.fleet
                .handle(now, Input::MemorySample { key, rss, limit });
        }
        self.drive();
    }

    /// Count what `event` says for the monitoring counters (`counters` in the status).
    pub(super) fn count(&mut self, event: &Event) {
        use crate::metrics::Outcome;
        match event {
            Event::WorkerExit {
                group,
                cause: crate::fleet::ExitCause::Crashed,
                ..
            } => {
                if let Some(name) = self.group_names.get(*group) {
                    self.counters.restart(name);
                }
            }
            Event::MemoryOverLimit {
                group,
                replacing: true,
                ..
            } => {
                if let Some(name) = self.group_names.get(*group) {
                    self.counters.memory_replacement(name);
                }
            }
            Event::ReloadDone(r) | Event::ReloadFailed(r) => {
                let outcome = match r.outcome {
                    ReloadOutcome::Done => Outcome::Done,
                    ReloadOutcome::Failed => Outcome::Failed,
                    ReloadOutcome::Cancelled => Outcome::Cancelled,
                };
                self.counters.reload(outcome, r.duration);
            }
            _ => {}
        }
    }
}

/// A CPU sample as the status shows it: the percentage rounded to one decimal, and the
/// CPU seconds.
fn cpu_figures(c: crate::proc_info::CpuUse) -> public_json::CpuFigures {
    public_json::CpuFigures {
        percent: c.percent.map(|p| (p * 10.0).round() / 10.0),
        seconds: c.seconds,
    }
}

/// The master's resident memory (`rssBytes`) and open file descriptors (`openFds`), read
/// fresh when the status is asked for (like the workers' `rssBytes`).
pub(super) fn add_master_resources(status: &mut Status) {
    let master = i32::try_from(status.pid).ok();
    status.rss_bytes = master
        .and_then(crate::proc_info::rss_bytes)
        .map(public_json::bytes);
    status.open_fds = master
        .and_then(crate::proc_info::open_fds)
        .map(public_json::bytes);
}

/// A group's `options` in its status: as validated (every default filled in), with the
/// live `count` (`baton scale` changes it) and the `env` values hidden (`<hidden>`: the
/// status reaches more readers than the config does).
fn shown_options(options: &crate::config::GroupOptions, count: u32) -> crate::config::GroupOptions {
    let mut shown = options.clone();
    shown.count = Some(count);
    if let Some(env) = shown.env.as_mut() {
        env.values_mut().for_each(|v| *v = "<hidden>".to_string());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn status(name: &str) -> Status {
        Status {
            name: name.into(),
            pid: 1,
            generation: 1,
            reloading: false,
            stopping: false,
            ready: true,
            not_ready_reason: None,
            groups: vec![],
            workers: vec![],
            last_reload: None,
            reaped_orphans: None,
            logs: LogsStatus {
                dropped_bytes: 0,
                failed_bytes: 0,
                file: None,
            },
            cpu: None,
            cpu_seconds: None,
            rss_bytes: None,
            open_fds: None,
            counters: crate::metrics::Counters::new(&[]).snapshot(),
            options: Default::default(),
        }
    }

    #[test]
    fn the_publisher_hands_the_last_status_to_the_handle_and_tracks_refreshes() {
        let (publisher, cache, alive) = StatusPublisher::new(None);
        assert!(cache.lock().unwrap().is_none());
        publisher.publish(status("a"));
        publisher.publish(status("b"));
        assert_eq!(
            cache.lock().unwrap().as_ref().map(|s| s.name.as_str()),
            Some("b")
        );
        // Published just now and nothing changed since: no refresh to wait for.
        assert_eq!(publisher.refresh_wait(), None);
        assert!(!publisher.refresh_due());
        publisher.mark_dirty();
        assert!(publisher
            .refresh_wait()
            .is_some_and(|w| w <= STATUS_REFRESH));
        let before = *alive.lock().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        publisher.beat();
        assert!(*alive.lock().unwrap() > before);
    }

    #[test]
    fn systemd_hears_ready_reloading_and_stopping_and_no_ready_after_stopping() {
        let path = std::env::temp_dir().join(format!("baton-publisher-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unit = UnixDatagram::bind(&path).unwrap();
        unit.set_nonblocking(true).unwrap();
        let notifier = Notifier::new(path.to_str()).unwrap().unwrap();
        let (mut publisher, _, _) = StatusPublisher::new(Some(notifier));
        let next = || {
            let mut buf = [0u8; 512];
            unit.recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        assert!(publisher.has_systemd());
        publisher.systemd_ready(42, "all workers ready").unwrap();
        assert_eq!(
            next().as_deref(),
            Some("READY=1\nMAINPID=42\nSTATUS=all workers ready")
        );
        publisher.systemd_reloading("reload 2 started").unwrap();
        let reloading = next().unwrap();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        assert!(
            reloading.ends_with("\nSTATUS=reload 2 started"),
            "{reloading}"
        );
        publisher.systemd_stopping().unwrap();
        assert_eq!(next().as_deref(), Some("STOPPING=1\nSTATUS=stopping"));
        assert!(publisher.stopping_notified());
        // Once stopping, a reload that ends says nothing, and STOPPING is sent once.
        publisher.systemd_ready_again("reload 2 done").unwrap();
        publisher.systemd_stopping().unwrap();
        assert_eq!(next(), None);
        let _ = std::fs::remove_file(&path);
    }
}
