/**
 * PM2 migration: `baton start ecosystem.config.js [--env NAME]` runs each app of PM2's
 * `apps` as a group, with the fields that map translated and the others printed.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { availableParallelism, networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { fixture, runCli, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { nobody } from '../harness/proc.mjs'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { EcosystemError, fromEcosystem, isEcosystemFile } from '../src/master/pm2-ecosystem.js'

const asRoot = process.getuid?.() === 0 ? test : test.skip

/** Whether a TCP connection to host:port is accepted. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port })
    socket.setTimeout(2000)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('timeout', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(false))
  })
}

/** The local addresses of the sockets listening on TCP `port` (IPv4 and IPv6), from /proc/net. */
function listeningOn(port: number): string[] {
  const out: string[] = []
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/)
      if (local === undefined || state !== '0A') continue // 0A: LISTEN
      const [hex, p] = local.split(':')
      if (hex === undefined || parseInt(p ?? '', 16) !== port) continue
      if (hex.length === 8) out.push([3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.'))
      else out.push(hex === '0'.repeat(32) ? '::' : `v6:${hex}`)
    }
  }
  return out
}

test('an ecosystem.config.js with two apps starts both with the right instance counts and env (--env selects env_<name>)', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const [apiPort, adminPort] = [await freePort(), await freePort()]
  const ecosystem = `module.exports = {
  apps: [
    {
      name: 'api',
      script: ${JSON.stringify(fixture('pm2-app.mjs'))},
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
      script: ${JSON.stringify(fixture('pm2-app.mjs'))},
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
  // max_memory_restart is maxMemory now: the group's options show it.
  t.notRegex(fleet.log.text, /ignored PM2 field max_memory_restart/)
  t.is(status.groups[0]?.options?.maxMemory, '300M')
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

test('a bad ecosystem field fails at start naming the file and apps[i].field; --env needs a config file, not a script', async (t) => {
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
  t.regex(noEco.stderr, /--env NAME selects the env_NAME blocks of a config file .* not of a script/)
})

test('PM2 apps map onto readiness: wait_ready -> message, a port / instances > 1 / cluster -> listen, fork mode -> uptime (min_uptime); env.PORT is no listen address; uid, gid, instance_var', (t) => {
  const eco = fromEcosystem(
    {
      apps: [
        { name: 'waits', script: 'a.js', wait_ready: true, env: { PORT: '3000' } },
        { name: 'port', script: 'a.js', env: { PORT: '3001' }, min_uptime: 2000 },
        { name: 'many', script: 'a.js', instances: 2 },
        { name: 'cluster', script: 'a.js', exec_mode: 'cluster' },
        { name: 'queue', script: 'q.js', min_uptime: '5s', uid: 'nobody', gid: 65534, instance_var: 'INSTANCE_ID' },
        { name: 'cron', script: 'c.js', exec_mode: 'fork' },
      ],
    },
    '/srv/app',
    undefined,
  )
  const g = eco.groups
  t.is(g.waits?.readiness, 'message')
  t.is(g.port?.readiness, 'listen')
  t.is(g.port?.listen, undefined, 'env.PORT: the app listens itself (drop-in), on the host it asks for')
  t.is(g.many?.readiness, 'listen')
  t.is(g.cluster?.readiness, 'listen')
  t.is(g.queue?.readiness, 'uptime')
  t.is(g.queue?.minUptime, 5000)
  t.is(g.queue?.uid, 'nobody')
  t.is(g.queue?.gid, 65534)
  t.is(g.queue?.instanceVar, 'INSTANCE_ID')
  t.is(g.cron?.readiness, 'uptime')
  t.is(g.cron?.minUptime, 1000)
  // The mapping chosen for each app is printed.
  for (const line of [
    /^waits: readiness message/,
    /^port: readiness listen: ready once it listens \(env.PORT 3001\)/,
    /^many: readiness listen: .*instances 2/,
    /^cluster: readiness listen: .*cluster mode/,
    /^queue: readiness uptime: ready once up for 5000 ms \(fork mode, no port, min_uptime\)/,
    /^cron: readiness uptime: ready once up for 1000 ms/,
  ])
    t.true(
      eco.notes.some((n) => line.test(n)),
      `${String(line)} in\n${eco.notes.join('\n')}`,
    )
  t.false(
    eco.notes.some((n) => /ignored PM2 field (uid|gid|instance_var|min_uptime)/.test(n)),
    eco.notes.join('\n'),
  )
  t.true(
    eco.notes.includes('port: min_uptime not used: it counts only for apps made ready by uptime (fork mode, no port)'),
    eco.notes.join('\n'),
  )
})

test('PM2 cron_restart maps onto cronRestart (a rolling reload), no longer listed as ignored', (t) => {
  const eco = fromEcosystem(
    { apps: [{ name: 'api', script: 'a.js', instances: 2, cron_restart: '0 3 * * *' }] },
    '/srv/app',
    undefined,
  )
  t.is(eco.groups.api?.cronRestart, '0 3 * * *')
  t.false(
    eco.notes.some((n) => /ignored PM2 field cron_restart/.test(n)),
    eco.notes.join('\n'),
  )
  const err = t.throws(() => fromEcosystem({ apps: [{ script: 'a.js', cron_restart: 5 }] }, '/', undefined), {
    message: /expected a cron expression/,
  })
  t.is((err as EcosystemError | undefined)?.key, 'apps[0].cron_restart')
})

test('PM2 max_memory_restart maps onto maxMemory (a graceful replacement): a size string, or a number of bytes', (t) => {
  const eco = fromEcosystem(
    {
      apps: [
        { name: 'api', script: 'a.js', max_memory_restart: '300M' },
        { name: 'jobs', script: 'b.js', max_memory_restart: 104857600 },
      ],
    },
    '/srv/app',
    undefined,
  )
  t.is(eco.groups.api?.maxMemory, '300M')
  t.is(eco.groups.jobs?.maxMemory, '104857600')
  t.false(
    eco.notes.some((n) => /ignored PM2 field max_memory_restart/.test(n)),
    eco.notes.join('\n'),
  )
  for (const bad of [0, -1, 1.5, '', true]) {
    const err = t.throws(() => fromEcosystem({ apps: [{ script: 'a.js', max_memory_restart: bad }] }, '/', undefined), {
      message: /expected a size such as "300M"/,
    })
    t.is((err as EcosystemError | undefined)?.key, 'apps[0].max_memory_restart')
  }
})

test('a PM2 fork-mode app with no port (a queue consumer) maps to uptime and starts; workers see NODE_APP_INSTANCE, or instance_var instead', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  writeFileSync(
    join(dir.path, 'ecosystem.config.js'),
    `module.exports = { apps: [
      { name: 'queue', script: ${JSON.stringify(fixture('pm2-app.mjs'))}, min_uptime: 500, env: { NO_LISTEN: '1' } },
      { name: 'web', script: ${JSON.stringify(fixture('pm2-app.mjs'))}, instances: 2, instance_var: 'INSTANCE_ID',
        env: { PORT: '${port}', LISTEN_HOST: '127.0.0.1' } },
    ] }\n`,
  )
  const fleet = await startFleet(t, {
    cwd: dir.path,
    expectWorkers: 3,
    flags: [join(dir.path, 'ecosystem.config.js'), '--name', 'fleet'],
  })
  const status = await fleet.status()
  t.deepEqual(
    status.groups.map((g) => [g.name, g.readiness, g.minUptimeMs, g.instanceVar]),
    [
      ['queue', 'uptime', 500, 'NODE_APP_INSTANCE'],
      ['web', 'listen', null, 'INSTANCE_ID'],
    ],
  )
  t.regex(fleet.log.text, /queue: readiness uptime: ready once up for 500 ms/)
  // The consumer: NODE_APP_INSTANCE = its id. The web workers: INSTANCE_ID instead (PM2
  // renames the variable).
  t.regex(fleet.log.text, /instance=0 instance_id=unset id=0/)
  const web = await Promise.all([0, 1, 2, 3, 4, 5].map(() => httpGet({ port, path: '/info' })))
  const seen = new Set(
    web.map((r) => {
      const i = JSON.parse(r.body) as { instance: string | null; instanceId: string | null; id: string }
      t.is(i.instance, null)
      t.is(i.instanceId, i.id)
      return i.id
    }),
  )
  t.true(seen.size >= 1)
  t.regex(fleet.log.text, /instance=unset instance_id=0 id=0/)
  t.regex(fleet.log.text, /instance=unset instance_id=1 id=1/)
})

asRoot('a PM2 app with uid: "nobody" runs its workers as nobody, never as root', async (t) => {
  const who = nobody()
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  // The workers' cwd (the file's directory) must be open to nobody.
  chmodSync(dir.path, 0o755)
  writeFileSync(
    join(dir.path, 'ecosystem.config.js'),
    `module.exports = { apps: [{ name: 'queue', script: ${JSON.stringify(fixture('pm2-app.mjs'))}, instances: 1,
      uid: 'nobody', min_uptime: 300, env: { NO_LISTEN: '1' } }] }\n`,
  )
  const fleet = await startFleet(t, {
    cwd: dir.path,
    expectWorkers: 1,
    flags: [join(dir.path, 'ecosystem.config.js'), '--name', 'fleet'],
  })
  const [pid] = await fleet.workerPids()
  const uidLine = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Uid:'))
  t.deepEqual(uidLine?.split(/\s+/).slice(1).map(Number), [who.uid, who.uid, who.uid, who.uid], uidLine)
  // The app prints its uid once it runs; readiness uptime (300 ms) may come first.
  await waitFor(() => new RegExp(`uid=${who.uid} `).test(fleet.log.text), {
    timeoutMs: 10_000,
    message: `the worker's own line uid=${who.uid}`,
  })
})

