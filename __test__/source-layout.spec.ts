/**
 * How src/ is laid out, checked on the sources. src/ holds three programs, one folder each:
 * - src/master/: the Supervisor API, config files, the PM2 import, the health endpoint;
 * - src/worker/: the runtime every worker loads (the drain, the drop-in preload);
 * - src/cli/: the `baton` command;
 * plus the modules all three share at src/'s root (the native loader, defaults, types,
 * the runtime dir, formatting) and the package entry src/index.ts.
 *
 * The rules: no import circles anywhere (a cycle fails with its path, e.g.
 * `a.ts → b.ts → a.ts`); the shared modules import no role folder; the worker runtime
 * imports only itself and src/defaults.ts (it is loaded into every worker, so it stays
 * small, and no npm package); the master reaches the CLI only through the one-script
 * mode's lazy `import()`.
 */
import test from 'ava'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

interface Edge {
  to: string
  dynamic: boolean
}

/** Every .ts file under src/, as a path relative to src/ (`master/supervisor.ts`). */
function sources(dir = SRC): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry)
    if (statSync(path).isDirectory()) return sources(path)
    return path.endsWith('.ts') ? [relative(SRC, path)] : []
  })
}

/** The src/ modules each module imports (static, `import type` and dynamic `import()`). */
function importGraph(): Map<string, Edge[]> {
  const graph = new Map<string, Edge[]>()
  for (const file of sources()) {
    const text = readFileSync(join(SRC, file), 'utf8')
    const edges = [...text.matchAll(/(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'(\.\.?\/[\w./-]+)\.js'/g)]
      .map((m) => ({ to: normalize(join(dirname(file), `${m[2]}.ts`)), dynamic: m[1].includes('(') }))
      .filter((e) => !e.to.startsWith('..'))
    graph.set(file, edges)
  }
  return graph
}

/** The first cycle found by a depth-first walk, as a path that ends where it starts. */
function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const done = new Set<string>()
  const path: string[] = []
  const visit = (node: string): string[] | undefined => {
    const at = path.indexOf(node)
    if (at >= 0) return [...path.slice(at), node]
    if (done.has(node)) return undefined
    path.push(node)
    for (const dep of graph.get(node) ?? []) {
      const cycle = visit(dep)
      if (cycle) return cycle
    }
    path.pop()
    done.add(node)
    return undefined
  }
  for (const node of graph.keys()) {
    const cycle = visit(node)
    if (cycle) return cycle
  }
  return undefined
}

const targets = (graph: Map<string, Edge[]>): Map<string, string[]> =>
  new Map([...graph].map(([file, edges]) => [file, [...new Set(edges.map((e) => e.to))]]))

/** Everything `start` loads, itself included, following static and dynamic imports. */
function closure(graph: Map<string, Edge[]>, start: string): Set<string> {
  const seen = new Set<string>()
  const walk = (file: string): void => {
    if (seen.has(file)) return
    seen.add(file)
    for (const e of graph.get(file) ?? []) walk(e.to)
  }
  walk(start)
  return seen
}

/**
 * What loading `start` evaluates, itself included: static value imports only (no `import
 * type`, no `import()`), followed across src/; plus the node: builtins those files import.
 */
