/**
 * A root master refuses a config file that a user one of its groups runs as may change
 * (src/master/config-file.ts checkConfigWriters, crates/baton-core/src/writers.rs): at start, and
 * at each reload before the file is loaded, while the old workers keep serving.
 */
import test from 'ava'
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { nobody } from '../harness/proc.mjs'
import { freePort, tmpDir, withTimeout } from './helpers/processes.js'

const asRoot = process.getuid?.() === 0 ? test : test.skip
if (process.getuid?.() !== 0)
  test('config files of a root master (needs root): skipped', (t) => t.log('not root: the master cannot switch users'))

/** A config module that appends a line to `marker` each time it is evaluated. */
function configText(port: number, marker: string): string {
  return [
    `import { appendFileSync } from 'node:fs'`,
    `appendFileSync(${JSON.stringify(marker)}, 'loaded\\n')`,
    `export default { name: 'cfg', groups: { web: { script: ${JSON.stringify(fixture('app.mjs'))}, count: 1,`,
    `  listen: '127.0.0.1:${port}', uid: 'nobody' } } }`,
    '',
  ].join('\n')
}

asRoot('a config file in a directory nobody owns, with a group running as nobody, is refused at start', async (t) => {
  const who = nobody()
  const base = await tmpDir('baton-cfgtrust-')
  t.teardown(() => base.cleanup())
  chmodSync(base.path, 0o755)
  const app = join(base.path, 'app')
  mkdirSync(app, { mode: 0o755 })
  chownSync(app, who.uid, who.gid)
  const file = join(app, 'baton.config.mjs')
  writeFileSync(file, configText(await freePort(), join(base.path, 'marker')), { mode: 0o644 })
  const fleet = await startFleet(t, { flags: ['--config', file], noWait: true, name: 'cfg' })
  const exit = await withTimeout(fleet.exited, 15_000, 'the master to refuse the config file and exit')
  t.log(fleet.log.text)
  t.not(exit.code, 0)
  t.true(fleet.log.text.includes(`${file}: refused: ${app} (a directory above it) belongs to uid ${who.uid} (nobody)`))
  t.regex(fleet.log.text, /group "web" runs its workers as uid \d+ \(nobody\)/)
  t.regex(fleet.log.text, /chmod go-w/)
})

asRoot(
  'a config file made writable by nobody after start: baton reload is refused before loading it, the old workers keep serving',
  async (t) => {
    const who = nobody()
    const base = await tmpDir('baton-cfgtrust-')
    t.teardown(() => base.cleanup())
    chmodSync(base.path, 0o755)
    const port = await freePort()
    const marker = join(base.path, 'marker')
    const file = join(base.path, 'baton.config.mjs')
    writeFileSync(file, configText(port, marker), { mode: 0o644 })
    const fleet = await startFleet(t, { flags: ['--config', file], name: 'cfg', count: 1 })
    const before = await fleet.status()
    t.is(before.workers.length, 1)
    const loads = () => readFileSync(marker, 'utf8').split('\n').filter(Boolean).length
    const loadedAtStart = loads()

    chownSync(file, who.uid, who.gid)
    const refused = await fleet.cli(['reload', 'cfg'])
    t.log(refused.stderr)
    t.is(refused.code, 1)
    t.true(refused.stderr.includes(`${file}: refused: it belongs to uid ${who.uid} (nobody)`), refused.stderr)
    t.is(loads(), loadedAtStart, 'the file was not loaded (no code of it ran in the master)')
    const after = await fleet.status()
    t.deepEqual(
      after.workers.map((w) => w.pid),
      before.workers.map((w) => w.pid),
    )
    t.is(after.generation, before.generation)
    t.is((await httpGet({ port, path: '/' })).status, 200, 'the old workers keep serving')

    // Group-writable with nobody's group: refused too. Given back to root: the reload runs.
    chownSync(file, 0, who.gid)
    chmodSync(file, 0o664)
    const group = await fleet.cli(['reload', 'cfg'])
    t.is(group.code, 1)
    t.regex(group.stderr, /is writable by its group, gid \d+/)
    chownSync(file, 0, 0)
    chmodSync(file, 0o644)
    const ok = await fleet.cli(['reload', 'cfg'])
    t.is(ok.code, 0, ok.stderr)
    t.is(loads(), loadedAtStart + 1)
  },
)
