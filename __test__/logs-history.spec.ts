/**
 * `baton logs` reads history from the fleet's log files (src/cli/log-files.ts): any
 * number of lines after the master's 1 MiB ring has wrapped, older lines from a rotated
 * FILE.1, `--since` (a duration or an ISO time) on time-stamped lines, `--group`, `--id`,
 * `--err`/`--out` from JSON keys, `group#id` prefixes or the group's stdout vs stderr
 * file, and a clear refusal when a filter cannot be told from the lines. `-f` follows the
 * files across a logrotate-style rotation (rename + `baton reopen-logs`) and across a
 * `baton upgrade`, ending only when the fleet stops. A symlink or hard link planted as the
 * log file is never read. Real masters, workers and files.
 */
import test, { type ExecutionContext } from 'ava'
import {
  appendFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { request } from '../src/cli/control-client.js'
import { BATON, fixture, runCli, startFleet, type Fleet } from './helpers/fleet.js'
import { OutputBuffer, ProcessTracker, tmpDir, waitFor, waitForExit, withTimeout } from './helpers/processes.js'

const TALKER = fixture('talker.mjs')

function fileText(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : ''
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '')
}

/** `out-<n>.<i>` for i in from..to: what talker.mjs writes on its n-th SIGUSR2 with TALK_LINES. */
function numbered(n: number, from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, k) => `out-${n}.${from + k}`)
}

/** Every worker writes its next batch; resolves once `path` holds `expect`. */
async function talk(fleet: Fleet, path: string, expect: RegExp | string): Promise<void> {
  for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
  await waitFor(() => (typeof expect === 'string' ? fileText(path).includes(expect) : expect.test(fileText(path))), {
    timeoutMs: 30_000,
    message: `${String(expect)} in ${path}`,
  })
}

