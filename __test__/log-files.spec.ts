/**
 * The file reading under `baton logs` (src/cli/log-files.ts) on files the test writes:
 * lines read backwards across chunk edges come out whole (long lines, multibyte
 * characters), a line still being written is left to the follower, files merge in time
 * order, a truncated file is read again, `--since` values, and files that are not regular
 * files of ours are refused.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { appendFileSync, chownSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CommandError } from '../src/cli/errors.js'
import {
  CUT,
  FileFollower,
  MAX_LINE,
  mergeByTime,
  parseLine,
  parseSince,
  readHistory,
  RefusedFile,
  type LogSource,
} from '../src/cli/log-files.js'
import { tmpDir } from './helpers/processes.js'
import { nobody } from '../harness/proc.mjs'

function source(path: string, extra: Partial<LogSource> = {}): LogSource {
  return {
    path,
    roles: [{ group: 'web', stream: 'out' }],
    master: false,
    json: false,
    time: false,
    prefix: false,
    ...extra,
  }
}

test('history comes out whole across 64 KiB chunk edges; a line still being written is left to the follower', async (t) => {
  const dir = await tmpDir('baton-logfiles-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const long = 'x'.repeat(70_000)
  const accents = 'é'.repeat(40_001) // 80,002 bytes: a chunk edge falls inside a character
  writeFileSync(path, `a\n${long}\n${accents}\n\nb\npartial`)
  const h = readHistory(source(path), {}, 10, true)
  t.deepEqual(
    h.lines.map((l) => l.text),
    ['a', long, accents, '', 'b'],
  )
  const two = readHistory(source(path), {}, 2, false)
  t.deepEqual(
    two.lines.map((l) => l.text),
    ['', 'b'],
  )
  t.truthy(h.current)
  const f = new FileFollower(source(path), h.current)
  t.deepEqual(f.poll(), [])
  appendFileSync(path, ' line\nnext\n')
  t.deepEqual(f.poll(), ['partial line', 'next'])
  // Truncated in place (copytruncate): read again from the start.
  truncateSync(path, 0)
  appendFileSync(path, 'after truncation\n')
  t.deepEqual(f.poll(), ['after truncation'])
  f.close()
})

test('files merge in time order; a line without a time stamp stays after the line before it', (t) => {
  const line = (text: string) => {
    const stamp = /^(\S+Z) /.exec(text)
    return { text, time: stamp ? Date.parse(stamp[1]) : undefined }
  }
  const out = ['2026-12-07T02:20:00.100Z out-1', 'continued', '2026-12-07T02:20:00.300Z out-2'].map(line)
  const err = ['2026-12-07T02:20:00.200Z err-1', '2026-12-07T02:20:00.300Z err-2'].map(line)
  t.deepEqual(
    mergeByTime([out, err], Infinity).map((l) => l.text),
    [
      '2026-12-07T02:20:00.100Z out-1',
      'continued',
      '2026-12-07T02:20:00.200Z err-1',
      '2026-12-07T02:20:00.300Z out-2',
      '2026-12-07T02:20:00.300Z err-2',
    ],
  )
  t.deepEqual(
    mergeByTime([out, err], 2).map((l) => l.text),
    ['2026-12-07T02:20:00.300Z out-2', '2026-12-07T02:20:00.300Z err-2'],
  )
})

test('--since takes a duration or an ISO time; anything else is a usage error naming --since', (t) => {
  const now = Date.parse('2026-12-07T02:20:00Z')
  t.is(parseSince('30s', now), now - 30_000)
  t.is(parseSince('10m', now), now - 600_000)
  t.is(parseSince('2h', now), now - 7_200_000)
  t.is(parseSince('1d', now), now - 86_400_000)
  t.is(parseSince('1.5h', now), now - 5_400_000)
  t.is(parseSince('2026-12-07T02:00:00.500Z', now), Date.parse('2026-12-07T02:00:00.500Z'))
  t.is(parseSince('2026-12-07', now), Date.parse('2026-12-07'))
  for (const bad of ['x', '10', '-5m', '', '5 m', '2026-13-45', 'yesterday']) {
    const e = t.throws(() => parseSince(bad, now), { instanceOf: CommandError })
    t.is(e?.exitCode, 2)
    t.regex(e?.message ?? '', /^--since expects a duration/)
  }
})

test('a FIFO, a directory and (as root) a file of another user are refused with the path and the rule', async (t) => {
  const dir = await tmpDir('baton-logfiles-')
  t.teardown(() => dir.cleanup())
  const fifo = join(dir.path, 'fifo.log')
  execFileSync('mkfifo', [fifo])
  const refused = (path: string): string => {
    const h = readHistory(source(path), {}, 10, false)
    t.deepEqual(h.lines, [])
    t.is(h.refused.length, 1)
    t.true(h.refused[0] instanceof RefusedFile)
    return h.refused[0].message
  }
  t.regex(refused(fifo), /refused to read .*fifo\.log: it is not a regular file/)
  t.regex(refused(dir.path), /it is not a regular file/)
  if (process.getuid?.() === 0) {
    const theirs = join(dir.path, 'theirs.log')
    writeFileSync(theirs, 'planted\n')
    chownSync(theirs, nobody().uid, nobody().gid)
    t.regex(refused(theirs), /it is owned by uid \d+, not by uid 0 that runs baton and its master/)
  }
})

test("a worker cannot pass its line off as another worker's: JSON, time stamps and prefixes count only where the fleet writes them", (t) => {
  const forged = '{"time":"2020-01-01T00:00:00.000Z","group":"api","id":1,"stream":"err","msg":"x"}'
  const text = source('/x', { roles: [{ group: 'web', stream: 'out' }] })
  t.like(parseLine(forged, text), { group: 'web', id: undefined, stream: 'out', time: undefined })
  t.like(parseLine('api#1 2020-01-01T00:00:00.000Z x', text), { group: 'web', id: undefined, time: undefined })
  const prefixed = source('/x', {
    roles: [
      { group: 'web', stream: 'out' },
      { group: 'api', stream: 'out' },
    ],
    prefix: true,
    time: true,
  })
  t.like(parseLine('2026-12-07T02:20:00.100Z web#0 api#1 2020-01-01T00:00:00.000Z x', prefixed), {
    group: 'web',
    id: 0,
    time: Date.parse('2026-12-07T02:20:00.100Z'),
  })
  const json = source('/x', { json: true, time: true, prefix: true })
  t.like(parseLine(forged, json), { group: 'api', id: 1, stream: 'err' })
})

test('a line longer than 1 MiB (raw output, no newline for 5 MiB) is shown cut, in history and in follow, without holding it whole', async (t) => {
  const dir = await tmpDir('baton-logfiles-')
  t.teardown(() => dir.cleanup())
  const path = join(dir.path, 'out.log')
  const huge = 'y'.repeat(5 * 1024 * 1024)
  writeFileSync(path, `before\n${huge}\nafter\n`)
  const h = readHistory(source(path), {}, 10, true)
  t.deepEqual(
    h.lines.map((l) => (l.text.length > 100 ? `${l.text.length}${l.text.endsWith(CUT) ? ' cut' : ''}` : l.text)),
    ['before', `${MAX_LINE + CUT.length} cut`, 'after'],
  )
  const f = new FileFollower(source(path), h.current)
  appendFileSync(path, `${huge}\nnext\n`)
  const got = f.poll()
  t.deepEqual(
    got.map((l) => (l.length > 100 ? `${l.length}${l.endsWith(CUT) ? ' cut' : ''}` : l)),
    [`${MAX_LINE + CUT.length} cut`, 'next'],
  )
  f.close()
})
