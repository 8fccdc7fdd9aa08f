/**
 * `logMaxSize` / `logMaxFiles` (`--log-max-size`, `--log-max-files`): the master rotates a
 * worker's log file by size, at line boundaries (crates/baton-core/src/log_rotate.rs), so
 * that every line is in exactly one file, whole; and never follows a link a worker's user
 * placed at a rotated name (crates/baton-core/src/log_sink.rs). Real masters, workers and
 * files.
 */
import test, { type ExecutionContext } from 'ava'
import { chmodSync, existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { OptionsError, Supervisor } from '../src/index.js'
import { runCli, startFleet, type Fleet } from './helpers/fleet.js'
import { tmpDir, waitFor } from './helpers/processes.js'

/** Bytes of each numbered line, newline included. */
const LINE_BYTES = 80

/**
 * Writes `lines` numbered lines of LINE_BYTES (`line 000001 xxx...`) to stdout, as raw
 * output (no prefix: the relay passes the bytes on in whatever chunks it read them), 500
 * lines per write, a few milliseconds apart so the master's 1 MiB buffer never fills on a
 * busy machine.
 */
function worker(lines: number, bothStreams = false): string {
  return `
const pad = 'x'.repeat(${LINE_BYTES - 13})
let n = 0
let batches = 0
process.send?.('ready')
function batch() {
  let out = ''
  for (let i = 0; i < 500 && n < ${lines}; i++) out += 'line ' + String(++n).padStart(6, '0') + ' ' + pad + '\\n'
  ;(${bothStreams} && batches++ % 2 === 1 ? process.stderr : process.stdout).write(out)
  if (n < ${lines}) setTimeout(batch, 3)
}
setTimeout(batch, 50)
setInterval(() => {}, 1 << 30)
`
}

/** FILE.N ... FILE.1, FILE: the files that exist, oldest first. */
function rotatedFiles(path: string): string[] {
  const out: string[] = []
  for (let k = 1; existsSync(`${path}.${k}`); k++) out.unshift(`${path}.${k}`)
  if (existsSync(path)) out.push(path)
  return out
}

function linesOf(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').slice(0, -1)
}

/** Start one worker writing `lines` lines to `out.log` with `flags`; resolve once the last line is in a file. */
async function run(
  t: ExecutionContext,
  lines: number,
  flags: string[],
  before?: (dir: string, out: string) => void,
): Promise<{ fleet: Fleet; out: string; dir: string; ms: number }> {
  const dir = await tmpDir('baton-rotate-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, worker(lines))
  const out = join(dir.path, 'out.log')
  before?.(dir.path, out)
  const started = Date.now()
  const fleet = await startFleet(t, { script, count: 1, flags: ['--stdout', out, ...flags] })
  const last = `line ${String(lines).padStart(6, '0')} `
  const json = flags.includes('json')
  await waitFor(
    () => {
      const files = rotatedFiles(out)
      const newest = files.at(-1)
      if (newest === undefined) return false
      const text = readFileSync(newest, 'utf8')
      return json ? text.includes(`"msg":"${last}`) : text.includes(`\n${last}`) || text.startsWith(last)
    },
    { timeoutMs: 60_000, message: `the last line in ${out}; master log:\n${fleet.log.text}` },
  )
  return { fleet, out, dir: dir.path, ms: Date.now() - started }
}

/** The numbers of `lines` (`line 000042 xxx`), checking that each is whole. */
function numbers(t: ExecutionContext, file: string, lines: string[]): number[] {
  const whole = new RegExp(`^line (\\d{6}) x{${LINE_BYTES - 13}}$`)
  const out: number[] = []
  for (const line of lines) {
    const m = whole.exec(line)
    if (!m) {
      t.fail(`${file}: not a whole numbered line: ${JSON.stringify(line.slice(0, 120))}`)
      return out
    }
    out.push(Number(m[1]))
  }
  return out
}

test('50,000 lines under size rotation: every line exactly once, whole, in order across FILE.N..FILE.1, FILE', async (t) => {
  const LINES = 50_000
  const MAX = 256 * 1024
  const { out, ms } = await run(t, LINES, ['--log-max-size', '256K', '--log-max-files', '100'])
  const files = rotatedFiles(out)
  const total = LINES * LINE_BYTES
  // Without rotation everything would be in one file.
  t.true(files.length >= Math.floor(total / MAX), `${files.length} files: ${files.join(', ')}`)
  const seen: number[] = []
  let bytes = 0
  for (const [i, file] of files.entries()) {
    const size = statSync(file).size
    bytes += size
    // A line begun under the limit ends in the same file (raw output comes in chunks).
    t.true(size <= MAX + LINE_BYTES, `${file}: ${size} bytes`)
    if (i < files.length - 1) t.true(size > MAX - 2 * LINE_BYTES, `${file}: ${size} bytes, rotated early`)
    const text = readFileSync(file, 'utf8')
    t.true(text.endsWith('\n'), `${file} ends with a whole line`)
    seen.push(...numbers(t, file, linesOf(file)))
  }
  t.is(bytes, total)
  t.is(seen.length, LINES)
  t.deepEqual(
    seen,
    Array.from({ length: LINES }, (_, i) => i + 1),
    'every line once, in order',
  )
  t.log(`${LINES} lines, ${total} bytes, ${files.length - 1} rotations, ${ms} ms from start to the last line`)
})

test('stdout and stderr to one file: it is rotated once per crossing of the size, every line once', async (t) => {
  const LINES = 5000
  const MAX = 32 * 1024
  const dir = await tmpDir('baton-rotate-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, worker(LINES, true))
  const out = join(dir.path, 'both.log')
  const flags = ['--stdout', out, '--stderr', out, '--log-max-size', '32K', '--log-max-files', '100']
  const fleet = await startFleet(t, { script, count: 1, flags })
  const count = (): number => rotatedFiles(out).reduce((n, f) => n + linesOf(f).length, 0)
  await waitFor(() => count() === LINES, { timeoutMs: 60_000, message: `${LINES} lines in ${out}: ${fleet.log.text}` })
  const files = rotatedFiles(out)
  // 400,000 bytes in files of 32 KiB: 12 rotations; rotated twice, files would be half empty.
  t.is(files.length, Math.ceil((LINES * LINE_BYTES) / (Math.floor(MAX / LINE_BYTES) * LINE_BYTES)), files.join(', '))
  for (const f of files.slice(0, -1)) t.true(statSync(f).size > MAX - 2 * LINE_BYTES, `${f}: ${statSync(f).size}`)
  const all = files.flatMap((f) => numbers(t, f, linesOf(f)))
  t.deepEqual(
    [...all].sort((a, b) => a - b),
    Array.from({ length: LINES }, (_, i) => i + 1),
  )
})

test('logMaxFiles is honoured: FILE.1..FILE.N are kept, never FILE.(N+1), and hold the newest lines', async (t) => {
  const LINES = 5000
  const { out } = await run(t, LINES, ['--log-max-size', '64K', '--log-max-files', '3'])
  // 400,000 bytes in files of 64 KiB: 6 rotations; 3 kept.
  t.true(existsSync(`${out}.3`))
  t.false(existsSync(`${out}.4`))
  const files = rotatedFiles(out)
  t.is(files.length, 4)
  const kept = files.flatMap((f) => numbers(t, f, linesOf(f)))
  const first = kept[0] ?? 0
  t.deepEqual(
    kept,
    Array.from({ length: LINES - first + 1 }, (_, i) => first + i),
    'the newest lines, contiguous',
  )
  t.true(first > 1, 'the oldest files were removed')
})

test('--log-format json with rotation: every line in every file parses and names its worker', async (t) => {
  const LINES = 3000
  const { fleet, out } = await run(t, LINES, [
    '--log-format',
    'json',
    '--log-max-size',
    '64K',
    '--log-max-files',
    '100',
  ])
  const files = rotatedFiles(out)
  t.true(files.length >= 4, files.join(', '))
  const msgs: string[] = []
  for (const file of files) {
    t.true(statSync(file).size <= 64 * 1024, `${file}: whole lines under the limit`)
    for (const line of linesOf(file)) {
      let o: Record<string, unknown>
      try {
        o = JSON.parse(line) as Record<string, unknown>
      } catch {
        return void t.fail(`${file}: not JSON: ${JSON.stringify(line)}`)
      }
      t.is(o.group, fleet.name)
      t.is(o.id, 0)
      msgs.push(String(o.msg))
    }
  }
  t.deepEqual(
    numbers(t, 'msg', msgs),
    Array.from({ length: LINES }, (_, i) => i + 1),
  )
})

test("--log FILE: the master's own log rotates too, inherited worker output whole and in order", async (t) => {
  const LINES = 2000
  const MAX = 16 * 1024
  const dir = await tmpDir('baton-rotate-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, worker(LINES))
  const log = join(dir.path, 'master.log')
  // stdout inherit (the default): worker output goes to the master's fds 1 and 2, = FILE.
  const fleet = await startFleet(t, {
    script,
    count: 1,
    flags: ['--log', log, '--log-max-size', '16K', '--log-max-files', '50'],
  })
  const last = `line ${String(LINES).padStart(6, '0')} `
  await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes(last), {
    timeoutMs: 60_000,
    message: `the last line in ${log}; ${rotatedFiles(log).join(', ')}`,
  })
  const files = rotatedFiles(log)
  t.true(files.length >= Math.floor((LINES * LINE_BYTES) / MAX), files.join(', '))
  const numbered: string[] = []
  let master = 0
  for (const file of files) {
    // Inherited output rotates at line boundaries; the master's own lines are checked once a second.
    t.true(statSync(file).size <= MAX + 1024, `${file}: ${statSync(file).size} bytes`)
    for (const line of linesOf(file)) {
      if (line.startsWith('[baton ')) master++
      else numbered.push(line)
    }
  }
  t.true(master >= 1, "the master's own lines are in the files")
  t.deepEqual(
    numbers(t, 'master log', numbered),
    Array.from({ length: LINES }, (_, i) => i + 1),
  )
  t.is(fleet.log.text, '', 'nothing on the terminal: all in the file')
})

const asRoot = process.getuid?.() === 0 ? test : test.skip

asRoot(
  "a symbolic link a worker's user planted at FILE.1 is not followed: its target stays untouched and the master log says why",
  async (t) => {
    let target = ''
    const { fleet, out } = await run(t, 2000, ['--log-max-size', '16K', '--log-max-files', '5'], (dir, file) => {
      // A directory every user may write, as a worker's user's log directory can be.
      chmodSync(dir, 0o777)
      target = join(dir, 'passwd-copy')
      writeFileSync(target, 'root:x:0:0:root:/root:/bin/bash\n')
      symlinkSync(target, `${file}.1`)
    })
    await fleet.log.waitFor(/log rotation of .*out\.log: refused: .*out\.log\.1 is a symbolic link/)
    t.is(readFileSync(target, 'utf8'), 'root:x:0:0:root:/root:/bin/bash\n', 'the target is untouched')
    t.true(statSync(`${out}.1`, { throwIfNoEntry: false }) !== undefined)
    t.false(existsSync(`${out}.2`), 'nothing was shifted')
    // Nothing is lost: the lines go on to FILE.
    t.deepEqual(
      numbers(t, out, linesOf(out)),
      Array.from({ length: 2000 }, (_, i) => i + 1),
    )
    t.regex(fleet.log.text, /remove it/)
  },
)

test('--log-max-size 0 and --log-max-files 0 exit 2 naming the option', async (t) => {
  const dir = await tmpDir('baton-rotate-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, 'setInterval(() => {}, 1000)\n')
  const env = { BATON_RUNTIME_DIR: dir.path }
  const size = await runCli(['start', script, '--name', 'rot', '--log-max-size', '0'], env)
  t.is(size.code, 2, size.stderr)
  t.regex(size.stderr, /logMaxSize.*"0" is zero/)
  const bad = await runCli(['start', script, '--name', 'rot', '--log-max-size', '10Q'], env)
  t.is(bad.code, 2, bad.stderr)
  t.regex(bad.stderr, /logMaxSize.*expected a size such as 512M/)
  const files = await runCli(['start', script, '--name', 'rot', '--log-max-size', '1M', '--log-max-files', '0'], env)
  t.is(files.code, 2, files.stderr)
  t.regex(files.stderr, /--log-max-files/)
  const many = await runCli(['start', script, '--name', 'rot', '--log-max-size', '1M', '--log-max-files', '1001'], env)
  t.is(many.code, 2, many.stderr)
  t.regex(many.stderr, /logMaxFiles: expected an integer from 1 to 1000, got 1001/)
})

test("API: the fleet-wide logMaxSize / logMaxFiles are checked by the group rules and named as the fleet's", (t) => {
  const bad = (options: ConstructorParameters<typeof Supervisor>[0]): OptionsError | undefined =>
    t.throws(() => new Supervisor(options), { instanceOf: OptionsError })
  t.is(bad({ logMaxSize: '0' })?.field, 'logMaxSize')
  t.is(bad({ logMaxSize: 'lots' })?.field, 'logMaxSize')
  t.is(bad({ logMaxFiles: 0 })?.field, 'logMaxFiles')
  // (any existing file passes as the script here)
  const script = process.execPath
  t.is(bad({ groups: { web: { script, logMaxFiles: 1001 } } })?.field, 'groups.web.logMaxFiles')
  t.is(bad({ logMaxSize: '1M', groups: { web: { script, logMaxSize: '0' } } })?.field, 'groups.web.logMaxSize')
  t.notThrows(() => new Supervisor({ logMaxSize: '1.5G', logMaxFiles: 1000 }))
})

test('a reload that adds logMaxSize to the config file rotates the file from then on, and says so', async (t) => {
  const dir = await tmpDir('baton-rotate-')
  t.teardown(() => dir.cleanup())
  const script = join(dir.path, 'worker.mjs')
  writeFileSync(script, worker(1000))
  const config = join(dir.path, 'baton.config.mjs')
  const write = (extra: string): void =>
    writeFileSync(
      config,
      `export default { name: 'cfg', ${extra} groups: { w: { script: 'worker.mjs', stdout: 'out.log', readiness: 'message' } } }\n`,
    )
  write('')
  const fleet = await startFleet(t, { cwd: dir.path, name: 'cfg', expectWorkers: 1 })
  const out = join(dir.path, 'out.log')
  const last = 'line 001000 '
  const count = (): number => rotatedFiles(out).reduce((n, f) => n + readFileSync(f, 'utf8').split(last).length - 1, 0)
  await waitFor(() => count() === 1, { message: 'the first worker wrote its lines' })
  t.false(existsSync(`${out}.1`), 'no rotation without logMaxSize')
  write(`logMaxSize: '16K', logMaxFiles: 50,`)
  const reload = await fleet.cli(['reload', 'cfg'])
  t.is(reload.code, 0, reload.stderr)
  t.regex(reload.stdout, /logMaxSize/)
  await waitFor(() => count() === 2, { message: 'the new worker wrote its lines' })
  t.true(existsSync(`${out}.1`), 'rotated after the reload')
  const files = rotatedFiles(out)
  const all = files.flatMap((f) => numbers(t, f, linesOf(f)))
  t.is(all.length, 2000)
  for (const f of files.slice(1)) t.true(statSync(f).size <= 16 * 1024 + LINE_BYTES, f)
})