/** A `baton logs -f` running in the background, its output collected. */
function follower(t: ExecutionContext, fleet: Fleet, args: string[]) {
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const child = tracker.spawn(process.execPath, [BATON, 'logs', fleet.name, '-f', ...args], {
    env: { ...process.env, BATON_RUNTIME_DIR: fleet.runtimeDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = new OutputBuffer().follow(child.stdout)
  const err = new OutputBuffer().follow(child.stderr)
  return { child, out, err, exited: waitForExit(child) }
}

test('--lines 5000 after the ring wrapped: exactly the last 5,000 lines of the stdout file, in order', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  // 120,000 lines of 12-13 bytes: about 1.5 MB, more than the 1 MiB ring.
  const fleet = await startFleet(t, {
    script: TALKER,
    count: 1,
    flags: ['--stdout', path],
    env: { TALK_LINES: '120000', TALK_STDERR: '0' },
  })
  await talk(fleet, path, 'out-1.120000\n')
  t.true(readFileSync(path).length > 1024 * 1024, 'more than the ring holds')
  const r = await fleet.cli(['logs', fleet.name, '--lines', '5000'])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(lines(r.stdout), numbered(1, 115_001, 120_000))
  // The group's stderr is inherited (not a file): said, not silently left out.
  t.regex(r.stderr, /group fleet's stderr goes to the master's stderr, not to a file/)
  // A line count larger than the file: the whole file.
  // The ring has wrapped: it no longer holds the first lines; the file does.
  const ring: string[] = []
  await request(fleet.runtimeDir, fleet.name, { cmd: 'logs', lines: 1_000_000, follow: false }, (e) => {
    ring.push(String(e.text))
  })
  t.true(ring.length < 120_001 && ring[0] !== 'started 0', `the ring holds ${ring.length} lines from ${ring[0]}`)
  const all = await fleet.cli(['logs', fleet.name, '--lines', '1000000'])
  t.is(lines(all.stdout).length, 120_001)
  t.is(lines(all.stdout)[0], 'started 0')
  t.log(`ring: ${ring.length} lines (from ${ring[0]}); file: 120,001 lines`)

  // `baton logs | head -1`: the reader goes away; baton logs ends quietly, exit 0.
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const head = tracker.spawn(process.execPath, [BATON, 'logs', fleet.name, '--lines', '1000000'], {
    env: { ...process.env, BATON_RUNTIME_DIR: fleet.runtimeDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const headErr = new OutputBuffer().follow(head.stderr)
  head.stdout?.once('data', () => head.stdout?.destroy())
  t.deepEqual(await withTimeout(waitForExit(head), 10_000, 'baton logs ends'), { code: 0, signal: null })
  t.false(headErr.text.includes('EPIPE'), headErr.text)
})

test('lines split across a rotated FILE.1 and FILE come out whole and in order', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const fleet = await startFleet(t, {
    script: TALKER,
    count: 1,
    flags: ['--stdout', path],
    env: { TALK_LINES: '100', TALK_STDERR: '0' },
  })
  await talk(fleet, path, 'out-1.100\n')
  renameSync(path, `${path}.1`)
  const reopened = await fleet.cli(['reopen-logs', fleet.name])
  t.is(reopened.code, 0, reopened.stderr)
  await talk(fleet, path, 'out-2.100\n')
  t.false(fileText(path).includes('out-1.'), 'the first batch is only in FILE.1')
  const r = await fleet.cli(['logs', fleet.name, '--lines', '150'])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(lines(r.stdout), [...numbered(1, 51, 100), ...numbered(2, 1, 100)])
  const all = await fleet.cli(['logs', fleet.name, '--lines', '1000'])
  t.deepEqual(lines(all.stdout), ['started 0', ...numbered(1, 1, 100), ...numbered(2, 1, 100)])
})

test('--since a duration or an ISO time with --log-time; without time stamps, exit 2 naming --log-time', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  // A line written long ago, before the fleet appends to the file.
  writeFileSync(path, '2020-01-01T00:00:00.000Z ancient\n')
  const fleet = await startFleet(t, {
    script: TALKER,
    count: 1,
    flags: ['--stdout', path, '--log-time'],
    env: { TALK_STDERR: '0' },
  })
  await talk(fleet, path, ' out-1\n')
  await talk(fleet, path, ' out-2\n')
  const stampOf = (msg: string): string => {
    const line = lines(fileText(path)).find((l) => l.endsWith(` ${msg}`))
    if (!line) throw new Error(`${msg} not in ${path}`)
    return line.split(' ')[0]
  }
  const recent = await fleet.cli(['logs', fleet.name, '--since', '10m'])
  t.is(recent.code, 0, recent.stderr)
  t.deepEqual(
    lines(recent.stdout).map((l) => l.replace(/^\S+ /, '')),
    ['started 0', 'out-1', 'out-2'],
    'every line of the last 10 minutes (no --lines: not only 15), the 2020 one left out',
  )
  const old = await fleet.cli(['logs', fleet.name, '--since', '2s', '--lines', '1000'])
  t.true(lines(old.stdout).every((l) => !l.includes('ancient')))
  const fromIso = await fleet.cli(['logs', fleet.name, '--since', stampOf('out-2')])
  t.deepEqual(lines(fromIso.stdout), [`${stampOf('out-2')} out-2`])
  const lastOne = await fleet.cli(['logs', fleet.name, '--since', '10m', '--lines', '1'])
  t.deepEqual(lines(lastOne.stdout), [`${stampOf('out-2')} out-2`])

  const bad = await fleet.cli(['logs', fleet.name, '--since', 'x'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--since expects a duration \(30s, 10m, 2h, 1d\) or an ISO 8601 time/)
})

test('--since on lines without time stamps exits 2 and says to turn on --log-time or --log-format json', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const fleet = await startFleet(t, { script: TALKER, count: 1, flags: ['--stdout', path] })
  const r = await fleet.cli(['logs', fleet.name, '--since', '10m'])
  t.is(r.code, 2)
  t.true(r.stderr.includes(`--since: the lines in ${path} carry no time stamp`), r.stderr)
  t.regex(r.stderr, /--log-time or --log-format json/)
  t.is(r.stdout, '')
  // Escape sequences a worker wrote into its file are printed visibly, never raw.
  appendFileSync(path, 'evil \x1b]0;pwned\x07 \u009b31m\n')
  const shown = await fleet.cli(['logs', fleet.name, '--lines', '1'])
  t.deepEqual(lines(shown.stdout), ['evil \\x1b]0;pwned\\x07 \\u009b31m'])
  t.false(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(shown.stdout), 'no raw control character')
})

test('baton logs --help describes the options; bad --id and --err with --out are usage errors', async (t) => {
  const help = await runCli(['logs', '--help'], {})
  t.is(help.code, 0)
  for (const flag of ['--lines N', '--since T', '--group G', '--id N', '--err, --out', '-f, --follow']) {
    t.true(help.stdout.includes(flag), flag)
  }
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const env = { ...process.env, BATON_RUNTIME_DIR: dir.path }
  const id = await runCli(['logs', '--id', 'one'], env)
  t.is(id.code, 2)
  t.regex(id.stderr, /--id expects a worker id \(0, 1, \.\.\.\), got "one"/)
  const both = await runCli(['logs', '--err', '--out'], env)
  t.is(both.code, 2)
  t.regex(both.stderr, /--err and --out exclude each other/)
  const since = await runCli(['logs', '--since', '10 minutes'], env)
  t.is(since.code, 2)
  t.regex(since.stderr, /--since expects a duration/)
})

/** Two groups of two talkers each, from a config file in `dir`. */
function twoGroups(dir: string, group: (name: string) => Record<string, unknown>): void {
  writeFileSync(
    join(dir, 'baton.config.json'),
    JSON.stringify({
      name: 'fleet',
      groups: {
        web: { script: TALKER, count: 2, ...group('web') },
        api: { script: TALKER, count: 2, ...group('api') },
      },
    }),
  )
}

test('--group, --id, --err, --out from the JSON keys of one shared file', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'all.log')
  twoGroups(dir.path, () => ({ stdout: path, stderr: path, logFormat: 'json' }))
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 4 })
  await talk(fleet, path, /(?:"msg":"err-1"[^]*){4}/)
  const pick = async (args: string[]) => {
    const r = await fleet.cli(['logs', fleet.name, '--lines', '100', ...args])
    t.is(r.code, 0, r.stderr)
    return lines(r.stdout).map((l) => {
      const o = JSON.parse(l) as { group: string; id: number; stream: string; msg: string }
      return `${o.group}#${o.id} ${o.stream} ${o.msg}`
    })
  }
  t.deepEqual(await pick(['--group', 'api', '--id', '1', '--err']), ['api#1 err err-1'])
  t.deepEqual((await pick(['--group', 'web', '--out'])).sort(), [
    'web#0 out out-1',
    'web#0 out started 0',
    'web#1 out out-1',
    'web#1 out started 1',
  ])
  t.deepEqual((await pick(['--err'])).sort(), [
    'api#0 err err-1',
    'api#1 err err-1',
    'web#0 err err-1',
    'web#1 err err-1',
  ])
  t.deepEqual((await pick(['--id', '0', '--out', '--lines', '1'])).length, 1)
  const unknown = await fleet.cli(['logs', fleet.name, '--group', 'nope'])
  t.is(unknown.code, 2)
  t.regex(unknown.stderr, /--group: "fleet" has no group "nope" \(its groups: web, api\)/)
})

