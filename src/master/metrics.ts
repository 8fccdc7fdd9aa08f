/**
 * `GET /metrics` on the health endpoint (src/master/health.ts): the fleet's status as
 * Prometheus metrics, in the text exposition format 0.0.4, from one status snapshot.
 *
 * Numbers only: label values are group names, worker ids, worker states and reload
 * outcomes; no path, pid, command line or worker output. So the endpoint serves them
 * with or without `--health-detail`. The list (and alert examples) is in
 * docs/observability.md.
 *
 * A small formatter rather than a client library: the metrics are a pure function of a
 * status snapshot (the counters live in the Rust core, crates/baton-core/src/metrics.rs),
 * so a registry with its own mutable state (prom-client keeps a global one) would only
 * mirror them; escaping label values and HELP text is the whole of the format's rules.
 */
import type { Status, WorkerState, WorkerStatus } from '../types.js'

/** The `content-type` of the text exposition format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

const STATES: WorkerState[] = ['starting', 'ready', 'stopping']

type Labels = Record<string, string>

/** A label value with `\`, `"` and newlines escaped, as the text format requires. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** A sample value: integers as they are, `+Inf`/`-Inf`/`NaN` spelled as the format wants. */
function num(n: number): string {
  if (Number.isNaN(n)) return 'NaN'
  if (n === Infinity) return '+Inf'
  if (n === -Infinity) return '-Inf'
  return String(n)
}

class Exposition {
  readonly #lines: string[] = []

  /** Start a metric family: its HELP (no newlines or backslashes in ours) and TYPE. */
  family(name: string, type: 'gauge' | 'counter' | 'histogram', help: string): this {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    return this
  }

  sample(name: string, labels: Labels, value: number): this {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
    this.#lines.push(`${name}${pairs.length ? `{${pairs.join(',')}}` : ''} ${num(value)}`)
    return this
  }

  text(): string {
    return `${this.#lines.join('\n')}\n`
  }
}

/**
 * The worker shown for each slot: during a reload a slot briefly has two processes (the
 * old one stopping or still serving, its replacement starting); the per-worker metrics
 * show the newer one (higher generation), so each `{group, id}` series is one process.
 * `baton_workers` still counts both.
 */
function newestPerSlot(workers: WorkerStatus[]): WorkerStatus[] {
  const bySlot = new Map<string, WorkerStatus>()
  for (const w of workers) {
    const key = JSON.stringify([w.group, w.id])
    const seen = bySlot.get(key)
    if (seen === undefined || w.generation >= seen.generation) bySlot.set(key, w)
  }
  return [...bySlot.values()]
}

/** Facts about the master process that Node knows better than the status does. */
export interface MasterProcess {
  /** When the master process started, in seconds since the Unix epoch. */
  startTimeSeconds: number
}

/** The metrics text for one status snapshot (see docs/observability.md for the list). */
export function formatMetrics(status: Status, master: MasterProcess): string {
  const out = new Exposition()
  const counters = status.counters

  out.family('baton_ready', 'gauge', 'Whether the fleet serves (1): what the health endpoint answers 200 for.')
  out.sample('baton_ready', {}, status.ready ? 1 : 0)
  out.family('baton_reloading', 'gauge', 'Whether a reload is running (1).')
  out.sample('baton_reloading', {}, status.reloading ? 1 : 0)
  out.family('baton_generation', 'gauge', 'The fleet generation (grows by one per reload).')
  out.sample('baton_generation', {}, status.generation)

  out.family('baton_group_desired_workers', 'gauge', 'Workers each group is configured to run (its count).')
  for (const g of status.groups) out.sample('baton_group_desired_workers', { group: g.name }, g.count)

  out.family(
    'baton_workers',
    'gauge',
    'Workers by group and state, as baton status lists them (an empty slot waiting for its restart is starting).',
  )
  for (const g of status.groups) {
    for (const state of STATES) {
      const n = status.workers.filter((w) => w.group === g.name && w.state === state).length
      out.sample('baton_workers', { group: g.name, state }, n)
    }
  }

  if (counters) {
    out.family(
      'baton_worker_restarts_total',
      'counter',
      'Workers that exited without being asked to (a crash, or not ready in time), by group; the slot is refilled.',
    )
    for (const [group, n] of Object.entries(counters.restarts)) out.sample('baton_worker_restarts_total', { group }, n)

    out.family(
      'baton_worker_memory_replacements_total',
      'counter',
      'Workers replaced gracefully because their RSS stayed above maxMemory for 3 s, by group.',
    )
    for (const [group, n] of Object.entries(counters.memoryReplacements))
      out.sample('baton_worker_memory_replacements_total', { group }, n)

    out.family(
      'baton_reloads_total',
      'counter',
      'Reloads by outcome: done, failed (a new worker failed, or the reload was refused), cancelled (the fleet stopped).',
    )
    for (const outcome of ['done', 'failed', 'cancelled'] as const) {
      out.sample('baton_reloads_total', { outcome }, counters.reloads[outcome])
    }

    const h = counters.reloadSeconds
    out.family('baton_reload_duration_seconds', 'histogram', 'How long reloads took, from start to their outcome.')
    for (const b of h.buckets) out.sample('baton_reload_duration_seconds_bucket', { le: num(b.le) }, b.count)
    out.sample('baton_reload_duration_seconds_bucket', { le: '+Inf' }, h.count)
    out.sample('baton_reload_duration_seconds_sum', {}, h.sum)
    out.sample('baton_reload_duration_seconds_count', {}, h.count)
  }

  const shown = newestPerSlot(status.workers.filter((w) => w.pid !== null))
  const perWorker = (
    name: string,
    type: 'gauge' | 'counter',
    help: string,
    value: (w: WorkerStatus) => number | null | undefined,
  ): void => {
    const rows = shown.flatMap((w) => {
      const v = value(w)
      return v === null || v === undefined ? [] : [{ w, v }]
    })
    if (rows.length === 0) return
    out.family(name, type, help)
    for (const { w, v } of rows) out.sample(name, { group: w.group, id: String(w.id) }, v)
  }
  perWorker(
    'baton_worker_resident_memory_bytes',
    'gauge',
    'Resident memory of each worker, in bytes.',
    (w) => w.rssBytes,
  )
  perWorker(
    'baton_worker_cpu_seconds_total',
    'counter',
    'CPU time (user + system) each worker has used since it started, in seconds.',
    (w) => w.cpuSeconds,
  )
  perWorker(
    'baton_worker_open_connections',
    'gauge',
    "Open connections on each worker's listen sockets, as baton's runtime in the worker reports them.",
    (w) => w.connections,
  )

  if (status.rssBytes !== null && status.rssBytes !== undefined) {
    out.family('process_resident_memory_bytes', 'gauge', "The master's resident memory, in bytes.")
    out.sample('process_resident_memory_bytes', {}, status.rssBytes)
  }
  if (status.openFds !== null && status.openFds !== undefined) {
    out.family('process_open_fds', 'gauge', 'File descriptors the master has open.')
    out.sample('process_open_fds', {}, status.openFds)
  }
  if (status.cpuSeconds !== null && status.cpuSeconds !== undefined) {
    out.family('process_cpu_seconds_total', 'counter', 'CPU time (user + system) the master has used, in seconds.')
    out.sample('process_cpu_seconds_total', {}, status.cpuSeconds)
  }
  out.family('process_start_time_seconds', 'gauge', 'When the master started, in seconds since the Unix epoch.')
  out.sample('process_start_time_seconds', {}, master.startTimeSeconds)
  return out.text()
}
