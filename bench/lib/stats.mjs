/**
 * Statistics of repeated measurements and how the benchmarks print numbers.
 */

/** Median of the finite numbers in `xs`; null when there are none. */
export function median(xs) {
  const a = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((x, y) => x - y)
  if (a.length === 0) return null
  const m = a.length >> 1
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2
}
/** min, median, max and count of the finite numbers in `xs`. */
export function stats(xs) {
  const a = xs.filter((x) => typeof x === 'number' && Number.isFinite(x))
  if (a.length === 0) return { min: null, median: null, max: null, n: 0 }
  return { min: Math.min(...a), median: median(a), max: Math.max(...a), n: a.length }
}
/** Format a number with thousands separators and `digits` decimals. */
export function fmt(x, digits = 0) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–'
  return Number(x).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}
/** "min / median / max". */
export function mmm(s, digits = 0) {
  return `${fmt(s.min, digits)} / ${fmt(s.median, digits)} / ${fmt(s.max, digits)}`
}