function eagerClosure(start: string): { files: Set<string>; builtins: Set<string> } {
  const files = new Set<string>()
  const builtins = new Set<string>()
  const walk = (file: string): void => {
    if (files.has(file)) return
    files.add(file)
    const text = readFileSync(join(SRC, file), 'utf8')
    for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)(?:[^;'"]*?\bfrom\s*)?'([^']+)'/gm)) {
      const spec = m[1]
      if (spec.startsWith('node:')) builtins.add(spec)
      else if (spec.startsWith('.')) {
        const to = normalize(join(dirname(file), spec.replace(/\.js$/, '.ts')))
        if (!to.startsWith('..')) walk(to)
      }
    }
  }
  walk(start)
  return { files, builtins }
}

const role = (file: string): string => (file.includes('/') ? file.split('/')[0] : 'shared')

test('the graph reader sees static, type-only and dynamic imports across folders', (t) => {
  const graph = importGraph()
  const to = (file: string): string[] => (graph.get(file) ?? []).map((e) => e.to)
  t.true(to('cli/main.ts').includes('master/supervisor.ts'), 'static import')
  t.true(to('master/supervisor.ts').includes('types.ts'), 'import type')
  t.true(
    graph.get('master/supervisor.ts')?.some((e) => e.to === 'cli/script-commands.ts' && e.dynamic),
    'dynamic import()',
  )
  t.deepEqual(
    findCycle(
      new Map([
        ['a.ts', ['b.ts']],
        ['b.ts', ['a.ts']],
      ]),
    ),
    ['a.ts', 'b.ts', 'a.ts'],
  )
})

test('no import circles in src/', (t) => {
  const cycle = findCycle(targets(importGraph()))
  t.is(cycle, undefined, `import cycle: ${cycle?.join(' → ')}`)
})

test('src/ is split by role: every module is in master/, worker/, cli/ or shared at the root', (t) => {
  const roles = new Set(sources().map(role))
  t.deepEqual([...roles].sort(), ['cli', 'master', 'shared', 'worker'])
  t.true(sources().filter((f) => role(f) === 'shared').length <= 7, 'the shared root stays a handful of modules')
})

test('the shared modules import no role folder', (t) => {
  for (const [file, edges] of importGraph()) {
    if (role(file) !== 'shared' || file === 'index.ts') continue
    const into = edges.filter((e) => role(e.to) !== 'shared')
    t.deepEqual(into, [], `${file} imports ${into.map((e) => e.to).join(', ')}`)
  }
})

test('the worker runtime loads only itself and src/defaults.ts, and no npm package', (t) => {
  const graph = importGraph()
  for (const entry of ['worker/preload.ts', 'worker/worker.ts']) {
    const loaded = [...closure(graph, entry)]
    const outside = loaded.filter((f) => role(f) !== 'worker' && f !== 'defaults.ts')
    t.deepEqual(outside, [], `${entry} loads ${outside.join(', ')}`)
    for (const file of loaded) {
      const bare = [...readFileSync(join(SRC, file), 'utf8').matchAll(/\bfrom\s*'([^'.][^']*)'/g)]
        .map((m) => m[1])
        .filter((spec) => !spec.startsWith('node:'))
      t.deepEqual(bare, [], `${file} imports the npm package(s) ${bare.join(', ')}`)
    }
  }
})

test('the master reaches the CLI only through the lazy import of one-script mode', (t) => {
  for (const [file, edges] of importGraph()) {
    if (role(file) !== 'master') continue
    const eager = edges.filter((e) => role(e.to) === 'cli' && !e.dynamic)
    t.deepEqual(eager, [], `${file} imports ${eager.map((e) => e.to).join(', ')}`)
  }
})

test('the eager-import reader skips import type and import(), and follows re-exports', (t) => {
  const supervisor = eagerClosure('master/supervisor.ts')
  t.true(supervisor.files.has('master/options.ts'), 'static import')
  t.false(supervisor.files.has('types.ts'), 'import type')
  t.false(supervisor.files.has('cli/script-commands.ts'), 'dynamic import()')
  t.true(eagerClosure('index.ts').files.has('master/supervisor.ts'), 'export ... from')
  t.true(supervisor.builtins.has('node:events'))
})

test('the client commands load neither the master API nor the worker runtime', (t) => {
  // `baton status`, `reload`, `stop`, `logs`, `scale` run src/cli/main.ts: what it loads
  // before a command runs is their start-up cost (bench/cli-startup.mjs measures it).
  const { files, builtins } = eagerClosure('cli/main.ts')
  const heavy = [...files].filter((f) => role(f) === 'master' || role(f) === 'worker')
  t.deepEqual(heavy, [], `src/cli/main.ts loads ${heavy.join(', ')} up front: import() it where it is used`)
  const spawns = [...builtins].filter((b) => b === 'node:child_process' || b === 'node:http')
  t.deepEqual(spawns, [], `src/cli/main.ts loads ${spawns.join(', ')} up front`)
})

test('`baton start` does not load node:net up front: its master never connects as a client', (t) => {
  // The master holds its sockets in the core; node:net (with the stream and socket
  // bindings it loads) is only the control client's, loaded on its first request
  // (src/cli/control-client.ts). bench/footprint.mjs shows what it costs in RSS.
  const start = [
    'cli/main.ts',
    'cli/watch.ts',
    'master/supervisor.ts',
    'master/config-file.ts',
    'master/options.ts',
    'master/pm2-ecosystem.ts',
  ]
  const loading = start.filter((entry) => eagerClosure(entry).builtins.has('node:net'))
  t.deepEqual(loading, [], `${loading.join(', ')} load node:net up front`)
})

test('the master API loads neither the worker runtime nor the health server up front', (t) => {
  // A master without a health endpoint does not load node:http; the worker runtime is
  // loaded only where a one-script worker runs its hooks.
  const { files, builtins } = eagerClosure('master/supervisor.ts')
  const extra = [...files].filter((f) => role(f) === 'worker' || f === 'master/health.ts')
  t.deepEqual(extra, [], `src/master/supervisor.ts loads ${extra.join(', ')} up front`)
  t.false(builtins.has('node:http'), 'src/master/supervisor.ts loads node:http up front')
})

test('the worker runtime does not load node:tls, node:https or node:crypto itself', (t) => {
  // A TLS server exists only once the app loaded node:tls: the runtime looks it up then
  // (src/worker/drain.ts, isTlsServer), so a plain-HTTP worker does not hold TLS in memory.
  for (const entry of ['worker/worker.ts', 'worker/preload.ts']) {
    const { builtins } = eagerClosure(entry)
    const tls = [...builtins].filter((b) => ['node:tls', 'node:https', 'node:crypto', 'node:http2'].includes(b))
    t.deepEqual(tls, [], `${entry} loads ${tls.join(', ')}`)
  }
})
