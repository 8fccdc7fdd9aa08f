/**
 * Worker output: relayed off the supervision loop through bounded buffers (a flood into a
 * master whose stdout/stderr nobody reads stalls nothing and is counted as dropped), file
 * sinks with line prefixes and `baton reopen-logs`, `ignore`, `baton logs [-f] [--lines N]`,
 * and the daemon's log file. Real masters, workers, pipes and files.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from '../src/cli/control-client.js'
import type { Status } from '../src/types.js'
import { BATON, fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { OutputBuffer, ProcessTracker, tmpDir, waitFor, waitForExit, withTimeout } from './helpers/processes.js'

const TALKER = fixture('talker.mjs')

async function workerPid(fleet: Fleet): Promise<number> {
  const [pid] = await fleet.workerPids()
  if (pid === undefined) throw new Error('no worker')
  return pid
}

function fileText(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : ''
}

/** The lines `baton logs` prints, without the trailing newline. */
function printed(stdout: string): string[] {
  return stdout.split('\n').filter((l) => l !== '')
}

function vmRssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024
}

/**
 * A worker writes 100 MB to `stream` as fast as it can while the master's stdout and stderr
 * are pipes this test does not read: the control socket answers status within 1 s every
 * time, the master's RSS stays under 100 MiB, and the status counts dropped bytes.
 */
