/**
 * `balance: 'sticky'`: every connection of one client address goes to the same worker slot
 * while it serves (the kernel picks the slot from the source address, crates/baton-core/src/steer.rs),
 * so Socket.IO's default transports (long-polling, then the upgrade) work across workers
 * with no proxy hop. Clients are told apart by their source address: each binds its own
 * 127.0.0.x (all of 127/8 is loopback on Linux).
 */
import test, { type ExecutionContext } from 'ava'
import * as http from 'node:http'
import { io as connect, type Socket } from 'socket.io-client'
import { Supervisor } from '../src/index.js'
import { fixture, runCli, startFleet, versionedFleet } from './helpers/fleet.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { reloadAll } from './helpers/reload.js'

const CLIENTS = 20
const source = (i: number): string => `127.0.0.${10 + i}`

/** One GET `/info` on a fresh connection from `localAddress`; resolves with the answering pid. */
function freshPid(port: number, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/info', agent: false, localAddress }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        try {
          resolve((JSON.parse(body) as { pid: number }).pid)
        } catch (err) {
          reject(err as Error)
        }
      })
    })
    req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')))
    req.on('error', reject)
  })
}

/** For each client (its own source address), the pids that answered its `per` fresh connections. */
async function pidsPerClient(port: number, per: number): Promise<Set<number>[]> {
  return Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const pids = new Set<number>()
      for (let k = 0; k < per; k++) pids.add(await freshPid(port, source(i)))
      return pids
    }),
  )
}

test.serial(
  'sticky: 20 client addresses, 5 fresh connections each: one worker per address, both workers used, kept across a reload',
  async (t) => {
    const vf = await versionedFleet(t, { count: 2, flags: ['--balance', 'sticky', '--order', 'stop-first'] })
    const status = await vf.fleet.status()
    t.is(status.groups[0]?.balance, 'sticky')
    const partition = async (): Promise<string[]> => {
      const seen = await pidsPerClient(vf.port, 5)
      t.true(
        seen.every((s) => s.size === 1),
        `each address answered by one pid: ${seen.map((s) => [...s].join('/')).join(' ')}`,
      )
      const pids = seen.map((s) => [...s][0] ?? 0)
      const workers = new Set(pids)
      t.is(workers.size, 2, 'the 20 addresses are spread over both workers')
      // Which clients share a worker (the same slot), independent of the pids.
      return pids.map((p) => pids.flatMap((q, j) => (q === p ? [j] : [])).join(','))
    }
    const before = await partition()
    await reloadAll(t, vf, 'v2', 2)
    const after = await partition()
    t.deepEqual(after, before, "every slot's clients moved together to the slot's replacement")
    await vf.fleet.cli(['stop', vf.fleet.name])
  },
)

test('Supervisor option balance: sticky: status shows it and each client address sticks to one worker', async (t) => {
  const dir = await tmpDir('baton-api-')
  const port = await freePort()
  const sup = new Supervisor({
    name: 'sticky-api',
    runtimeDir: dir.path,
    log: false,
    handleSignals: false,
    groups: { web: { script: fixture('app.mjs'), count: 2, listen: `127.0.0.1:${port}`, balance: 'sticky' } },
  })
  t.teardown(async () => {
    await sup.stop({ force: true }).catch(() => undefined)
    await dir.cleanup()
  })
  await sup.start()
  t.is(sup.status().groups[0]?.balance, 'sticky')
  for (const i of [1, 2, 3, 4]) {
    const pids = new Set<number>()
    for (let k = 0; k < 4; k++) pids.add(await freshPid(port, source(i)))
    t.is(pids.size, 1, `${source(i)}: ${[...pids].join('/')}`)
  }
  await sup.stop()
})

test('--balance names the three modes when it is given another', async (t) => {
  const r = await runCli(['start', fixture('app.mjs'), '--balance', 'round-robin'], { ...process.env })
  t.is(r.code, 2)
  t.regex(r.stderr, /--balance expects shared, reuseport or sticky, got "round-robin"/)
})

