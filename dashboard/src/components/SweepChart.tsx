import type { SweepPoint } from "../api";
import { score } from "../format";

export const SWEEP_METRICS = [
  { metric: "ndcg", label: "NDCG@10", color: "#4f46e5" },
  { metric: "hit", label: "Hit@10", color: "#059669" },
] as const;

const WIDTH = 640;
const HEIGHT = 300;
const MARGIN = { top: 16, right: 16, bottom: 40, left: 52 };

/** NDCG@10 and Hit@10 against alpha for one split, with 95% intervals as bands and the chosen alpha marked. */
export function SweepChart({ points, split }: { points: SweepPoint[]; split: string }) {
  const shown = points.filter((p) => p.split === split);
  if (shown.length === 0) return <p className="text-sm text-slate-600">No alpha sweep in this run.</p>;
  const top = niceCeiling(Math.max(...shown.map((p) => p.ci_high ?? p.value)));
  const x = (alpha: number) => MARGIN.left + alpha * (WIDTH - MARGIN.left - MARGIN.right);
  const y = (value: number) => HEIGHT - MARGIN.bottom - (value / top) * (HEIGHT - MARGIN.top - MARGIN.bottom);
  const chosen = shown.find((p) => p.chosen)?.alpha;
  const yTicks = Array.from({ length: 5 }, (_, i) => (top * i) / 4);
  const xTicks = Array.from({ length: 11 }, (_, i) => i / 10);
  const series = SWEEP_METRICS.map((m) => ({ ...m, rows: shown.filter((p) => p.metric === m.metric).sort((a, b) => a.alpha - b.alpha) }));

  return (
    <figure className="max-w-3xl">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-labelledby="sweep-title" aria-describedby="sweep-desc" className="h-auto w-full" data-testid="sweep-chart">
        <title id="sweep-title">{`NDCG@10 and Hit@10 against alpha (${split} split)`}</title>
        <desc id="sweep-desc">{series.map((s) => `${s.label}: ${s.rows.map((r) => `alpha ${r.alpha.toFixed(1)} ${score(r.value)}`).join(", ")}`).join(". ")}</desc>
        {yTicks.map((tick) => (
          <g key={tick}>
            <line x1={MARGIN.left} x2={WIDTH - MARGIN.right} y1={y(tick)} y2={y(tick)} stroke="#e2e8f0" />
            <text x={MARGIN.left - 6} y={y(tick)} textAnchor="end" dominantBaseline="middle" fontSize="11" fill="#475569">{tick.toFixed(2)}</text>
          </g>
        ))}
        {xTicks.map((tick) => (
          <text key={tick} x={x(tick)} y={HEIGHT - MARGIN.bottom + 16} textAnchor="middle" fontSize="11" fill="#475569">{tick.toFixed(1)}</text>
        ))}
        <text x={(WIDTH + MARGIN.left) / 2} y={HEIGHT - 6} textAnchor="middle" fontSize="12" fill="#334155">alpha (weight of the behavioural score)</text>
        {chosen !== undefined && (
          <g data-testid="chosen-alpha">
            <line x1={x(chosen)} x2={x(chosen)} y1={MARGIN.top} y2={HEIGHT - MARGIN.bottom} stroke="#f59e0b" strokeDasharray="4 3" strokeWidth="2" />
            <text x={x(chosen) + 4} y={MARGIN.top + 10} fontSize="11" fill="#b45309">chosen {chosen.toFixed(1)}</text>
          </g>
        )}
        {series.map((s) => (
          <g key={s.metric} data-metric={s.metric}>
            <polygon fill={s.color} opacity="0.12" points={[
              ...s.rows.map((r) => `${x(r.alpha)},${y(r.ci_high ?? r.value)}`),
              ...[...s.rows].reverse().map((r) => `${x(r.alpha)},${y(r.ci_low ?? r.value)}`),
            ].join(" ")} />
            <polyline fill="none" stroke={s.color} strokeWidth="2" points={s.rows.map((r) => `${x(r.alpha)},${y(r.value)}`).join(" ")} />
            {s.rows.map((r) => <circle key={r.alpha} cx={x(r.alpha)} cy={y(r.value)} r="3" fill={s.color} />)}
          </g>
        ))}
      </svg>
      <figcaption className="mt-2 flex flex-wrap gap-4 text-sm text-slate-700">
        {SWEEP_METRICS.map((m) => (
          <span key={m.metric} className="flex items-center gap-1">
            <span aria-hidden="true" className="inline-block h-2 w-4 rounded" style={{ background: m.color }} />{m.label}
          </span>
        ))}
        <span className="text-slate-500">Bands: 95% bootstrap intervals over {shown[0].users} users.</span>
      </figcaption>
      <details className="mt-2 text-sm">
        <summary className="cursor-pointer text-indigo-700">Show the numbers</summary>
        <table className="mt-2 w-full max-w-md text-left" data-testid="sweep-table">
          <thead><tr><th scope="col">alpha</th>{series.map((s) => <th key={s.metric} scope="col">{s.label}</th>)}</tr></thead>
          <tbody>
            {series[0].rows.map((row, i) => (
              <tr key={row.alpha} className={row.chosen ? "font-semibold" : undefined}>
                <th scope="row">{row.alpha.toFixed(1)}{row.chosen ? " (chosen)" : ""}</th>
                {series.map((s) => <td key={s.metric}>{score(s.rows[i]?.value ?? null)}</td>)}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

/** A round upper bound for the axis: 0.0623 -> 0.07, 0.31 -> 0.4. */
export function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
}
