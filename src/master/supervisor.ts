/**
 * The master API: `new Supervisor(options)`, groups, start/stop/reload/status and typed
 * events. The work happens in the Rust core; this class validates options, forwards
 * signals and turns the core's JSON events into typed events and promises.
 */
import { EventEmitter } from 'node:events'
import type {
  BindingBoundAddress,
  BindingFleetOptions,
  BindingGroupOptions,
  ListenTarget,
  NativeSupervisor,
} from '../../native/index.cjs'
import type { HealthOptions, HealthServer } from './health.js'
import { MAX_WORKERS } from '../defaults.js'
import { assertSupportedPlatform, native } from '../native.js'
import {
  OptionsError,
  resolveFleet,
  resolveGroup,
  masterLogRotation,
  withLogDefaults,
  type GroupOptions,
  type ResolvedFleet,
  type ResolvedGroup,
  type SupervisorOptions,
} from './options.js'
import { masterLine, masterLineFormat, visible } from '../format.js'
import type { ConfigChange, ReloadReport, Status, SupervisorEvent, SupervisorEvents, UpgradeEvent } from '../types.js'
import type { Worker } from '../worker/worker.js'

/**
 * Whether this process is a baton worker (env `BATON_GROUP`, as read by the worker
 * runtime, src/worker/worker.ts). The master does not load the worker runtime: it is only
 * imported where a worker runs the group's hooks ({@link Supervisor.runAll}).
 */
const IN_WORKER = (process.env.BATON_GROUP ?? '') !== ''

/** Workerman-style hooks, run inside each worker process of a group. */
export interface WorkerHooks {
  /** Runs when the worker starts; the worker is ready when it resolves (or when it calls `worker.listen()`). */
  onWorkerStart?: (w: Worker) => void | Promise<void>
  /** Runs during a graceful stop, after connections are drained. */
  onWorkerStop?: (w: Worker) => void | Promise<void>
  /** Runs in workers of `reloadable: false` groups when the fleet reloads. */
  onWorkerReload?: (w: Worker) => void | Promise<void>
}

/** A reload that did not complete: `report.outcome` is `failed` or `cancelled`. */
export class ReloadError extends Error {
  /** The reload's report, with the failing worker's exit status and stderr tail. */
  readonly report: ReloadReport
  constructor(report: ReloadReport) {
    super(report.message)
    this.name = 'ReloadError'
    this.report = report
  }
}

/** The fleet could not start: bad socket, name in use, or a worker failed before ready. */
export class StartError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'StartError'
  }
}

/** A bound listen address: declared once in the binding (`BindingBoundAddress`, crates/baton-node/src/supervisor.rs). */
export type BoundAddress = BindingBoundAddress

/** The variables of systemd's socket activation protocol (never passed on to workers by the core either). */
const LISTEN_VARIABLES = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'LISTEN_PIDFDID']

/**
 * Whether systemd passed listening sockets to this process (`LISTEN_PID` is our pid and
 * `LISTEN_FDS` is set): the next {@link Supervisor.start} takes them instead of binding
 * those addresses.
 */
export function socketActivated(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.LISTEN_PID === String(process.pid) && (env.LISTEN_FDS ?? '') !== '' && env.LISTEN_FDS !== '0'
}

interface GroupEntry {
  options: GroupOptions
  hooks: WorkerHooks | undefined
}

type Waiter<T> = { resolve: (value: T) => void; reject: (error: Error) => void }

/**
 * A master process supervising groups of workers, with graceful sequential reloads.
 *
 * ```ts
 * const sup = new Supervisor({ name: 'web', groups: { web: { script: 'app.mjs', count: 4, listen: ':8080' } } })
 * await sup.start()
 * const report = await sup.reload() // throws ReloadError if the new code cannot start
 * ```
 */
