/**
 * Dev mode: `baton start app.js --watch [PATH...]` reloads gracefully on file changes,
 * once per settled change, keeps the old code serving when the new one is broken, and
 * reloads again on the next good edit.
 */
import test from 'ava'
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BATON, fixture, runCli, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, ProcessTracker, startTime, tmpDir, waitFor } from './helpers/processes.js'
import { globMatcher, isIgnored, isSource, takeWatchFlag } from '../src/cli/watch.js'
import type { Status } from '../src/types.js'

test('--watch: one edit gives exactly one reload; a broken edit keeps the old code serving; the next good edit reloads', async (t) => {
  const dir = await tmpDir('baton-watch-')
  t.teardown(() => dir.cleanup())
  const src = join(dir.path, 'src')
  mkdirSync(src)
  mkdirSync(join(src, 'node_modules'))
  // A .json file (a watched extension); the app reads it as text at start.
  const versionFile = join(src, 'version.json')
  writeFileSync(versionFile, 'v1')
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
    env: { APP_VERSION_FILE: versionFile },
    flags: ['--watch', src],
  })
  await fleet.log.waitFor(/watching /)
  // Distinct reloads reported (the supervisor's log and the watcher both print the outcome).
  const reloadsDone = (): number => new Set(fleet.log.text.match(/reload \d+ done/g) ?? []).size
  const get = async (): Promise<string> => (await httpGet({ port, path: '/' })).body

  // An edit saved in several writes (as editors do): one reload.
  writeFileSync(versionFile, 'v')
  writeFileSync(versionFile, 'v2')
  await waitFor(async () => (await get()) === 'v2', { message: 'v2 served after the edit' })
  await fleet.log.waitFor(/reload \d+ done/)
  t.is(reloadsDone(), 1)
  t.regex(fleet.log.text, /changed: .*version\.json; reloading/)

  // Ignored: node_modules, dot files, and what Node does not load (a .txt, a .log).
  writeFileSync(join(src, 'node_modules', 'dep.js'), 'x')
  writeFileSync(join(src, '.swap'), 'x')
  writeFileSync(join(src, 'notes.txt'), 'x')
  writeFileSync(join(src, 'debug.log'), 'x')

  // Broken code: the reload fails, v2 keeps serving, the error is printed.
  writeFileSync(versionFile, 'throw')
  await fleet.log.waitFor(/the new code failed, the old workers keep serving/)
  t.regex(fleet.log.text, /BOOT_FAIL: version file says throw/)
  t.is(await get(), 'v2')

  // The next good edit reloads.
  writeFileSync(versionFile, 'v3')
  await waitFor(async () => (await get()) === 'v3', { message: 'v3 served after the fix' })
  await waitFor(() => reloadsDone() === 2, { message: 'the second reload reported' })
  t.is(reloadsDone(), 2, 'node_modules and dot files triggered nothing')
  const changed = fleet.log.text.match(/changed: [^\n]*/g) ?? []
  t.is(changed.length, 3, changed.join('\n'))
  t.false(
    changed.some((l) => /node_modules|\.swap|notes\.txt|debug\.log/.test(l)),
    changed.join('\n'),
  )
})

test('--watch argument parsing and ignore rules', (t) => {
  t.deepEqual(takeWatchFlag(['app.js', '--watch']), { rest: ['app.js'], paths: ['.'] })
  t.deepEqual(takeWatchFlag(['app.js', '--count', '2']), { rest: ['app.js', '--count', '2'], paths: undefined })
  t.deepEqual(takeWatchFlag(['app.js', '--watch', 'src', '--count', '2']).paths, ['src'])
  t.deepEqual(takeWatchFlag(['--watch=lib', 'app.js']), { rest: ['app.js'], paths: ['lib'] })
  t.true(isIgnored('node_modules/x/index.js'))
  t.true(isIgnored('.git/HEAD'))
  t.true(isIgnored('src/.app.js.swp'))
  t.false(isIgnored('src/app.js'))
})

