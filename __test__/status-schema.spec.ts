/**
 * `import type { Status } from 'batonjs'` is what `baton status --json` prints and what
 * `supervisor.status()` returns: a live status of a real fleet (a group with `listen`, a
 * drop-in group, after a reload that picked up a config change) is validated against a
 * JSON Schema made from the generated type (native/index.d.cts, the declarations napi
 * writes from crates/baton-contract). Strict: a field in the JSON that the type does not
 * declare fails, and so does a field the type requires that the JSON lacks.
 */
import test from 'ava'
import { fileURLToPath } from 'node:url'
import { Supervisor, type GroupOptions, type Status } from '../src/index.js'
import { schemaOf, validate } from './helpers/dts-schema.js'
import { BATON, fixture, runCli } from './helpers/fleet.js'
import { freePort, ProcessTracker, startTime, tmpDir, waitFor, withTimeout } from './helpers/processes.js'

const DTS = fileURLToPath(new URL('../native/index.d.cts', import.meta.url))

test('the schema of the generated Status type is strict: an added or a missing field is reported', (t) => {
  const schema = schemaOf(DTS, 'Status')
  const status = schema.$defs.Status
  t.true(status !== undefined && 'additionalProperties' in status && status.additionalProperties === false)
  t.true(status !== undefined && 'required' in status && status.required.includes('workers'))
  // A WorkerStatus row: pid is `number | null`, state one of the WorkerState names.
  const row = {
    group: 'web',
    id: 0,
    pid: null,
    generation: 1,
    state: 'starting',
    restarts: 0,
    rssBytes: null,
    cpu: null,
    cpuSeconds: null,
    connections: null,
    startedAt: null,
    lastExit: null,
    lastReplaced: null,
    restartInMs: 1000,
  }
  const rowSchema = { $ref: '#/$defs/WorkerStatus', $defs: schemaOf(DTS, 'WorkerStatus').$defs }
  t.deepEqual(validate(rowSchema, row), [])
  t.deepEqual(validate(rowSchema, { ...row, heapBytes: 0 }), [
    '$.heapBytes: in the value, not in the type (additionalProperties: false)',
  ])
  const missing: Partial<typeof row> = { ...row }
  delete missing.restarts
  t.deepEqual(validate(rowSchema, missing), ['$.restarts: required by the type, missing from the value'])
  t.deepEqual(validate(rowSchema, { ...row, state: 'gone' }), [
    '$.state: "gone" is not one of starting, ready, stopping',
  ])
  t.deepEqual(validate(rowSchema, { ...row, pid: '12' }), ['$.pid: expected a number, got "12"'])
})

test('a live status (baton status --json and supervisor.status()) validates against the generated Status type', async (t) => {
  const dir = await tmpDir('baton-schema-')
  const webPort = await freePort()
  const plainPort = await freePort()
  const name = 'schema'
  const groups = (greeting: string): Record<string, GroupOptions> => ({
    web: {
      script: fixture('app.mjs'),
      count: 2,
      listen: `127.0.0.1:${webPort}`,
      env: { APP_GREETING: greeting },
    },
    // No listen address: its plain listen(PORT) gets a socket the master creates (drop-in).
    plain: { script: fixture('plain-listen.cjs'), count: 1, env: { PORT: String(plainPort) } },
  })
  const sup = new Supervisor({ name, runtimeDir: dir.path, log: false, handleSignals: false, groups: groups('hi') })
  const started = new Map<number, string | undefined>()
  sup.on('worker:spawn', (e) => started.set(e.pid, startTime(e.pid)))
  t.teardown(async () => {
    await withTimeout(sup.stop({ force: true }), 10_000, 'supervisor force stop').catch(() => undefined)
    const tracker = new ProcessTracker()
    for (const [pid, at] of started) tracker.trackPid(pid, at)
    await tracker.killAll()
    await dir.cleanup()
  })
  await sup.start()
  // A re-read config (env changed), then a reload: `lastReload` with its `changes`.
  sup.reconfigure({ name, runtimeDir: dir.path, groups: groups('hello') })
  await sup.reload()
  await waitFor(() => sup.status().groups.find((g) => g.name === 'plain')?.sockets.length === 1, {
    message: 'the drop-in socket is listed',
  })

  const schema = schemaOf(DTS, 'Status')
  const api: Status = sup.status()
  t.is(api.groups.find((g) => g.name === 'plain')?.sockets[0]?.from, 'drop-in')
  t.is(api.groups.find((g) => g.name === 'web')?.sockets[0]?.from, 'bound')
  t.true((api.lastReload?.changes.length ?? 0) > 0, JSON.stringify(api.lastReload))
  t.deepEqual(validate(schema, api), [], 'supervisor.status()')

  const cli = await runCli(['status', name, '--json'], { ...process.env, BATON_RUNTIME_DIR: dir.path }, BATON)
  t.is(cli.code, 0, cli.stderr)
  const printed = JSON.parse(cli.stdout) as unknown
  t.deepEqual(validate(schema, printed), [], 'baton status --json')
  // The CLI and the API show the same fields.
  t.deepEqual(Object.keys(printed as object).sort(), Object.keys(api).sort())
})
