/**
 * `GET /metrics` on the health endpoint: the Prometheus text format, checked by
 * `promtool check metrics` (Debian's prometheus package; .ci/run installs it), served
 * without `--health-detail` since it is numbers only, and its counters move after a
 * reload and after a worker's kill -9. Real CLI masters and real HTTP on 127.0.0.1.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import * as http from 'node:http'
import { formatMetrics, escapeLabelValue } from '../src/master/metrics.js'
import type { Status } from '../src/types.js'
import { versionedFleet } from './helpers/fleet.js'
import { freePort, waitFor } from './helpers/processes.js'

interface Scrape {
  status: number
  contentType: string | undefined
  body: string
}

function scrape(port: number, path = '/metrics'): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body }))
    })
    req.setTimeout(5000, () => req.destroy(new Error('metrics: no answer within 5 s')))
    req.on('error', reject)
  })
}

/** `promtool check metrics` on `text`: fails the test with a clear message when promtool is missing. */
function promtool(text: string): { code: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  if (r.error) {
    throw new Error(
      `promtool is needed to check /metrics (${r.error.message}): install Debian's prometheus package ` +
        '(node scripts/ci-tools.mjs promtool, as .ci/run does, or apt-get install prometheus)',
    )
  }
  return { code: r.status, output: `${r.stdout}${r.stderr}` }
}

/** The value of the sample `series` (the name and its labels exactly as written), or NaN. */
function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? NaN : Number(line.slice(series.length + 1))
}

