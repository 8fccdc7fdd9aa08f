#!/usr/bin/env node
// npm run pack:all: build the six binaries on a Linux x64 machine and write release/:
// the root tarball batonjs-<version>.tgz, whose optionalDependencies name the six platform
// packages at the same version (as `napi prepublish` writes them), and one tarball per
// platform, batonjs-<platform>-<version>.tgz, holding its binary.
//
// Installs what it needs (Debian's rustc-web/cargo-web/rust-web-src with apt-get, and
// ziglang + cargo-zigbuild from PyPI into .tools/venv), builds each target with
// `napi build --target T -x -- -Zbuild-std=std,panic_abort` (gnu targets with the
// .2.17 glibc floor, macOS with MACOSX_DEPLOYMENT_TARGET=11.0) and records the tool
// versions in release/tools.json. Then run `npm run verify:targets`.
//
//   node scripts/pack-all.mjs [--only linux-x64-gnu,darwin-arm64] [--no-build] [--no-pack]
// --no-build packs the binaries a previous run left in release/.build/; --no-pack only
// builds (runs with disjoint --only lists and BATON_CROSS_TARGET_DIR can build in parallel).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { packPlatform, packRoot } from './lib/packages.mjs'
import {
  ROOT,
  TARGETS,
  crossEnv,
  ensureDebianRust,
  ensureRustObjcopy,
  ensureVenv,
  log,
  sh,
  toolVersions,
} from './lib/tools.mjs'

const args = process.argv.slice(2)
const onlyArg = args.includes('--only') ? args[args.indexOf('--only') + 1] : null
const only = onlyArg ? onlyArg.split(',') : null
const build = !args.includes('--no-build')
const pack = !args.includes('--no-pack')
const RELEASE = join(ROOT, 'release')
const BUILD = join(RELEASE, '.build')
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`pack:all builds on Linux x64 only (this is ${process.platform}-${process.arch})`)
  process.exit(1)
}

const started = Date.now()
const targets = TARGETS.filter((t) => !only || only.includes(t.platform))
if (only && targets.length !== only.length) {
  console.error(`unknown target in --only ${onlyArg}; targets: ${TARGETS.map((t) => t.platform).join(', ')}`)
  process.exit(1)
}

try {
  log('tools')
  if (build) {
    ensureDebianRust()
    ensureRustObjcopy()
    ensureVenv()
  }
  // --no-build (the release workflow packs the binaries its build jobs made) needs no tools.
  const env = build ? crossEnv() : process.env
  const versions = build ? toolVersions(env) : { node: process.version }
  for (const [k, v] of Object.entries(versions)) console.log(`  ${k.padEnd(26)} ${v}`)

  // Old tarballs out; the per-target build dirs stay unless rebuilt.
  mkdirSync(BUILD, { recursive: true })

  const timings = {}
  for (const t of targets) {
    const out = join(BUILD, t.platform)
    const node = join(out, `baton.${t.platform}.node`)
    if (build) {
      log(`build ${t.triple}`)
      const t0 = Date.now()
      rmSync(out, { recursive: true, force: true })
      sh(
        join(ROOT, 'node_modules', '.bin', 'napi'),
        [
          'build',
          '--platform',
          '--release',
          '--manifest-path',
          'crates/baton-node/Cargo.toml',
          '--output-dir',
          out,
          '--no-js',
          '--dts',
          'index.d.ts',
          '--no-const-enum',
          '--target',
          t.triple,
          '-x',
          '--',
          '-Zbuild-std=std,panic_abort',
        ],
        { cwd: ROOT, env },
      )
      timings[t.platform] = Math.round((Date.now() - t0) / 1000)
      writeFileSync(join(out, 'build.json'), JSON.stringify({ seconds: timings[t.platform], tools: versions }) + '\n')
      console.log(`  ${t.platform}: ${timings[t.platform]} s`)
    }
    if (!existsSync(node)) {
      throw new Error(`no ${node}: build ${t.platform} first (drop --no-build)`)
    }
  }

  if (!pack) {
    console.log(`\npack:all built ${targets.map((t) => t.platform).join(', ')} (--no-pack)`)
    process.exit(0)
  }
  log('pack')
  for (const f of readdirSync(RELEASE)) if (f.endsWith('.tgz')) rmSync(join(RELEASE, f))
  sh('npm', ['run', 'build:ts'], { cwd: ROOT })
  const tarballs = []
  // With --no-build, the tool versions the binaries were built with.
  let builtWith = versions
  for (const t of TARGETS) {
    const node = join(BUILD, t.platform, `baton.${t.platform}.node`)
    if (!existsSync(node)) continue
    const rec = join(BUILD, t.platform, 'build.json')
    if (!build && existsSync(rec)) builtWith = JSON.parse(readFileSync(rec, 'utf8')).tools ?? builtWith
    tarballs.push(packPlatform(t.platform, node, RELEASE, version))
    const record = join(BUILD, t.platform, 'build.json')
    if (!timings[t.platform] && existsSync(record))
      timings[t.platform] = JSON.parse(readFileSync(record, 'utf8')).seconds
  }
  tarballs.push(packRoot(RELEASE, version))
  writeFileSync(
    join(RELEASE, 'tools.json'),
    JSON.stringify(
      { date: new Date().toISOString(), version, tools: build ? versions : builtWith, buildSeconds: timings },
      null,
      2,
    ) + '\n',
  )
  for (const f of tarballs) console.log(`  release/${f}`)
  console.log(`\npack:all wrote ${tarballs.length} tarballs in ${Math.round((Date.now() - started) / 1000)} s`)
} catch (e) {
  console.error(`\npack:all failed: ${e instanceof Error ? e.message : e}`)
  process.exit(1)
}
