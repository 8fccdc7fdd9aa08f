/**
 * Config files: `baton start` with no script reads `baton.config.{mjs,js,cjs,json}` (or
 * `--config FILE`); errors name the file and the key; `baton reload` re-reads the file and
 * the new workers get the new per-worker settings, while the report says what changed
 * and what needs a restart.
 */
import test, { type ExecutionContext } from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, runCli, startFleet, type Fleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import type { ConfigChange } from '../src/types.js'

const APP = fixture('app.mjs')

/** A config module with a `web` group (greeting as given) and, optionally, a `jobs` group. */
function mjsConfig(o: { webPort: number; greeting: string; webCount?: number; jobsPort?: number }): string {
  const groups: Record<string, unknown> = {
    web: { script: APP, count: o.webCount ?? 2, listen: `127.0.0.1:${o.webPort}`, env: { APP_GREETING: o.greeting } },
  }
  if (o.jobsPort !== undefined) groups.jobs = { script: APP, count: 1, listen: { http: `127.0.0.1:${o.jobsPort}` } }
  return `export default ${JSON.stringify({ name: 'fleet', groups }, null, 2)}\n`
}

/** The greeting of every worker behind `port`, as a set (fresh connection each time). */
async function greetings(port: number, tries = 12): Promise<Set<string>> {
  const seen = new Set<string>()
  for (let i = 0; i < tries; i++) seen.add((await httpGet({ port, path: '/greeting' })).body)
  return seen
}

async function reloadReport(fleet: Fleet) {
  const status = await fleet.status()
  return status.lastReload as (typeof status.lastReload & { changes: ConfigChange[] }) | null
}

/** A fleet started from a `baton.config.mjs` in a temp dir: a `web` group of 2 saying "hello". */
async function startWebFromConfig(t: ExecutionContext): Promise<{ file: string; webPort: number; fleet: Fleet }> {
  const dir = await tmpDir('baton-config-')
  t.teardown(() => dir.cleanup())
  const webPort = await freePort()
  const file = join(dir.path, 'baton.config.mjs')
  writeFileSync(file, mjsConfig({ webPort, greeting: 'hello' }))
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
  return { file, webPort, fleet }
}

test('a config file with two groups starts both, and each serves', async (t) => {
  const dir = await tmpDir('baton-config-')
  t.teardown(() => dir.cleanup())
  const [webPort, jobsPort] = [await freePort(), await freePort()]
  writeFileSync(join(dir.path, 'baton.config.mjs'), mjsConfig({ webPort, greeting: 'hello', jobsPort }))
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 3 })
  const status = await fleet.status()
  t.is(status.name, 'fleet')
  t.deepEqual(status.workers.map((w) => `${w.group}#${w.id}`).sort(), ['jobs#0', 'web#0', 'web#1'])
  t.deepEqual([...(await greetings(webPort, 4))], ['hello'])
  t.is((await httpGet({ port: jobsPort, path: '/' })).body, 'v1')
})

test('a wrong key fails at start, naming the file and the key; so do bad JSON and a missing file', async (t) => {
  const dir = await tmpDir('baton-config-')
  t.teardown(() => dir.cleanup())
  const env = { BATON_RUNTIME_DIR: join(dir.path, 'rt') }
  const file = join(dir.path, 'baton.config.mjs')
  writeFileSync(file, `export default { groups: { web: { script: ${JSON.stringify(APP)}, cout: 2 } } }\n`)
  const wrongKey = await runCli(['start', '--config', file], env)
  t.is(wrongKey.code, 2, wrongKey.stderr)
  t.true(wrongKey.stderr.includes(`${file}: groups.web.cout: unknown option`), wrongKey.stderr)

  writeFileSync(file, `export default { group: {} }\n`)
  const topLevel = await runCli(['start', '--config', file], env)
  t.is(topLevel.code, 2)
  t.true(topLevel.stderr.includes(`${file}: group: unknown option`), topLevel.stderr)

  writeFileSync(file, `export default { groups: { web: { script: 'missing.mjs' } } }\n`)
  const missingScript = await runCli(['start', '--config', file], env)
  t.is(missingScript.code, 2)
  t.true(
    missingScript.stderr.includes(`${file}: groups.web.script: ${join(dir.path, 'missing.mjs')} does not exist`),
    missingScript.stderr,
  )

  const json = join(dir.path, 'baton.config.json')
  writeFileSync(json, '{ "groups": { "web": { "script": "app.mjs", } } }')
  const badJson = await runCli(['start', '--config', json], env)
  t.is(badJson.code, 2)
  t.regex(badJson.stderr, new RegExp(`${json.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: is not valid JSON`))

  const none = await tmpDir('baton-config-empty-')
  t.teardown(() => none.cleanup())
  const noConfig = await runCli(['start', '--config', join(none.path, 'baton.config.mjs')], env)
  t.is(noConfig.code, 2)
  t.true(noConfig.stderr.includes('does not exist'), noConfig.stderr)
})