async function flood(t: ExecutionContext, stream: 'stdout' | 'stderr'): Promise<void> {
  if (process.platform !== 'linux') {
    t.pass('reads /proc: Linux only')
    return
  }
  const tracker = new ProcessTracker()
  const dir = await tmpDir('baton-test-')
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const env = { ...process.env, BATON_RUNTIME_DIR: dir.path, FLOOD_BYTES: String(100_000_000), FLOOD_STREAM: stream }
  const master = tracker.spawn(process.execPath, [BATON, 'start', TALKER, '--name', 'flood', '--count', '1'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = waitForExit(master)
  const status = async (): Promise<Status> => {
    const answer = await withTimeout(request(dir.path, 'flood', { cmd: 'status' }), 5000, 'status answer')
    if (!answer.status) throw new Error(answer.error ?? 'no status')
    return answer.status
  }
  const ready = await waitFor(
    async () => {
      const s = await status()
      return s.workers.length === 1 && s.workers[0].state === 'ready' && s.workers[0].pid !== null ? s : undefined
    },
    { timeoutMs: 20_000, message: 'the worker ready' },
  )
  const worker = ready.workers[0].pid as number
  tracker.trackPid(worker)
  process.kill(worker, 'SIGUSR2')
  const slowest = { ms: 0, rss: 0, rounds: 0 }
  await waitFor(
    async () => {
      const started = performance.now()
      await status()
      const ms = performance.now() - started
      slowest.ms = Math.max(slowest.ms, ms)
      slowest.rss = Math.max(slowest.rss, vmRssBytes(master.pid as number))
      slowest.rounds += 1
      t.true(ms < 1000, `status took ${ms.toFixed(0)} ms during the flood`)
      const lines: string[] = []
      const last = request(dir.path, 'flood', { cmd: 'logs', lines: 1, follow: false }, (e) => {
        lines.push(String(e.text))
      })
      t.true((await withTimeout(last, 5000, 'the last line')).ok)
      return lines[0] === 'flood done'
    },
    { timeoutMs: 90_000, intervalMs: 10, message: `the flood to end (${JSON.stringify(slowest)})` },
  )
  t.true(slowest.rounds >= 3, `status was measured ${slowest.rounds} times during the flood`)
  t.true(slowest.rss < 100 * 1024 * 1024, `master VmRSS reached ${(slowest.rss / 1024 / 1024).toFixed(1)} MiB`)
  t.log(
    `flood on ${stream}: slowest status ${slowest.ms.toFixed(0)} ms over ${slowest.rounds} rounds, max master VmRSS ${(slowest.rss / 1024 / 1024).toFixed(1)} MiB`,
  )

  // The CLI reports what was dropped.
  const cli = tracker.spawn(process.execPath, [BATON, 'status', 'flood', '--json'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = new OutputBuffer().follow(cli.stdout)
  t.is((await waitForExit(cli)).code, 0)
  const s = JSON.parse(out.text) as Status
  t.true(s.groups[0].logs.droppedBytes > 0, JSON.stringify(s.groups[0].logs))
  t.is(s.logs.droppedBytes, s.groups[0].logs.droppedBytes)
  const human = tracker.spawn(process.execPath, [BATON, 'status', 'flood'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const table = new OutputBuffer().follow(human.stdout)
  await waitForExit(human)
  t.regex(table.text, /output dropped: [\d.]+ MiB of group flood/)

  // Read the pipes now: the master's writers catch up, and it stops cleanly.
  const log = new OutputBuffer().follow(master.stdout)
  log.follow(master.stderr)
  await log.waitFor(/bytes of worker output dropped: std(out|err) did not keep up/, 20_000)
  await request(dir.path, 'flood', { cmd: 'stop', force: false })
  t.deepEqual(await withTimeout(exited, 20_000, 'the master to exit'), { code: 0, signal: null })
}

test.serial('a 100 MB stdout flood into an unread master stdout stalls no supervision and is counted', (t) =>
  flood(t, 'stdout'),
)
test.serial('a 100 MB stderr flood into an unread master stderr stalls no supervision and is counted', (t) =>
  flood(t, 'stderr'),
)

test('file sink with logPrefix: lines land in the file prefixed; after a rename, reopen-logs moves new lines to a new file', async (t) => {
  const dir = await tmpDir('baton-logs-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const fleet = await startFleet(t, { script: TALKER, count: 1, flags: ['--stdout', path, '--log-prefix'] })
  await waitFor(() => fileText(path).includes('fleet#0 started 0\n'), {
    message: `prefixed start line in ${path}: ${fileText(path)}`,
  })
  const pid = await workerPid(fleet)
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(path).includes('fleet#0 out-1\n'), { message: `out-1 in ${path}` })
  // stderr stays on the master's stderr (inherit), prefixed too.
  await fleet.log.waitFor(/^fleet#0 err-1$/m)
  t.false(fleet.log.text.includes('out-1'), 'stdout went to the file only')
  t.false(fileText(path).includes('err-1'))

  renameSync(path, `${path}.1`)
  const reopened = await fleet.cli(['reopen-logs', fleet.name])
  t.is(reopened.code, 0, reopened.stderr)
  t.regex(reopened.stdout, /reopened 1 log file of "fleet"/)
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(path).includes('fleet#0 out-2\n'), { message: `out-2 in the new ${path}` })
  t.is(fileText(path), 'fleet#0 out-2\n')
  t.is(fileText(`${path}.1`), 'fleet#0 started 0\nfleet#0 out-1\n')
  const s = await fleet.status()
  t.deepEqual(s.groups[0].logs, { stdout: path, stderr: 'inherit', prefix: true, droppedBytes: 0 })
})

test("ignore: nothing reaches the master's stdout, but baton logs shows the lines", async (t) => {
  const fleet = await startFleet(t, { script: TALKER, count: 1, flags: ['--stdout', 'ignore'] })
  process.kill(await workerPid(fleet), 'SIGUSR2')
  // stderr (inherit) is written after stdout: once it is out, stdout would be too.
  await fleet.log.waitFor(/^err-1$/m)
  const logs = await fleet.cli(['logs', fleet.name])
  t.is(logs.code, 0, logs.stderr)
  t.true(printed(logs.stdout).includes('fleet#0 out | started 0'), logs.stdout)
  t.true(printed(logs.stdout).includes('fleet#0 out | out-1'), logs.stdout)
  t.true(printed(logs.stdout).includes('fleet#0 err | err-1'), logs.stdout)
  t.false(fleet.log.text.includes('out-1'), fleet.log.text)
  t.false(fleet.log.text.includes('started 0'), fleet.log.text)
})

test('baton logs --lines 3 shows exactly the last 3 lines; -f shows a line written after it started and ends with the master', async (t) => {
  const fleet = await startFleet(t, { script: TALKER, count: 1, env: { TALK_LINES: '5', TALK_STDERR: '0' } })
  const pid = await workerPid(fleet)
  process.kill(pid, 'SIGUSR2')
  await waitFor(async () => (await fleet.cli(['logs', fleet.name, '--lines', '1'])).stdout.includes('out-1.5'), {
    message: 'out-1.5 in baton logs',
  })
  const three = await fleet.cli(['logs', fleet.name, '--lines', '3'])
  t.is(three.code, 0, three.stderr)
  t.deepEqual(printed(three.stdout), ['fleet#0 out | out-1.3', 'fleet#0 out | out-1.4', 'fleet#0 out | out-1.5'])
  const all = await fleet.cli(['logs', fleet.name])
  t.deepEqual(printed(all.stdout), [
    'fleet#0 out | started 0',
    ...[1, 2, 3, 4, 5].map((i) => `fleet#0 out | out-1.${i}`),
  ])

  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const env = { ...process.env, BATON_RUNTIME_DIR: fleet.runtimeDir }
  const follow = tracker.spawn(process.execPath, [BATON, 'logs', fleet.name, '-f', '--lines', '1'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const followed = new OutputBuffer().follow(follow.stdout)
  const followErr = new OutputBuffer().follow(follow.stderr)
  const followExit = waitForExit(follow)
  await followed.waitFor(/out-1\.5\n/)
  process.kill(pid, 'SIGUSR2')
  await followed.waitFor(/^fleet#0 out \| out-2\.5$/m)
  t.deepEqual(printed(followed.text), [
    'fleet#0 out | out-1.5',
    ...[1, 2, 3, 4, 5].map((i) => `fleet#0 out | out-2.${i}`),
  ])
  const stop = await fleet.cli(['stop', fleet.name])
  t.is(stop.code, 0, stop.stderr)
  t.deepEqual(await withTimeout(followExit, 10_000, 'baton logs -f to end with the master'), { code: 0, signal: null })
  t.regex(followErr.text, /"fleet" stopped/)
})

test('bad --lines: exit 2 with a message naming --lines', async (t) => {
  const fleet = await startFleet(t, { script: TALKER, count: 1 })
  for (const bad of [['--lines', 'abc'], ['--lines=-1'], ['--lines', '1.5'], ['--lines', '99999999']]) {
    const r = await fleet.cli(['logs', fleet.name, ...bad])
    t.is(r.code, 2, `${bad.join(' ')}: ${r.stderr}`)
    t.regex(r.stderr, /--lines/, bad.join(' '))
  }
})

test('bad stdout/stderr targets fail the start naming the option, and nothing runs', async (t) => {
  const dir = await tmpDir('baton-logs-')
  t.teardown(() => dir.cleanup())
  const env = { BATON_RUNTIME_DIR: dir.path }
  const { runCli } = await import('./helpers/fleet.js')
  const missing = await runCli(
    ['start', TALKER, '--count', '1', '--stdout', join(dir.path, 'no', 'such', 'dir', 'x.log')],
    env,
  )
  t.is(missing.code, 2, missing.stderr)
  t.regex(missing.stderr, /groups\.talker\.stdout: cannot write .*x\.log: directory .* does not exist/)
  const isDir = await runCli(['start', TALKER, '--count', '1', '--stderr', dir.path], env)
  t.is(isDir.code, 2, isDir.stderr)
  t.regex(isDir.stderr, /groups\.talker\.stderr: .* is a directory/)
  const api = await import('../src/index.js')
  t.throws(() => new api.Supervisor({ groups: { web: { script: TALKER, stdout: 42 as unknown as string } } }), {
    message: /groups\.web\.stdout: expected 'inherit', 'ignore' or a file path, got 42/,
  })
  t.throws(() => new api.Supervisor({ groups: { web: { script: TALKER, logPrefix: 'yes' as unknown as boolean } } }), {
    message: /groups\.web\.logPrefix: expected true or false/,
  })
})

test("a reload that changes stdout in the config file sends the new workers' output to the new file", async (t) => {
  const dir = await tmpDir('baton-logs-')
  t.teardown(() => dir.cleanup())
  const config = join(dir.path, 'baton.config.mjs')
  const write = (file: string) =>
    writeFileSync(
      config,
      `export default { name: 'cfg', groups: { talk: { script: ${JSON.stringify(TALKER)}, stdout: '${file}', logPrefix: true } } }\n`,
    )
  write('a.log')
  const fleet = await startFleet(t, { cwd: dir.path, name: 'cfg', expectWorkers: 1 })
  const a = join(dir.path, 'a.log')
  const b = join(dir.path, 'b.log')
  await waitFor(() => fileText(a).includes('talk#0 started 0'), {
    message: 'a.log written (relative to the config file)',
  })
  write('b.log')
  const reload = await fleet.cli(['reload', 'cfg'])
  t.is(reload.code, 0, reload.stderr)
  t.regex(reload.stdout, /stdout/)
  await waitFor(() => fileText(b).includes('talk#0 started 0'), { message: 'the new worker writes b.log' })
  t.is(fileText(a), 'talk#0 started 0\n')
})

test('daemon mode: worker output goes to <runtime dir>/<name>.log, and reopen-logs reopens it', async (t) => {
  const dir = await tmpDir('baton-test-')
  const tracker = new ProcessTracker()
  t.teardown(async () => {
    await tracker.killAll()
    await dir.cleanup()
  })
  const env = { BATON_RUNTIME_DIR: dir.path }
  const { runCli } = await import('./helpers/fleet.js')
  const started = await runCli(['start', TALKER, '--name', 'dmn', '--count', '1', '--daemon'], env)
  t.is(started.code, 0, started.stderr)
  const log = join(dir.path, 'dmn.log')
  t.true(started.stdout.includes(log), started.stdout)
  const statusOf = async (): Promise<Status> =>
    JSON.parse((await runCli(['status', 'dmn', '--json'], env)).stdout) as Status
  const s = await statusOf()
  tracker.trackPid(s.pid)
  const pid = s.workers[0].pid as number
  tracker.trackPid(pid)
  t.is(s.logs.file, log)
  await waitFor(() => fileText(log).includes('started 0\n'), { message: `the worker's start line in ${log}` })
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(log).includes('out-1\n') && fileText(log).includes('err-1\n'), {
    message: `out-1 and err-1 in ${log}`,
  })
  renameSync(log, `${log}.1`)
  const reopened = await runCli(['reopen-logs', 'dmn'], env)
  t.is(reopened.code, 0, reopened.stderr)
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(log).includes('out-2\n') && fileText(log).includes('err-2\n'), {
    message: `out-2 and err-2 in the new ${log}`,
  })
  t.false(fileText(`${log}.1`).includes('out-2'))
  // The master's own lines follow the reopen too.
  const stop = await runCli(['stop', 'dmn'], env)
  t.is(stop.code, 0, stop.stderr)
  t.regex(fileText(log), /all workers stopped/)
})

test('API: stdout and stderr to one file (relative to cwd), reopenLogs() after a rename', async (t) => {
  const { Supervisor } = await import('../src/index.js')
  const dir = await tmpDir('baton-logs-')
  const sup = new Supervisor({
    name: 'api-logs',
    runtimeDir: join(dir.path, 'rt'),
    log: false,
    handleSignals: false,
    groups: { talk: { script: TALKER, cwd: dir.path, stdout: 'both.log', stderr: 'both.log', logPrefix: true } },
  })
  t.teardown(async () => {
    await sup.stop({ force: true })
    await dir.cleanup()
  })
  await sup.start()
  const path = join(dir.path, 'both.log')
  const pid = sup.status().workers[0].pid as number
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(path).includes('talk#0 out-1\n') && fileText(path).includes('talk#0 err-1\n'), {
    message: `both streams in ${path}`,
  })
  renameSync(path, `${path}.1`)
  t.is(await sup.reopenLogs(), 1, 'one file, shared by both streams')
  process.kill(pid, 'SIGUSR2')
  await waitFor(() => fileText(path).includes('talk#0 err-2\n') && fileText(path).includes('talk#0 out-2\n'), {
    message: `the new ${path}`,
  })
  t.deepEqual(sup.status().groups[0].logs, { stdout: path, stderr: path, prefix: true, droppedBytes: 0 })
})
