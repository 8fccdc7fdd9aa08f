/**
 * Command-line arguments of the benchmark scripts.
 */

/** Parse `--flag value` / `--flag` style arguments into an object. */
export function args(argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const key = a.slice(2)
    const next = argv[i + 1]
    if (next !== undefined && !next.startsWith('--')) {
      out[key] = next
      i += 1
    } else out[key] = true
  }
  return out
}

/** A comma-separated option (`--counts 2,4`) as a list of strings; `def` when absent. */
export function listOption(value, def) {
  return String(value ?? def)
    .split(',')
    .filter(Boolean)
}