test('baton reload re-reads the file: a changed env is served by the new workers, and the report says what changed', async (t) => {
  const { file, webPort, fleet } = await startWebFromConfig(t)
  t.deepEqual([...(await greetings(webPort))], ['hello'])

  // env changes (applies to the new workers); count changes (needs a restart: kept at 2).
  writeFileSync(file, mjsConfig({ webPort, greeting: 'bonjour', webCount: 3 }))
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 0, reload.stderr)
  t.true(reload.stdout.includes('config changes for the new workers: web.env (APP_GREETING)'), reload.stdout)
  t.true(
    reload.stdout.includes(
      'need a new master (baton upgrade, with 0 failed requests; or baton restart): web.count (2 -> 3)',
    ),
    reload.stdout,
  )
  t.false(reload.stdout.includes('bonjour'), 'env values are not printed')
  t.deepEqual([...(await greetings(webPort))], ['bonjour'])
  const status = await fleet.status()
  t.is(status.workers.length, 2, 'count needs a restart: still 2 workers')
  const report = await reloadReport(fleet)
  t.deepEqual(
    report?.changes.map((c) => [c.group, c.setting, c.applied]),
    [
      ['web', 'env', 'new-workers'],
      ['web', 'count', 'needs-restart'],
    ],
  )
  t.deepEqual(report?.changes[0]?.keys, ['APP_GREETING'])

  // A reload with the file unchanged (count still differs) applies nothing new.
  const again = await fleet.cli(['reload', fleet.name])
  t.is(again.code, 0, again.stderr)
  t.false(again.stdout.includes('config changes for the new workers'), again.stdout)
})

test('a config file that breaks before a reload fails the reload, naming the file; the old workers keep serving', async (t) => {
  const { file, webPort, fleet } = await startWebFromConfig(t)
  const before = await fleet.workerPids()

  writeFileSync(file, `export default { groups: { web: { script: ${JSON.stringify(APP)}, count: 'two' } } }\n`)
  const bad = await fleet.cli(['reload', fleet.name])
  t.is(bad.code, 1)
  t.true(bad.stderr.includes(`${file}: groups.web.count: expected an integer`), bad.stderr)
  writeFileSync(file, 'export default {{ syntax error\n')
  const broken = await fleet.cli(['reload', fleet.name])
  t.is(broken.code, 1)
  t.true(broken.stderr.includes(`${file}: cannot be loaded`), broken.stderr)

  t.deepEqual((await fleet.workerPids()).sort(), before.sort(), 'no worker was replaced')
  t.is((await fleet.status()).generation, 1)
  t.deepEqual([...(await greetings(webPort, 4))], ['hello'])

  // Fixed again: the next reload works.
  writeFileSync(file, mjsConfig({ webPort, greeting: 'fixed' }))
  const ok = await fleet.cli(['reload', fleet.name])
  t.is(ok.code, 0, ok.stderr)
  t.deepEqual([...(await greetings(webPort))], ['fixed'])
})

test('a CommonJS config is re-read on reload too, and start flags override it', async (t) => {
  const dir = await tmpDir('baton-config-')
  t.teardown(() => dir.cleanup())
  const webPort = await freePort()
  const file = join(dir.path, 'baton.config.cjs')
  const cjs = (greeting: string) =>
    `module.exports = () => (${JSON.stringify({
      name: 'fleet',
      groups: {
        web: {
          script: '../app-link.mjs',
          cwd: 'sub',
          count: 3,
          listen: `127.0.0.1:${webPort}`,
          env: { APP_GREETING: greeting },
        },
      },
    })})\n`
  // Relative script and cwd resolve against the file's directory.
  const { mkdirSync, symlinkSync } = await import('node:fs')
  mkdirSync(join(dir.path, 'sub'))
  symlinkSync(APP, join(dir.path, 'app-link.mjs'))
  writeFileSync(file, cjs('one'))
  // --count overrides the file's 3.
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1, flags: ['--count', '1'] })
  t.is((await fleet.status()).workers.length, 1)
  t.deepEqual([...(await greetings(webPort, 3))], ['one'])
  writeFileSync(file, cjs('two'))
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 0, reload.stderr)
  t.deepEqual([...(await greetings(webPort, 3))], ['two'])
  t.is((await fleet.status()).workers.length, 1, 'the --count flag still wins after the re-read')
})

