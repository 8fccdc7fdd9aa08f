/**
 * PM2 migration: `baton start ecosystem.config.js [--env NAME]` runs each app of PM2's
 * `apps` as a group, with the fields that map translated and the others printed.
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { fixture, runCli, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir } from './helpers/processes.js'
import { fromEcosystem } from '../src/pm2-ecosystem.js'

test('an ecosystem.config.js with two apps starts both with the right instance counts and env (--env selects env_<name>)', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const [apiPort, adminPort] = [await freePort(), await freePort()]
  const ecosystem = `module.exports = {
  apps: [
    {
      name: 'api',
      script: ${JSON.stringify(fixture('app.mjs'))},
      instances: 3,
      exec_mode: 'cluster',
      kill_timeout: 4000,
      env: { PORT: '${apiPort}', APP_GREETING: 'dev' },
      env_production: { APP_GREETING: 'prod' },
      max_memory_restart: '300M',
      autorestart: true,
    },
    {
      name: 'admin',
      script: ${JSON.stringify(fixture('app.mjs'))},
      instances: 1,
      listen_timeout: 8000,
      env: { PORT: '${adminPort}', APP_GREETING: 'admin' },
      autorestart: true,
    },
  ],
}
`
  writeFileSync(join(dir.path, 'ecosystem.config.js'), ecosystem)
  const fleet = await startFleet(t, {
    cwd: dir.path,
    expectWorkers: 4,
    flags: [join(dir.path, 'ecosystem.config.js'), '--env', 'production', '--name', 'fleet'],
  })
  const status = await fleet.status()
  t.deepEqual(
    status.groups.map((g) => [g.name, g.count]),
    [
      ['api', 3],
      ['admin', 1],
    ],
  )
  t.true(status.groups[0]?.listen[0]?.endsWith(`:${apiPort}`), JSON.stringify(status.groups))
  t.true(status.groups[1]?.listen[0]?.endsWith(`:${adminPort}`), JSON.stringify(status.groups))
  // env_production is merged over env for api; admin has no env_production.
  t.is((await httpGet({ port: apiPort, path: '/greeting' })).body, 'prod')
  t.is((await httpGet({ port: adminPort, path: '/greeting' })).body, 'admin')
  // The PM2 fields baton does not use are named, not dropped silently.
  t.regex(fleet.log.text, /ignored PM2 field max_memory_restart \(api\)/)
  t.regex(fleet.log.text, /ignored PM2 field autorestart \(api, admin\)/)
})

test('ecosystem translation: instances max and -1, args and node_args strings, interpreter checks, errors naming the app field', (t) => {
  const cpus = availableParallelism()
  const eco = fromEcosystem(
    {
      apps: [
        { script: 'server.js', instances: 'max', args: '--mode "two words" x', node_args: '--max-old-space-size=512' },
        { name: 'w', script: 'w.js', instances: -1, cwd: 'sub', interpreter: '/usr/bin/node' },
      ],
    },
    '/srv/app',
    undefined,
  )
  t.deepEqual(Object.keys(eco.groups), ['server', 'w'])
  t.is(eco.groups.server?.count, cpus)
  t.deepEqual(eco.groups.server?.args, ['--mode', 'two words', 'x'])
  t.deepEqual(eco.groups.server?.execArgv, ['--max-old-space-size=512'])
  t.is(eco.groups.server?.script, '/srv/app/server.js')
  t.is(eco.groups.w?.count, Math.max(1, cpus - 1))
  t.is(eco.groups.w?.cwd, '/srv/app/sub')
  t.is(eco.groups.w?.script, '/srv/app/sub/w.js')
  t.throws(() => fromEcosystem({ apps: [{ script: 'a.py', interpreter: 'python3' }] }, '/', undefined), {
    message: /is not node/,
  })
  t.throws(() => fromEcosystem({ apps: [{ name: 'x' }] }, '/', undefined), { message: /is required/ })
})

test('a bad ecosystem field fails at start naming the file and apps[i].field; --env needs an ecosystem file', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const env = { BATON_RUNTIME_DIR: join(dir.path, 'rt') }
  const file = join(dir.path, 'ecosystem.config.cjs')
  writeFileSync(
    file,
    `module.exports = { apps: [{ name: 'a', script: ${JSON.stringify(fixture('app.mjs'))}, instances: 'lots' }] }\n`,
  )
  const bad = await runCli(['start', file], env)
  t.is(bad.code, 2, bad.stderr)
  t.true(bad.stderr.includes(`${file}: apps[0].instances: expected a number or "max", got "lots"`), bad.stderr)
  const noEco = await runCli(['start', fixture('app.mjs'), '--env', 'production'], env)
  t.is(noEco.code, 2)
  t.regex(noEco.stderr, /--env NAME selects env_NAME of a PM2 ecosystem file/)
})
