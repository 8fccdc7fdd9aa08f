#!/usr/bin/env node
// npm's `prepare` hook. It runs on `npm install`/`npm ci` in a clone of the repository, and
// on `npm pack`/`npm publish`.
// - In a clone (crates/ present), `npm install` builds the Rust addon from source into
//   native/ and the TypeScript into dist/: what the README's "From source" commands need.
// - `npm pack` and `npm publish` build only the TypeScript. The binaries are published as
//   the platform packages batonjs-<platform> (scripts/pack-all.mjs,
//   .github/workflows/release.yml), so publishing never waits on, or ships, a Rust build.
// - BATON_SKIP_NATIVE_BUILD=1 skips the Rust build too (CI jobs that bring their binary).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const command = process.env.npm_command ?? ''

/** Why the Rust build is skipped, or null to run it. */
function skipNativeReason() {
  if (command === 'pack' || command === 'publish') {
    return `\`npm ${command}\` ships the TypeScript only; the binaries are the batonjs-<platform> packages`
  }
  if (process.env.BATON_SKIP_NATIVE_BUILD === '1') return 'BATON_SKIP_NATIVE_BUILD=1'
  if (!existsSync(join(root, 'crates', 'baton-node', 'Cargo.toml'))) {
    return 'no crates/ here (not a clone of the repository)'
  }
  return null
}

function run(script) {
  const r = spawnSync('npm', ['run', script], { cwd: root, stdio: 'inherit' })
  if (r.error) throw r.error
  if (r.status !== 0) process.exit(r.status ?? 1)
}

const reason = skipNativeReason()
if (reason) {
  console.log(`baton prepare: skipping the Rust build (${reason})`)
} else {
  const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' })
  if (cargo.error || cargo.status !== 0) {
    console.error(
      'baton prepare: building from source needs a Rust toolchain, and `cargo` is not on PATH.\n' +
        '  Install Rust (https://rustup.rs) and run `npm install` again, or use the published\n' +
        '  package, which needs no Rust: `npm install batonjs`.',
    )
    process.exit(1)
  }
  run('build:native')
}
run('build:ts')
