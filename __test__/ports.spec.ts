/**
 * The tests' free ports (harness/ports.mjs): ava runs the spec files in parallel
 * processes, and two baton fleets can both bind one port with SO_REUSEPORT without an
 * error, so a port handed to one test process must not be handed to another.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { rmSync, utimesSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { freePort, reservePort } from '../harness/ports.mjs'

const PORTS = pathToFileURL(join(import.meta.dirname, '..', 'harness', 'ports.mjs')).href

/** `reservePort(port)` as another test process calls it. */
function reserveInOtherProcess(port: number): boolean {
  const out = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', `import { reservePort } from '${PORTS}'; console.log(reservePort(${port}))`],
    { encoding: 'utf8' },
  )
  return out.trim() === 'true'
}

test('a port freePort returned is refused to another test process, and taken over once stale', (t) => {
  return freePort().then((port) => {
    const file = join(tmpdir(), 'baton-test-ports', String(port))
    t.teardown(() => rmSync(file, { force: true }))
    t.false(reserveInOtherProcess(port), 'another process cannot reserve it')
    t.false(reservePort(port), 'nor this one again')
    // A reservation of an earlier run (older than 30 minutes) is taken over.
    const old = new Date(Date.now() - 31 * 60 * 1000)
    utimesSync(file, old, old)
    t.true(reserveInOtherProcess(port), 'a stale reservation is taken over')
    t.false(reservePort(port), 'and is then fresh again')
  })
})
