/**
 * Drop-in mode: apps that never import baton and call `listen(process.env.PORT)` — Express
 * 5, Fastify 5, Koa and a @grpc/grpc-js server, written as their docs write them
 * (examples/frameworks/) — run under `baton start app --count N` with no `--listen`, and
 * go through reloads under load without a failed request.
 */
import test from 'ava'
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, tmpDir, waitFor, withTimeout } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

const example = (name: string): string => fileURLToPath(new URL(`../examples/frameworks/${name}`, import.meta.url))

interface DropInFleet {
  fleet: Fleet
  port: number
  deploy(version: string): void
}

async function dropInFleet(t: Parameters<typeof startFleet>[0], script: string, count: number): Promise<DropInFleet> {
  const dir = await tmpDir('baton-dropin-')
  t.teardown(() => dir.cleanup())
  const versionFile = join(dir.path, 'version.txt')
  writeFileSync(versionFile, 'v1')
  const port = await freePort()
  const fleet = await startFleet(t, { script, count, env: { PORT: String(port), APP_VERSION_FILE: versionFile } })
  return { fleet, port, deploy: (v) => writeFileSync(versionFile, v) }
}

async function reloadTo(t: Parameters<typeof startFleet>[0], f: DropInFleet, version: string): Promise<void> {
  const before = new Set(await f.fleet.workerPids())
  f.deploy(version)
  const reload = await f.fleet.cli(['reload', f.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  const after = await f.fleet.workerPids()
  t.true(
    after.every((pid) => !before.has(pid)),
    'every worker replaced',
  )
}

for (const [framework, script] of [
  ['Express 5', 'express.mjs'],
  ['Fastify 5', 'fastify.mjs'],
  ['Koa', 'koa.mjs'],
] as const) {
  test.serial(
    `${framework} without a baton import: 3 reloads under keep-alive load, 0 failed requests, new code served`,
    async (t) => {
      const f = await dropInFleet(t, example(script), 2)
      const status = await f.fleet.status()
      t.deepEqual(
        status.groups[0]?.sockets?.map((s) => s.from),
        ['drop-in'],
        'the master created the socket on the first listen() and lists it',
      )
      t.true(status.groups[0]?.listen[0]?.endsWith(`:${f.port}`), JSON.stringify(status.groups[0]?.listen))
      const load = startLoad({ port: f.port, connections: 16 })
      t.teardown(() => load.stop())
      for (const version of ['v2', 'v3', 'v4']) await reloadTo(t, f, version)
      await waitFor(() => (load.snapshot().bodies.v4 ?? 0) > 50, { message: 'v4 served' })
      const result = await load.stop()
      t.log(`requests ${result.requests}, ok ${result.ok}, errors ${result.errors} ${JSON.stringify(result.bodies)}`)
      assertNoFailedRequests(t, result)
    },
  )
}

test.serial(
  'a @grpc/grpc-js server without a baton import: a unary-call load through 3 reloads, 0 failed calls',
  async (t) => {
    const require = createRequire(import.meta.url)
    const grpc = require('@grpc/grpc-js') as typeof import('@grpc/grpc-js')
    const { versionService } = (await import(example('grpc-service.mjs'))) as {
      versionService: import('@grpc/grpc-js').ServiceDefinition
    }
    const f = await dropInFleet(t, example('grpc.mjs'), 2)
    const Client = grpc.makeGenericClientConstructor(versionService, 'Version')
    const client = new Client(`127.0.0.1:${f.port}`, grpc.credentials.createInsecure()) as InstanceType<
      typeof Client
    > & {
      get(req: object, cb: (err: Error | null, res?: { version: string }) => void): void
    }
    t.teardown(() => client.close())
    const counts = { ok: 0, failed: 0, failures: [] as string[], versions: {} as Record<string, number> }
    let stopped = false
    const lane = async (): Promise<void> => {
      while (!stopped) {
        await new Promise<void>((resolve) =>
          client.get({}, (err, res) => {
            if (err) {
              counts.failed += 1
              counts.failures.push(err.message)
            } else if (res) {
              counts.ok += 1
              counts.versions[res.version] = (counts.versions[res.version] ?? 0) + 1
            }
            resolve()
          }),
        )
      }
    }
    const lanes = Array.from({ length: 8 }, lane)
    t.teardown(async () => {
      stopped = true
      await Promise.all(lanes)
    })
    await waitFor(() => counts.ok > 20, { message: 'calls answered before the reloads' })
    for (const version of ['v2', 'v3', 'v4']) await reloadTo(t, f, version)
    await waitFor(() => (counts.versions.v4 ?? 0) > 20, { message: 'v4 answering' })
    stopped = true
    await Promise.all(lanes)
    t.log(JSON.stringify({ ok: counts.ok, failed: counts.failed, versions: counts.versions }))
    t.true(counts.ok > 200, `calls made: ${counts.ok}`)
    t.is(counts.failed, 0, counts.failures.slice(0, 5).join('; '))
  },
)

test('which listen() calls drop-in mode takes: TCP ports in every argument form; paths, fds and handles are left to Node', async (t) => {
  const { portTarget } = await import('../src/worker/preload.js')
  const cb = (): void => undefined
  t.like(portTarget([3000]), { port: 3000, host: undefined })
  t.like(portTarget(['3000', '127.0.0.1', cb]), { port: 3000, host: '127.0.0.1', callback: cb })
  t.like(portTarget([8080, 100]), { port: 8080, backlog: 100 })
  t.like(portTarget([{ port: 4000, host: '::1', backlog: 7 }]), { port: 4000, host: '::1', backlog: 7 })
  t.like(portTarget([]), { port: 0 })
  t.like(portTarget([cb]), { port: 0, callback: cb })
  t.is(portTarget(['/tmp/app.sock']), undefined)
  t.is(portTarget([{ path: '/tmp/app.sock' }]), undefined)
  t.is(portTarget([{ fd: 3 }]), undefined)
  t.is(portTarget([{ _handle: {} }]), undefined)
  t.is(portTarget([70000]), undefined)
})

test.serial(
  'a ws server without a baton import: clients get close code 1012 on reload and reconnect to the new code',
  async (t) => {
    const f = await dropInFleet(t, example('ws.mjs'), 2)
    const connect = (): Promise<{ ws: WebSocket; first: string; closed: Promise<number> }> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${f.port}/`)
        const closed = new Promise<number>((done) => ws.on('close', (code) => done(code)))
        ws.once('message', (data) => resolve({ ws, first: String(data), closed }))
        ws.once('error', reject)
      })
    const clients = await Promise.all([connect(), connect()])
    t.teardown(() => clients.forEach((c) => c.ws.terminate()))
    t.deepEqual(
      clients.map((c) => c.first),
      ['v1', 'v1'],
    )
    await reloadTo(t, f, 'v2')
    t.deepEqual(await Promise.all(clients.map((c) => c.closed)), [1012, 1012])
    const again = await connect()
    t.teardown(() => again.ws.terminate())
    t.is(again.first, 'v2')
  },
)

test.serial(
  'a CommonJS app without a baton import: served by every worker on the master socket, and a reload replaces them',
  async (t) => {
    const f = await dropInFleet(t, fixture('plain-listen.cjs'), 2)
    const pids = new Set<string>()
    await waitFor(
      async () => {
        pids.add((await httpGet({ port: f.port, path: '/' })).body)
        return pids.size === 2
      },
      { message: 'both workers answer' },
    )
    await reloadTo(t, f, 'v2')
    const after = (await httpGet({ port: f.port, path: '/' })).body
    t.false(pids.has(after), `a new worker answers (${after})`)
  },
)

/** The inodes of the listening TCP sockets on `port`, from /proc/net. */
function listeningInodes(port: number): Set<string> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0')
  const inodes = new Set<string>()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A') inodes.add(f[9] ?? '')
    }
  }
  return inodes
}

/** The fds of process `pid` that hold a listening TCP socket on `port`, with their inodes. */
function listeningFds(pid: number, port: number): { fd: string; inode: string }[] {
  const inodes = listeningInodes(port)
  const held: { fd: string; inode: string }[] = []
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`)
    } catch {
      continue
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1]
    if (inode !== undefined && inodes.has(inode)) held.push({ fd, inode })
  }
  return held
}

