/**
 * (The workers' own output is `ignore`d here: `inherit` hands a worker's bytes to the
 * master's stdout/stderr as they are, as any supervisor does.)
 *
 * Bytes a worker writes never reach the admin's terminal as control sequences: `baton
 * logs`, a failed `baton reload`'s stderr tail and a failed `baton start`'s error show
 * escape sequences visibly (`\x1b]0;pwned\x07`), never as raw ESC, BEL or CSI bytes
 * (`src/format.ts`, `visible`).
 */
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, runCli, startFleet } from './helpers/fleet.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

/** ESC, BEL, DEL and every C0/C1 control but tab and newline. */
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/

function writeConfig(dir: string, port: number, mode: string): void {
  writeFileSync(
    join(dir, 'baton.config.json'),
    JSON.stringify({
      name: 'fleet',
      groups: {
        web: {
          script: fixture('escapes.mjs'),
          count: 1,
          listen: `127.0.0.1:${port}`,
          env: { MODE: mode },
          stdout: 'ignore',
          stderr: 'ignore',
        },
      },
    }),
  )
}

test("baton logs and a failed baton reload print a worker's escape sequences visibly, never raw", async (t) => {
  const dir = await tmpDir('baton-esc-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  writeConfig(dir.path, port, 'ok')
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
  const logs = await waitFor(
    async () => {
      const r = await fleet.cli(['logs', fleet.name])
      return r.stdout.includes('hello') ? r : undefined
    },
    { message: "the worker's line in baton logs" },
  )
  t.is(logs.code, 0, logs.stderr)
  t.false(RAW_CONTROL.test(logs.stdout + logs.stderr), JSON.stringify(logs.stdout))
  t.true(logs.stdout.includes('hello \\x1b]0;pwned\\x07\\x1b[2J\\u009b31m end'), logs.stdout)

  writeConfig(dir.path, port, 'fail')
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 1, reload.stdout + reload.stderr)
  t.true(reload.stderr.includes('boom \\x1b]0;pwned\\x07'), reload.stderr)
  t.false(RAW_CONTROL.test(reload.stdout + reload.stderr), JSON.stringify(reload.stderr))
  // The master's own log (its terminal in the foreground) has them only visibly too (the
  // workers' output is ignored here: "inherit" passes a worker's bytes through as is).
  t.false(RAW_CONTROL.test(fleet.log.text), JSON.stringify(fleet.log.text))
})

test("a failed baton start prints the worker's stderr tail visibly, never raw", async (t) => {
  const runtime = await tmpDir('baton-esc-rt-')
  t.teardown(() => runtime.cleanup())
  const port = await freePort()
  const r = await runCli(
    [
      'start',
      fixture('escapes.mjs'),
      '--name',
      'bad',
      '--count',
      '1',
      '--listen',
      `127.0.0.1:${port}`,
      '--stdout',
      'ignore',
      '--stderr',
      'ignore',
    ],
    {
      ...process.env,
      BATON_RUNTIME_DIR: runtime.path,
      MODE: 'fail',
    },
  )
  t.not(r.code, 0)
  t.true(r.stderr.includes('boom \\x1b]0;pwned\\x07'), r.stderr)
  t.false(RAW_CONTROL.test(r.stdout + r.stderr), JSON.stringify(r.stderr))
})
