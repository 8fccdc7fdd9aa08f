/**
 * The contract with TypeScript is declared once, in Rust (crates/baton-contract), and the
 * types users import are napi's generated native/index.d.cts. This test fails when that
 * file changes unseen: compare it with the committed snapshot, and when the change is
 * meant, refresh the snapshot (CONTRIBUTING.md, "The contract"):
 *
 *     npm run build:native && UPDATE_CONTRACT_SNAPSHOT=1 npx ava __test__/contract.spec.ts
 */
import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const GENERATED = fileURLToPath(new URL('../native/index.d.cts', import.meta.url))
const SNAPSHOT = fileURLToPath(new URL('./snapshots/native.d.cts', import.meta.url))

/** The first line that differs, with its number, for the failure message. */
function firstDifference(a: string, b: string): string {
  const left = a.split('\n')
  const right = b.split('\n')
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    if (left[i] !== right[i]) {
      return `line ${i + 1}:\n  snapshot:  ${right[i] ?? '(end of file)'}\n  generated: ${left[i] ?? '(end of file)'}`
    }
  }
  return 'no line differs'
}

test('the generated TypeScript declarations (native/index.d.cts) match the committed snapshot', (t) => {
  const generated = readFileSync(GENERATED, 'utf8')
  if (process.env.UPDATE_CONTRACT_SNAPSHOT === '1') {
    writeFileSync(SNAPSHOT, generated)
    t.log(`wrote ${SNAPSHOT}`)
  }
  const snapshot = readFileSync(SNAPSHOT, 'utf8')
  t.true(
    generated === snapshot,
    `native/index.d.cts changed: the types users import are not the ones reviewed. If the change is meant, ` +
      `refresh the snapshot with UPDATE_CONTRACT_SNAPSHOT=1 npx ava __test__/contract.spec.ts and commit it ` +
      `(CONTRIBUTING.md). First difference, ${firstDifference(generated, snapshot)}`,
  )
})