/** Outcome of 20 Socket.IO clients echoing for `ms`. */
interface Echoes {
  connectErrors: number
  disconnects: number
  sent: number
  lost: number
  sessionUnknown: number
  /** Lost echoes sent outside every reload window. */
  lostOutside: number
  /** "Session ID unknown" logged outside every reload window. */
  sessionUnknownOutside: number
  /** Per reload: how many of the clients connected again after it started. */
  reconnected: number[]
  /** Per client: connects and disconnects while the test ran. */
  connects: number[]
  disconnectsPerClient: number[]
}

interface SocketIoOptions {
  /** No `--listen`: the app's own `listen(PORT)` is answered by the master (drop-in). */
  dropIn?: boolean
  /** `baton reload`s spread over the run. */
  reloads?: number
}

/** How long after a reload ends its effects may last: an echo's ack timeout, then a reconnection. */
const RELOAD_TAIL_MS = 3000

async function socketIo(
  t: ExecutionContext,
  balance: 'sticky' | 'reuseport',
  ms: number,
  { dropIn = false, reloads = 0 }: SocketIoOptions = {},
): Promise<Echoes> {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('socketio-echo.mjs'),
    count: 2,
    listen: dropIn ? [] : [`127.0.0.1:${port}`],
    env: { PORT: String(port) },
    flags: ['--balance', balance],
  })
  if (dropIn) {
    const status = await fleet.status()
    t.deepEqual(
      status.groups[0]?.sockets?.map((s) => s.from),
      ['drop-in'],
      'the app listens on a socket the master bound for its own listen(PORT)',
    )
  }
  const result: Echoes = {
    connectErrors: 0,
    disconnects: 0,
    sent: 0,
    lost: 0,
    sessionUnknown: 0,
    lostOutside: 0,
    sessionUnknownOutside: 0,
    reconnected: [],
    connects: Array.from({ length: CLIENTS }, () => 0),
    disconnectsPerClient: Array.from({ length: CLIENTS }, () => 0),
  }
  /** [start, end] of each reload, ms since the epoch. */
  const windows: [number, number][] = []
  const inWindow = (at: number): boolean => windows.some(([a, b]) => at >= a && at <= b + RELOAD_TAIL_MS)
  /** When each client last connected. */
  const lastConnect: number[] = Array.from({ length: CLIENTS }, () => 0)
  const lostAt: number[] = []
  const sockets: Socket[] = []
  const agents: http.Agent[] = []
  let stop = false
  const clients = Array.from({ length: CLIENTS }, async (_, i) => {
    const agent = new http.Agent({ keepAlive: true, localAddress: source(i) } as http.AgentOptions)
    agents.push(agent)
    // Default transports: long-polling, then the upgrade to WebSocket.
    const socket = connect(`http://127.0.0.1:${port}`, { agent: agent as unknown as string, reconnectionDelay: 100 })
    sockets.push(socket)
    socket.on('connect', () => {
      result.connects[i] = (result.connects[i] ?? 0) + 1
      lastConnect[i] = Date.now()
    })
    socket.on('connect_error', () => (result.connectErrors += 1))
    socket.on('disconnect', () => {
      if (stop) return
      result.disconnects += 1
      result.disconnectsPerClient[i] = (result.disconnectsPerClient[i] ?? 0) + 1
    })
    let n = 0
    while (!stop) {
      if (!socket.connected) {
        await new Promise((r) => setTimeout(r, 50))
        continue
      }
      n += 1
      result.sent += 1
      const sentAt = Date.now()
      try {
        await socket.timeout(2000).emitWithAck('echo', n)
      } catch {
        result.lost += 1
        lostAt.push(sentAt)
      }
      await new Promise((r) => setTimeout(r, 200))
    }
  })
  const started = Date.now()
  for (let k = 0; k < reloads; k++) {
    // Evenly spread: each reload starts once its share of the run has passed.
    const at = started + ((k + 1) * ms) / (reloads + 1)
    await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())))
    const begin = Date.now()
    await reloadAll(t, { fleet, port, deploy: () => undefined }, `v${k + 2}`, 2)
    windows.push([begin, Date.now()])
    // Every client is back (on the new workers) before the next reload starts.
    await waitFor(() => sockets.every((s, i) => s.connected && (lastConnect[i] ?? 0) >= begin), {
      timeoutMs: 15_000,
      message: `every client reconnected after reload ${k + 1}`,
    }).catch(() => undefined)
    result.reconnected.push(sockets.filter((s, i) => s.connected && (lastConnect[i] ?? 0) >= begin).length)
  }
  await new Promise((r) => setTimeout(r, Math.max(0, started + ms - Date.now())))
  // A client dropped near the end (the last old worker's drain closing its socket, which
  // can come after the reload's report) is given its reconnection before the run ends, so
  // "connected at the end" counts reconnections, not Socket.IO's backoff timing.
  await waitFor(() => sockets.every((s) => s.connected), {
    timeoutMs: 10_000,
    message: 'every client connected at the end',
  }).catch(() => undefined)
  stop = true
  await Promise.all(clients)
  for (const s of sockets) s.close()
  for (const a of agents) a.destroy()
  const unknown = [...fleet.log.text.matchAll(/connection_error at (\d+): Session ID unknown/g)].map((m) =>
    Number(m[1]),
  )
  result.sessionUnknown = unknown.length
  result.sessionUnknownOutside = unknown.filter((at) => !inWindow(at)).length
  result.lostOutside = lostAt.filter((at) => !inWindow(at)).length
  await fleet.cli(['stop', fleet.name])
  t.log(`balance ${balance}${dropIn ? ' (drop-in)' : ''}: ${JSON.stringify({ ...result, windows })}`)
  return result
}

