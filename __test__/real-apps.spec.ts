/**
 * A corpus of real apps, each run unmodified under baton the way its users run it (no baton
 * import, no env var for baton), each through 3 reloads under keep-alive load with 0 failed
 * requests and every old worker ending cleanly:
 *
 * - Next.js `next start` (examples/frameworks/next/, built once by `next build` in place and
 *   cached: rebuilt only when its sources or the installed next/react change). Next installs
 *   its own SIGTERM handler, which closes the server and exits 143.
 * - NestJS with `app.enableShutdownHooks()` (examples/frameworks/nest.mjs): on SIGTERM it
 *   destroys its open connections, closes the app and signals itself again.
 * - The SIGTERM snippet of deployment guides (fixtures/own-sigterm.mjs, `snippet`):
 *   `process.on('SIGTERM', () => server.close(() => process.exit(0)))`.
 * - A queue consumer that never listens (fixtures/pm2-app.mjs with NO_LISTEN), started with
 *   `--readiness uptime`: each reload replaces both workers one at a time while jobs go on.
 */
import test, { type ExecutionContext } from 'ava'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import {
  fixture,
  startFleet,
  startVersioned,
  workerExits,
  type FleetOptions,
  type VersionedFleet,
} from './helpers/fleet.js'
import { startLoad, type Load } from '../harness/load.mjs'
import { tmpDir, waitFor } from './helpers/processes.js'
import { assertNoFailedRequests, reloadAll } from './helpers/reload.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const NEXT_APP = join(ROOT, 'examples', 'frameworks', 'next')
const NEXT_BIN = join(ROOT, 'node_modules', '.bin', 'next')
/** Written into the build output once `next build` succeeded: what it was built from. */
const NEXT_BUILD_KEY = join(NEXT_APP, '.next', 'baton-build-key')
const require = createRequire(import.meta.url)
/**
 * Next.js and NestJS workers get 10 s to stop (as under an orchestrator's usual grace
 * period) instead of the default 2 s: on a machine shared by many test runs their cleanup
 * after the drain was seen to take more than 2 s, and a SIGKILL cuts connections. The
 * order of the stop is what these tests prove; without the deferral they fail whatever the
 * timeout.
 */
const SLOW_STOP = ['--stop-timeout', '10000']

/** Every file `next build` reads from this repo, and the versions of what it builds with. */
function nextBuildKey(): string {
  const hash = createHash('sha256')
  const files: string[] = [join(ROOT, 'examples', 'frameworks', 'version.mjs')]
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === '.next' || entry.name === 'cache' || entry.name === 'node_modules') continue
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else files.push(path)
    }
  }
  walk(NEXT_APP)
  for (const file of files.sort())
    hash
      .update(`${relative(ROOT, file)}\0`)
      .update(readFileSync(file))
      .update('\0')
  for (const pkg of ['next', 'react', 'react-dom']) {
    hash.update(`${pkg}@${(require(`${pkg}/package.json`) as { version: string }).version}\0`)
  }
  return hash.digest('hex')
}

let nextBuild: Promise<string> | undefined

/**
 * `next build` the example once (per key): a build whose key matches the sources is reused
 * across runs. Resolves with what happened, for the test log.
 */
function buildNextOnce(): Promise<string> {
  nextBuild ??= (async () => {
    const key = nextBuildKey()
    if (existsSync(NEXT_BUILD_KEY) && readFileSync(NEXT_BUILD_KEY, 'utf8') === key) return 'next build: cached'
    const started = Date.now()
    await promisify(execFile)(process.execPath, [NEXT_BIN, 'build'], {
      cwd: NEXT_APP,
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' },
      timeout: 280_000,
      maxBuffer: 16 * 1024 * 1024,
    })
    writeFileSync(NEXT_BUILD_KEY, key)
    return `next build: ${Date.now() - started} ms`
  })()
  return nextBuild
}

/**
 * An unmodified app started by `baton start` in drop-in mode with 2 workers on a free port:
 * `PORT` in its env, or (`portEnv: false`) `$PORT` in its args replaced by the port.
 */
