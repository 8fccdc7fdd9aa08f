#!/usr/bin/env node
// Installs one pinned tool for .ci/run (the pins are in scripts/lib/tools.mjs) and prints
// what .ci/run needs:
//   node scripts/ci-tools.mjs debian-rust   Debian's Rust 1.96 + std source + clippy (apt-get)
//   node scripts/ci-tools.mjs promtool      Debian's prometheus package (apt-get), for promtool
//   node scripts/ci-tools.mjs tmux          Debian's tmux (apt-get), for __test__/monit.spec.ts
//   node scripts/ci-tools.mjs node24        prints a directory whose `node` is Node 24 (PyPI wheel)
//   node scripts/ci-tools.mjs actionlint    prints the path of actionlint (go install)
import { existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { PINS, TOOLS, ensureDebianRust, ensurePromtool, ensureTmux, hostNode24, out, sh } from './lib/tools.mjs'

const ACTIONLINT = 'v1.7.12'

try {
  switch (process.argv[2]) {
    case 'debian-rust':
      ensureDebianRust()
      console.log(out('/usr/bin/rustc', ['--version']))
      break
    case 'promtool':
      ensurePromtool()
      console.log(out('promtool', ['--version'])?.split('\n')[0] ?? 'promtool: not found after installing prometheus')
      break
    case 'tmux':
      ensureTmux()
      console.log(out('tmux', ['-V']) ?? 'tmux: not found after installing it')
      break
    case 'node24': {
      const node = hostNode24()
      const version = out(node, ['--version'])
      if (version !== `v${PINS.NODE24}`) throw new Error(`${node} is ${version}, expected v${PINS.NODE24}`)
      // A directory with that node alone: the wheel's bin/ also holds npm and npx scripts
      // that do not run from there, so npm stays the system's (run by this node).
      const dir = join(TOOLS, 'node24-bin')
      mkdirSync(dir, { recursive: true })
      rmSync(join(dir, 'node'), { force: true })
      symlinkSync(node, join(dir, 'node'))
      console.log(dir)
      break
    }
    case 'actionlint': {
      const bin = join(TOOLS, 'bin', 'actionlint')
      if (!existsSync(bin) || !(out(bin, ['--version']) ?? '').startsWith(ACTIONLINT.slice(1))) {
        mkdirSync(join(TOOLS, 'go'), { recursive: true })
        sh('go', ['install', `github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT}`], {
          stdio: ['ignore', 2, 2],
          env: {
            ...process.env,
            GOBIN: join(TOOLS, 'bin'),
            GOPATH: join(TOOLS, 'go'),
            GOMODCACHE: join(TOOLS, 'go', 'mod'),
            GOCACHE: join(TOOLS, 'go', 'cache'),
            GOFLAGS: '-mod=mod',
          },
        })
      }
      console.log(bin)
      break
    }
    default:
      console.error('usage: node scripts/ci-tools.mjs debian-rust | promtool | tmux | node24 | actionlint')
      process.exit(2)
  }
} catch (e) {
  console.error(`ci-tools ${process.argv[2]}: ${e instanceof Error ? e.message : e}`)
  process.exit(1)
}