test('--watch only watches code: with the master stdout redirected into the watched folder, the workers logging to a .json file there and the runtime dir inside it, one edit of an imported module gives exactly one reload', async (t) => {
  const dir = await tmpDir('baton-watch-own-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  // The app imports lib.mjs and logs every request (to its group's --stdout file).
  writeFileSync(join(dir.path, 'lib.mjs'), "export const version = 'v1'\n")
  writeFileSync(
    join(dir.path, 'app.mjs'),
    [
      "import http from 'node:http'",
      "import { version } from './lib.mjs'",
      'console.log(`started ${version}`)',
      'http',
      '  .createServer((req, res) => { console.log(`served ${req.url} ${version}`); res.end(version) })',
      "  .listen({ fd: 3 }, () => process.send?.('ready'))",
      '',
    ].join('\n'),
  )
  // Names with watched extensions, so only the rule about the fleet's own outputs keeps
  // them out: the master's stdout and stderr (as `> baton-output.json 2>&1`), the workers'
  // log file, and the runtime dir (its start record is a .json file).
  const masterOut = join(dir.path, 'baton-output.json')
  const workerLog = join(dir.path, 'logs', 'app.json')
  mkdirSync(join(dir.path, 'logs'))
  const runtimeDir = join(dir.path, 'run')
  const env = { BATON_RUNTIME_DIR: runtimeDir }
  const out = openSync(masterOut, 'a')
  const tracker = new ProcessTracker()
  const workers = new Map<number, string | undefined>()
  t.teardown(async () => {
    await runCli(['stop', 'w', '--force'], env)
    for (const [pid, started] of workers) tracker.trackPid(pid, started)
    await tracker.killAll()
  })
  const args = ['start', 'app.mjs', '--name', 'w', '--count', '2', '--listen', `127.0.0.1:${port}`]
  tracker.spawn(process.execPath, [BATON, ...args, '--stdout', workerLog, '--watch'], {
    cwd: dir.path,
    env: { ...process.env, ...env },
    stdio: ['ignore', out, out],
  })
  closeSync(out)
  const status = async (): Promise<Status> => {
    const r = await runCli(['status', 'w', '--json'], env)
    if (r.code !== 0) throw new Error(r.stderr)
    const s = JSON.parse(r.stdout) as Status
    for (const w of s.workers) if (w.pid !== null && !workers.has(w.pid)) workers.set(w.pid, startTime(w.pid))
    return s
  }
  const masterText = (): string => readFileSync(masterOut, 'utf8')
  await waitFor(async () => (await status()).workers.filter((w) => w.state === 'ready').length === 2, {
    timeoutMs: 20_000,
    message: 'two workers ready',
  })
  await waitFor(() => masterText().includes('watching '), { message: 'the watcher started' })
  const get = async (): Promise<string> => (await httpGet({ port, path: '/' })).body
  // Output while nothing changed: no reload.
  await get()
  await waitFor(() => readFileSync(workerLog, 'utf8').includes('served / v1'), { message: 'a request logged' })

  // One edit of the imported module.
  writeFileSync(join(dir.path, 'lib.mjs'), "export const version = 'v2'\n")
  await waitFor(async () => (await get()) === 'v2', { message: 'v2 served after the edit' })
  await waitFor(async () => !(await status()).reloading && /reload 2 done/.test(masterText()), {
    timeoutMs: 20_000,
    message: 'reload 2 done',
  })
  // The reload wrote to every output (the master's lines, the new workers' "started"
  // lines); requests write more. Once those lines are in the files, a reload they caused
  // would be reported within the debounce (300 ms): poll the status for well beyond it.
  for (let i = 0; i < 5; i++) await get()
  await waitFor(() => (readFileSync(workerLog, 'utf8').match(/served \/ v2/g) ?? []).length >= 5, {
    message: 'the requests logged',
  })
  const quietUntil = Date.now() + 1500
  while (Date.now() < quietUntil) {
    const s = await status()
    t.is(s.generation, 2, `one reload only; master output:\n${masterText()}`)
    if (s.generation !== 2) break
  }
  const changed = masterText().match(/changed: [^\n]*/g) ?? []
  t.deepEqual(changed, ['changed: lib.mjs; reloading'], masterText())
  t.is((await status()).lastReload?.generation, 2)
})

test('--watch: what counts as code, --watch-ignore globs', (t) => {
  for (const f of ['a.js', 'a.mjs', 'a.cjs', 'a.ts', 'a.mts', 'a.cts', 'a.jsx', 'a.tsx', 'package.json', 'X.JS']) {
    t.true(isSource(f), f)
  }
  for (const f of ['out.log', 'notes.txt', 'a.js.map', 'Makefile', 'a.sock', 'img.png']) t.false(isSource(f), f)
  const ignored = globMatcher(['dist/**', '*.generated.ts', 'tmp'])
  t.true(ignored(['dist/app.js']))
  t.true(ignored(['src/x.generated.ts']))
  t.true(ignored(['tmp/a.js']))
  t.false(ignored(['src/app.js']))
  t.false(globMatcher([])(['anything.js']))
})

test('--watch-ignore: a change under an ignored glob does not reload; --watch-ignore without --watch is refused', async (t) => {
  const dir = await tmpDir('baton-watch-ignore-')
  t.teardown(() => dir.cleanup())
  mkdirSync(join(dir.path, 'gen'))
  const versionFile = join(dir.path, 'version.json')
  writeFileSync(versionFile, 'v1')
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('app.mjs'),
    count: 1,
    listen: [`127.0.0.1:${port}`],
    env: { APP_VERSION_FILE: versionFile },
    flags: ['--watch', dir.path, '--watch-ignore', 'gen/**', '--watch-ignore', '*.snap.js'],
  })
  await fleet.log.waitFor(/watching .*ignored: .*gen\/\*\*, \*\.snap\.js\)/)
  writeFileSync(join(dir.path, 'gen', 'types.js'), 'x')
  writeFileSync(join(dir.path, 'a.snap.js'), 'x')
  writeFileSync(versionFile, 'v2')
  await waitFor(async () => (await httpGet({ port, path: '/' })).body === 'v2', { message: 'v2 served' })
  const changed = fleet.log.text.match(/changed: [^\n]*/g) ?? []
  t.is(changed.length, 1, changed.join('\n'))
  t.false(/gen|snap/.test(changed[0] ?? ''), changed[0])

  const refused = await runCli(['start', fixture('app.mjs'), '--watch-ignore', 'x'], {
    BATON_RUNTIME_DIR: join(dir.path, 'rt'),
  })
  t.is(refused.code, 2)
  t.regex(refused.stderr, /--watch-ignore GLOB only applies with --watch/)
})
