//! [`launch`]: everything that can fail on bad input happens here, before any worker
//! exists: the name, the runtime dir, the pid-file lock, every listen address (bound, or
//! taken from systemd or from the master this one replaces) and the control socket. Then
//! the loop thread starts.

use super::*;

/// Prepare everything that can fail on bad input, then start the fleet on its own thread.
pub fn launch(mut config: FleetConfig, host: Host) -> Result<Handle, LaunchError> {
    let sink = &host.events;
    // A master started by `baton upgrade` takes what the old master passed (`upgrade.rs`).
    let claimed = match config.handover.take() {
        Some(text) => Some(takeover::claim_handover(&text, &config.groups).map_err(launch_error)?),
        None => None,
    };
    if let Some(c) = &claimed {
        if c.name != config.name {
            sink(SupervisorEvent::log(format!(
                "upgrade: the fleet keeps its name \"{}\" (the new options say \"{}\"; renaming needs baton stop and start)",
                c.name, config.name
            )));
            config.name = c.name.clone();
        }
    }
    let (incoming, pid_fd, passed, drop_in, handover_log) = match claimed {
        Some(c) => (
            Some(c.incoming),
            Some(c.pid_file),
            Some(c.per_group),
            c.drop_in,
            c.log,
        ),
        None => (None, None, None, Vec::new(), Vec::new()),
    };
    runtime_dir::validate_name(&config.name)
        .map_err(|e| launch_error(format!("invalid name: {e}")))?;
    if config.groups.is_empty() {
        return Err(launch_error(
            "no groups: add at least one group with a script",
        ));
    }
    runtime_dir::ensure_dir(&config.runtime_dir).map_err(|e| launch_error(e.to_string()))?;
    let pid_file = match pid_fd {
        Some(fd) => PidFile::adopt(&config.runtime_dir, &config.name, fd),
        None => PidFile::acquire(&config.runtime_dir, &config.name),
    }
    .map_err(|e| launch_error(e.to_string()))?;

    if cfg!(not(target_os = "linux")) {
        if let Some(g) = config.groups.iter().find(|g| g.balance.per_slot()) {
            return Err(launch_error(format!(
                "group \"{}\": balance \"{}\" needs Linux (other systems do not spread connections across SO_REUSEPORT sockets); use \"shared\"",
                g.rules.name,
                g.balance.name()
            )));
        }
    }
    // Sockets systemd (LISTEN_FDS) or the old master passed serve their group addresses;
    // the others are bound.
    let per_group = match passed {
        Some(per_group) => {
            for line in &handover_log {
                sink(SupervisorEvent::log(line.clone()));
            }
            per_group
        }
        None => {
            let activation =
                crate::socket_activation::activate(&config.groups).map_err(launch_error)?;
            for line in &activation.log {
                sink(SupervisorEvent::log(line.clone()));
            }
            activation
                .per_group
                .into_iter()
                .map(|addrs| {
                    addrs
                        .into_iter()
                        .map(|l| l.map(crate::group_sockets::Passed::Shared))
                        .collect()
                })
                .collect()
        }
    };
    let mut listeners: Vec<GroupSockets> = Vec::new();
    let mut bound = Vec::new();
    for (g, inherited) in config.groups.iter().zip(per_group) {
        let sockets = GroupSockets::open(g, inherited).map_err(launch_error)?;
        for l in sockets.first_listeners() {
            bound.push(BoundAddress {
                group: g.rules.name.clone(),
                configured: l.addr.to_string(),
                bound: l.local.clone(),
                origin: l.origin().clone(),
            });
        }
        listeners.push(sockets);
    }
    // The old master's drop-in sockets (`baton upgrade`); missing slots are bound.
    for (group, host, port, passed) in drop_in {
        if let (Some(sockets), Some(g)) = (listeners.get_mut(group), config.groups.get(group)) {
            sockets.adopt_drop_in(host, port, passed, g.rules.count);
            sockets.grow(g, g.rules.count).map_err(launch_error)?;
        }
    }

    let control_path = runtime_dir::socket_path(&config.runtime_dir, &config.name);
    // Until the loop thread runs, a failure removes the socket file bound here (a file left
    // behind would be taken for another master by `baton stop` and `baton status`).
    let mut bound_control = BoundControlPath(None);
    // A new master serves the old one's control socket once it took over.
    let control = match incoming {
        Some(_) => None,
        None => {
            let std_listener = runtime_dir::bind_control_socket(&control_path)
                .map_err(|e| launch_error(e.to_string()))?;
            bound_control.arm(&control_path);
            std_listener.set_nonblocking(true).map_err(|e| {
                launch_error(format!("control socket {}: {e}", control_path.display()))
            })?;
            Some(UnixListener::from_std(std_listener))
        }
    };

    let notifier = match Notifier::new(std::env::var("NOTIFY_SOCKET").ok().as_deref()) {
        None => None,
        Some(n) => Some(n.map_err(launch_error)?),
    };

    // PID 1 of a container (or a subreaper): reap the orphans reparented to us (reaper.rs).
    if let Some(message) = crate::reaper::start().message() {
        sink(SupervisorEvent::log(message));
    }

    let poll = Poll::new().map_err(|e| launch_error(format!("cannot create a poller: {e}")))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER)
            .map_err(|e| launch_error(format!("cannot create a waker: {e}")))?,
    );
    let (tx, rx) = mpsc::channel();
    let tickets = Arc::new(AtomicU64::new(1));
    let (publisher, status_cache, alive) = StatusPublisher::new(notifier);
    let relay = output::start_relay(&config, tx.clone(), waker.clone())?;

    let rules = config.groups.iter().map(|g| g.rules.clone()).collect();
    let fleet = Fleet::new(rules, config.backoff);
    let group_names: Vec<String> = config.groups.iter().map(|g| g.rules.name.clone()).collect();
    let counters = crate::metrics::Counters::new(&group_names);
    let steering = Steering::new(config.groups.len());
    let (cron, cron_problems) = super::cron::CronTimers::new(&super::cron::schedules(&config));
    for problem in cron_problems {
        sink(SupervisorEvent::log(problem));
    }
    let mut state = LoopState {
        fleet,
        config,
        listeners,
        pid_file: Some(pid_file),
        control,
        control_path: control_path.clone(),
        poll,
        waker: waker.clone(),
        tx: tx.clone(),
        rx,
        host,
        group_names,
        workers: HashMap::new(),
        sources: HashMap::new(),
        clients: ControlClients::new(),
        next_token: FIRST_DYNAMIC,
        steering,
        logged_once: HashSet::new(),
        tickets: tickets.clone(),
        master_pid: std::process::id(),
        uid: current_uid(),
        pending_changes: Vec::new(),
        changes_by_ticket: HashMap::new(),
        last_changes: (0, Vec::new()),
        host_pending: HashMap::new(),
        host_expired: HashSet::new(),
        publisher,
        test_hooks: std::env::var_os("BATON_TEST_HOOKS").is_some_and(|v| v == "1"),
        relay: relay.clone(),
        pidfd: exits::use_pidfd(),
        owns_control_path: incoming.is_none(),
        upgrade: None,
        incoming,
        handed_over: false,
        cpu: crate::proc_info::CpuSampler::new(Instant::now()),
        counters,
        cron,
    };
    state
        .watch_predecessor()
        .map_err(|e| launch_error(format!("cannot watch the upgrade channel: {e}")))?;
    let mut control = state.control.take();
    if let Some(c) = control.as_mut() {
        state
            .poll
            .registry()
            .register(c, CONTROL, Interest::READABLE)
            .map_err(|e| launch_error(format!("cannot watch the control socket: {e}")))?;
    }
    state.control = control;

    thread::Builder::new()
        .name("baton-supervisor".into())
        .spawn(move || {
            let mut state = state;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run()));
            if let Err(payload) = run {
                state.after_panic(panic_message(payload.as_ref()));
            }
        })
        .map_err(|e| launch_error(format!("cannot start the supervisor thread: {e}")))?;
    // The loop owns the file now (its shutdown removes it).
    bound_control.disarm();
    Ok(Handle {
        tx,
        waker,
        tickets,
        bound,
        control_path,
        status_cache,
        alive,
        relay,
    })
}