test('--group, --id, --err, --out from group#id prefixes and the stdout vs stderr files; a filter the lines cannot tell is answered from the ring', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const out = join(dir.path, 'out.log')
  const err = join(dir.path, 'err.log')
  twoGroups(dir.path, () => ({ stdout: out, stderr: err, logPrefix: true }))
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 4 })
  for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
  await waitFor(() => lines(fileText(err)).length === 4 && lines(fileText(out)).length === 8, {
    message: `4 err-1 in ${err}, 4 started + 4 out-1 in ${out}`,
  })
  const pick = async (args: string[]) => {
    const r = await fleet.cli(['logs', fleet.name, '--lines', '100', ...args])
    t.is(r.code, 0, r.stderr)
    return lines(r.stdout).sort()
  }
  t.deepEqual(await pick(['--group', 'api', '--id', '1', '--err']), ['api#1 err-1'])
  t.deepEqual(await pick(['--group', 'web', '--id', '0', '--out']), ['web#0 out-1', 'web#0 started 0'])
  t.deepEqual(await pick(['--err']), ['api#0 err-1', 'api#1 err-1', 'web#0 err-1', 'web#1 err-1'])
  t.deepEqual(await pick(['--id', '1', '--err']), ['api#1 err-1', 'web#1 err-1'])

  // Without prefixes and with stdout and stderr in one file, --id and --err cannot be told
  // from the file: said, and answered from the ring (which knows), never unfiltered.
  const plain = await tmpDir('baton-logshist-')
  t.teardown(() => plain.cleanup())
  const both = join(plain.path, 'both.log')
  const other = await startFleet(t, { script: TALKER, count: 2, flags: ['--stdout', both, '--stderr', both] })
  await talk(other, both, /(?:err-1\n[^]*){2}/)
  const id = await other.cli(['logs', other.name, '--id', '1'])
  t.is(id.code, 0, id.stderr)
  t.true(id.stderr.includes(`--id: the lines in ${both} do not name their worker`), id.stderr)
  t.regex(id.stderr, /--log-prefix or --log-format json.*Showing the last lines the master keeps \(1 MiB\) instead/)
  t.deepEqual(lines(id.stdout).sort(), ['fleet#1 err | err-1', 'fleet#1 out | out-1', 'fleet#1 out | started 1'])
  const stream = await other.cli(['logs', other.name, '--err'])
  t.is(stream.code, 0, stream.stderr)
  t.true(stream.stderr.includes(`--err: ${both} holds stdout and stderr lines alike`), stream.stderr)
  t.deepEqual(lines(stream.stdout).sort(), ['fleet#0 err | err-1', 'fleet#1 err | err-1'])
})

