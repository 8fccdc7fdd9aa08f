/**
 * Apps with their own SIGTERM handler (`process.on('SIGTERM', () => server.close(() =>
 * process.exit(0)))`, close-with-grace, NestJS's shutdown hooks), unmodified, in drop-in
 * mode: baton drains first and hands the app its SIGTERM after, so reloads under
 * keep-alive load fail no request and the app's own cleanup still runs.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { drainServer } from '../src/worker/drain.js'
import { join } from 'node:path'
import { fixture, startFleet, workerExits, type Fleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests } from './helpers/reload.js'

interface AppFleet {
  fleet: Fleet
  port: number
  cleanupFile: string
  deploy(version: string): void
}

async function ownSigtermFleet(t: ExecutionContext, shutdown: string, flags: string[] = []): Promise<AppFleet> {
  const dir = await tmpDir('baton-sigterm-')
  t.teardown(() => dir.cleanup())
  const versionFile = join(dir.path, 'version.txt')
  const cleanupFile = join(dir.path, 'cleanup.txt')
  writeFileSync(versionFile, 'v1')
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('own-sigterm.mjs'),
    count: 2,
    env: { PORT: String(port), APP_VERSION_FILE: versionFile, APP_CLEANUP_FILE: cleanupFile, SHUTDOWN: shutdown },
    flags,
  })
  return { fleet, port, cleanupFile, deploy: (v) => writeFileSync(versionFile, v) }
}

function cleanups(f: AppFleet): string[] {
  return existsSync(f.cleanupFile) ? readFileSync(f.cleanupFile, 'utf8').trim().split('\n').filter(Boolean) : []
}

async function reloadTo(t: ExecutionContext, f: AppFleet, version: string): Promise<number[]> {
  const before = await f.fleet.workerPids()
  f.deploy(version)
  const reload = await f.fleet.cli(['reload', f.fleet.name])
  t.is(reload.code, 0, reload.stderr)
  const after = await f.fleet.workerPids()
  t.true(
    after.every((pid) => !before.includes(pid)),
    'every worker replaced',
  )
  return before
}

for (const [shutdown, what] of [
  ['snippet', "process.on('SIGTERM', () => server.close(() => process.exit(0)))"],
  ['grace', "close-with-grace style process.once('SIGTERM', async cleanup; exit)"],
  ['nest', 'NestJS style: close, remove the listener, send itself SIGTERM again'],
  ['next', 'Next.js style: close (logging a close error), then process.exit(143)'],
] as const) {
  test.serial(`${what}: 2 workers, 16 keep-alive clients, 3 reloads, 0 failed; its cleanup runs, exit 0`, async (t) => {
    const f = await ownSigtermFleet(t, shutdown)
    const load = startLoad({ port: f.port, connections: 16 })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 50, { message: 'load running' })
    const replaced: number[] = []
    for (const version of ['v2', 'v3', 'v4']) replaced.push(...(await reloadTo(t, f, version)))
    await waitFor(() => (load.snapshot().bodies.v4 ?? 0) > 50, { message: 'v4 served' })
    const result = await load.stop()
    t.log(`requests ${result.requests}, ok ${result.ok}, errors ${result.errors} ${JSON.stringify(result.errorCodes)}`)
    assertNoFailedRequests(t, result)
    // The app's own handler ran in every replaced worker (after baton's drain).
    await waitFor(() => cleanups(f).length >= replaced.length, {
      timeoutMs: 5000,
      message: `cleanup of ${replaced.length} workers: ${cleanups(f).join(', ')}`,
    })
    t.deepEqual(cleanups(f).sort(), replaced.map((pid) => `cleanup ${pid}`).sort())
    // Every replaced worker ended the stop cleanly: exit 0 (an exit 143 after the drain,
    // "terminated by SIGTERM", is the stop baton asked for), and the app's own close of the
    // server baton had closed did not fail.
    await waitFor(() => replaced.every((pid) => workerExits(f.fleet.log.text).has(pid)), {
      message: `every replaced worker's exit in the log:\n${f.fleet.log.text}`,
    })
    const exits = workerExits(f.fleet.log.text)
    t.deepEqual(
      replaced.map((pid) => `${pid} ${exits.get(pid)}`),
      replaced.map((pid) => `${pid} exited with code 0`),
    )
    t.notRegex(f.fleet.log.text, /before its connections were drained|ERR_SERVER_NOT_RUNNING/)
  })
}

test("the app's own close() of a server baton stopped succeeds (no ERR_SERVER_NOT_RUNNING)", async (t) => {
  const server = http.createServer((_req, res) => res.end('ok'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  // A keep-alive connection with a request answered: the close waits for it to end.
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  await new Promise<void>((resolve, reject) =>
    http.get({ port, host: '127.0.0.1', agent }, (res) => res.resume().on('end', resolve)).on('error', reject),
  )
  await drainServer(server, { idleMs: 50 })
  t.false(server.listening)
  // As Next.js's cleanup and `util.promisify(server.close)` call it.
  const err = await new Promise<Error | undefined>((resolve) => server.close((e) => resolve(e)))
  t.is(err, undefined)
  await t.notThrowsAsync(promisify(server.close.bind(server))())
  // A server that never listened still reports Node's own error.
  const never = http.createServer()
  const neverErr = await new Promise<Error | undefined>((resolve) => never.close((e) => resolve(e)))
  t.is((neverErr as NodeJS.ErrnoException | undefined)?.code, 'ERR_SERVER_NOT_RUNNING')
})

test.serial('the stop still ends within stopTimeout when the app handler never exits', async (t) => {
  const f = await ownSigtermFleet(t, 'stay', ['--stop-timeout', '1500'])
  const pids = await f.fleet.workerPids()
  const started = Date.now()
  const r = await f.fleet.cli(['stop', f.fleet.name])
  t.is(r.code, 0, r.stderr)
  t.true(Date.now() - started < 1500 + 1000, `stopped in ${Date.now() - started} ms`)
  t.deepEqual(cleanups(f).sort(), pids.map((pid) => `cleanup ${pid}`).sort(), 'the handler ran in each worker')
  t.notRegex(f.fleet.log.text, /SIGKILL|stop timeout/i, 'no worker had to be killed')
})

test.serial('an app that exits before its connections are drained is named in the log with its code', async (t) => {
  const f = await ownSigtermFleet(t, 'early')
  const load = startLoad({ port: f.port, connections: 8 })
  t.teardown(() => load.stop())
  await waitFor(() => load.snapshot().ok > 50, { message: 'load running' })
  const [first] = await f.fleet.workerPids()
  f.deploy('v2')
  await f.fleet.cli(['reload', f.fleet.name])
  await load.stop()
  await waitFor(() => /exited with code 3 before its connections were drained/.test(f.fleet.log.text), {
    message: `the early exit is reported:\n${f.fleet.log.text}`,
  })
  t.regex(f.fleet.log.text, new RegExp(`\\(pid ${first}\\): exited with code 3 before its connections were drained`))
})

test("the wrapped SIGTERM listeners look like the app's own; without the runtime they run at once", async (t) => {
  const url = new URL('../dist/worker/app-signals.js', import.meta.url).href
  const script = `
    import { installSignalDeferral } from ${JSON.stringify(url)};
    installSignalDeferral();
    const out = [];
    const a = () => out.push('a');
    const b = () => out.push('b');
    process.on('SIGTERM', a);
    process.once('SIGTERM', b);
    out.push('listeners ' + (process.listeners('SIGTERM').includes(a) && process.listeners('SIGTERM').includes(b)));
    process.removeListener('SIGTERM', a);
    out.push('count ' + process.listenerCount('SIGTERM'));
    process.on('SIGTERM', a);
    process.kill(process.pid, 'SIGTERM');
    setTimeout(() => { process.kill(process.pid, 'SIGTERM'); setTimeout(() => { console.log(JSON.stringify(out)); process.exit(0) }, 100) }, 100);
  `
  const out = JSON.parse(
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }),
  ) as string[]
  t.deepEqual(out, ['listeners true', 'count 1', 'b', 'a', 'a'])
})
