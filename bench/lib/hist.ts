import * as hdr from 'hdr-histogram-js'

export type Histogram = hdr.Histogram

/** A latency histogram in microseconds (1 µs … 1 h, 3 significant digits). */
export function newHistogram (): Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 })
}

export function encode (h: Histogram): string {
  return h.totalCount === 0 ? '' : hdr.encodeIntoCompressedBase64(h)
}

/** Adds encoded histograms together. */
export function merge (encoded: string[]): Histogram {
  const total = newHistogram()
  for (const e of encoded) {
    if (e === '') continue
    const h = hdr.decodeFromCompressedBase64(e)
    total.add(h)
    h.destroy()
  }
  return total
}

export interface Percentiles { count: number, p50: number, p90: number, p99: number, p999: number, max: number, mean: number }

/** Percentiles in milliseconds (from a µs histogram). */
export function percentilesMs (h: Histogram): Percentiles {
  const ms = (us: number): number => Math.round(us) / 1000
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 }
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: Math.round(h.mean) / 1000
  }
}