/** The `flags:` (octal) of process `pid`'s listening TCP socket on `port`, from /proc. */
function listenSocketFlags(pid: number, port: number): number | undefined {
  const first = listeningFds(pid, port)[0]
  if (first === undefined) return undefined
  const flags = /^flags:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${first.fd}`, 'utf8'))?.[1]
  return flags === undefined ? undefined : parseInt(flags, 8)
}

test.serial(
  'the socket a drop-in worker gets is non-blocking, so a worker that loses the race for a connection never blocks in accept()',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('reads /proc')
    const f = await dropInFleet(t, example('koa.mjs'), 2)
    const O_NONBLOCK = 0o4000
    for (const pid of [f.fleet.pid, ...(await f.fleet.workerPids())]) {
      const flags = listenSocketFlags(pid, f.port)
      t.not(flags, undefined, `pid ${pid} holds the listening socket`)
      t.true(((flags ?? 0) & O_NONBLOCK) !== 0, `pid ${pid}: flags ${(flags ?? 0).toString(8)} lack O_NONBLOCK`)
    }
  },
)

/** The inodes of the listening TCP sockets on `port` (from /proc/net), and of those `pid` holds. */
function listenInodes(port: number, pid?: number): string[] {
  if (pid === undefined) return [...listeningInodes(port)].sort()
  return [...new Set(listeningFds(pid, port).map((h) => h.inode))].sort()
}

/** The pid answering a GET on a fresh connection from `localAddress` (plain-listen.cjs: "cjs <pid>"). */
async function answeringPid(port: number, localAddress: string): Promise<string> {
  return (await httpGet({ port, path: '/', localAddress })).body
}

test.serial(
  'drop-in, default balance: each worker slot gets its own SO_REUSEPORT socket for its listen(PORT), and fresh connections from one address reach both',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('reuseport steering is Linux only; elsewhere drop-in stays shared')
    const f = await dropInFleet(t, fixture('plain-listen.cjs'), 2)
    const status = await f.fleet.status()
    t.is(status.groups[0]?.balance, 'reuseport')
    t.is(listenInodes(f.port).length, 2, 'one listening socket per slot on the port')
    const byWorker = (await f.fleet.workerPids()).map((pid) => listenInodes(f.port, pid))
    t.deepEqual(
      byWorker.map((held) => held.length),
      [1, 1],
      'each worker holds exactly one of them',
    )
    t.not(byWorker[0]?.[0], byWorker[1]?.[0], "the two workers hold different sockets (their own slot's)")
    t.deepEqual(listenInodes(f.port, f.fleet.pid), listenInodes(f.port), 'the master keeps every slot socket')
    const pids = new Set<string>()
    await waitFor(
      async () => {
        pids.add(await answeringPid(f.port, '127.0.0.7'))
        return pids.size === 2
      },
      { message: 'fresh connections from 127.0.0.7 reach both workers' },
    )
    // A reload hands each replacement its slot's socket: still one socket per slot.
    await reloadTo(t, f, 'v2')
    const after = (await f.fleet.workerPids()).map((pid) => listenInodes(f.port, pid)[0])
    t.deepEqual([...after].sort(), byWorker.map((h) => h[0]).sort(), "replacements got their slots' sockets")
  },
)

test.serial(
  'drop-in with balance sticky (no --listen): every fresh connection of one address reaches one worker, addresses spread over both',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('sticky is Linux only')
    const port = await freePort()
    const fleet = await startFleet(t, {
      script: fixture('plain-listen.cjs'),
      count: 2,
      env: { PORT: String(port) },
      flags: ['--balance', 'sticky'],
    })
    t.is((await fleet.status()).groups[0]?.balance, 'sticky')
    const owners = new Set<string>()
    for (let i = 0; i < 12; i++) {
      const address = `127.0.0.${20 + i}`
      const seen = new Set<string>()
      for (let k = 0; k < 5; k++) seen.add(await answeringPid(port, address))
      t.is(seen.size, 1, `${address}: ${[...seen].join(' / ')}`)
      owners.add([...seen][0] ?? '')
    }
    t.is(owners.size, 2, 'the addresses are spread over both workers')
  },
)

test.serial(
  "drop-in per-slot sockets go to the new master on baton upgrade: the same sockets, each new worker its slot's",
  async (t) => {
    if (process.platform !== 'linux') return t.pass('reuseport steering is Linux only')
    const f = await dropInFleet(t, fixture('plain-listen.cjs'), 2)
    const before = listenInodes(f.port)
    t.is(before.length, 2)
    const r = await f.fleet.cli(['upgrade', f.fleet.name])
    t.is(r.code, 0, r.stderr)
    await withTimeout(f.fleet.exited, 15_000, 'the old master exits')
    t.deepEqual(listenInodes(f.port), before, 'the same two sockets, none rebound')
    const held = (await f.fleet.workerPids()).map((pid) => listenInodes(f.port, pid))
    t.deepEqual(
      held.map((h) => h.length),
      [1, 1],
    )
    t.not(held[0]?.[0], held[1]?.[0], 'each new worker holds its own slot socket')
    t.regex(await answeringPid(f.port, '127.0.0.9'), /^cjs \d+$/)
  },
)

test.serial(
  'drop-in per-slot sockets follow baton scale: 2 -> 4 binds one per new slot, 4 -> 1 closes them once their workers exited',
  async (t) => {
    if (process.platform !== 'linux') return t.pass('reuseport steering is Linux only')
    const f = await dropInFleet(t, fixture('plain-listen.cjs'), 2)
    const up = await f.fleet.cli(['scale', f.fleet.name, '4'])
    t.is(up.code, 0, up.stderr)
    t.is(listenInodes(f.port).length, 4)
    const held = (await f.fleet.workerPids()).map((pid) => listenInodes(f.port, pid))
    t.is(new Set(held.map((h) => h.join())).size, 4, 'each of the 4 workers holds its own slot socket')
    const down = await f.fleet.cli(['scale', f.fleet.name, '1'])
    t.is(down.code, 0, down.stderr)
    await waitFor(() => listenInodes(f.port).length === 1, { message: "the removed slots' sockets are closed" })
    const [only] = await f.fleet.workerPids()
    for (let i = 0; i < 10; i++) t.is(await answeringPid(f.port, '127.0.0.11'), `cjs ${only}`)
  },
)
