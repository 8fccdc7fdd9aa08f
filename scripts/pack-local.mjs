#!/usr/bin/env node
// Pack the root package and this machine's platform package from the repository as it is
// built (dist/ and native/baton.<platform>.node, no cross toolchain) into a directory:
//   node scripts/pack-local.mjs <dir>
// Prints the two tarballs' paths, root first. __test__/install.spec.ts installs them.
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { packPlatform, packRoot } from './lib/packages.mjs'
import { ROOT, TARGETS } from './lib/tools.mjs'

const dest = resolve(process.argv[2] ?? join(ROOT, 'release', 'local'))
mkdirSync(dest, { recursive: true })
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version
const musl = process.platform === 'linux' && !process.report.getReport().header.glibcVersionRuntime
const platform = `${process.platform}-${process.arch}${process.platform === 'linux' ? (musl ? '-musl' : '-gnu') : ''}`
if (!TARGETS.some((t) => t.platform === platform)) {
  console.error(`no platform package for ${platform}`)
  process.exit(1)
}
const node = join(ROOT, 'native', `baton.${platform}.node`)
if (!existsSync(node)) {
  console.error(`no ${node}: run npm run build:native first`)
  process.exit(1)
}
if (!existsSync(join(ROOT, 'dist', 'index.js'))) {
  console.error('no dist/index.js: run npm run build:ts first')
  process.exit(1)
}
const root = packRoot(dest, version)
const plat = packPlatform(platform, node, dest, version)
console.log(join(dest, root))
console.log(join(dest, plat))
