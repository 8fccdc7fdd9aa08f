/**
 * The house rule "no import circles in src/", checked on the sources: every relative import
 * of a module in src/ (static, `import type` and dynamic `import()` alike) forms a graph
 * that must have no cycle. A cycle fails with its path, e.g. `a.ts → b.ts → a.ts`.
 */
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

/** The src/ modules each module imports (by file name). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>()
  for (const file of readdirSync(SRC).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(`${SRC}${file}`, 'utf8')
    const deps = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'\.\/([\w.-]+)\.js'/g)].map(
      (m) => `${m[1]}.ts`,
    )
    graph.set(file, [...new Set(deps)])
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

test('the graph reader sees static, type-only and dynamic imports', (t) => {
  const graph = importGraph()
  t.true(graph.get('cli.ts')?.includes('supervisor.ts'), 'static import')
  t.true(graph.get('supervisor.ts')?.includes('types.ts'), 'import type')
  t.true(graph.get('supervisor.ts')?.includes('script-commands.ts'), 'dynamic import()')
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
  const cycle = findCycle(importGraph())
  t.is(cycle, undefined, `import cycle: ${cycle?.join(' → ')}`)
})