test('a PM2 app that listens on 127.0.0.1 (env.PORT) is reachable on 127.0.0.1 only', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  writeFileSync(
    join(dir.path, 'ecosystem.config.js'),
    `module.exports = { apps: [{ name: 'web', script: ${JSON.stringify(fixture('pm2-app.mjs'))}, instances: 2,
      exec_mode: 'cluster', env: { PORT: '${port}', LISTEN_HOST: '127.0.0.1' } }] }\n`,
  )
  const fleet = await startFleet(t, {
    cwd: dir.path,
    expectWorkers: 2,
    flags: [join(dir.path, 'ecosystem.config.js'), '--name', 'fleet'],
  })
  t.is((await httpGet({ port, path: '/greeting' })).status, 200)
  // One socket per worker slot (the default balance, reuseport, reaches drop-in apps too),
  // every one bound to 127.0.0.1.
  const bound = listeningOn(port)
  t.deepEqual(bound, ['127.0.0.1', '127.0.0.1'], 'one listening socket per slot, each bound to 127.0.0.1')
  const status = await fleet.status()
  t.deepEqual(status.groups[0]?.listen, [`127.0.0.1:${port}`])
  // Another local address of this host, where one exists, refuses the connection.
  const other = Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)
  if (other !== undefined) t.false(await accepts(other.address, port), `not reachable on ${other.address}`)
  else t.log('no non-loopback IPv4 address: checked the bound address only')
  t.log(
    `ss: ${execFileSync('sh', ['-c', `ss -ltn 'sport = :${port}' 2>/dev/null || true`])
      .toString()
      .trim()}`,
  )
})

