/**
 * The control socket under faults: a master that stops answering (SIGSTOP), one killed
 * with -9 that left its socket behind, and clients that misbehave (oversized or missing
 * requests, too many connections). Every CLI request ends, and says why.
 */
import test from 'ava'
import { existsSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { fixture, runCli, startFleet } from './helpers/fleet.js'
import { freePort, isAlive, OutputBuffer, waitFor, withTimeout } from './helpers/processes.js'

const APP = fixture('app.mjs')

/** A raw control connection: what the master sent, and when it closed. */
interface RawClient {
  socket: Socket
  out: OutputBuffer
  closed: Promise<void>
}

function rawClient(path: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = connect(path)
    const out = new OutputBuffer().follow(socket)
    const closed = new Promise<void>((r) => socket.on('close', () => r()))
    socket.once('error', reject)
    socket.once('connect', () => resolve({ socket, out, closed }))
  })
}

test('a SIGSTOPped master: baton status exits non-zero within its 3 s timeout (plus start-up), naming the master and the cause', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: APP, count: 1, listen: [`127.0.0.1:${port}`] })
  process.kill(fleet.pid, 'SIGSTOP')
  try {
    for (const args of [['status', fleet.name], ['status'], ['reload', fleet.name]]) {
      // What starting the CLI costs on this machine right now (a loaded CI box takes
      // seconds): the bound is the 3 s answer timeout plus that, plus 2 s, not a fixed 5 s.
      const baseline = Date.now()
      await fleet.cli(['--version'])
      const startup = Date.now() - baseline
      const started = Date.now()
      const r = await fleet.cli(args)
      const elapsed = Date.now() - started
      t.not(r.code, 0, `baton ${args.join(' ')}`)
      t.true(elapsed < 5000 + startup, `baton ${args.join(' ')} took ${elapsed} ms (CLI start-up ${startup} ms)`)
      t.true(r.stderr.includes(`baton master "${fleet.name}" (pid ${fleet.pid}) did not answer within 3 s`), r.stderr)
      t.true(
        r.stderr.includes(`it is stopped (SIGSTOP or job control); resume it with kill -CONT ${fleet.pid}`),
        r.stderr,
      )
    }
  } finally {
    process.kill(fleet.pid, 'SIGCONT')
  }
  // Resumed, it answers again, and the requests whose clients gave up were not acted on
  // (the reload did not run after the fact).
  const after = await fleet.status()
  t.is(after.workers.length, 1)
  t.is(after.generation, 1)
  t.false(after.reloading)
})

test('a reload that takes longer than the client timeout is kept alive by heartbeats', async (t) => {
  const port = await freePort()
  // The new worker needs 4 s to become ready: between "reload:start" and the outcome the
  // master has nothing to report for longer than the 3 s client timeout.
  const fleet = await startFleet(t, {
    script: APP,
    count: 1,
    listen: [`127.0.0.1:${port}`],
    env: { BOOT_DELAY_MS: '4000' },
  })
  const r = await fleet.cli(['reload', fleet.name])
  t.is(r.code, 0, r.stderr)
  t.true(r.stdout.includes('1 of 1 workers replaced'), r.stdout)
})

test('a master killed with -9 leaves a stale socket: the CLI says so, removes it, and a new master starts', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: APP, count: 1, listen: [`127.0.0.1:${port}`] })
  const sock = join(fleet.runtimeDir, `${fleet.name}.sock`)
  const pidFile = join(fleet.runtimeDir, `${fleet.name}.pid`)
  process.kill(fleet.pid, 'SIGKILL')
  await fleet.exited
  t.true(existsSync(sock) && existsSync(pidFile), 'kill -9 leaves the files behind')

  const listed = await fleet.cli(['status'])
  t.is(listed.code, 1)
  t.true(listed.stderr.includes('no baton master is running'), listed.stderr)
  t.false(existsSync(sock), 'the stale socket was removed')
  t.false(existsSync(pidFile), 'the stale pid file was removed')

  // The same through a named request, on files a killed master left.
  const again = await startFleet(t, {
    script: APP,
    name: fleet.name,
    count: 1,
    listen: [`127.0.0.1:${await freePort()}`],
  })
  process.kill(again.pid, 'SIGKILL')
  await again.exited
  const named = await runCli(['status', again.name], { BATON_RUNTIME_DIR: again.runtimeDir })
  t.is(named.code, 1)
  t.true(
    named.stderr.includes(
      `no baton master named "${again.name}" is running: pid ${again.pid} died without cleaning up`,
    ),
    named.stderr,
  )
  t.false(existsSync(join(again.runtimeDir, `${again.name}.sock`)))
})

test('the control server refuses an oversized request, drops a silent client, and caps its connections', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: APP, count: 1, listen: [`127.0.0.1:${port}`] })
  const path = join(fleet.runtimeDir, `${fleet.name}.sock`)
  const clients: RawClient[] = []
  t.teardown(() => {
    for (const c of clients) c.socket.destroy()
  })

  // 100 KB without a newline: refused as soon as the limit is passed, not read to the end.
  const big = await rawClient(path)
  clients.push(big)
  big.socket.write('x'.repeat(100 * 1024))
  await withTimeout(big.closed, 5000, 'the oversized client to be closed')
  t.regex(big.out.text, /"error":"control request longer than 65536 bytes/)

  // A client that sends nothing is answered with an error and closed (after 5 s).
  const silent = await rawClient(path)
  clients.push(silent)
  await withTimeout(silent.closed, 10_000, 'the silent client to be closed')
  t.regex(silent.out.text, /"error":"no request within 5 s/)

  // 64 idle connections fill the table; the 65th is told why and closed.
  for (let i = 0; i < 64; i++) clients.push(await rawClient(path))
  await waitFor(
    async () => {
      const extra = await rawClient(path)
      clients.push(extra)
      await withTimeout(extra.closed, 5000, 'the extra client to be closed')
      return extra.out.text.includes('too many control connections (64 open)')
    },
    { message: 'the 65th connection to be refused' },
  )
  for (const c of clients) c.socket.destroy()
  // Once they are gone, the CLI is served again, and the master never stopped serving.
  await waitFor(async () => (await fleet.cli(['status', fleet.name])).code === 0, { message: 'status after the flood' })
  t.true(isAlive(fleet.pid))
})