/**
 * A value the core hands over as JSON: one of the contract types of crates/baton-contract
 * (serialized by crates/baton-core/src/public_json.rs, declared for TypeScript by napi in
 * native/index.d.cts). The one place such JSON is parsed.
 */
function fromCore<T>(json: string): T {
  return JSON.parse(json) as T
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  /** The master's name (control socket and pid file). */
  readonly name: string
  /** The runtime dir holding the control socket. */
  readonly runtimeDir: string
  readonly #options: SupervisorOptions
  readonly #groups = new Map<string, GroupEntry>()
  #native: NativeSupervisor | undefined
  #starting: Waiter<void> | undefined
  #startFailure: string | undefined
  #stopped: Promise<void> | undefined
  #resolveStopped: (() => void) | undefined
  readonly #reloads = new Map<number, Waiter<ReloadReport>>()
  readonly #scales = new Map<number, Waiter<void>>()
  #signalHandlers: Array<[NodeJS.Signals, () => void]> = []
  #preparing: Promise<void> = Promise.resolve()
  #sigints = 0
  /** The fleet's options, checked once (crates/baton-contract/src/options.rs) and resolved. */
  readonly #fleet: ResolvedFleet
  #health: HealthServer | undefined
  #launching = false
  readonly #upgrades = new Map<number, Waiter<UpgradeEvent>>()
  #successor: number | undefined
  /** `fleet:stopped` arrived. */
  #hasStopped = false
  /** Settles when the native launch has (or has not) produced `#native`. */
  #launchSettled: Promise<void> | undefined

  constructor(options: SupervisorOptions = {}) {
    super()
    assertSupportedPlatform()
    // A master started by startDaemon (`--daemon`, `start -d`) writes to the log file it
    // was given, and reopens it on `baton reopen-logs`.
    const daemonLog = process.env.BATON_DAEMONIZED === '1' ? process.env.BATON_LOG_FILE || undefined : undefined
    const given = typeof options === 'object' && options !== null && daemonLog !== undefined
    this.#fleet = resolveFleet(given && options.logFile === undefined ? { ...options, logFile: daemonLog } : options)
    this.#options = options
    // A master started by `baton upgrade` keeps the fleet's name.
    this.name = handoverName() ?? this.#fleet.name
    this.runtimeDir = this.#fleet.runtimeDir
    for (const [name, g] of Object.entries(options.groups ?? {})) this.group(name, g)
  }

  /**
   * Add a group. In Workerman style, one script can be master and workers: `hooks` then
   * run inside the worker processes, and `options.script` defaults to the current script.
   */
  group(name: string, options: GroupOptions = {}, hooks?: WorkerHooks): this {
    if (this.#groups.has(name)) throw new OptionsError(`groups.${name}`, 'a group of this name already exists')
    if (this.#native) throw new OptionsError(`groups.${name}`, 'groups cannot be added after start()')
    if (!IN_WORKER)
      resolveGroup(name, withLogDefaults(options, this.#fleet.options), hooks ? process.argv[1] : undefined)
    this.#groups.set(name, { options, hooks })
    return this
  }

  /** Start every worker; resolves when all are ready, rejects with the cause if one cannot start. */
  start(): Promise<void> {
    if (this.#native || this.#launching)
      return Promise.reject(new StartError(`supervisor "${this.name}" is already started`))
    if (this.#groups.size === 0) {
      return Promise.reject(new OptionsError('groups', 'no groups: add at least one with supervisor.group()'))
    }
    let launchOptions: BindingFleetOptions
    try {
      // Taken out of the environment first: neither workers nor child_process children see it.
      const handover = takeHandover()
      launchOptions = { ...this.#bindingOptions(this.#groups, this.#fleet), handover }
    } catch (e) {
      return Promise.reject(e)
    }
    // A master started by `baton upgrade` opens the health endpoint once it took over (the
    // old master holds the address until then).
    const health = this.#fleet.health
    if (health === undefined || launchOptions.handover !== undefined) return this.#launch(launchOptions)
    // The health endpoint listens first: a port in use fails the start before any worker runs.
    const address = health.address
    this.#launching = true
    // Loaded only when asked for: a master without a health endpoint does not load node:http.
    return import('./health.js')
      .then(({ HealthServer }) =>
        HealthServer.listen(
          health,
          () => (this.#native ? this.status() : { ready: false, notReadyReason: 'the fleet is starting' }),
          this.#healthOptions(),
        ),
      )
      .then(
        (server) => {
          this.#launching = false
          this.#health = server
          this.#log(`health endpoint on ${server.address}`)
          return this.#launch(launchOptions)
        },
        (e: Error) => {
          this.#launching = false
          throw new StartError(`health: cannot listen on ${address}: ${e.message}`)
        },
      )
  }

  #launch(launchOptions: BindingFleetOptions): Promise<void> {
    this.#stopped = new Promise((resolve) => (this.#resolveStopped = resolve))
    const ready = new Promise<void>((resolve, reject) => (this.#starting = { resolve, reject }))
    // Binding (and resolving host names) runs off this thread. Events that come before the
    // native handle are held, then handled in order once `#native` is set.
    const early: Array<() => void> = []
    let launched = false
    const onEvent = (json: string): void => {
      if (launched) this.#onNativeEvent(json)
      else early.push(() => this.#onNativeEvent(json))
    }
    // `baton reload` of a fleet whose reloads this host prepares: a private request, never
    // a public event.
    const onReloadRequest = (ticket: number): void => {
      if (launched) this.#onReloadRequested(ticket)
      else early.push(() => this.#onReloadRequested(ticket))
    }
    const activated = socketActivated()
    this.#launching = true
    let pending: Promise<NativeSupervisor>
    try {
      pending = native().launchSupervisor(launchOptions, onEvent, onReloadRequest)
    } catch (e) {
      pending = Promise.reject(e)
    }
    this.#launchSettled = pending.then(
      () => undefined,
      () => undefined,
    )
    return pending.then(
      (nat) => {
        this.#launching = false
        // The core took the sockets systemd passed: child_process children of the master
        // must not see LISTEN_* (they would take fds they do not have).
        if (activated) clearListenVariables()
        this.#native = nat
        if (this.#fleet.options.handleSignals !== false) this.#installSignals()
        launched = true
        for (const handle of early.splice(0)) handle()
        return ready
      },
      (e: Error) => {
        this.#launching = false
        if (activated) clearListenVariables()
        this.#starting = undefined
        this.#closeHealth().then(() => this.#resolveStopped?.())
        throw new StartError(e.message)
      },
    )
  }

  /**
   * Replace this master with a new one, without closing a socket or failing a request
   * (`baton upgrade`): the new master (started with `upgradeCommand`, so the baton and
   * Node installed now, re-reading its options) takes the listening sockets, starts its
   * own workers, readiness-gated, and only once all are ready does this master's fleet
   * drain and stop (`stopped` resolves; `successor` is the new pid). Resolves when the new
   * master serves; rejects with the cause when it failed (this master keeps serving and
   * nothing of the new one is left).
   */
  upgrade(): Promise<UpgradeEvent> {
    const nat = this.#native
    if (!nat) return Promise.reject(new Error(`supervisor "${this.name}" is not started`))
    try {
      const ticket = nat.upgrade()
      return new Promise<UpgradeEvent>((resolve, reject) => this.#upgrades.set(ticket, { resolve, reject }))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** The pid of the master this one handed its fleet to (`upgrade()`), once it did. */
  get successor(): number | undefined {
    return this.#successor
  }

  /** Stop every worker gracefully (or at once with `force`); resolves when all have exited and the sockets are closed. */
  async stop(options: { force?: boolean } = {}): Promise<void> {
    await this.#launchSettled // a launch in progress gets its native handle first
    if (!this.#native) return
    try {
      this.#native.stop(options.force === true)
    } catch {
      // Already stopped: fall through to the stopped promise.
    }
    await this.#stopped
  }

  /** Resolves once the fleet has stopped (by `stop()`, a signal, the CLI, or a failed start). */
  get stopped(): Promise<void> {
    return this.#stopped ?? Promise.resolve()
  }

  /**
   * Replace the workers of every reloadable group, one at a time. Resolves with the report
   * when every worker was replaced; rejects with a {@link ReloadError} when a new worker
   * failed (the old ones keep serving) or the fleet stopped meanwhile.
   */
  reload(): Promise<ReloadReport> {
    const nat = this.#native
    if (!nat) return Promise.reject(new Error(`supervisor "${this.name}" is not started`))
    return this.#prepared(() => {
      const ticket = nat.reload()
      return new Promise<ReloadReport>((resolve, reject) => this.#reloads.set(ticket, { resolve, reject }))
    })
  }

  /**
   * Change group `group`'s worker count to `count` without a restart. Growing starts the
   * new slots' workers (serving once ready); shrinking stops the highest slots gracefully,
   * as a reload stops an old worker. Resolves once every new worker is ready and every
   * removed one has exited; rejects with an {@link OptionsError} for a bad count, or an
   * Error with the cause (unknown group, a reload running, a new worker that failed before
   * ready, the fleet stopping). Later reloads replace `count` workers.
   */
  scale(group: string, count: number): Promise<void> {
    const nat = this.#native
    if (!nat) return Promise.reject(new Error(`supervisor "${this.name}" is not started`))
    if (!Number.isInteger(count) || count < 1 || count > MAX_WORKERS) {
      return Promise.reject(
        new OptionsError('count', `expected a whole number of workers from 1 to ${MAX_WORKERS}, got ${String(count)}`),
      )
    }
    if (!this.#groups.has(group)) {
      const names = [...this.#groups.keys()].join(', ')
      return Promise.reject(new OptionsError('group', `no group "${group}" in this supervisor (groups: ${names})`))
    }
    try {
      const ticket = nat.scale(group, count)
      return new Promise<void>((resolve, reject) => this.#scales.set(ticket, { resolve, reject }))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Run `go` once `beforeReload` (if any) has given the re-read options and they were
   * applied. Reloads are prepared one after another, so each re-read reaches the reload
   * it was read for. A failing `beforeReload` fails the reload: nothing is replaced, and
   * the core answers `ticket`'s waiters (0: none, for API and signal reloads), logs why and
   * tells systemd.
   */
  #prepared<T>(go: () => T | Promise<T>, ticket = 0): Promise<T> {
    const hook = this.#options.beforeReload
    if (!hook) {
      try {
        return Promise.resolve(go())
      } catch (e) {
        return Promise.reject(e)
      }
    }
    const run = this.#preparing.then(async () => {
      try {
        const reread = await hook()
        if (reread !== undefined) this.reconfigure(reread)
      } catch (e) {
        try {
          this.#native?.failReload(ticket, (e as Error).message)
        } catch {
          // The fleet stopped meanwhile: its waiters were answered by the stop.
        }
        throw e
      }
      return go()
    })
    this.#preparing = run.then(
      () => undefined,
      () => undefined,
    )
    return run
  }

  /**
   * Apply re-read options (same shape as the constructor's) to the running fleet:
   * per-worker settings (script, args, execArgv, env, cwd, timeouts, order, parallel,
   * uid/gid, stdout/stderr/logPrefix, backoff) take effect for the workers started from now on, e.g. by the next
   * `reload()`; settings that need a restart (count, listen, balance, backlog, reloadable,
   * groups added or removed, name) are kept and reported. Returns every change found; the
   * next reload's report lists them too. Throws an {@link OptionsError} naming the field
   * when the options are invalid (then nothing changes).
   */
  reconfigure(options: SupervisorOptions): ConfigChange[] {
    const nat = this.#native
    if (!nat) throw new Error(`supervisor "${this.name}" is not started`)
    // Checked as the constructor's are; the name, runtime dir and upgrade command default to the running fleet's.
    const fleet = resolveFleet(options, { ...this.#fleet, name: this.name })
    const groups = new Map<string, GroupEntry>()
    for (const [name, g] of Object.entries(options.groups ?? {}))
      groups.set(name, { options: g, hooks: this.#groups.get(name)?.hooks })
    // Groups added with supervisor.group() (with hooks, in this script) stay as they are.
    for (const [name, entry] of this.#groups) if (entry.hooks && !groups.has(name)) groups.set(name, entry)
    return fromCore<ConfigChange[]>(nat.reconfigure(this.#bindingOptions(groups, fleet)))
  }

  /** Validate the groups into what the core takes, with the fleet's checked options (throws OptionsError). */
  #bindingOptions(groups: Map<string, GroupEntry>, fleet: ResolvedFleet): BindingFleetOptions {
    const resolved: ResolvedGroup[] = [...groups].map(([name, g]) =>
      resolveGroup(name, withLogDefaults(g.options, fleet.options), g.hooks ? process.argv[1] : undefined),
    )
    return {
      options: {
        ...fleet.options,
        name: fleet.name,
        runtimeDir: fleet.runtimeDir,
        // Read at start only: a reload keeps the master's log file.
        logFile: this.#fleet.logFile,
        upgradeCommand: fleet.upgradeCommand,
      },
      groups: resolved.map((g) => toBinding(g)),
      hostPreparesReloads: this.#options.beforeReload !== undefined,
      ...(this.#fleet.logFile !== undefined
        ? masterLogRotation(
            fleet.options,
            [...groups.values()].map((g) => g.options),
          )
        : {}),
      upgradeCwd: process.cwd(),
    }
  }

  /** The fleet's status (the `baton status --json` shape). */
  status(): Status {
    if (!this.#native) throw new Error(`supervisor "${this.name}" is not started`)
    return this.#native.status()
  }

  /**
   * Reopen every log file: the groups' `stdout`/`stderr` files and the master's
   * `logFile` (after logrotate renamed them, the next lines go to new files at the same
   * paths). Resolves with the number of files reopened; rejects naming a file that
   * cannot be opened (the old one stays in use).
   */
  async reopenLogs(): Promise<number> {
    if (!this.#native) throw new Error(`supervisor "${this.name}" is not started`)
    return this.#native.reopenLogs()
  }

  /** The health endpoint's bound address (a real port for `:0`), while it listens. */
  get healthAddress(): string | undefined {
    return this.#health?.address
  }

  /** The bound listen addresses, e.g. to learn the port chosen for `:0`. */
  addresses(): BoundAddress[] {
    return this.#native ? this.#native.bound() : []
  }

  /**
   * Workerman-style entry point for a script that is both master and workers. In a worker
   * process it runs the group's hooks; in the master it reads `start [-d] | stop | restart
   * | reload | upgrade | status` from argv.
   */
  async runAll(argv: string[] = process.argv.slice(2)): Promise<void> {
    if (IN_WORKER) {
      const { worker } = await import('../worker/worker.js')
      const entry = this.#groups.get(worker.group)
      if (!entry) throw new Error(`this worker's group "${worker.group}" is not defined in this script`)
      const hooks = entry.hooks ?? {}
      if (hooks.onWorkerStop) worker.onStop(() => hooks.onWorkerStop?.(worker))
      if (hooks.onWorkerReload) worker.onReload(() => hooks.onWorkerReload?.(worker))
      await hooks.onWorkerStart?.(worker)
      worker.ready()
      return
    }
    const { runScriptCommand } = await import('../cli/script-commands.js')
    await runScriptCommand(this, argv)
  }

  #log(line: string): void {
    const log = this.#options.log
    if (log === false) return
    if (log) log(line)
    // Event messages may quote a worker's stderr: no control bytes reach a terminal.
    else {
      const groups = [...this.#groups.values()].map((g) => g.options)
      const format = masterLineFormat(this.#options, groups)
      const text = format.json ? line : visible(line)
      process.stderr.write(`${masterLine(format, this.name, `[baton ${this.name}]`, text)}\n`)
    }
  }

  #onNativeEvent(json: string): void {
    let event: SupervisorEvent
    try {
      event = fromCore<SupervisorEvent>(json)
    } catch {
      return
    }
    if ('message' in event && event.type !== 'worker:spawn') this.#log(event.message)
    switch (event.type) {
      case 'fleet:ready':
        this.#starting?.resolve()
        this.#starting = undefined
        break
      case 'fleet:start-failed':
        this.#startFailure = event.reason
        break
      case 'reload:done':
      case 'reload:failed': {
        const report: ReloadReport = event
        for (const t of report.tickets) {
          const waiter = this.#reloads.get(t)
          if (!waiter) continue
          this.#reloads.delete(t)
          if (report.outcome === 'done') waiter.resolve(report)
          else waiter.reject(new ReloadError(report))
        }
        break
      }
      case 'scale:done':
      case 'scale:failed': {
        const waiter = this.#scales.get(event.ticket)
        if (waiter) {
          this.#scales.delete(event.ticket)
          if (event.type === 'scale:done') waiter.resolve()
          else waiter.reject(new Error(event.message))
        }
        break
      }
      case 'upgrade:takeover':
        if (this.#fleet.health !== undefined) this.#takeHealth(this.#fleet.health)
        break
      case 'upgrade:done':
      case 'upgrade:failed': {
        const e: UpgradeEvent = event
        if (event.type === 'upgrade:done') {
          this.#successor = e.to
          // The new master serves; its health endpoint takes the address as soon as it is free.
          void this.#closeHealth()
        }
        for (const t of e.tickets) {
          const waiter = this.#upgrades.get(t)
          if (!waiter) continue
          this.#upgrades.delete(t)
          if (event.type === 'upgrade:done') waiter.resolve(e)
          else waiter.reject(new Error(e.message))
        }
        break
      }
      case 'fleet:stopped':
        this.#onStopped()
        break
    }
    // Listener errors must not break the supervisor's bookkeeping above.
    try {
      ;(this.emit as (name: string, arg: unknown) => boolean)(event.type, event)
    } catch (e) {
      this.#log(`an event listener for ${event.type} threw: ${(e as Error).stack ?? String(e)}`)
    }
  }

  /** `baton reload` from the control socket, with `beforeReload`: prepare, then run it. */
  #onReloadRequested(ticket: number): void {
    const nat = this.#native
    if (!nat) return
    // A failure was answered (and logged) by the core through failReload.
    this.#prepared(() => nat.reloadTicket(ticket), ticket).catch(() => undefined)
  }

  #onStopped(): void {
    this.#hasStopped = true
    for (const [signal, handler] of this.#signalHandlers) process.off(signal, handler)
    this.#signalHandlers = []
    if (this.#starting) {
      this.#starting.reject(new StartError(this.#startFailure ?? 'the fleet stopped before it was ready'))
      this.#starting = undefined
    }
    for (const [, waiter] of this.#reloads) {
      waiter.reject(new Error('the fleet stopped before the reload finished'))
    }
    this.#reloads.clear()
    for (const [, waiter] of this.#scales) {
      waiter.reject(new Error('the fleet stopped before the scale finished'))
    }
    this.#scales.clear()
    // The health port is closed before `stopped` resolves (and so before the CLI exits).
    this.#closeHealth().then(() => this.#resolveStopped?.())
  }

  /**
   * Listen on the health address the old master is releasing (after `baton upgrade`):
   * retried every 50 ms for up to 10 s.
   */
  #takeHealth(target: ListenTarget, tries = 200): void {
    import('./health.js')
      .then(({ HealthServer }) => HealthServer.listen(target, () => this.status(), this.#healthOptions()))
      .then(
        (server) => {
          if (this.#hasStopped || this.#health !== undefined) {
            void server.close()
            return
          }
          this.#health = server
          this.#log(`health endpoint on ${server.address}`)
        },
        (e: Error) => {
          if (this.#hasStopped) return
          if (tries > 1) setTimeout(() => this.#takeHealth(target, tries - 1), 50).unref()
          else this.#log(`health: cannot listen on ${target.address} after the upgrade: ${e.message}`)
        },
      )
  }

  /** How the health endpoint answers: detail or not, and the status's age from the core. */
  #healthOptions(): HealthOptions {
    return { detail: this.#fleet.options.healthDetail === true, ageMs: () => this.#native?.statusAgeMs() ?? 0 }
  }

  #closeHealth(): Promise<void> {
    const health = this.#health
    this.#health = undefined
    return health ? health.close() : Promise.resolve()
  }

  #installSignals(): void {
    const stop = (force: boolean) => {
      try {
        this.#native?.stop(force)
      } catch {
        // Already stopped.
      }
    }
    const reload = () => {
      this.reload().catch((e: Error) => {
        // The core logged the report of a failed or cancelled reload (its event's message)
        // and a config that could not be re-read: say the rest only (e.g. not started).
        if (!(e instanceof ReloadError) && this.#options.beforeReload === undefined) this.#log(`reload: ${e.message}`)
      })
    }
    const handlers: Array<[NodeJS.Signals, () => void]> = [
      ['SIGTERM', () => stop(false)],
      ['SIGINT', () => stop(++this.#sigints > 1)],
      ['SIGHUP', reload],
      ['SIGUSR2', reload],
    ]
    for (const [signal, handler] of handlers) process.on(signal, handler)
    this.#signalHandlers = handlers
  }
}

/** The variable a master started by `baton upgrade` finds its handover in (the core's `upgrade::ENV`). */
const HANDOVER_VARIABLE = 'BATON_UPGRADE'

/** The fleet name in this process's handover, if `baton upgrade` started it. */
function handoverName(): string | undefined {
  const text = process.env[HANDOVER_VARIABLE]
  if (!text) return undefined
  try {
    const name = (JSON.parse(text) as { name?: unknown }).name
    return typeof name === 'string' ? name : undefined
  } catch {
    return undefined // the core reports the malformed value
  }
}

/** The handover (for the core), removed from the environment. */
function takeHandover(): string | undefined {
  const text = process.env[HANDOVER_VARIABLE] || undefined
  delete process.env[HANDOVER_VARIABLE]
  return text
}

function clearListenVariables(): void {
  for (const k of LISTEN_VARIABLES) delete process.env[k]
}

/**
 * The drop-in preload (preload.ts) as `--import` takes it: the built one in dist/, from
 * dist/ and from src/ alike (so workers share the `baton` module that apps import).
 */
const PRELOAD = new URL('../../dist/worker/preload.js', import.meta.url).href

function toBinding(g: ResolvedGroup): BindingGroupOptions {
  const { name, listenNames, ...options } = g
  const own = options.env ?? {}
  const env: Record<string, string | undefined> = { ...process.env, ...own }
  // The master's socket activation variables are not the workers' (the core gives them
  // their own); leaving them out also keeps them out of config-file reload diffs.
  for (const k of LISTEN_VARIABLES) if (!(k in own)) delete env[k]
  if (!(HANDOVER_VARIABLE in own)) delete env[HANDOVER_VARIABLE]
  const execArgv = options.execArgv ?? []
  return {
    name,
    program: process.execPath,
    execArgv: options.dropIn !== false ? ['--import', PRELOAD, ...execArgv] : execArgv,
    env: Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [[k, v]])),
    listenNames,
    options,
  }
}
