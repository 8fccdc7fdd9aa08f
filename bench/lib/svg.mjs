/**
 * A line chart as plain SVG text (no dependencies): axes with ticks and labels, one
 * polyline per series, a legend, vertical markers and shaded spans (e.g. a reload).
 */

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
const r1 = (x) => Math.round(x * 10) / 10

/** A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`. */
function niceStep(range, target = 6) {
  if (!(range > 0)) return 1
  const raw = range / target
  const mag = 10 ** Math.floor(Math.log10(raw))
  const norm = raw / mag
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag
}

const tickLabel = (v, step) =>
  step >= 1 ? String(Math.round(v)) : v.toFixed(Math.min(3, Math.ceil(-Math.log10(step))))

/** Ten distinguishable colours (Tableau 10). */
export const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#76b7b2',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
]

/**
 * options: { title, subtitle? (a string or lines), xLabel, yLabel, series: [{ label, color, dash?, width?,
 * points: [[x, y], ...] }], markers?: [{ x, label, color? }], spans?: [{ from, to, label,
 * color? }], xMin?, xMax?, yMax?, width = 960, height = 500, notes?: [string] }.
 * Returns the SVG document as a string.
 */
export function lineChartSvg({
  title,
  subtitle = '',
  xLabel,
  yLabel,
  series,
  markers = [],
  spans = [],
  xMin,
  xMax,
  yMax,
  width = 960,
  height = 500,
  notes = [],
}) {
  const legendW = 250
  const sub = (Array.isArray(subtitle) ? subtitle : [subtitle]).filter(Boolean)
  const m = { left: 70, right: legendW + 20, top: 46 + sub.length * 17, bottom: 56 + notes.length * 16 }
  const pw = width - m.left - m.right
  const ph = height - m.top - m.bottom
  const xs = series
    .flatMap((s) => s.points.map((p) => p[0]))
    .concat(
      markers.map((k) => k.x),
      spans.flatMap((s) => [s.from, s.to]),
    )
  const ys = series.flatMap((s) => s.points.map((p) => p[1]))
  const x0 = xMin ?? Math.min(0, ...xs)
  const x1 = xMax ?? Math.max(x0 + 1, ...xs)
  const yStep = niceStep(yMax ?? Math.max(1, ...ys), 6)
  const y1 = yMax ?? Math.ceil(Math.max(1, ...ys) / yStep) * yStep
  const X = (x) => m.left + ((x - x0) / (x1 - x0)) * pw
  const Y = (y) => m.top + ph - (y / y1) * ph

  const out = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  )
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(`<text x="${m.left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`)
  sub.forEach((line, i) => out.push(`<text x="${m.left}" y="${44 + i * 17}" fill="#555">${esc(line)}</text>`))

  // Spans (shaded) and the plot frame.
  for (const s of spans) {
    const a = X(Math.max(x0, s.from))
    const b = X(Math.min(x1, s.to))
    out.push(
      `<rect x="${r1(a)}" y="${m.top}" width="${r1(Math.max(1, b - a))}" height="${ph}" fill="${s.color ?? '#999'}" fill-opacity="0.12"/>`,
    )
  }
  // Grid and ticks.
  for (let v = 0; v <= y1 + 1e-9; v += yStep) {
    const y = r1(Y(v))
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e5e5e5"/>`)
    out.push(`<text x="${m.left - 8}" y="${y + 4}" text-anchor="end" fill="#333">${tickLabel(v, yStep)}</text>`)
  }
  const xStep = niceStep(x1 - x0, 10)
  for (let v = Math.ceil(x0 / xStep) * xStep; v <= x1 + 1e-9; v += xStep) {
    const x = r1(X(v))
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#f0f0f0"/>`)
    out.push(`<line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 5}" stroke="#333"/>`)
    out.push(`<text x="${x}" y="${m.top + ph + 18}" text-anchor="middle" fill="#333">${tickLabel(v, xStep)}</text>`)
  }
  out.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="#333"/>`)
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="#333"/>`)
  out.push(`<text x="${m.left + pw / 2}" y="${m.top + ph + 38}" text-anchor="middle">${esc(xLabel)}</text>`)
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`)

  // Series.
  for (const s of series) {
    if (!s.points.length) continue
    const pts = s.points.map(([x, y]) => `${r1(X(x))},${r1(Y(y))}`).join(' ')
    out.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.6}"${s.dash ? ` stroke-dasharray="${s.dash === true ? '5 3' : s.dash}"` : ''} stroke-linejoin="round" points="${pts}"/>`,
    )
  }
  // Markers (on top of the lines), labels staggered so neighbours do not overlap.
  markers.forEach((k, i) => {
    const x = r1(X(k.x))
    out.push(
      `<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="${k.color ?? '#333'}" stroke-width="1.2" stroke-dasharray="2 3"/>`,
    )
    out.push(
      `<text x="${x + 4}" y="${m.top + 14 + (i % 2) * 14}" fill="${k.color ?? '#333'}" font-size="11">${esc(k.label)}</text>`,
    )
  })

  // Legend.
  const lx = m.left + pw + 20
  let ly = m.top + 4
  for (const s of series) {
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${s.color}" stroke-width="${Math.max(2, s.width ?? 1.6)}"${s.dash ? ` stroke-dasharray="${s.dash === true ? '5 3' : s.dash}"` : ''}/>`,
    )
    out.push(`<text x="${lx + 30}" y="${ly + 4}">${esc(s.label)}</text>`)
    ly += 18
  }
  for (const s of spans) {
    out.push(`<rect x="${lx}" y="${ly - 6}" width="24" height="12" fill="${s.color ?? '#999'}" fill-opacity="0.25"/>`)
    out.push(`<text x="${lx + 30}" y="${ly + 4}">${esc(s.label)}</text>`)
    ly += 18
  }
  notes.forEach((n, i) =>
    out.push(
      `<text x="${m.left}" y="${height - 10 - (notes.length - 1 - i) * 16}" fill="#555" font-size="11">${esc(n)}</text>`,
    ),
  )
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