test('-f follows across a rename + reopen-logs rotation: every line once, in order, then ends when the fleet stops', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const fleet = await startFleet(t, {
    script: TALKER,
    count: 1,
    flags: ['--stdout', path],
    env: { TALK_LINES: '50', TALK_STDERR: '0' },
  })
  const f = follower(t, fleet, ['--lines', '1'])
  await f.out.waitFor(/^started 0$/m, 10_000)
  await talk(fleet, path, 'out-1.50\n')
  await f.out.waitFor(/^out-1\.50$/m, 10_000)
  // logrotate: rename; the master keeps writing to the renamed file until reopen-logs.
  renameSync(path, `${path}.1`)
  await talk(fleet, `${path}.1`, 'out-2.50\n')
  const reopened = await fleet.cli(['reopen-logs', fleet.name])
  t.is(reopened.code, 0, reopened.stderr)
  await talk(fleet, path, 'out-3.50\n')
  await f.out.waitFor(/^out-3\.50$/m, 10_000)
  t.deepEqual(lines(f.out.text), ['started 0', ...numbered(1, 1, 50), ...numbered(2, 1, 50), ...numbered(3, 1, 50)])
  t.is(f.child.exitCode, null, 'still following')
  const stopped = await fleet.cli(['stop', fleet.name])
  t.is(stopped.code, 0, stopped.stderr)
  t.deepEqual(await withTimeout(f.exited, 10_000, 'the follower ends with the fleet'), { code: 0, signal: null })
  t.regex(f.err.text, /"fleet" stopped/)
})

test('-f while a worker writes without pause through two logrotate rotations: every line exactly once, in order', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const total = 30_000
  const fleet = await startFleet(t, {
    script: fixture('counter.mjs'),
    count: 1,
    flags: ['--stdout', path],
    env: { COUNT_LINES: String(total) },
  })
  const f = follower(t, fleet, ['--lines', '1'])
  await f.out.waitFor(/^counter ready$/m, 10_000)
  for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
  const count = (p: string): number => lines(fileText(p)).length
  for (const at of [5_000, 15_000]) {
    // logrotate: FILE.1 -> FILE.2, FILE -> FILE.1, then postrotate's reopen-logs.
    await waitFor(() => count(path) + count(`${path}.1`) + count(`${path}.2`) >= at + 1, {
      timeoutMs: 30_000,
      message: `${at} lines written`,
    })
    if (existsSync(`${path}.1`)) renameSync(`${path}.1`, `${path}.2`)
    renameSync(path, `${path}.1`)
    const reopened = await fleet.cli(['reopen-logs', fleet.name])
    t.is(reopened.code, 0, reopened.stderr)
  }
  await f.out.waitFor(/^count done$/m, 60_000)
  t.true(count(`${path}.2`) > 0 && count(`${path}.1`) > 0 && count(path) > 0, 'the lines span three files')
  const got = lines(f.out.text)
  const want = ['counter ready', ...Array.from({ length: total }, (_, i) => `n-${i + 1}`), 'count done']
  t.is(got.length, want.length)
  t.deepEqual(got, want)
  t.log(`files: ${count(`${path}.2`)} + ${count(`${path}.1`)} + ${count(path)} lines`)
})

