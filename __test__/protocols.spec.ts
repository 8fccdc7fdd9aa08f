/**
 * The drain beyond plain HTTP/1.1 request/response, through real reloads of a real fleet
 * (`fixtures/protocols.mjs`): pipelining, server-sent events ended on `worker.signal`,
 * WebSockets closed with 1012, HTTP/2 sessions sent GOAWAY.
 */
import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import http2 from 'node:http2'
import * as net from 'node:net'
import { join } from 'node:path'
import WebSocket from 'ws'
import { fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

interface ProtocolFleet {
  fleet: Fleet
  httpPort: number
  h2Port: number
  handledFile: string
  deploy(version: string): void
}

async function protocolFleet(
  t: Parameters<typeof startFleet>[0],
  count: number,
  flags: string[] = [],
): Promise<ProtocolFleet> {
  const dir = await tmpDir('baton-protocols-')
  t.teardown(() => dir.cleanup())
  const versionFile = join(dir.path, 'version.txt')
  const handledFile = join(dir.path, 'handled.txt')
  writeFileSync(versionFile, 'v1')
  writeFileSync(handledFile, '')
  const [httpPort, h2Port] = [await freePort(), await freePort()]
  const fleet = await startFleet(t, {
    script: fixture('protocols.mjs'),
    count,
    listen: [`127.0.0.1:${httpPort}`, `127.0.0.1:${h2Port}`],
    env: { APP_VERSION_FILE: versionFile, HANDLED_FILE: handledFile },
    flags: ['--stop-timeout', '8000', ...flags],
  })
  return { fleet, httpPort, h2Port, handledFile, deploy: (v) => writeFileSync(versionFile, v) }
}

/** Resolves once the worker `pid` is listed as stopping (its drain has started). */
async function whenStopping(fleet: Fleet, pid: number): Promise<void> {
  await waitFor(async () => (await fleet.status()).workers.some((w) => w.pid === pid && w.state === 'stopping'), {
    timeoutMs: 15_000,
    message: `worker ${pid} to start draining`,
  })
}

test('10 pipelined requests during a drain: every request the app handled was answered, and only the last answer says close', async (t) => {
  const pf = await protocolFleet(t, 1)
  const [old] = await pf.fleet.workerPids()
  const socket = net.connect(pf.httpPort, '127.0.0.1')
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  let received = ''
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => (received += chunk))
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  const request = (id: number, path: string): string => `GET ${path} HTTP/1.1\r\nHost: x\r\nx-req: ${id}\r\n\r\n`

  // Request 1 is in flight when the drain starts; 2..10 are pipelined behind it then.
  socket.write(request(1, '/slow?ms=4000'))
  await waitFor(() => readFileSync(pf.handledFile, 'utf8').includes(`${old} 1\n`), { message: 'request 1 handled' })
  const reload = pf.fleet.cli(['reload', pf.fleet.name])
  await whenStopping(pf.fleet, old as number)
  t.is(received, '', 'request 1 is still in flight when the drain has started')
  socket.write(Array.from({ length: 9 }, (_, i) => request(i + 2, '/')).join(''))
  await closed
  t.is((await reload).code, 0)

  const answers = received.split(/(?=HTTP\/1\.1 )/).filter((r) => r.startsWith('HTTP/1.1 '))
  const handled = readFileSync(pf.handledFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith(`${old} `))
    .map((l) => Number(l.split(' ')[1]))
  t.log(`${answers.length} answers on the connection, requests handled by the old worker: ${handled.join(', ')}`)
  t.true(answers.length >= 2, 'the request pipelined first during the drain is still answered')
  t.is(handled.length, answers.length, 'no request was handled whose answer was thrown away')
  t.true(answers.every((a) => a.startsWith('HTTP/1.1 200')))
  const closes = answers.map((a) => /\r\nconnection: close\r\n/i.test(a))
  t.deepEqual(
    closes,
    answers.map((_, i) => i === answers.length - 1),
    'Connection: close on the last answer only',
  )
})

