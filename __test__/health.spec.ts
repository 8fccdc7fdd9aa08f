/**
 * The health endpoint (`baton start --health ADDR`): 200 + status JSON while the fleet is
 * ready, 503 + status JSON (with `notReadyReason`) while it is not, through real CLI
 * masters and real HTTP requests on 127.0.0.1.
 */
import test from 'ava'
import * as http from 'node:http'
import * as net from 'node:net'
import { OptionsError, Supervisor } from '../src/index.js'
import type { Status } from '../src/types.js'
import { fixture, runCli, startFleet, versionedFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

interface Probe {
  status: number
  body: string
  /** The parsed body (GET only). */
  json: Status | undefined
}

/** One request to the health endpoint on a fresh connection. */
function probe(port: number, method = 'GET', path = '/'): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => {
        const json =
          body && res.headers['content-type'] === 'application/json' ? (JSON.parse(body) as Status) : undefined
        resolve({ status: res.statusCode ?? 0, body, json })
      })
    })
    req.setTimeout(5000, () => req.destroy(new Error('health: no answer within 5 s')))
    req.on('error', reject)
    req.end()
  })
}

/** Whether a TCP connection to 127.0.0.1:`port` is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'))
  })
}

test.serial(
  'a ready fleet answers 200 with the status JSON on every GET path and HEAD; the port is closed after stop',
  async (t) => {
    const health = await freePort()
    const { fleet } = await versionedFleet(t, { count: 2, flags: ['--health', `127.0.0.1:${health}`] })
    for (const path of ['/', '/ready', '/healthz']) {
      const r = await probe(health, 'GET', path)
      t.is(r.status, 200, path)
      t.is(r.json?.name, fleet.name)
      t.is(r.json?.ready, true)
      t.is(r.json?.notReadyReason, null)
      t.is(r.json?.workers.length, 2)
      t.true(r.json?.workers.every((w) => w.state === 'ready'))
    }
    const head = await probe(health, 'HEAD')
    t.is(head.status, 200)
    t.is(head.body, '')
    t.is((await probe(health, 'POST')).status, 405)
    t.regex(fleet.log.text, new RegExp(`health endpoint on 127\\.0\\.0\\.1:${health}`))
    const status = await fleet.status()
    t.is(status.ready, true, 'baton status --json carries ready too')

    const stop = await fleet.cli(['stop', fleet.name])
    t.is(stop.code, 0, stop.stderr)
    t.deepEqual(await fleet.exited, { code: 0, signal: null })
    t.true(await refused(health), 'the health port is closed once the master has stopped')
  },
)

test.serial('before the fleet is ready the endpoint answers 503 with the reason', async (t) => {
  const health = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 1,
    env: { NEVER_READY: '1' },
    flags: ['--health', `127.0.0.1:${health}`],
    noWait: true,
  })
  const r = await waitFor(() => probe(health), { message: `the health endpoint answers; log:\n${fleet.log.text}` })
  t.is(r.status, 503)
  t.is(r.json?.ready, false)
  t.regex(r.json?.notReadyReason ?? '', /starting/)
  const head = await probe(health, 'HEAD')
  t.is(head.status, 503)
})

test.serial('a stop-first reload of a one-worker group is not ready while its slot is empty', async (t) => {
  const health = await freePort()
  const vf = await versionedFleet(t, { count: 1, flags: ['--order', 'stop-first', '--health', `127.0.0.1:${health}`] })
  t.is((await probe(health)).status, 200)
  vf.deploy('hang') // the replacement never becomes ready
  const reload = vf.fleet.cli(['reload', vf.fleet.name])
  const r = await waitFor(
    async () => {
      const p = await probe(health)
      return p.status === 503 ? p : undefined
    },
    { message: 'a 503 during the stop-first reload' },
  )
  t.regex(r.json?.notReadyReason ?? '', /has no ready worker/)
  t.is(r.json?.reloading, true)
  const stop = await vf.fleet.cli(['stop', vf.fleet.name])
  t.is(stop.code, 0, stop.stderr)
  t.not((await reload).code, 0, 'the reload was cancelled by the stop')
})

test.serial('a start-first reload keeps the endpoint at 200 throughout', async (t) => {
  const health = await freePort()
  const vf = await versionedFleet(t, { count: 1, flags: ['--health', `127.0.0.1:${health}`] })
  vf.deploy('v2')
  let done = false
  const reload = vf.fleet.cli(['reload', vf.fleet.name]).finally(() => (done = true))
  const answers: number[] = []
  let sawReloading = false
  while (!done) {
    const p = await probe(health)
    answers.push(p.status)
    sawReloading ||= p.json?.reloading === true
  }
  const r = await reload
  t.is(r.code, 0, r.stderr)
  t.true(sawReloading, `some probes ran during the reload (${answers.length} probes)`)
  t.deepEqual(
    answers.filter((s) => s !== 200),
    [],
    `every one of ${answers.length} probes answered 200`,
  )
  t.is((await httpGet({ port: vf.port })).body, 'v2', 'the reload happened')
  t.is((await probe(health)).status, 200)
})

test.serial(
  'a bad health address fails, naming health; a health port in use fails the start before any worker',
  async (t) => {
    const dir = await tmpDir('baton-health-')
    t.teardown(() => dir.cleanup())
    const env = { BATON_RUNTIME_DIR: dir.path }
    for (const bad of ['nonsense', '127.0.0.1:99999', 'ftp://x:1']) {
      const r = await runCli(['start', fixture('app.mjs'), '--count', '1', '--health', bad], env)
      t.is(r.code, 2, `${bad}: ${r.stderr}`)
      t.regex(r.stderr, /health/, bad)
    }
    const e = t.throws(() => new Supervisor({ health: 42 as unknown as string }), { instanceOf: OptionsError })
    t.is(e?.field, 'health')

    const busy = net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    t.teardown(() => busy.close())
    const port = (busy.address() as net.AddressInfo).port
    const r = await runCli(['start', fixture('app.mjs'), '--count', '1', '--health', `127.0.0.1:${port}`], env)
    t.is(r.code, 1, r.stderr)
    t.regex(r.stderr, new RegExp(`health: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`))
    t.notRegex(r.stderr, /app#0/, 'no worker was spawned')
  },
)