function startApp(
  t: ExecutionContext,
  { portEnv = true, ...options }: Omit<FleetOptions, 'count'> & { portEnv?: boolean },
): Promise<VersionedFleet> {
  return startVersioned(t, (port) => ({
    ...options,
    count: 2,
    env: { ...options.env, ...(portEnv ? { PORT: String(port) } : {}) },
    args: options.args?.map((a) => a.replace('$PORT', String(port))),
  }))
}

/**
 * 3 reloads (v2, v3, v4) under the given loads; then: no failed request, v4 served, every
 * replaced worker exited with code 0, and nothing in the log about an early exit or a
 * failed close.
 */
async function threeReloadsUnderLoad(
  t: ExecutionContext,
  app: VersionedFleet,
  loads: { main: Load; others?: Load[] },
): Promise<void> {
  const all = [loads.main, ...(loads.others ?? [])]
  t.teardown(() => Promise.all(all.map((l) => l.stop())))
  await waitFor(() => loads.main.snapshot().ok > 50, { message: 'load running' })
  const replaced = await app.fleet.workerPids()
  const ms: number[] = []
  for (const version of ['v2', 'v3', 'v4']) {
    ms.push(await reloadAll(t, app, version, 2))
    replaced.push(...(await app.fleet.workerPids()))
  }
  // The last pair is the one serving now.
  replaced.splice(-2, 2)
  await waitFor(() => (loads.main.snapshot().bodies.v4 ?? 0) > 50, { message: 'v4 served' })
  const [main, ...others] = await Promise.all(all.map((l) => l.stop()))
  if (main === undefined) return t.fail('no load result')
  t.log(
    `reloads ${ms.join(', ')} ms; requests ${main.requests}, errors ${main.errors} ${JSON.stringify(main.errorCodes)}`,
  )
  // What the workers said, when a request failed.
  if (main.errors + main.non2xx > 0) t.log(app.fleet.log.text)
  assertNoFailedRequests(t, main)
  for (const other of others) {
    t.log(`other load: requests ${other.requests}, errors ${other.errors} ${JSON.stringify(other.errorCodes)}`)
    t.true(other.requests > 20, `other load ran: ${other.requests} requests`)
    t.is(other.errors, 0, `errors: ${JSON.stringify(other.errorCodes)}`)
    t.is(other.non2xx, 0)
  }
  await waitFor(() => replaced.every((pid) => workerExits(app.fleet.log.text).has(pid)), {
    message: `the exit of every replaced worker in the log:\n${app.fleet.log.text}`,
  })
  const exits = workerExits(app.fleet.log.text)
  t.deepEqual(
    replaced.map((pid) => `${pid} ${exits.get(pid)}`),
    replaced.map((pid) => `${pid} exited with code 0`),
    'every old worker exited 0',
  )
  t.notRegex(app.fleet.log.text, /before its connections were drained|ERR_SERVER_NOT_RUNNING|SIGKILL/)
}

test.serial(
  'Next.js `next start`, unmodified: 2 workers, 3 reloads under keep-alive load, 0 failed, old workers exit 0',
  async (t) => {
    // The first run builds the app (about 15 s to a minute on a busy machine).
    t.timeout(300_000)
    t.log(await buildNextOnce())
    // As a user runs it, from the app's directory: baton start node_modules/.bin/next --count 2 -- start -p PORT
    const app = await startApp(t, {
      script: NEXT_BIN,
      flags: SLOW_STOP,
      cwd: NEXT_APP,
      args: ['start', '-p', '$PORT'],
      portEnv: false,
      // Only so the tests send Next.js no usage data; users need nothing.
      env: { NEXT_TELEMETRY_DISABLED: '1' },
    })
    t.regex(app.fleet.log.text, /Next\.js 16/)
    await threeReloadsUnderLoad(t, app, {
      main: startLoad({ port: app.port, connections: 12, path: '/api/version' }),
      others: [startLoad({ port: app.port, connections: 4, path: '/' })],
    })
  },
)

