// npm tarballs of the root package and of the platform packages, as published.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { ROOT, TARGETS, sh } from './tools.mjs'

/** `npm pack` in `dir` into `dest`; returns the tarball's file name. */
function npmPack(dir, dest, extra = []) {
  const r = spawnSync('npm', ['pack', '--json', '--pack-destination', dest, ...extra], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  if (r.status !== 0) throw new Error(`npm pack in ${dir} failed`)
  // npm prints the lifecycle scripts' output before the JSON.
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('\n[') + 1 || 0))
  return json[0].filename
}

/**
 * The platform package batonjs-<platform> from npm/<platform>/ with `nodeFile` as its
 * binary, at `version`, packed into `dest`. Returns the tarball's file name.
 */
export function packPlatform(platform, nodeFile, dest, version) {
  const stage = join(dest, '.stage', platform)
  rmSync(stage, { recursive: true, force: true })
  mkdirSync(stage, { recursive: true })
  const pkg = JSON.parse(readFileSync(join(ROOT, 'npm', platform, 'package.json'), 'utf8'))
  pkg.version = version
  const binary = `baton.${platform}.node`
  if (pkg.main !== binary) throw new Error(`npm/${platform}/package.json: main is ${pkg.main}, expected ${binary}`)
  writeFileSync(join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
  copyFileSync(join(ROOT, 'npm', platform, 'README.md'), join(stage, 'README.md'))
  copyFileSync(join(ROOT, 'LICENSE'), join(stage, 'LICENSE'))
  copyFileSync(nodeFile, join(stage, binary))
  return npmPack(stage, dest)
}

/**
 * The root package batonjs packed from the repository as it is (`npm pack --ignore-scripts`:
 * build dist/ first), with optionalDependencies naming the six platform packages at
 * `version`, as `napi prepublish` writes them, into `dest`. Returns the file name.
 */
export function packRoot(dest, version) {
  const stage = join(dest, '.stage', 'root')
  rmSync(stage, { recursive: true, force: true })
  mkdirSync(stage, { recursive: true })
  const packed = npmPack(ROOT, stage, ['--ignore-scripts'])
  sh('tar', ['-xzf', join(stage, packed), '-C', stage])
  const file = join(stage, 'package', 'package.json')
  const pkg = JSON.parse(readFileSync(file, 'utf8'))
  if (pkg.version !== version) throw new Error(`packed batonjs is ${pkg.version}, expected ${version}`)
  pkg.optionalDependencies = Object.fromEntries(TARGETS.map((t) => [`batonjs-${t.platform}`, version]))
  // prepare builds from a clone; the package has no scripts/ and never runs it.
  delete pkg.scripts.prepare
  writeFileSync(file, JSON.stringify(pkg, null, 2) + '\n')
  const name = basename(packed)
  sh('tar', ['-czf', join(dest, name), '-C', stage, 'package'])
  return name
}
