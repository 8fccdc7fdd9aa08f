/**
 * The health endpoint (`baton start --health ADDR`): 200 while the fleet is ready, 503 while
 * it is not or its status is stale; by default only `{"ready", "groups"}`, the full status
 * JSON (with `notReadyReason`) with `--health-detail`; a capped number of connections, each
 * closed after a deadline. Real CLI masters and real HTTP requests on 127.0.0.1.
 */
import test from 'ava'
import * as http from 'node:http'
import * as net from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, readConfig } from '../src/master/config-file.js'
import { HEALTH_CONNECTION_TIMEOUT_MS, HEALTH_MAX_CONNECTIONS, HEALTH_STALE_MS } from '../src/master/health.js'
import { OptionsError, Supervisor } from '../src/index.js'
import type { Status } from '../src/types.js'
import { fixture, runCli, startFleet, versionedFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

interface Probe {
  status: number
  headers: http.IncomingHttpHeaders
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
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json })
      })
    })
    req.setTimeout(5000, () => req.destroy(new Error('health: no answer within 5 s')))
    req.on('error', reject)
    req.end()
  })
}

/** One raw control request to a master's control socket; resolves with its answer line. */
function control(runtimeDir: string, name: string, request: object): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const s = net.connect(join(runtimeDir, `${name}.sock`))
    let data = ''
    s.setEncoding('utf8')
    s.on('data', (c: string) => {
      data += c
      const nl = data.indexOf('\n')
      if (nl >= 0) {
        s.destroy()
        resolve(JSON.parse(data.slice(0, nl)) as Record<string, unknown>)
      }
    })
    s.on('error', reject)
    s.write(`${JSON.stringify(request)}\n`)
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
  'with --health-detail a ready fleet answers 200 with the status JSON on every GET path and HEAD; the port is closed after stop',
  async (t) => {
    const health = await freePort()
    const { fleet } = await versionedFleet(t, {
      count: 2,
      flags: ['--health', `127.0.0.1:${health}`, '--health-detail'],
    })
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
    flags: ['--health', `127.0.0.1:${health}`, '--health-detail'],
    noWait: true,
  })
  const r = await waitFor(() => probe(health), { message: `the health endpoint answers; log:\n${fleet.log.text}` })
  t.is(r.status, 503)
  t.is(r.json?.ready, false)
  t.regex(r.json?.notReadyReason ?? '', /starting/)
  const head = await probe(health, 'HEAD')
  t.is(head.status, 503)
})

