/**
 * `logTime` (`--log-time`) and `logFormat: 'json'` (`--log-format json`): every line a
 * worker writes reaches its log file time-stamped, or as one JSON object naming its worker
 * (crates/baton-core/src/log_line.rs). Real masters, workers and files.
 */
import test, { type ExecutionContext } from 'ava'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startFleet, type Fleet } from './helpers/fleet.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'

const LINES = 300
const SPECIAL = 'say "hi" \\ back\tslash'

/** Writes LINES numbered lines to stdout and stderr, a line with a quote, a backslash and a tab, then `done`. */
const WORKER = `
const id = process.env.NODE_APP_INSTANCE
for (let i = 0; i < ${LINES}; i++) {
  process.stdout.write('out ' + id + ' ' + i + '\\n')
  process.stderr.write('err ' + id + ' ' + i + '\\n')
}
process.stdout.write(${JSON.stringify(SPECIAL)} + '\\n')
process.stdout.write('done ' + id + '\\n')
process.stderr.write('done ' + id + '\\n')
process.send?.('ready')
setInterval(() => {}, 1 << 30)
`

function lines(path: string): string[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').slice(0, -1) : []
}

/** Start 2 workers writing to out.log / err.log with `flags`; resolve once both wrote all. */
async function run(t: ExecutionContext, flags: string[]): Promise<{ fleet: Fleet; out: string; err: string }> {
  const dir = await tmpDir('baton-logfmt-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, WORKER)
  const out = join(dir.path, 'out.log')
  const err = join(dir.path, 'err.log')
  const fleet = await startFleet(t, { script, count: 2, flags: ['--stdout', out, '--stderr', err, ...flags] })
  for (const path of [out, err])
    await waitFor(
      () =>
        ['0', '1'].every((id) => lines(path).some((l) => l.endsWith(`done ${id}`) || l.includes(`"msg":"done ${id}"`))),
      {
        message: `both workers' last line in ${path}`,
      },
    )
  return { fleet, out, err }
}

const STAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$/

test('--log-time: every line of each file starts with a time stamp Date.parse takes, in order', async (t) => {
  const { out, err } = await run(t, ['--log-time'])
  for (const path of [out, err]) {
    const all = lines(path)
    t.is(all.length, (LINES + 1) * 2 + (path === out ? 2 : 0), path)
    let last = 0
    for (const line of all) {
      const m = STAMP.exec(line)
      if (!m) return void t.fail(`${path}: no time stamp: ${JSON.stringify(line)}`)
      const time = Date.parse(m[1] ?? '')
      t.false(Number.isNaN(time), line)
      t.true(time >= last, `${path}: ${line} after ${new Date(last).toISOString()}`)
      last = time
    }
    t.true(Math.abs(Date.now() - last) < 60_000, 'the stamps are now')
  }
  t.true(lines(out).some((l) => l.endsWith(` ${SPECIAL}`)))
})

test('--log-time with --log-prefix: the time comes first', async (t) => {
  const { out } = await run(t, ['--log-time', '--log-prefix'])
  t.true(
    lines(out).every((l) => /^\S+Z fleet#[01] /.test(l)),
    lines(out).slice(0, 3).join('\n'),
  )
})

test('--log-format json: every line parses, has the seven keys and names its worker; the numbered lines are all there in order', async (t) => {
  const { fleet, out, err } = await run(t, ['--log-format', 'json'])
  const pids = await fleet.workerPids()
  for (const [path, stream] of [
    [out, 'out'],
    [err, 'err'],
  ] as const) {
    const seen: Record<string, string[]> = { '0': [], '1': [] }
    for (const line of lines(path)) {
      let o: Record<string, unknown>
      try {
        o = JSON.parse(line) as Record<string, unknown>
      } catch {
        return void t.fail(`${path}: not JSON: ${JSON.stringify(line)}`)
      }
      t.deepEqual(Object.keys(o), ['time', 'fleet', 'group', 'id', 'pid', 'stream', 'msg'], line)
      t.is(o.fleet, fleet.name)
      t.is(o.group, 'fleet')
      t.is(o.stream, stream)
      t.false(Number.isNaN(Date.parse(String(o.time))), line)
      const id = String(o.id)
      t.true(id === '0' || id === '1', line)
      t.true(pids.includes(Number(o.pid)), `${line}: pid of a worker (${pids.join(', ')})`)
      seen[id]?.push(String(o.msg))
    }
    for (const id of ['0', '1']) {
      const numbered = (seen[id] ?? []).filter((m) => m.startsWith(`${stream} `))
      t.deepEqual(
        numbered,
        Array.from({ length: LINES }, (_, i) => `${stream} ${id} ${i}`),
        `${path}: worker ${id}`,
      )
    }
    if (stream === 'out') {
      t.is(seen['0']?.filter((m) => m === SPECIAL).length, 1, 'the quote, backslash and tab round-trip')
      t.is(seen['1']?.filter((m) => m === SPECIAL).length, 1)
    }
  }
})

test("--log-format json: the master's own lines and inherited worker output on its stderr are JSON too", async (t) => {
  const dir = await tmpDir('baton-logfmt-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(
    script,
    `process.stderr.write('hello\\x1b[31m "x"\\n')\nprocess.send?.('ready')\nsetInterval(() => {}, 1 << 30)\n`,
  )
  const port = await freePort()
  const fleet = await startFleet(t, {
    script,
    count: 1,
    flags: ['--log-format', 'json', '--log-time', '--stdout', 'ignore', '--listen', `127.0.0.1:${port}`],
  })
  await fleet.log.waitFor(/"stream":"err"/)
  const reload = await fleet.cli(['reload', fleet.name])
  t.is(reload.code, 0, reload.stderr)
  await fleet.log.waitFor(/"stream":"master".*reload/i)
  const objects = fleet.log.text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>
      } catch {
        t.fail(`not JSON: ${JSON.stringify(l)}`)
        return {}
      }
    })
  const master = objects.filter((o) => o.stream === 'master')
  t.true(master.length >= 2, fleet.log.text)
  for (const o of master) {
    t.deepEqual(Object.keys(o), ['time', 'fleet', 'group', 'id', 'pid', 'stream', 'msg'])
    t.is(o.group, null)
    t.is(o.id, null)
    t.is(o.pid, fleet.pid)
    t.is(o.fleet, fleet.name)
  }
  t.true(
    master.some((o) => String(o.msg).startsWith('listening on 127.0.0.1:')),
    fleet.log.text,
  )
  const worker = objects.filter((o) => o.stream === 'err')
  t.true(worker.length >= 1 && worker.every((o) => o.group === 'fleet' && o.id === 0 && typeof o.pid === 'number'))
  t.true(
    worker.some((o) => o.msg === 'hello\u001b[31m "x"'),
    fleet.log.text,
  )
})
