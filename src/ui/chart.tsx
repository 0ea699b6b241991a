// Charts drawn on the server as inline SVG: no script, no library, nothing fetched. Only
// presentation attributes and classes are used (a strict CSP forbids inline style attributes).

import type { HistoryPoint } from '../storage/metadata.js';
import { formatBytes } from './model.js';

const W = 1000;
const H = 170;
const PAD = { left: 56, right: 12, top: 12, bottom: 26 };

export interface Series {
  label: string;
  cls: string;
  values: number[];
}

/** Per-minute differences of cumulative counters (a restart that reset nothing keeps them positive). */
export function rates(points: HistoryPoint[], key: keyof HistoryPoint): number[] {
  const out: number[] = [];
  for (let i = 1; i < points.length; i++) out.push(Math.max(0, (points[i]![key] as number) - (points[i - 1]![key] as number)));
  return out;
}

/** The smallest 1, 2 or 5 × 10^k at or above v, so the axis reads in round numbers. */
function niceCeil(v: number): number {
  const base = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * base >= v) ?? 10) * base;
}

function timeLabel(t: number): string {
  return new Date(t).toISOString().slice(11, 16);
}

export function LineChart(props: { times: number[]; series: Series[]; format: (v: number) => string; title: string }) {
  const { times, series, format } = props;
  const max = niceCeil(Math.max(1, ...series.flatMap((s) => s.values)));
  const n = times.length;
  const x = (i: number) => PAD.left + (n <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
  const y = (v: number) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - v / max);
  const ticks = [0, 0.5, 1].map((f) => max * f);
  const labelEvery = Math.max(1, Math.ceil(n / 6));
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.title}>
      <title>{props.title}</title>
      {ticks.map((v) => (
        <g>
          <line class="axis" x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} />
          <text x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
            {format(v)}
          </text>
        </g>
      ))}
      {times.map((t, i) =>
        i % labelEvery === 0 ? (
          <text x={x(i)} y={H - 8} text-anchor="middle">
            {timeLabel(t)}
          </text>
        ) : null,
      )}
      {n === 0 ? (
        <text x={W / 2} y={H / 2} text-anchor="middle">
          collecting: one point a minute
        </text>
      ) : null}
      {series.map((s) =>
        s.cls === 'stale' ? (
          s.values.map((v, i) => (v > 0 ? <circle class="stale" cx={x(i)} cy={y(v)} r="3.5" /> : null))
        ) : (
          <polyline class={s.cls} points={s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')} />
        ),
      )}
    </svg>
  );
}

/** Cache activity over the stored day: lookups per minute, and bytes per minute by where they came from. */
export function HistoryCharts(props: { points: HistoryPoint[] }) {
  const { points } = props;
  const times = points.slice(1).map((p) => p.at);
  return (
    <div>
      <LineChart
        title="Cache lookups per minute"
        times={times}
        format={(v) => (Number.isInteger(v) ? String(v) : v.toFixed(1))}
        series={[
          { label: 'hits', cls: 's1', values: rates(points, 'hits') },
          { label: 'misses', cls: 's2', values: rates(points, 'misses') },
          { label: 'stale', cls: 'stale', values: rates(points, 'staleServed') },
        ]}
      />
      <div class="legend">
        <span><i class="c1"></i>hits / min</span>
        <span><i class="c2"></i>misses / min</span>
        <span><i class="c3"></i>stale serves / min</span>
      </div>
      <LineChart
        title="Bytes served per minute"
        times={times}
        format={formatBytes}
        series={[
          { label: 'from cache', cls: 's1', values: rates(points, 'bytesFromCache') },
          { label: 'from upstream', cls: 's2', values: rates(points, 'bytesFromUpstream') },
        ]}
      />
      <div class="legend">
        <span><i class="c1"></i>bytes from cache / min</span>
        <span><i class="c2"></i>bytes from upstream / min</span>
      </div>
    </div>
  );
}

/** One horizontal bar of segments, e.g. the disk: airlock's data, other data, free. */
export function StackedBar(props: { segments: { value: number; fill: string; label: string }[]; marker?: { value: number; label: string } }) {
  const total = Math.max(1, props.segments.reduce((a, s) => a + s.value, 0));
  let offset = 0;
  return (
    <svg class="bar" viewBox="0 0 1000 14" preserveAspectRatio="none" role="img" aria-label={props.segments.map((s) => s.label).join(', ')}>
      {props.segments.map((s) => {
        const width = (s.value / total) * 1000;
        const rect = <rect x={offset} y="0" width={width} height="14" fill={s.fill}><title>{s.label}</title></rect>;
        offset += width;
        return rect;
      })}
      {props.marker ? (
        <rect x={Math.min(998, (props.marker.value / total) * 1000)} y="0" width="2" height="14" fill="#151b26">
          <title>{props.marker.label}</title>
        </rect>
      ) : null}
    </svg>
  );
}