for (const dropIn of [false, true]) {
  test.serial(
    dropIn
      ? 'Socket.IO unmodified (its own listen(PORT), no --listen), default transports, 2 workers, 20 client addresses, 20 s with balance sticky: no session lost, no echo lost'
      : 'Socket.IO, default transports, 2 workers, 20 client addresses, 20 s with balance sticky: no session lost, no echo lost',
    async (t) => {
      const r = await socketIo(t, 'sticky', 20_000, { dropIn })
      t.is(r.sessionUnknown, 0)
      t.is(r.connectErrors, 0)
      t.is(r.disconnects, 0)
      t.is(r.lost, 0)
      t.true(r.sent >= CLIENTS * 20, `${r.sent} echoes sent`)
    },
  )
}

test.serial(
  'Socket.IO unmodified, balance sticky, 3 reloads during 30 s: no echo or session lost outside the reloads, every client reconnected after each',
  async (t) => {
    const r = await socketIo(t, 'sticky', 30_000, { dropIn: true, reloads: 3 })
    t.is(r.lostOutside, 0, 'echoes lost outside the reload windows')
    t.is(r.sessionUnknownOutside, 0, '"Session ID unknown" outside the reload windows')
    t.deepEqual(r.reconnected, [CLIENTS, CLIENTS, CLIENTS], 'clients connected again after each reload')
    // Each reload replaced every worker, so every client was disconnected and came back.
    for (let i = 0; i < CLIENTS; i++) {
      t.true((r.disconnectsPerClient[i] ?? 0) >= 3, `client ${i}: ${r.disconnectsPerClient[i]} disconnects`)
      t.is(r.connects[i], (r.disconnectsPerClient[i] ?? 0) + 1, `client ${i} connected at the end`)
    }
    t.true(r.sent >= CLIENTS * 25, `${r.sent} echoes sent`)
  },
)

test.serial(
  'Socket.IO, default transports, 2 workers, 20 client addresses with balance reuseport: sessions are lost (why sticky exists)',
  async (t) => {
    const r = await socketIo(t, 'reuseport', 5_000)
    t.true(r.sessionUnknown + r.connectErrors > 0, JSON.stringify(r))
  },
)