test('-f and --lines across the master’s own size rotation (--log-max-size): every line exactly once, in order', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const total = 30_000
  // About 250 KB of lines `n-<i>` rotated at 32 KiB: several rotations while -f follows.
  const fleet = await startFleet(t, {
    script: fixture('counter.mjs'),
    count: 1,
    flags: ['--stdout', path, '--log-max-size', '32K', '--log-max-files', '50'],
    env: { COUNT_LINES: String(total) },
  })
  const f = follower(t, fleet, ['--lines', '1'])
  await f.out.waitFor(/^counter ready$/m, 10_000)
  for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
  await f.out.waitFor(/^count done$/m, 60_000)
  const want = ['counter ready', ...Array.from({ length: total }, (_, i) => `n-${i + 1}`), 'count done']
  const rotated = Array.from({ length: 50 }, (_, k) => `${path}.${k + 1}`).filter((p) => existsSync(p))
  t.true(rotated.length >= 4, `${rotated.length} rotated files`)
  t.deepEqual(lines(f.out.text), want, 'the follower')
  const r = await fleet.cli(['logs', fleet.name, '--lines', String(want.length)])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(lines(r.stdout), want, 'baton logs --lines reads FILE.N ... FILE.1, FILE')
  t.log(`${rotated.length} rotated files`)
})

test('-f follows across baton upgrade: the new master’s workers’ lines follow, none lost or repeated', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const fleet = await startFleet(t, {
    script: TALKER,
    count: 1,
    flags: ['--stdout', path],
    env: { TALK_STDERR: '0' },
  })
  const f = follower(t, fleet, ['--lines', '5'])
  await f.out.waitFor(/^started 0$/m, 10_000)
  await talk(fleet, path, 'out-1\n')
  await f.out.waitFor(/^out-1$/m, 10_000)
  const up = await fleet.cli(['upgrade', fleet.name])
  t.is(up.code, 0, `${up.stdout}${up.stderr}`)
  await withTimeout(fleet.exited, 15_000, 'the old master exits')
  // The new master's worker (it counts from 1 again).
  await talk(fleet, path, /out-1\n[^]*out-1\n/)
  await f.out.waitFor(/^out-1$[^]*^out-1$/m, 10_000)
  t.deepEqual(lines(f.out.text), ['started 0', 'out-1', 'started 0', 'out-1'])
  t.is(f.child.exitCode, null, 'still following after the old master exited')
  const stopped = await fleet.cli(['stop', fleet.name])
  t.is(stopped.code, 0, stopped.stderr)
  t.deepEqual(await withTimeout(f.exited, 10_000, 'the follower ends with the fleet'), { code: 0, signal: null })
})

test('-f across a baton upgrade that moves stdout to another file: follows the new file from the upgrade on, not its old content', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const first = join(dir.path, 'a.log')
  const second = join(dir.path, 'b.log')
  writeFileSync(second, 'old content\n')
  const config = (stdout: string): void =>
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name: 'fleet',
        groups: { web: { script: TALKER, count: 1, stdout, env: { TALK_STDERR: '0' } } },
      }),
    )
  config(first)
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
  const f = follower(t, fleet, ['--lines', '5'])
  await f.out.waitFor(/^started 0$/m, 10_000)
  config(second)
  const up = await fleet.cli(['upgrade', fleet.name])
  t.is(up.code, 0, `${up.stdout}${up.stderr}`)
  await withTimeout(fleet.exited, 15_000, 'the old master exits')
  t.is((await fleet.status()).groups[0].logs.stdout, second)
  await waitFor(
    async () => {
      for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
      return /^out-1$/m.test(f.out.text)
    },
    { intervalMs: 500, message: `out-1 of the new worker followed in ${second}; got ${f.out.text}` },
  )
  t.false(f.out.text.includes('old content'), f.out.text)
  t.is(lines(f.out.text)[0], 'started 0')
  t.is(lines(f.out.text).filter((l) => l === 'out-1').length, 1)
})