test('SIGHUP re-reads the config file too', async (t) => {
  const { file, webPort, fleet } = await startWebFromConfig(t)
  writeFileSync(file, mjsConfig({ webPort, greeting: 'hup' }))
  process.kill(fleet.pid, 'SIGHUP')
  await waitFor(async () => (await reloadReport(fleet))?.outcome === 'done', { message: 'the SIGHUP reload is done' })
  t.deepEqual(
    (await reloadReport(fleet))?.changes.map((c) => c.setting),
    ['env'],
  )
  t.deepEqual([...(await greetings(webPort))], ['hup'])
})

test('supervisor.reconfigure() applies per-worker settings to the next reload and reports the rest', async (t) => {
  const { Supervisor, OptionsError } = await import('../src/index.js')
  const dir = await tmpDir('baton-config-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  const web = (greeting: string, count = 1) => ({
    script: APP,
    count,
    listen: `127.0.0.1:${port}`,
    env: { APP_GREETING: greeting },
  })
  const sup = new Supervisor({
    name: 'api',
    runtimeDir: dir.path,
    log: false,
    handleSignals: false,
    groups: { web: web('a') },
  })
  t.teardown(() => sup.stop({ force: true }))
  await sup.start()
  t.throws(() => sup.reconfigure({ groups: { web: { ...web('b'), stopTimeout: -1 } } }), {
    instanceOf: OptionsError,
    message: /^groups\.web\.stopTimeout: /,
  })
  const changes = sup.reconfigure({ groups: { web: web('b', 2), extra: { script: APP } } })
  t.deepEqual(
    changes.map((c) => [c.group, c.setting, c.applied]),
    [
      ['web', 'env', 'new-workers'],
      ['web', 'count', 'needs-restart'],
      ['extra', 'group', 'needs-restart'],
    ],
  )
  t.is((await httpGet({ port, path: '/greeting' })).body, 'a', 'applies to new workers only')
  const report = await sup.reload()
  t.deepEqual(
    report.changes.map((c) => c.setting),
    ['env', 'count', 'group'],
  )
  t.true(report.message.includes('group extra (added)'), report.message)
  t.is((await httpGet({ port, path: '/greeting' })).body, 'b')
  t.is(sup.status().workers.length, 1)
})

test('baton start --env production with a baton.config.mjs: a group with env_production gets it merged over env, X=1; a misspelt --env is refused naming the file', async (t) => {
  const dir = await tmpDir('baton-config-env-')
  t.teardown(() => dir.cleanup())
  const [webPort, jobsPort] = [await freePort(), await freePort()]
  const file = join(dir.path, 'baton.config.mjs')
  const config = {
    name: 'fleet',
    groups: {
      web: {
        script: APP,
        count: 2,
        listen: `127.0.0.1:${webPort}`,
        env: { APP_GREETING: 'dev', KEEP: 'k' },
        env_production: { X: '1', APP_GREETING: 'prod' },
        env_staging: { APP_GREETING: 'staging' },
      },
      // No env_production: its env is used as it is.
      jobs: { script: APP, count: 1, listen: `127.0.0.1:${jobsPort}`, env: { APP_GREETING: 'jobs' } },
    },
  }
  writeFileSync(file, `export default ${JSON.stringify(config)}\n`)

  // A name no group has: refused before anything starts, naming the file, the flag and the groups.
  const typo = await runCli(['start', '--config', file, '--env', 'prodution'], {
    BATON_RUNTIME_DIR: join(dir.path, 'rt'),
  })
  t.is(typo.code, 2, typo.stderr)
  t.true(typo.stderr.includes(file), typo.stderr)
  t.regex(typo.stderr, /--env prodution: no group has env_prodution \(groups: web, jobs\)/)

  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 3, flags: ['--env', 'production'] })
  /** The variables a worker process sees (its /proc/<pid>/environ). */
  const environ = (pid: number): Map<string, string> =>
    new Map(
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    )
  const check = async (): Promise<void> => {
    if (process.platform !== 'linux') return // no /proc: the greetings below tell
    for (const w of (await fleet.status()).workers) {
      const vars = environ(w.pid as number)
      if (w.group === 'web') {
        t.is(vars.get('X'), '1', `web#${w.id}`)
        t.is(vars.get('KEEP'), 'k', 'env_production is merged over env')
      } else t.false(vars.has('X'), 'a group without env_production keeps its env')
    }
  }
  await check()
  t.deepEqual([...(await greetings(webPort, 4))], ['prod'])
  t.is((await httpGet({ port: jobsPort, path: '/greeting' })).body, 'jobs')
  // A reload re-reads the file with the same --env.
  const reload = await fleet.cli(['reload', 'fleet'])
  t.is(reload.code, 0, reload.stderr)
  await check()
  t.deepEqual([...(await greetings(webPort, 4))], ['prod'])
})