test('any PM2 file name: e.config.js, apps.json and process.yml are read as PM2 files', async (t) => {
  const dir = await tmpDir('baton-pm2-')
  t.teardown(() => dir.cleanup())
  const app = (name: string) => ({ name, script: fixture('pm2-app.mjs'), min_uptime: 200, env: { NO_LISTEN: '1' } })
  writeFileSync(join(dir.path, 'e.config.js'), `module.exports = { apps: [${JSON.stringify(app('fromjs'))}] }\n`)
  writeFileSync(join(dir.path, 'apps.json'), JSON.stringify({ apps: [app('fromjson')] }))
  const yml = app('fromyml')
  writeFileSync(
    join(dir.path, 'process.yml'),
    `apps:\n  - name: ${yml.name}\n    script: ${JSON.stringify(yml.script)}\n    min_uptime: 200\n    env:\n      NO_LISTEN: '1'\n`,
  )
  writeFileSync(join(dir.path, 'broken.yml'), 'apps:\n  - name: [unclosed\n')
  writeFileSync(join(dir.path, 'server.config.js'), 'console.log("a script")\n')
  t.true(isEcosystemFile(join(dir.path, 'e.config.js')))
  t.true(isEcosystemFile(join(dir.path, 'apps.json')))
  t.true(isEcosystemFile(join(dir.path, 'process.yml')))
  t.false(isEcosystemFile(join(dir.path, 'server.config.js')), 'no apps: still a script')
  t.false(isEcosystemFile(fixture('pm2-app.mjs')))
  for (const [file, group] of [
    ['e.config.js', 'fromjs'],
    ['apps.json', 'fromjson'],
    ['process.yml', 'fromyml'],
  ] as const) {
    const fleet = await startFleet(t, {
      cwd: dir.path,
      name: group,
      expectWorkers: 1,
      flags: [join(dir.path, file)],
    })
    const status = await fleet.status()
    t.deepEqual(
      status.groups.map((g) => [g.name, g.readiness]),
      [[group, 'uptime']],
      file,
    )
  }
  const broken = await runCli(['start', join(dir.path, 'broken.yml')], { BATON_RUNTIME_DIR: join(dir.path, 'rt') })
  t.is(broken.code, 2, broken.stderr)
  t.regex(broken.stderr, /broken\.yml: is not valid YAML/)
})