/// The control socket file [`launch`] bound (its path, device and inode), removed when
/// dropped armed: on every error return after the bind. Only the file bound here is
/// removed, not one a later master bound at the same path.
struct BoundControlPath(Option<(PathBuf, u64, u64)>);

impl BoundControlPath {
    fn arm(&mut self, path: &std::path::Path) {
        use std::os::unix::fs::MetadataExt;
        self.0 = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (path.to_path_buf(), m.dev(), m.ino()));
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for BoundControlPath {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Some((path, dev, ino)) = self.0.take() {
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                if m.dev() == dev && m.ino() == ino {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupConfig, GroupRules, LogTarget, Order};

    fn group(stdout: LogTarget) -> GroupConfig {
        GroupConfig {
            rules: GroupRules {
                name: "web".into(),
                count: 1,
                reloadable: true,
                order: Order::StartFirst,
                parallel: 1,
                ready_timeout: Duration::from_secs(1),
                stop_timeout: Duration::from_secs(1),
                readiness: Default::default(),
            },
            program: PathBuf::from("/bin/true"),
            exec_argv: vec![],
            script: PathBuf::new(),
            args: vec![],
            env: vec![],
            cwd: None,
            listen: vec![crate::addr::parse("127.0.0.1:0").expect("an address")],
            listen_names: vec!["listen0".into()],
            backlog: 16,
            credentials: None,
            balance: crate::config::Balance::Shared,
            stdout,
            stderr: LogTarget::Inherit,
            log_prefix: false,
            instance_var: crate::config::DEFAULT_INSTANCE_VAR.to_string(),
            options: Default::default(),
            drop_in: true,
        }
    }

    #[test]
    fn a_launch_that_fails_after_binding_the_control_socket_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("baton-launch-fail-{}", std::process::id()));
        let runtime = dir.join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        // The log relay opens the group's stdout after the control socket is bound: a
        // directory there fails the launch at that point.
        let not_a_file = dir.join("a-directory");
        std::fs::create_dir_all(&not_a_file).unwrap();
        let config = FleetConfig {
            name: "fleet".into(),
            runtime_dir: runtime.clone(),
            groups: vec![group(LogTarget::File(not_a_file))],
            backoff: Default::default(),
            host_prepares_reloads: false,
            master_log: None,
            master_log_rotation: None,
            upgrade_command: vec![],
            upgrade_cwd: None,
            handover: None,
            options: Default::default(),
        };
        let err = match launch(
            config,
            Host {
                events: Box::new(|_| {}),
                prepare_reload: Box::new(|_| {}),
            },
        ) {
            Ok(_) => panic!("the launch should fail on the group's stdout"),
            Err(e) => e,
        };
        assert!(err.message.contains("stdout"), "{err}");
        let left: Vec<String> = std::fs::read_dir(&runtime)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(left.is_empty(), "left in the runtime dir: {left:?}");
    }
}