test.serial(
  'NestJS with enableShutdownHooks(), unmodified: 2 workers, 3 reloads under keep-alive load, 0 failed, old workers exit 0',
  async (t) => {
    const app = await startApp(t, { script: join(ROOT, 'examples', 'frameworks', 'nest.mjs'), flags: SLOW_STOP })
    await threeReloadsUnderLoad(t, app, { main: startLoad({ port: app.port, connections: 16, pauseMs: 5 }) })
  },
)

test.serial(
  "the SIGTERM snippet (process.on('SIGTERM', () => server.close(() => process.exit(0)))): 3 reloads under load, 0 failed, exit 0",
  async (t) => {
    const app = await startApp(t, { script: fixture('own-sigterm.mjs'), env: { SHUTDOWN: 'snippet' } })
    await threeReloadsUnderLoad(t, app, { main: startLoad({ port: app.port, connections: 16, pauseMs: 5 }) })
  },
)

test.serial(
  'a queue consumer (no listen) with --readiness uptime: 3 reloads, each replacing both one at a time, jobs never stop',
  async (t) => {
    const dir = await tmpDir('baton-consumer-')
    t.teardown(() => dir.cleanup())
    const jobsFile = join(dir.path, 'jobs.log')
    const fleet = await startFleet(t, {
      script: fixture('pm2-app.mjs'),
      count: 2,
      env: { NO_LISTEN: '1', CONSUMER_LOG: jobsFile },
      flags: ['--readiness', 'uptime', '--min-uptime', '800', '--ready-timeout', '5000'],
    })
    t.is((await fleet.status()).groups[0]?.readiness, 'uptime')
    const replaced: number[] = []
    const from = Date.now()
    for (let i = 0; i < 3; i += 1) {
      const before = await fleet.status()
      const reload = await fleet.cli(['reload', fleet.name])
      t.is(reload.code, 0, reload.stderr)
      t.regex(reload.stdout, /1\/2 replaced[\s\S]*2\/2 replaced/)
      const after = await fleet.status()
      const old = before.workers.map((w) => w.pid ?? -1)
      t.true(
        after.workers.every((w) => w.state === 'ready' && !old.includes(w.pid ?? -1)),
        JSON.stringify(after.workers),
      )
      // One at a time: the second replacement started once the first had been up 800 ms.
      const [a, b] = after.workers.map((w) => Date.parse(w.startedAt ?? ''))
      t.true(Math.abs((b ?? 0) - (a ?? 0)) >= 700, `replacements started ${Math.abs((b ?? 0) - (a ?? 0))} ms apart`)
      replaced.push(...old)
    }
    const to = Date.now()
    // The jobs went on through the reloads: never a second without one.
    const jobs = [...readFileSync(jobsFile, 'utf8').matchAll(/job \d+ (\d+)/g)].map((m) => ({ at: Number(m[1]) }))
    const during = jobs
      .filter((j) => j.at >= from && j.at <= to)
      .map((j) => j.at)
      .sort((x, y) => x - y)
    const gaps = during.slice(1).map((at, i) => at - (during[i] as number))
    t.true(during.length > 10, `${during.length} jobs during the reloads`)
    t.true(Math.max(...gaps) < 1000, `longest pause between jobs: ${Math.max(...gaps)} ms`)
    t.log(`${during.length} jobs in ${to - from} ms of reloads; longest pause ${Math.max(...gaps)} ms`)
    // Each replaced consumer stopped at baton's SIGTERM (it has no handler), none was killed.
    await waitFor(() => replaced.every((pid) => workerExits(fleet.log.text).has(pid)), {
      message: `the exit of every replaced consumer in the log:\n${fleet.log.text}`,
    })
    const exits = workerExits(fleet.log.text)
    t.deepEqual(
      replaced.map((pid) => `${pid} ${exits.get(pid)}`),
      replaced.map((pid) => `${pid} killed by SIGTERM`),
    )
  },
)