test.serial('the default body is only ready and ready/count per group: no path, pid or stderr line', async (t) => {
  const health = await freePort()
  const vf = await versionedFleet(t, { count: 2, flags: ['--health', `127.0.0.1:${health}`] })
  // A failed deploy: the status now carries the replacement's stderr tail and the paths.
  vf.deploy('throw')
  const reload = await vf.fleet.cli(['reload', vf.fleet.name])
  t.not(reload.code, 0, 'the bad deploy fails the reload')
  const full = await vf.fleet.status()
  const tail = full.lastReload?.failure?.stderrTail ?? ''
  t.regex(tail, /BOOT_FAIL: version file says throw/, 'the full status has a stderr tail')

  const r = await probe(health)
  t.is(r.status, 200)
  t.deepEqual(JSON.parse(r.body), { ready: true, groups: { fleet: { ready: 2, count: 2 } } })
  t.is(r.headers['content-type'], 'application/json')
  t.notRegex(r.body, /BOOT_FAIL|stderr|pid|\//, 'no stderr line, pid or path in the default body')
  for (const w of full.workers) t.false(r.body.includes(String(w.pid)), `no worker pid (${w.pid})`)
  t.false(r.body.includes(String(full.pid)), 'no master pid')
  t.is((await probe(health, 'HEAD')).body, '')

  // The same fleet with --health-detail serves the full status, stderr tail included.
  const detailed = await freePort()
  const vf2 = await versionedFleet(t, { count: 1, flags: ['--health', `127.0.0.1:${detailed}`, '--health-detail'] })
  vf2.deploy('throw')
  t.not((await vf2.fleet.cli(['reload', vf2.fleet.name])).code, 0)
  const d = await probe(detailed)
  t.is(d.status, 200)
  t.regex(d.json?.lastReload?.failure?.stderrTail ?? '', /BOOT_FAIL: version file says throw/)
  t.is(d.json?.pid, vf2.fleet.pid)
})

test.serial('a not-ready fleet answers 503 with the minimal body', async (t) => {
  const health = await freePort()
  const vf = await versionedFleet(t, { count: 1, flags: ['--order', 'stop-first', '--health', `127.0.0.1:${health}`] })
  vf.deploy('hang')
  const reload = vf.fleet.cli(['reload', vf.fleet.name])
  const r = await waitFor(
    async () => {
      const p = await probe(health)
      return p.status === 503 ? p : undefined
    },
    { message: 'a 503 during the stop-first reload' },
  )
  t.deepEqual(JSON.parse(r.body), { ready: false, groups: { fleet: { ready: 0, count: 1 } } })
  t.is((await vf.fleet.cli(['stop', vf.fleet.name])).code, 0)
  await reload
})

test.serial(
  `a stuck supervisor loop makes the endpoint answer 503 within ${HEALTH_STALE_MS} ms, and 200 once it turns again`,
  async (t) => {
    const health = await freePort()
    const vf = await versionedFleet(t, {
      count: 1,
      flags: ['--health', `127.0.0.1:${health}`],
      env: { BATON_TEST_HOOKS: '1' },
    })
    t.is((await probe(health)).status, 200)
    // An idle loop still turns: no 503 after more than the staleness window.
    await new Promise((resolve) => setTimeout(resolve, HEALTH_STALE_MS + 1500))
    t.is((await probe(health)).status, 200, 'an idle fleet stays healthy')

    const freezeMs = HEALTH_STALE_MS + 4000
    const frozenAt = Date.now()
    t.deepEqual(await control(vf.fleet.runtimeDir, vf.fleet.name, { cmd: 'test-freeze', ms: freezeMs }), {
      ok: true,
      frozenMs: freezeMs,
    })
    const stale = await waitFor(
      async () => {
        const p = await probe(health)
        return p.status === 503 ? p : undefined
      },
      { timeoutMs: freezeMs, intervalMs: 200, message: 'a 503 while the loop is frozen' },
    )
    const after = Date.now() - frozenAt
    t.true(after >= HEALTH_STALE_MS, `not before the window (${after} ms)`)
    t.true(after < HEALTH_STALE_MS + 2000, `503 within the window (${after} ms)`)
    t.deepEqual(JSON.parse(stale.body), { ready: false, groups: { fleet: { ready: 1, count: 1 } } })
    t.is((await httpGet({ port: vf.port })).body, 'v1', 'the workers still serve')
    const back = await waitFor(
      async () => {
        const p = await probe(health)
        return p.status === 200 ? p : undefined
      },
      { timeoutMs: 15_000, intervalMs: 200, message: '200 again after the freeze' },
    )
    t.true(Date.now() - frozenAt >= freezeMs - 500, 'healthy again only after the freeze')
    t.is(JSON.parse(back.body).ready, true)
  },
)

test.serial('without BATON_TEST_HOOKS the test-freeze request is refused like an unknown command', async (t) => {
  const { fleet } = await versionedFleet(t, { count: 1 })
  const r = await control(fleet.runtimeDir, fleet.name, { cmd: 'test-freeze', ms: 60_000 })
  t.is(r.ok, false)
  t.regex(String(r.error), /unknown control command "test-freeze"/)
  t.is((await fleet.status()).ready, true, 'the loop answers at once')
})

test.serial(
  `idle connections beyond ${HEALTH_MAX_CONNECTIONS} are closed at once; idle ones are closed after ${HEALTH_CONNECTION_TIMEOUT_MS} ms`,
  async (t) => {
    const health = await freePort()
    const { fleet } = await versionedFleet(t, { count: 1, flags: ['--health', `127.0.0.1:${health}`] })
    const extra = 20
    const sockets: net.Socket[] = []
    t.teardown(() => sockets.forEach((s) => s.destroy()))
    const closedAt: number[] = []
    const openedAt = Date.now()
    await Promise.all(
      Array.from(
        { length: HEALTH_MAX_CONNECTIONS + extra },
        () =>
          new Promise<void>((resolve) => {
            const s = net.connect(health, '127.0.0.1')
            sockets.push(s)
            s.on('error', () => undefined)
            s.once('close', () => closedAt.push(Date.now() - openedAt))
            // A slowloris client: a partial request line, never finished.
            s.once('connect', () => {
              s.write('GET / HTTP/1.1\r\nHost: x\r\n')
              resolve()
            })
          }),
      ),
    )
    await waitFor(() => closedAt.length >= extra, { timeoutMs: 1500, message: `${extra} excess connections closed` })
    t.true(
      closedAt.slice(0, extra).every((ms) => ms < 1000),
      `the excess was closed at once: ${closedAt.slice(0, extra).join(', ')} ms`,
    )
    const asked = Date.now()
    const r = await waitFor(() => probe(health).catch(() => undefined), {
      timeoutMs: HEALTH_CONNECTION_TIMEOUT_MS + 3000,
      intervalMs: 100,
      message: 'a new request is answered once the idle connections are closed',
    })
    t.is(r.status, 200)
    t.true(Date.now() - asked < HEALTH_CONNECTION_TIMEOUT_MS + 1500, `answered within ${Date.now() - asked} ms`)
    await waitFor(() => closedAt.length === sockets.length, {
      timeoutMs: HEALTH_CONNECTION_TIMEOUT_MS + 2000,
      message: 'every slow connection was closed',
    })
    t.true(
      closedAt.every((ms) => ms < HEALTH_CONNECTION_TIMEOUT_MS + 1500),
      'none held past the deadline',
    )
    const s = await fleet.status()
    t.is(s.ready, true, 'the master is fine')
  },
)

test.serial('a stop-first reload of a one-worker group is not ready while its slot is empty', async (t) => {
  const health = await freePort()
  const vf = await versionedFleet(t, {
    count: 1,
    flags: ['--order', 'stop-first', '--health', `127.0.0.1:${health}`, '--health-detail'],
  })
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
  const vf = await versionedFleet(t, { count: 1, flags: ['--health', `127.0.0.1:${health}`, '--health-detail'] })
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
    const d = t.throws(() => new Supervisor({ healthDetail: true }), { instanceOf: OptionsError })
    t.is(d?.field, 'healthDetail')
    t.regex(d?.message ?? '', /set health to an address/)
    const nb = t.throws(() => new Supervisor({ health: ':0', healthDetail: 'yes' as unknown as boolean }), {
      instanceOf: OptionsError,
    })
    t.is(nb?.field, 'healthDetail')
    const r0 = await runCli(['start', fixture('app.mjs'), '--count', '1', '--health-detail'], env)
    t.is(r0.code, 2, r0.stderr)
    t.regex(r0.stderr, /healthDetail/)

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

test('a config file may set health and healthDetail; a wrong healthDetail names the file and the key', async (t) => {
  const dir = await tmpDir('baton-health-config-')
  t.teardown(() => dir.cleanup())
  const file = join(dir.path, 'baton.config.json')
  const groups = { web: { script: fixture('app.mjs'), count: 1 } }
  writeFileSync(file, JSON.stringify({ groups, health: '127.0.0.1:0', healthDetail: true }))
  const options = await readConfig(file)
  t.is(options.health, '127.0.0.1:0')
  t.is(options.healthDetail, true)
  writeFileSync(file, JSON.stringify({ groups, health: '127.0.0.1:0', healthDetail: 'yes' }))
  const e = await t.throwsAsync(readConfig(file), { instanceOf: ConfigError })
  t.is(e?.key, 'healthDetail')
  t.true(e?.message.startsWith(file))
})
