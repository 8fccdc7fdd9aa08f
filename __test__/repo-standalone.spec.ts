/**
 * The repo stands alone: no tracked file under src/, crates/, bench/, harness/, docs/, __test__/,
 * examples/, README.md or CONTRIBUTING.md names a path of one machine (a checkout, a home
 * directory, one run's temp dir) or a document outside the repo (the old "design §N"
 * citations: the rules they meant are in docs/design.md now), every
 * `docs/design.md#anchor` cited exists, and no comment names a Rust file that became a
 * folder. A hit fails with `file:line: the rule`.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const SCOPE = ['src', 'crates', 'bench', 'harness', 'docs', '__test__', 'examples', 'README.md', 'CONTRIBUTING.md']
const SELF = '__test__/repo-standalone.spec.ts'

/** The tracked files of {@link SCOPE}, relative to the repo root (a plain walk without git). */
function trackedFiles(): string[] {
  try {
    const out = execFileSync('git', ['ls-files', '-z', '--', ...SCOPE], { cwd: ROOT, encoding: 'utf8' })
    return out.split('\0').filter(Boolean)
  } catch {
    const files: string[] = []
    const walk = (rel: string): void => {
      const abs = path.join(ROOT, rel)
      if (statSync(abs).isFile()) return void files.push(rel)
      for (const name of readdirSync(abs)) {
        if (name !== 'node_modules' && name !== 'target' && name !== '.next') walk(`${rel}/${name}`)
      }
    }
    for (const entry of SCOPE) walk(entry)
    return files
  }
}

/** Rules on one line; each names what it forbids. */
const LINE_RULES: { re: RegExp; rule: string }[] = [
  { re: /\/work\//, rule: 'a path of one machine (/work/...)' },
  { re: /\/root\/[\w.-]/, rule: "a path under root's home directory" },
  { re: /\/home\/[\w.-]+\//, rule: 'a path under a home directory' },
  { re: /\/Users\/[\w.-]+\//, rule: 'a path under a macOS home directory' },
  { re: /\/var\/folders\//, rule: "a path in one Mac's temp dir" },
  {
    re: /\bdesign(?:\.md)?\s*§/i,
    rule: 'a "design §N" citation of a document outside the repo (cite docs/design.md#...)',
  },
  {
    re: /\bthe design (?:guide|brief)\b/i,
    rule: 'a citation of the design guide outside the repo (cite docs/design.md)',
  },
  { re: /\breference notes\b/i, rule: 'a citation of reference notes outside the repo' },
  { re: /\b(?:as|per|in|by) the (?:design )?brief\b/i, rule: 'a citation of a brief outside the repo' },
  { re: /(?:\.\.\/)+shared\/|\bshared\/(?:design|reference)\b/, rule: 'a document outside the repo (shared/...)' },
]

/** One run's temp dir, e.g. `/tmp/baton-rul-w04LJF` (mkdtemp's six random characters). */
function runTempDir(line: string): string | undefined {
  for (const m of line.matchAll(/\/tmp\/[\w.-]*?-([A-Za-z0-9]{6})(?![A-Za-z0-9])/g)) {
    const suffix = m[1]
    if (/[A-Z]/.test(suffix) && /[a-z0-9]/.test(suffix)) return m[0]
  }
  return undefined
}

/**
 * A check for stale names in a line: a `name.rs` that is no Rust file of the repo (renamed,
 * or now the folder `name/`), a `src/....ts` path that is no file of the repo.
 */
function staleNameCheck(files: readonly string[]): (line: string) => string[] {
  const tracked = new Set(files)
  const rust = new Set(files.filter((f) => f.endsWith('.rs')).map((f) => path.basename(f)))
  const rustFolders = new Set(files.filter((f) => f.endsWith('.rs')).map((f) => path.basename(path.dirname(f))))
  return (line) => {
    const stale: string[] = []
    for (const [name] of line.matchAll(/\b[a-z0-9_]+\.rs\b/g)) {
      if (rust.has(name)) continue
      const folder = name.slice(0, -3)
      const hint = rustFolders.has(folder) ? ` (${folder}/ is a folder now)` : ''
      stale.push(`a stale name: ${name} is no file of the repo${hint}`)
    }
    for (const [p] of line.matchAll(/(?<![\w/.])src\/[\w/-]+\.ts\b/g)) {
      if (!tracked.has(p)) stale.push(`a stale name: ${p} is no file of the repo`)
    }
    return stale
  }
}

/** The anchors of docs/design.md's headings, as GitHub derives them. */
function designAnchors(): Set<string> {
  const text = readFileSync(path.join(ROOT, 'docs/design.md'), 'utf8')
  const anchors = new Set<string>()
  for (const m of text.matchAll(/^#{1,6}\s+(.+)$/gm)) {
    anchors.add(
      m[1]
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    )
  }
  return anchors
}

/** Every violation in the tracked files, as `file:line: rule (the text)`. */
function violations(): string[] {
  const anchors = designAnchors()
  const found: string[] = []
  const files = trackedFiles()
  const staleNames = staleNameCheck(files)
  for (const file of files) {
    if (file === SELF) continue
    const buf = readFileSync(path.join(ROOT, file))
    if (buf.includes(0)) continue // binary
    const lines = buf.toString('utf8').split('\n')
    lines.forEach((line, i) => {
      const at = `${file}:${i + 1}`
      const quote = (s: string) => JSON.stringify(s.trim().slice(0, 120))
      for (const { re, rule } of LINE_RULES) {
        const m = re.exec(line)
        if (m) found.push(`${at}: ${rule}: ${quote(line)}`)
      }
      for (const stale of staleNames(line)) found.push(`${at}: ${stale}: ${quote(line)}`)
      const tmp = runTempDir(line)
      if (tmp) found.push(`${at}: one run's temp dir (${tmp}): ${quote(line)}`)
      for (const m of line.matchAll(/design\.md#([\w-]+)/g)) {
        if (!anchors.has(m[1])) found.push(`${at}: docs/design.md has no section #${m[1]}`)
      }
    })
  }
  return found
}

test('no file names a machine path, an outside document or a stale file name', (t) => {
  const found = violations()
  t.deepEqual(found, [], `\n${found.join('\n')}`)
})

test('the checks catch what they are meant to', (t) => {
  const staleNames = staleNameCheck(trackedFiles())
  const hit = (line: string) =>
    LINE_RULES.some(({ re }) => re.test(line)) || runTempDir(line) !== undefined || staleNames(line).length > 0
  for (const bad of [
    ' * PM2 as the anchors ran it (/work/shared/reference/anchors-measured.md)',
    '//! themselves (design §8). The one exception',
    'This is how baton is built; `../shared/design.md` (the design guide) is the brief',
    '    at file:///tmp/baton-rul-2QA0Ui/app-4/app.mjs:9:40',
    'see `event_loop.rs`',
    'the drain (src/drainer.ts)',
    '// As the brief states it: the constructor with default name',
    'const cfg = "/home/alice/app/baton.config.js"',
  ]) {
    t.true(hit(bad), bad)
  }
  for (const fine of [
    "HOME: '/root',",
    "portTarget(['/tmp/app.sock'])",
    'PathBuf::from("/tmp/baton-4322")',
    'the rules in `docs/design.md#pitfalls`',
    'REFUSED_STREAM: the server did not process it (HTTP/2 §8.1.4)',
    'see `event_loop/steering.rs` and `spawn.rs`, src/worker/drain.ts',
  ]) {
    t.false(hit(fine), fine)
  }
})
