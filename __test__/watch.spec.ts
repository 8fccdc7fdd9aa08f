/**
 * Dev mode: `baton start app.js --watch [PATH...]` reloads gracefully on file changes,
 * once per settled change, keeps the old code serving when the new one is broken, and
 * reloads again on the next good edit.
 */
import test from 'ava'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { isIgnored, takeWatchFlag } from '../src/cli/watch.js'

test('--watch: one edit gives exactly one reload; a broken edit keeps the old code serving; the next good edit reloads', async (t) => {
  const dir = await tmpDir('baton-watch-')
  t.teardown(() => dir.cleanup())
  const src = join(dir.path, 'src')
  mkdirSync(src)
  mkdirSync(join(src, 'node_modules'))
  const versionFile = join(src, 'version.txt')
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
  t.regex(fleet.log.text, /changed: .*version\.txt; reloading/)

  // Ignored: node_modules and dot files do not reload.
  writeFileSync(join(src, 'node_modules', 'dep.js'), 'x')
  writeFileSync(join(src, '.swap'), 'x')

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
  t.false(changed.some((l) => l.includes('node_modules') || l.includes('.swap')))
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
