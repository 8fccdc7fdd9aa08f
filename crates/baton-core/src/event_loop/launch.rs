//! [`launch`]: everything that can fail on bad input happens here, before any worker
//! exists: the name, the runtime dir, the pid-file lock, every listen address (bound, or
//! taken from systemd or from the master this one replaces) and the control socket. Then
//! the loop thread starts.

use super::*;

/// Prepare everything that can fail on bad input, then start the fleet on its own thread.
pub fn launch(mut config: FleetConfig, sink: EventSink) -> Result<Handle, LaunchError> {
    // A master started by `baton upgrade` takes what the old master passed (`upgrade.rs`).
    let claimed = match config.handover.take() {
        Some(text) => Some(takeover::claim_handover(&text, &config.groups).map_err(launch_error)?),
        None => None,
    };
    if let Some(c) = &claimed {
        if c.name != config.name {
            sink(json!({ "type": "log", "message": format!(
                "upgrade: the fleet keeps its name \"{}\" (the new options say \"{}\"; renaming needs baton stop and start)",
                c.name, config.name
            ) }));
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
        if let Some(g) = config
            .groups
            .iter()
            .find(|g| g.balance == Balance::ReusePort)
        {
            return Err(launch_error(format!(
                "group \"{}\": balance \"reuseport\" needs Linux (other systems do not spread connections across SO_REUSEPORT sockets); use \"shared\"",
                g.rules.name
            )));
        }
    }
    // Sockets systemd (LISTEN_FDS) or the old master passed serve their group addresses;
    // the others are bound.
    let per_group = match passed {
        Some(per_group) => {
            for line in &handover_log {
                sink(json!({ "type": "log", "message": line }));
            }
            per_group
        }
        None => {
            let activation =
                crate::socket_activation::activate(&config.groups).map_err(launch_error)?;
            for line in &activation.log {
                sink(json!({ "type": "log", "message": line }));
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

    let control_path = runtime_dir::socket_path(&config.runtime_dir, &config.name);
    // A new master serves the old one's control socket once it took over.
    let control = match incoming {
        Some(_) => None,
        None => {
            let std_listener = runtime_dir::bind_control_socket(&control_path)
                .map_err(|e| launch_error(e.to_string()))?;
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
        sink(json!({ "type": "log", "message": message }));
    }

    let poll = Poll::new().map_err(|e| launch_error(format!("cannot create a poller: {e}")))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER)
            .map_err(|e| launch_error(format!("cannot create a waker: {e}")))?,
    );
    let (tx, rx) = mpsc::channel();
    let tickets = Arc::new(AtomicU64::new(1));
    let status_cache: StatusCache = Arc::new(Mutex::new(None));
    let alive: Alive = Arc::new(Mutex::new(Instant::now()));
    let relay = output::start_relay(&config, tx.clone(), waker.clone())?;

    let rules = config.groups.iter().map(|g| g.rules.clone()).collect();
    let fleet = Fleet::new(rules, config.backoff);
    let group_names = config.groups.iter().map(|g| g.rules.name.clone()).collect();
    let rescue = config.groups.iter().map(|_| Rescue::default()).collect();
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
        sink,
        group_names,
        workers: HashMap::new(),
        sources: HashMap::new(),
        clients: HashMap::new(),
        next_token: FIRST_DYNAMIC,
        rescue,
        watched: BTreeMap::new(),
        pending: VecDeque::new(),
        rescue_dirty: false,
        rescue_backlog: false,
        logged_once: HashSet::new(),
        stop_waiters: Vec::new(),
        tickets: tickets.clone(),
        master_pid: std::process::id(),
        uid: current_uid(),
        notifier,
        stopping_notified: false,
        pending_changes: Vec::new(),
        changes_by_ticket: HashMap::new(),
        last_changes: (0, Vec::new()),
        host_pending: HashMap::new(),
        host_expired: HashSet::new(),
        next_heartbeat: Instant::now(),
        drop_in: Vec::new(),
        status_cache: status_cache.clone(),
        status_published: Cell::new(Instant::now()),
        status_dirty: Cell::new(true),
        alive: alive.clone(),
        test_hooks: std::env::var_os("BATON_TEST_HOOKS").is_some_and(|v| v == "1"),
        relay: relay.clone(),
        pidfd: exits::use_pidfd(),
        owns_control_path: incoming.is_none(),
        upgrade: None,
        incoming,
        handed_over: false,
    };
    state.drop_in = drop_in
        .into_iter()
        .map(|(group, host, port, listener)| drop_in::DropInSocket {
            group,
            host,
            port,
            listener,
        })
        .collect();
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