test('an SSE stream is ended by the app through worker.signal when the drain starts, well before the stop deadline', async (t) => {
  const pf = await protocolFleet(t, 1)
  const stream = await new Promise<{ body: () => string; ended: Promise<number> }>((resolve, reject) => {
    const socket = net.connect(pf.httpPort, '127.0.0.1', () => socket.write('GET /sse HTTP/1.1\r\nHost: x\r\n\r\n'))
    let body = ''
    socket.setEncoding('utf8')
    const ended = new Promise<number>((done) => socket.on('close', () => done(Date.now())))
    socket.on('data', (chunk: string) => {
      body += chunk
      if (body.includes('data: hello v1')) resolve({ body: () => body, ended })
    })
    socket.on('error', reject)
  })
  const started = Date.now()
  const reload = await pf.fleet.cli(['reload', pf.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  const endedAt = await stream.ended
  t.true(stream.body().includes('event: bye\ndata: bye\n\n'), 'the app ended the stream itself')
  // The chunked body was terminated (0-length chunk): a clean end, not a cut.
  t.true(stream.body().endsWith('0\r\n\r\n'), JSON.stringify(stream.body().slice(-40)))
  t.true(endedAt - started < 8000, 'ended before the 8 s stop deadline')
})

test('a ws client sees close code 1012 on reload and reconnects to the new code', async (t) => {
  const pf = await protocolFleet(t, 2)
  const connect = (): Promise<{ ws: WebSocket; first: string; closed: Promise<number> }> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${pf.httpPort}/`)
      const closed = new Promise<number>((done) => ws.on('close', (code) => done(code)))
      ws.once('message', (data) => resolve({ ws, first: String(data), closed }))
      ws.once('error', reject)
    })
  const clients = await Promise.all([connect(), connect(), connect()])
  t.teardown(() => clients.forEach((c) => c.ws.terminate()))
  t.deepEqual(
    clients.map((c) => c.first),
    ['v1', 'v1', 'v1'],
  )
  pf.deploy('v2')
  const reload = await pf.fleet.cli(['reload', pf.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  t.deepEqual(await Promise.all(clients.map((c) => c.closed)), [1012, 1012, 1012])
  const again = await connect()
  t.teardown(() => again.ws.terminate())
  t.is(again.first, 'v2')
})

/** HTTP/2 load: `lanes` loops of requests, each lane on the current session, reconnecting on GOAWAY. */
function h2Load(port: number, lanes: number) {
  let session: http2.ClientHttp2Session | undefined
  let stopped = false
  const counts = { ok: 0, retried: 0, failed: 0, failures: [] as string[], bodies: {} as Record<string, number> }
  const current = (): http2.ClientHttp2Session => {
    if (session === undefined || session.closed || session.destroyed) {
      const s = http2.connect(`http://127.0.0.1:${port}`)
      s.on('error', () => undefined) // reported through the requests
      s.on('goaway', () => {
        if (session === s) session = undefined
      })
      session = s
    }
    return session
  }
  const once = (): Promise<void> =>
    new Promise((resolve) => {
      let req: http2.ClientHttp2Stream
      try {
        req = current().request({ ':path': '/?ms=5' })
      } catch {
        // The session got GOAWAY before this request was sent: it was never processed.
        session = undefined
        counts.retried += 1
        resolve()
        return
      }
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        counts.ok += 1
        counts.bodies[body] = (counts.bodies[body] ?? 0) + 1
        resolve()
      })
      req.on('error', (e: NodeJS.ErrnoException) => {
        // REFUSED_STREAM: the server did not process it (HTTP/2 §8.1.4), safe to retry.
        if (req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) counts.retried += 1
        else {
          counts.failed += 1
          counts.failures.push(e.code ?? e.message)
        }
        resolve()
      })
      req.end()
    })
  const loops = Array.from({ length: lanes }, async () => {
    while (!stopped) await once()
  })
  return {
    counts,
    async stop() {
      stopped = true
      await Promise.all(loops)
      session?.close()
      return counts
    },
  }
}

test('HTTP/2: sessions get GOAWAY on reload, in-flight streams finish, clients move to the new workers with 0 failed requests', async (t) => {
  const pf = await protocolFleet(t, 2)
  const load = h2Load(pf.h2Port, 8)
  t.teardown(() => load.stop())
  for (const version of ['v2', 'v3', 'v4']) {
    pf.deploy(version)
    const reload = await pf.fleet.cli(['reload', pf.fleet.name])
    t.is(reload.code, 0, reload.stderr)
  }
  await waitFor(() => (load.counts.bodies.v4 ?? 0) > 20, { message: 'v4 served over HTTP/2' })
  const counts = await load.stop()
  t.log(JSON.stringify({ ok: counts.ok, retried: counts.retried, failed: counts.failed, bodies: counts.bodies }))
  t.true(counts.ok > 200, `load ran: ${counts.ok}`)
  t.is(counts.failed, 0, counts.failures.join(', '))
})
