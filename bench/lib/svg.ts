/**
 * A small SVG bar-chart writer (no dependency): grouped bars, optional log scale, one panel per chart,
 * panels laid out in a grid.
 */

export interface Series { name: string, color: string }
export interface Group { label: string, values: Array<number | null> }
export interface Panel { title: string, unit: string, log?: boolean, series: Series[], groups: Group[], note?: string }

const W = 520
const H = 300
const M = { top: 44, right: 16, bottom: 64, left: 64 }
export const FONT = 'font-family="Helvetica, Arial, sans-serif"'

export function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function fmt (v: number): string {
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M'
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k'
  if (v >= 100) return v.toFixed(0)
  if (v >= 10) return v.toFixed(1)
  if (v >= 1) return v.toFixed(2)
  return v.toPrecision(2)
}

function niceMax (v: number): number {
  if (v <= 0) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function panel (p: Panel, x0: number, y0: number): string {
  const out: string[] = []
  const iw = W - M.left - M.right
  const ih = H - M.top - M.bottom
  const values = p.groups.flatMap((g) => g.values).filter((v): v is number => v !== null && Number.isFinite(v) && v > 0)
  const top = values.length === 0 ? 1 : Math.max(...values)
  const bottom = values.length === 0 ? 1 : Math.min(...values)
  let scale: (v: number) => number
  const ticks: number[] = []
  if (p.log === true) {
    const lo = 10 ** Math.floor(Math.log10(bottom))
    const hi = 10 ** Math.ceil(Math.log10(top * 1.05))
    scale = (v) => ih - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * ih
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t)
  } else {
    const hi = niceMax(top * 1.05)
    scale = (v) => ih - v / hi * ih
    for (let i = 0; i <= 5; i++) ticks.push(hi * i / 5)
  }
  out.push(`<g transform="translate(${x0},${y0})">`)
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff" stroke="#dddddd"/>`)
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold" ${FONT}>${esc(p.title)}</text>`)
  out.push(`<text x="14" y="${M.top + ih / 2}" text-anchor="middle" font-size="11" ${FONT} transform="rotate(-90 14 ${M.top + ih / 2})">${esc(p.unit)}${p.log === true ? ' (log scale)' : ''}</text>`)
  out.push(`<g transform="translate(${M.left},${M.top})">`)
  for (const t of ticks) {
    const y = scale(t)
    out.push(`<line x1="0" x2="${iw}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#eeeeee"/>`)
    out.push(`<text x="-6" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="10" ${FONT}>${fmt(t)}</text>`)
  }
  out.push(`<line x1="0" x2="${iw}" y1="${ih}" y2="${ih}" stroke="#888888"/>`)
  const gw = iw / Math.max(1, p.groups.length)
  const bw = Math.min(28, (gw * 0.8) / Math.max(1, p.series.length))
  p.groups.forEach((g, gi) => {
    const gx = gi * gw + (gw - bw * p.series.length) / 2
    g.values.forEach((v, si) => {
      const x = gx + si * bw
      if (v === null || !Number.isFinite(v)) {
        out.push(`<text x="${(x + bw / 2).toFixed(1)}" y="${ih - 4}" text-anchor="middle" font-size="9" fill="#999999" ${FONT}>n/a</text>`)
        return
      }
      const y = scale(Math.max(v, 1e-9))
      out.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${Math.max(0, ih - y).toFixed(1)}" fill="${p.series[si].color}"><title>${esc(g.label + ' ' + p.series[si].name + ': ' + fmt(v) + ' ' + p.unit)}</title></rect>`)
      if (p.series.length <= 2 || bw >= 18) out.push(`<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(y - 3).toFixed(1)}" text-anchor="middle" font-size="9" ${FONT}>${fmt(v)}</text>`)
    })
    const lines = g.label.split('\n')
    lines.forEach((line, li) => out.push(`<text x="${(gi * gw + gw / 2).toFixed(1)}" y="${ih + 16 + li * 12}" text-anchor="middle" font-size="10" ${FONT}>${esc(line)}</text>`))
  })
  out.push('</g>')
  if (p.series.length > 1) {
    let lx = M.left
    for (const s of p.series) {
      out.push(`<rect x="${lx}" y="28" width="10" height="10" fill="${s.color}"/><text x="${lx + 14}" y="37" font-size="10" ${FONT}>${esc(s.name)}</text>`)
      lx += 20 + s.name.length * 6
    }
  }
  if (p.note !== undefined) out.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="9" fill="#666666" ${FONT}>${esc(p.note)}</text>`)
  out.push('</g>')
  return out.join('\n')
}

/** Panels in a grid of `columns`, with a title line on top. */
export function chart (title: string, panels: Panel[], columns = 2): string {
  return grid(title, panels.length, columns, W, H, (i, x, y) => panel(panels[i], x, y))
}

/** An SVG of `count` panels of `w`×`h` in a grid of `columns` under a title; `draw` renders panel `i` at (x, y). */
export function grid (title: string, count: number, columns: number, w: number, h: number, draw: (i: number, x: number, y: number) => string): string {
  const rows = Math.ceil(count / columns)
  const width = columns * w + (columns + 1) * 10
  const height = rows * h + (rows + 1) * 10 + 30
  const parts = Array.from({ length: count }, (_, i) => draw(i, 10 + (i % columns) * (w + 10), 40 + Math.floor(i / columns) * (h + 10)))
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">\n` +
    '<rect width="100%" height="100%" fill="#fafafa"/>\n' +
    `<text x="${width / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold" ${FONT}>${esc(title)}</text>\n` +
    parts.join('\n') + '\n</svg>\n'
}