test.serial(
  'promtool accepts /metrics; reloads_total{done} and the duration histogram move after a reload, restarts after kill -9',
  async (t) => {
    const health = await freePort()
    // No --health-detail: the metrics are numbers only and served anyway.
    const { fleet } = await versionedFleet(t, { count: 2, flags: ['--health', `127.0.0.1:${health}`] })
    // A worker's open connections are known once baton's runtime in it has reported them
    // (shortly after it is ready): scrape until both have.
    const first = await waitFor(
      async () => {
        const s = await scrape(health)
        const reported = [0, 1].every(
          (id) => !Number.isNaN(value(s.body, `baton_worker_open_connections{group="fleet",id="${id}"}`)),
        )
        return reported ? s : undefined
      },
      { timeoutMs: 10_000, message: 'every worker reported its open connections' },
    )
    t.is(first.status, 200, first.body)
    t.is(first.contentType, 'text/plain; version=0.0.4; charset=utf-8')
    const check = promtool(first.body)
    t.is(check.code, 0, `promtool check metrics:\n${check.output}\n${first.body}`)
    t.is(check.output.trim(), '', 'no lint problems')

    // Numbers only: the label names are these, and no path or worker text appears.
    const labelNames = new Set([...first.body.matchAll(/[{,]([a-z_]+)="/g)].map((m) => m[1]))
    t.deepEqual([...labelNames].sort(), ['group', 'id', 'le', 'outcome', 'state'])
    t.notRegex(first.body.replace(/^#.*$/gm, ''), /\//, 'no path in a sample')
    t.is(value(first.body, 'baton_ready'), 1)
    t.is(value(first.body, 'baton_workers{group="fleet",state="ready"}'), 2)
    t.is(value(first.body, 'baton_group_desired_workers{group="fleet"}'), 2)
    for (const id of [0, 1]) {
      t.true(value(first.body, `baton_worker_resident_memory_bytes{group="fleet",id="${id}"}`) > 0)
      t.true(value(first.body, `baton_worker_cpu_seconds_total{group="fleet",id="${id}"}`) >= 0)
      t.true(value(first.body, `baton_worker_open_connections{group="fleet",id="${id}"}`) >= 0)
    }
    t.true(value(first.body, 'process_resident_memory_bytes') > 0)
    t.true(value(first.body, 'process_open_fds') > 3)

    const done = value(first.body, 'baton_reloads_total{outcome="done"}')
    const durations = value(first.body, 'baton_reload_duration_seconds_count')
    const restarts = value(first.body, 'baton_worker_restarts_total{group="fleet"}')
    t.is(done, 0)
    t.is(durations, 0)
    t.is(restarts, 0)

    const reload = await fleet.cli(['reload', fleet.name])
    t.is(reload.code, 0, reload.stderr)
    const afterReload = await scrape(health)
    t.is(value(afterReload.body, 'baton_reloads_total{outcome="done"}'), done + 1)
    t.is(value(afterReload.body, 'baton_reloads_total{outcome="failed"}'), 0)
    t.is(value(afterReload.body, 'baton_reload_duration_seconds_count'), durations + 1)
    t.true(value(afterReload.body, 'baton_reload_duration_seconds_sum') > 0)
    t.is(value(afterReload.body, 'baton_reload_duration_seconds_bucket{le="+Inf"}'), durations + 1)
    t.is(promtool(afterReload.body).code, 0)

    const victim = (await fleet.status()).workers.find((w) => w.id === 1)?.pid
    t.truthy(victim)
    process.kill(victim!, 'SIGKILL')
    const afterKill = await waitFor(
      async () => {
        const s = await scrape(health)
        return value(s.body, 'baton_worker_restarts_total{group="fleet"}') === restarts + 1 ? s : undefined
      },
      { timeoutMs: 10_000, message: 'baton_worker_restarts_total{group="fleet"} up by 1 after kill -9' },
    )
    const check2 = promtool(afterKill.body)
    t.is(check2.code, 0, check2.output)
    t.is(value(afterKill.body, 'baton_reloads_total{outcome="done"}'), done + 1, 'a crash is not a reload')
    t.is((await fleet.cli(['stop', fleet.name])).code, 0)
  },
)

test('the other paths still answer the health body', async (t) => {
  const health = await freePort()
  const { fleet } = await versionedFleet(t, { count: 1, flags: ['--health', `127.0.0.1:${health}`] })
  const r = await scrape(health, '/healthz')
  t.is(r.status, 200)
  t.deepEqual(JSON.parse(r.body), { ready: true, groups: { fleet: { ready: 1, count: 1 } } })
  t.is((await scrape(health, '/metrics?x=1')).contentType, 'text/plain; version=0.0.4; charset=utf-8')
  t.is((await fleet.cli(['stop', fleet.name])).code, 0)
})

test('label values are escaped and every group shows every state', (t) => {
  t.is(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd')
  const status = {
    ready: false,
    reloading: false,
    generation: 3,
    groups: [{ name: 'we"b', count: 2 }],
    workers: [
      // A start-first reload: slot 0 has its old worker and its replacement.
      { group: 'we"b', id: 0, pid: 10, generation: 2, state: 'ready', rssBytes: 100, cpuSeconds: 1.5, connections: 3 },
      {
        group: 'we"b',
        id: 0,
        pid: 11,
        generation: 3,
        state: 'starting',
        rssBytes: 200,
        cpuSeconds: 0.1,
        connections: null,
      },
      {
        group: 'we"b',
        id: 1,
        pid: null,
        generation: 2,
        state: 'starting',
        rssBytes: null,
        cpuSeconds: null,
        connections: null,
      },
    ],
    counters: {
      restarts: { 'we"b': 4 },
      memoryReplacements: { 'we"b': 3 },
      reloads: { done: 1, failed: 2, cancelled: 0 },
      reloadSeconds: {
        buckets: [
          { le: 0.5, count: 1 },
          { le: 1, count: 2 },
        ],
        count: 3,
        sum: 12.5,
      },
    },
    rssBytes: null,
    openFds: 9,
    cpuSeconds: 0.25,
  } as unknown as Status
  const text = formatMetrics(status, { startTimeSeconds: 1700000000 })
  t.is(value(text, 'baton_workers{group="we\\"b",state="starting"}'), 2)
  t.is(value(text, 'baton_worker_memory_replacements_total{group="we\\"b"}'), 3)
  t.is(value(text, 'baton_workers{group="we\\"b",state="stopping"}'), 0)
  t.is(value(text, 'baton_worker_resident_memory_bytes{group="we\\"b",id="0"}'), 200, 'the newer worker of a slot')
  t.false(text.includes('baton_worker_open_connections'), 'no connections known: no family')
  t.false(text.includes('process_resident_memory_bytes'), 'unknown: omitted')
  t.is(value(text, 'baton_reload_duration_seconds_bucket{le="1"}'), 2)
  t.is(value(text, 'baton_reload_duration_seconds_bucket{le="+Inf"}'), 3)
  t.is(value(text, 'process_start_time_seconds'), 1700000000)
  const check = promtool(text)
  t.is(check.code, 0, check.output)
})
