/**
 * The supervisor foundation, end to end through the `baton` CLI: real masters, real
 * workers, real sockets on 127.0.0.1, real signals.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readdirSync, readlinkSync } from 'node:fs'
import * as net from 'node:net'
import { fixture, startFleet, BATON } from './helpers/fleet.js'
import { httpGet, portIsFree, runtimeFiles } from './helpers/http.js'
import { freePort, isAlive, OutputBuffer, ProcessTracker, tmpDir, waitFor, waitForExit } from './helpers/processes.js'

const CONTRACT_WORKER_FIELDS = ['group', 'id', 'pid', 'generation', 'state', 'restarts', 'rssBytes', 'startedAt']

function processesWithMarker(marker: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', marker], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((pid) => pid !== process.pid && isAlive(pid))
  } catch {
    return [] // pgrep exits 1 when nothing matches
  }
}

test('start serves HTTP from 3 distinct workers and status --json has the contract fields', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 3, listen: [`127.0.0.1:${port}`] })
  const pids = new Set<number>()
  await waitFor(
    async () => {
      const r = await httpGet({ port, path: '/info' })
      pids.add((JSON.parse(r.body) as { pid: number }).pid)
      return pids.size === 3
    },
    { timeoutMs: 15_000, intervalMs: 1, message: '3 distinct worker pids answering' },
  )
  const status = await fleet.status()
  t.is(status.name, 'fleet')
  t.is(status.pid, fleet.pid)
  t.is(status.generation, 1)
  t.false(status.reloading)
  t.is(status.workers.length, 3)
  for (const w of status.workers) {
    for (const field of CONTRACT_WORKER_FIELDS) t.true(field in w, `worker has ${field}`)
    t.is(w.state, 'ready')
    t.is(w.group, 'fleet')
    t.true(typeof w.rssBytes === 'number' && w.rssBytes > 0)
    t.false(Number.isNaN(Date.parse(w.startedAt ?? '')))
  }
  t.deepEqual(status.workers.map((w) => w.pid).sort(), [...pids].sort())
  t.deepEqual(status.workers.map((w) => w.id).sort(), [0, 1, 2])

  const table = await fleet.cli(['status', 'fleet'])
  t.is(table.code, 0)
  for (const col of ['GROUP', 'ID', 'PID', 'GEN', 'STATE', 'UPTIME', 'RESTARTS', 'MEMORY'])
    t.regex(table.stdout, new RegExp(col))
})

test('kill -9 of a worker: its slot is refilled and restarts counts it', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 2, listen: [`127.0.0.1:${port}`] })
  const before = await fleet.status()
  const victim = before.workers.find((w) => w.id === 1)
  t.truthy(victim?.pid)
  process.kill(victim!.pid!, 'SIGKILL')
  const after = await waitFor(
    async () => {
      const s = await fleet.status()
      const slot = s.workers.find((w) => w.id === 1)
      return slot && slot.pid !== victim!.pid && slot.state === 'ready' ? s : undefined
    },
    { timeoutMs: 10_000, message: 'slot 1 refilled' },
  )
  const slot = after.workers.find((w) => w.id === 1)!
  t.is(slot.restarts, 1)
  t.is(slot.lastExit, 'killed by SIGKILL')
  t.is(after.workers.find((w) => w.id === 0)!.restarts, 0)
  await fleet.log.waitFor(/fleet#1 \(pid \d+\) killed by SIGKILL; restarting in \d+ ms/)
  t.is((await httpGet({ port: port })).status, 200)
})

test('baton stop finishes in-flight requests, exits 0, frees the port and leaves no process', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 2, listen: [`127.0.0.1:${port}`] })
  const pids = await fleet.workerPids()
  const slow = httpGet({ port, path: '/slow' })
  await fleet.log.waitFor(/slow request started/)
  const stop = await fleet.cli(['stop', 'fleet'])
  t.is(stop.code, 0, stop.stderr)
  const response = await slow
  t.is(response.status, 200)
  t.is(response.headers.connection, 'close')
  t.deepEqual(await fleet.exited, { code: 0, signal: null })
  for (const pid of [...pids, fleet.pid]) t.false(isAlive(pid), `pid ${pid} gone`)
  t.true(await portIsFree(port))
  t.deepEqual(runtimeFiles(fleet.runtimeDir), [])
  const again = await fleet.cli(['status', 'fleet'])
  t.not(again.code, 0)
  t.regex(again.stderr, /no baton master named "fleet" is running/)
})

test('kill -9 of the master: every worker exits within 3 s and the port is released', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 3, listen: [`127.0.0.1:${port}`] })
  const pids = await fleet.workerPids()
  process.kill(fleet.pid, 'SIGKILL')
  await fleet.exited
  await waitFor(() => pids.every((pid) => !isAlive(pid)), { timeoutMs: 3000, message: 'orphaned workers to exit' })
  await waitFor(() => portIsFree(port), { timeoutMs: 1000, message: 'port released' })
  t.pass()
})

test('a worker ignoring SIGTERM is killed after stopTimeout', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('ignore-sigterm.mjs'),
    count: 1,
    listen: [`127.0.0.1:${port}`],
    flags: ['--stop-timeout', '300'],
  })
  const [pid] = await fleet.workerPids()
  const stop = await fleet.cli(['stop', 'fleet'])
  t.is(stop.code, 0, stop.stderr)
  await fleet.log.waitFor(new RegExp(`\\(pid ${pid}\\) still running 300 ms after stop: sending SIGKILL`))
  await fleet.log.waitFor(new RegExp(`\\(pid ${pid}\\) killed by SIGKILL`))
  t.false(isAlive(pid))
  t.deepEqual(await fleet.exited, { code: 0, signal: null })
})

test('a crash-looping worker is restarted with backoff, and status says why', async (t) => {
  const fleet = await startFleet(t, {
    script: fixture('crash-after-ready.mjs'),
    count: 1,
    env: { CRASH_AFTER_MS: '20' },
    noWait: true,
  })
  const started = Date.now()
  const status = await waitFor(
    async () => {
      const s = await fleet.status()
      return s.workers[0].restarts >= 4 ? s : undefined
    },
    { timeoutMs: 20_000, message: '4 restarts' },
  )
  // The first three delays are 100 + 200 + 400 ms: four restarts cannot come sooner.
  t.true(Date.now() - started >= 700, 'restarts follow the backoff')
  t.true(status.workers[0].restarts < 12, `no spin: ${status.workers[0].restarts} restarts`)
  t.is(status.workers[0].lastExit, 'exited with code 1')
  const delays = [...fleet.log.text.matchAll(/exited with code 1; restarting in (\d+) ms/g)].map((m) => Number(m[1]))
  t.deepEqual(delays.slice(0, 4), [100, 200, 400, 800])
  const table = await fleet.cli(['status', 'fleet'])
  t.regex(table.stdout, /exited with code 1/)
})

test('port in use: clear error naming the address, non-zero exit, nothing left running', async (t) => {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-test-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const blocker = net.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => blocker.close())
  const port = (blocker.address() as net.AddressInfo).port
  const marker = `marker-${process.pid}-${port}`
  const master = tracker.spawn(
    process.execPath,
    [BATON, 'start', fixture('app.mjs'), '--count', '2', '--listen', `127.0.0.1:${port}`, '--', marker],
    { env: { ...process.env, BATON_RUNTIME_DIR: dir.path }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const err = new OutputBuffer().follow(master.stderr)
  const exit = await waitForExit(master)
  t.not(exit.code, 0)
  t.regex(err.text, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`))
  t.deepEqual(processesWithMarker(marker), [])
  t.deepEqual(runtimeFiles(dir.path), [])
})

test('unknown option and missing script: clear error, non-zero exit, nothing started', async (t) => {
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-test-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const run = async (args: string[]) => {
    const child = tracker.spawn(process.execPath, [BATON, ...args], {
      env: { ...process.env, BATON_RUNTIME_DIR: dir.path },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const err = new OutputBuffer().follow(child.stderr)
    const exit = await waitForExit(child)
    return { code: exit.code, stderr: err.text }
  }
  const unknown = await run(['start', fixture('app.mjs'), '--bogus', '1'])
  t.is(unknown.code, 2)
  t.regex(unknown.stderr, /--bogus/)
  const missing = await run(['start', '/nonexistent/app.mjs'])
  t.not(missing.code, 0)
  t.regex(missing.stderr, /script: \/nonexistent\/app\.mjs does not exist/)
  const badAddr = await run(['start', fixture('app.mjs'), '--listen', 'http://x:1'])
  t.not(badAddr.code, 0)
  t.regex(badAddr.stderr, /invalid listen address "http:\/\/x:1"/)
  const badCount = await run(['start', fixture('app.mjs'), '--count', 'many'])
  t.is(badCount.code, 2)
  t.regex(badCount.stderr, /--count expects a positive whole number, got "many"/)
  t.deepEqual(readdirSync(dir.path), [])
})

test('a second master of the same name is refused while the first runs', async (t) => {
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 1, listen: ['127.0.0.1:0'] })
  const second = await fleet.cli(['start', fixture('app.mjs'), '--name', 'fleet', '--count', '1'])
  t.not(second.code, 0)
  t.regex(second.stderr, /a baton master named "fleet" is already running \(pid \d+\)/)
  t.is((await fleet.status()).pid, fleet.pid)
})

test('worker fds: exactly the listening socket, the control channel, /dev/null and two output pipes', async (t) => {
  if (process.platform !== 'linux') return t.pass('reads /proc: Linux only')
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), count: 1, listen: [`127.0.0.1:${port}`] })
  const [pid] = await fleet.workerPids()
  const links = (p: number) =>
    new Map(
      readdirSync(`/proc/${p}/fd`).flatMap((fd) => {
        try {
          return [[Number(fd), readlinkSync(`/proc/${p}/fd/${fd}`)] as [number, string]]
        } catch {
          return []
        }
      }),
    )
  const worker = links(pid)
  const master = links(fleet.pid)
  const masterObjects = new Set(master.values())
  t.regex(worker.get(3) ?? '', /^socket:/, 'fd 3 is the listening socket')
  t.true(masterObjects.has(worker.get(3) ?? ''), 'fd 3 is the master-owned socket')
  t.regex(worker.get(4) ?? '', /^socket:/, 'fd 4 is the control channel')
  t.false(masterObjects.has(worker.get(4) ?? ''), 'the master holds the other end, not the same socket')
  // fds 1 and 2 are two pipes whose read ends the master's log relay holds.
  t.regex(worker.get(1) ?? '', /^pipe:/, 'fd 1 is a pipe')
  t.regex(worker.get(2) ?? '', /^pipe:/, 'fd 2 is a pipe')
  t.not(worker.get(1), worker.get(2), 'stdout and stderr are separate pipes')
  t.not(worker.get(1), master.get(1), "fd 1 is not the master's own stdout")
  t.true(masterObjects.has(worker.get(1) ?? '') && masterObjects.has(worker.get(2) ?? ''), 'the master reads both')
  // Every other fd shared with the master would be a leak (fd 0 is /dev/null).
  const shared = [...worker].filter(
    ([fd, target]) =>
      fd > 4 && masterObjects.has(target) && !target.startsWith('/dev/') && !target.startsWith('anon_inode:'),
  )
  t.deepEqual(shared, [])
  const env = execFileSync('cat', [`/proc/${pid}/environ`], { encoding: 'utf8' }).split('\0')
  t.true(env.includes(`LISTEN_PID=${pid}`))
  t.true(env.includes('LISTEN_FDS=1'))
  t.true(env.includes('LISTEN_FDNAMES=listen0'))
  t.true(env.includes('BATON_WORKER_ID=0'))
  t.true(env.includes('BATON_GROUP=fleet'))
})

test('master-side child_process keeps working while baton supervises, and baton still sees its workers exit', async (t) => {
  const { Supervisor } = await import('../src/index.js')
  const { spawn } = await import('node:child_process')
  const dir = await tmpDir('baton-test-')
  const port = await freePort()
  const sup = new Supervisor({
    name: 'inproc',
    runtimeDir: dir.path,
    log: false,
    handleSignals: false,
    groups: { web: { script: fixture('app.mjs'), count: 2, listen: `127.0.0.1:${port}` } },
  })
  t.teardown(async () => {
    await sup.stop({ force: true })
    await dir.cleanup()
  })
  await sup.start()
  // A child of our own, spawned and reaped by Node (libuv) while baton runs.
  const own = spawn(process.execPath, ['-e', 'process.exit(7)'])
  const code = await new Promise<number | null>((resolve) => own.on('exit', (c) => resolve(c)))
  t.is(code, 7, "Node's own child exit event fired")
  const exits: number[] = []
  sup.on('worker:exit', (e) => exits.push(e.pid ?? 0))
  const victim = sup.status().workers[0].pid!
  process.kill(victim, 'SIGKILL')
  await waitFor(() => exits.includes(victim), { timeoutMs: 5000, message: 'baton to see its worker exit' })
  const own2 = spawn(process.execPath, ['-e', 'process.exit(3)'])
  const code2 = await new Promise<number | null>((resolve) => own2.on('exit', (c) => resolve(c)))
  t.is(code2, 3)
  await waitFor(() => sup.status().workers.every((w) => w.state === 'ready' && w.pid !== victim), {
    timeoutMs: 5000,
    message: 'slot refilled',
  })
})

test('balance reuseport: each slot has its own socket and connections reach every worker', async (t) => {
  if (process.platform !== 'linux') return t.pass('SO_REUSEPORT balancing is Linux only')
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 4,
    listen: [`127.0.0.1:${port}`],
    flags: ['--balance', 'reuseport'],
  })
  const status = await fleet.status()
  t.is(status.groups[0].balance, 'reuseport')
  // Each worker's fd 3 is a different socket, all bound to the one port.
  const sockets = new Set(status.workers.map((w) => readlinkSync(`/proc/${w.pid}/fd/3`)))
  t.is(sockets.size, 4)
  const hits = new Map<number, number>()
  for (let i = 0; i < 64; i++) {
    const r = await httpGet({ port, path: '/info' })
    const pid = (JSON.parse(r.body) as { pid: number }).pid
    hits.set(pid, (hits.get(pid) ?? 0) + 1)
  }
  t.is(hits.size, 4, `64 fresh connections spread over ${JSON.stringify([...hits.values()])}`)
})

test('named listen addresses: worker.listen(server, name) picks the inherited socket by name', async (t) => {
  const { Supervisor } = await import('../src/index.js')
  const dir = await tmpDir('baton-test-')
  const [publicPort, adminPort] = [await freePort(), await freePort()]
  const sup = new Supervisor({
    name: 'named',
    runtimeDir: dir.path,
    log: false,
    handleSignals: false,
    groups: {
      web: {
        script: fixture('two-listeners.mjs'),
        count: 2,
        listen: { public: `127.0.0.1:${publicPort}`, admin: `127.0.0.1:${adminPort}` },
      },
    },
  })
  t.teardown(async () => {
    await sup.stop({ force: true })
    await dir.cleanup()
  })
  await sup.start()
  t.is((await httpGet({ port: publicPort })).body, 'public')
  t.is((await httpGet({ port: adminPort })).body, 'admin')
  t.deepEqual(
    sup.addresses().map((a) => a.bound),
    [`127.0.0.1:${publicPort}`, `127.0.0.1:${adminPort}`],
  )
})
