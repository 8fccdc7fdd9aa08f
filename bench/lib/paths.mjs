/**
 * Where things are: the repository root, the baton CLI, the built package entry, and the
 * results folder every benchmark writes its JSON into.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Repository root (this file is bench/lib/paths.mjs). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The baton CLI. */
export const BATON_CLI = path.join(ROOT, 'bin', 'baton.js')
/** file:// URL of the built package entry, importable from any directory. */
export const BATON_URL = pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href
export const RESULTS_DIR = path.join(ROOT, 'bench', 'results')

/** Write `obj` as JSON into bench/results/<name>. */
export function writeResult(name, obj) {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, name)
  writeFileSync(file, `${JSON.stringify(obj, null, 2)}\n`)
  return file
}
