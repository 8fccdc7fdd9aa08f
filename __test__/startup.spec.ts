/**
 * `baton startup`: a systemd unit for a fleet as it was started. Quoting and rendering
 * are checked as functions; the command against real masters started with the CLI, and
 * its output with `systemd-analyze verify` (which needs no running systemd).
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  environmentLine,
  listenStream,
  renderUnits,
  runtimeDirectoryLines,
  systemdQuote,
  type StartupGroup,
} from '../src/cli/startup.js'
import { BATON, fixture, runCli, startFleet } from './helpers/fleet.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

test('ExecStart arguments are quoted as systemd reads them back', (t) => {
  t.is(systemdQuote('/usr/bin/node'), '/usr/bin/node')
  t.is(systemdQuote('--listen=127.0.0.1:8080'), '--listen=127.0.0.1:8080')
  t.is(systemdQuote('/srv/my app/app.mjs'), '"/srv/my app/app.mjs"')
  t.is(systemdQuote('100%'), '100%%')
  t.is(systemdQuote('$HOME'), '"$$HOME"')
  t.is(systemdQuote('${X}'), '"$${X}"')
  t.is(systemdQuote('say "hi"'), '"say \\"hi\\""')
  t.is(systemdQuote("it's"), '"it\'s"')
  t.is(systemdQuote('a\\b'), '"a\\\\b"')
  t.is(systemdQuote('two\nlines\tand\x01'), '"two\\nlines\\tand\\x01"')
  t.is(systemdQuote(''), '""')
  t.is(systemdQuote(';'), '";"', 'a lone ; would separate commands')
  t.is(systemdQuote('héllo'), '"héllo"')
  t.is(environmentLine('BATON_RUNTIME_DIR', '/run/baton'), 'Environment=BATON_RUNTIME_DIR=/run/baton')
  t.is(
    environmentLine('X', '/a b/$c%d'),
    'Environment="X=/a b/$c%%d"',
    'no $ expansion in Environment=, % still a specifier',
  )
})

test('listen addresses become ListenStream= values', (t) => {
  t.is(listenStream('web', ':8080', '[::]:8080', '/srv'), '8080')
  t.is(listenStream('web', '127.0.0.1:8080', '127.0.0.1:8080', '/srv'), '127.0.0.1:8080')
  t.is(listenStream('web', '[::1]:8080', '[::1]:8080', '/srv'), '[::1]:8080')
  t.is(listenStream('web', 'localhost:8080', '127.0.0.1:8080', '/srv'), '127.0.0.1:8080')
  t.is(listenStream('web', 'unix:/run/app.sock', 'unix:/run/app.sock', '/srv'), '/run/app.sock')
  t.is(listenStream('web', 'unix:run/app.sock', 'unix:run/app.sock', '/srv'), '/srv/run/app.sock')
  t.throws(() => listenStream('web', '127.0.0.1:0', '127.0.0.1:41234', '/srv'), {
    message: /group "web" listens on 127\.0\.0\.1:0, a port the kernel picks .*fixed port/,
  })
})

const group = (name: string, listen: string[], stopTimeoutMs = 2000): StartupGroup => ({
  name,
  sockets: listen.map((a) => ({ address: a, configured: a, from: 'bound', fd: null, fdName: null })),
  stopTimeoutMs,
  readyTimeoutMs: 30_000,
  balance: 'shared',
})

test('the service runs the recorded command without --daemon; --socket adds one socket unit per listening group', (t) => {
  const units = renderUnits({
    name: 'shop',
    node: '/usr/bin/node',
    args: ['/opt/baton/bin/baton.js', 'start', '--config', 'my config.mjs', '--daemon', '--', '--daemon'],
    cwd: '/srv/100% shop',
    runtimeDir: '/run/baton',
    user: 'www',
    groups: [group('web', [':8080']), group('admin', ['127.0.0.1:8081'], 9000), group('jobs', [])],
    socket: true,
  })
  t.deepEqual(
    units.map((u) => u.file),
    ['shop.service', 'shop-web.socket', 'shop-admin.socket'],
  )
  const service = units[0]?.text ?? ''
  t.true(
    service.includes('\nExecStart=/usr/bin/node /opt/baton/bin/baton.js start --config "my config.mjs" -- --daemon\n'),
    service,
  )
  t.true(service.includes('\nExecReload=/usr/bin/node /opt/baton/bin/baton.js reload shop\n'))
  t.true(service.includes('\nWorkingDirectory=/srv/100%% shop\n'))
  t.true(service.includes('\nEnvironment=BATON_RUNTIME_DIR=/run/baton\n'))
  t.true(service.includes('\nUser=www\n'))
  t.true(
    service.includes('\nRuntimeDirectory=baton\nRuntimeDirectoryMode=0700\nRuntimeDirectoryPreserve=yes\n'),
    'BATON_RUNTIME_DIR=/run/baton: systemd makes it, and keeps it when this unit stops',
  )
  t.true(service.includes('\nType=notify\nNotifyAccess=main\n'))
  t.true(service.includes('\nKillMode=mixed\nTimeoutStopSec=14\n'), 'the longest stop timeout (9 s) + 5 s')
  t.true(service.includes('\nRequires=shop-web.socket shop-admin.socket\nAfter=shop-web.socket shop-admin.socket\n'))
  t.true(service.includes('\nSockets=shop-web.socket shop-admin.socket\n'))
  t.true(
    units[1]?.text.includes('\nListenStream=8080\n') && units[1].text.includes('\nFileDescriptorName=web\n'),
    units[1]?.text,
  )
  t.true(
    units[2]?.text.includes('\nListenStream=127.0.0.1:8081\n') &&
      units[2].text.includes('\nFileDescriptorName=admin\n'),
  )
  t.throws(
    () =>
      renderUnits({
        name: 'q',
        node: '/n',
        args: ['/b', 'start'],
        cwd: '/',
        runtimeDir: undefined,
        user: undefined,
        groups: [group('jobs', [])],
        socket: true,
      }),
    {
      message: /"q" has no listen address, so there is no socket for systemd to hold/,
    },
  )
})

test("a root fleet's unit keeps the shared /run/baton when it stops, so other fleets keep their control sockets", (t) => {
  const unit = (name: string) =>
    renderUnits({
      name,
      node: '/usr/bin/node',
      args: ['/opt/baton/bin/baton.js', 'start', `${name}.mjs`],
      cwd: '/srv',
      runtimeDir: undefined,
      user: undefined,
      groups: [group(name, [':8080'])],
      socket: false,
    })[0]?.text ?? ''
  // Two fleets of root share /run/baton: a RuntimeDirectory= without Preserve=yes would be
  // deleted, with the other fleet's socket, when either unit stops.
  for (const text of [unit('shop'), unit('api')]) {
    t.true(text.includes('\nRuntimeDirectory=baton\n'), text)
    t.true(text.includes('\nRuntimeDirectoryMode=0700\n'))
    t.true(text.includes('\nRuntimeDirectoryPreserve=yes\n'))
  }
  // Another user's default is ~/.baton (no RuntimeDirectory=); a dir outside /run neither.
  t.deepEqual(runtimeDirectoryLines(undefined, 'www'), [])
  t.deepEqual(runtimeDirectoryLines('/srv/rt', undefined), [])
  t.deepEqual(runtimeDirectoryLines('/run/../etc', undefined), [])
  t.true(runtimeDirectoryLines('/run/app/rt', 'www').includes('RuntimeDirectory=app/rt'))
  // Whenever any unit asks systemd for a runtime directory, it is preserved.
  for (const [dir, user] of [
    [undefined, undefined],
    ['/run/baton', 'www'],
    ['/run/app', undefined],
  ] as const) {
    const lines = runtimeDirectoryLines(dir, user)
    t.true(lines.some((l) => l.startsWith('RuntimeDirectory=')))
    t.true(lines.includes('RuntimeDirectoryPreserve=yes'))
  }
})

test('baton startup prints the unit of a fleet started with the CLI; with --socket --out the files pass systemd-analyze verify', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    name: 'shop',
    count: 1,
    listen: [`127.0.0.1:${port}`],
    flags: ['--stop-timeout', '4000'],
  })
  const env = { BATON_RUNTIME_DIR: fleet.runtimeDir }
  // The master writes the record once its workers are ready.
  await waitFor(async () => (await runCli(['startup', 'shop'], env)).code === 0, { message: 'a start record' })
  const r = await runCli(['startup', 'shop'], env)
  t.is(r.code, 0, r.stderr)
  t.true(
    r.stdout.includes(
      `\nExecStart=${process.execPath} ${BATON} start ${fixture('app.mjs')} --name shop --count 1 --listen 127.0.0.1:${port} --stop-timeout 4000\n`,
    ),
    r.stdout,
  )
  t.true(r.stdout.includes(`\nWorkingDirectory=${process.cwd()}\n`))
  t.true(r.stdout.includes(`\nEnvironment=BATON_RUNTIME_DIR=${fleet.runtimeDir}\n`))
  t.true(r.stdout.includes('\nTimeoutStopSec=9\n'))
  t.false(r.stdout.includes('.socket'))
  t.regex(r.stderr, /sudo systemctl enable --now shop\.service/)

  const out = await tmpDir('baton-units-')
  t.teardown(() => out.cleanup())
  const s = await runCli(['startup', 'shop', '--socket', '--out', out.path], env)
  t.is(s.code, 0, s.stderr)
  const socket = readFileSync(join(out.path, 'shop.socket'), 'utf8')
  t.true(
    socket.includes(`\nListenStream=127.0.0.1:${port}\n`) && socket.includes('\nFileDescriptorName=shop\n'),
    socket,
  )
  t.true(readFileSync(join(out.path, 'shop.service'), 'utf8').includes('\nRequires=shop.socket\n'))
  t.regex(s.stderr, /sudo systemctl enable --now shop\.socket shop\.service/)
  if (process.platform === 'linux' && spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0) {
    const v = spawnSync('systemd-analyze', ['verify', join(out.path, 'shop.service'), join(out.path, 'shop.socket')], {
      encoding: 'utf8',
    })
    t.is(v.status, 0, v.stderr)
    t.is(v.stderr.trim(), '', 'systemd-analyze verify has nothing to say')
  }
  const stop = await fleet.cli(['stop', 'shop'])
  t.is(stop.code, 0, stop.stderr)
})

test('a master that died keeps its record: baton startup still prints the unit from it', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('app.mjs'), name: 'gone', count: 1, listen: [`:${port}`] })
  await waitFor(async () => (await fleet.cli(['startup', 'gone'])).code === 0, { message: 'a start record' })
  process.kill(fleet.pid, 'SIGKILL')
  await fleet.exited
  const r = await fleet.cli(['startup', 'gone', '--socket'])
  t.is(r.code, 0, r.stderr)
  t.true(r.stdout.includes(`\nListenStream=${port}\n`) && r.stdout.includes('\nFileDescriptorName=gone\n'), r.stdout)
})

test('baton startup names a fleet that does not exist and says what to do', async (t) => {
  const dir = await tmpDir('baton-startup-')
  t.teardown(() => dir.cleanup())
  const r = await runCli(['startup', 'nope'], { BATON_RUNTIME_DIR: dir.path })
  t.is(r.code, 1)
  t.regex(
    r.stderr,
    /no fleet "nope" is running and none was started with the baton CLI in .*: start it with baton start .*then run baton startup nope/,
  )
  const none = await runCli(['startup'], { BATON_RUNTIME_DIR: dir.path })
  t.is(none.code, 1)
  t.regex(none.stderr, /no baton master is running/)
})