test('-f from the ring (output not in files) keeps following across baton upgrade', async (t) => {
  const fleet = await startFleet(t, { script: TALKER, count: 1, env: { TALK_STDERR: '0' } })
  const f = follower(t, fleet, ['--lines', '0'])
  // The follower is subscribed once a line written now reaches it.
  await waitFor(
    async () => {
      for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
      return /out \| out-\d+$/m.test(f.out.text)
    },
    { intervalMs: 300, message: 'the follower subscribed' },
  )
  const up = await fleet.cli(['upgrade', fleet.name])
  t.is(up.code, 0, `${up.stdout}${up.stderr}`)
  await withTimeout(fleet.exited, 15_000, 'the old master exits')
  const before = f.out.text
  await waitFor(
    async () => {
      for (const pid of await fleet.workerPids()) process.kill(pid, 'SIGUSR2')
      return f.out.text.length > before.length && /out \| out-1$/m.test(f.out.text.slice(before.length))
    },
    { intervalMs: 300, message: `the new worker's out-1 after the upgrade; got ${f.out.text}` },
  )
  t.is(f.child.exitCode, null, 'still following after the old master exited')
  const stopped = await fleet.cli(['stop', fleet.name])
  t.is(stopped.code, 0, stopped.stderr)
  t.deepEqual(await withTimeout(f.exited, 10_000, 'the follower ends with the fleet'), { code: 0, signal: null })
})

const asRoot = process.getuid?.() === 0 ? test : test.skip

asRoot('a symlink or hard link planted as the log file is refused, never printed', async (t) => {
  const dir = await tmpDir('baton-logshist-')
  t.teardown(() => dir.cleanup())
  const logs = join(dir.path, 'logs')
  mkdirSync(logs)
  const secret = join(dir.path, 'secret')
  writeFileSync(secret, 'root:SECRET-HASH:19000:0:99999:7:::\n', { mode: 0o600 })
  const path = join(logs, 'out.log')
  const fleet = await startFleet(t, { script: TALKER, count: 1, flags: ['--stdout', path] })
  await waitFor(() => fileText(path).includes('started 0'), { message: `started 0 in ${path}` })

  // A worker's user replaced the file with a link to a secret.
  rmSync(path)
  symlinkSync(secret, path)
  const viaSymlink = await fleet.cli(['logs', fleet.name, '--lines', '100'])
  t.false(viaSymlink.stdout.includes('SECRET'), viaSymlink.stdout)
  t.is(viaSymlink.code, 1)
  t.true(viaSymlink.stderr.includes(`refused to read ${path}: it is a symbolic link`), viaSymlink.stderr)
  // The rotated copy too.
  symlinkSync(secret, `${path}.1`)
  const rotated = await fleet.cli(['logs', fleet.name, '--lines', '100'])
  t.false(rotated.stdout.includes('SECRET'))
  t.true(rotated.stderr.includes(`refused to read ${path}.1: it is a symbolic link`), rotated.stderr)
  rmSync(`${path}.1`)

  // A follower that was reading the real file does not switch to the link.
  rmSync(path)
  writeFileSync(path, 'real line\n')
  const f = follower(t, fleet, ['--lines', '5'])
  await f.out.waitFor(/^real line$/m, 10_000)
  rmSync(path)
  symlinkSync(secret, path)
  await f.err.waitFor(/refused to read .*out\.log: it is a symbolic link/, 10_000)
  t.false(f.out.text.includes('SECRET'))

  // A hard link to the secret (same owner, root): refused by its link count.
  rmSync(path)
  linkSync(secret, path)
  const viaHardlink = await fleet.cli(['logs', fleet.name, '--lines', '100'])
  t.false(viaHardlink.stdout.includes('SECRET'), viaHardlink.stdout)
  t.true(viaHardlink.stderr.includes(`refused to read ${path}: it has 2 hard links`), viaHardlink.stderr)
})
