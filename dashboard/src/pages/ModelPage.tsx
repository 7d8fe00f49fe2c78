import { useState } from "react";
import type { EvalMetric, ModelInfo } from "../api";
import { LineSkeletons } from "../components/Skeletons";
import { ProblemNotice } from "../components/ProblemNotice";
import { SweepChart } from "../components/SweepChart";
import { score } from "../format";
import { useResource } from "../resource";
import { useSession } from "../session";

const METRICS = [
  { metric: "hit", label: "Hit@10" },
  { metric: "ndcg", label: "NDCG@10" },
  { metric: "recall", label: "Recall@10" },
  { metric: "mrr", label: "MRR@10" },
  { metric: "coverage", label: "Coverage@10" },
];

/** The published model: the chosen alpha, its test metrics with intervals, and the alpha sweep. */
export function ModelPage() {
  const { api, refreshes, refresh } = useSession();
  const report = useResource((signal) => api.model(signal), [api, refreshes]);
  const [split, setSplit] = useState("test");

  if (report.state === "loading") return <LineSkeletons lines={8} label="Loading the model report…" />;
  if (report.state === "failed") return <ProblemNotice problem={report.problem} onRetry={refresh} />;
  const { model_info: info, eval_metrics: metrics, alpha_sweep: sweep } = report.data;
  return (
    <div className="space-y-6">
      <h1 className="text-2xl font-semibold">The published model</h1>
      <Summary info={info} />
      <section aria-labelledby="sweep-heading" className="rounded-xl border border-slate-200 bg-white p-4">
        <div className="flex flex-wrap items-end justify-between gap-3">
          <h2 id="sweep-heading" className="font-semibold">Alpha sweep</h2>
          <label className="text-sm font-medium text-slate-700">
            Split{" "}
            <select value={split} onChange={(e) => setSplit(e.target.value)} className="input ml-1">
              <option value="test">test (held out, reported)</option>
              <option value="validation">validation (alpha chosen here)</option>
            </select>
          </label>
        </div>
        <SweepChart points={sweep} split={split} />
      </section>
      <ModelTable metrics={metrics} protocol={info.protocol ?? "temporal"} alpha={info.hybrid_alpha ?? null} />
    </div>
  );
}

function Summary({ info }: { info: ModelInfo }) {
  const source = info.alpha_source === "auto" ? "chosen on validation NDCG@10" : "set in config.json";
  const items: [string, string][] = [
    ["Behavioural model", behaviorName(info.behavior_model)],
    ["alpha", `${info.hybrid_alpha?.toFixed(2) ?? "–"} (${source})`],
    ["Hit@10 (test)", withInterval(info.hit_at_10, info.hit_at_10_ci_low, info.hit_at_10_ci_high)],
    ["NDCG@10 (test)", withInterval(info.ndcg_at_10, info.ndcg_at_10_ci_low, info.ndcg_at_10_ci_high)],
    ["Coverage@10", score(info.coverage_at_10 ?? null)],
    ["Users evaluated", info.users_evaluated?.toLocaleString("en") ?? "–"],
    ["Protocol", info.protocol === "temporal" ? "global temporal split" : info.protocol ?? "–"],
  ];
  return (
    <div className="space-y-2">
      <dl className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3" data-testid="model-summary">
        {items.map(([label, value]) => (
          <div key={label} className="rounded-xl border border-slate-200 bg-white p-4">
            <dt className="text-sm text-slate-500">{label}</dt>
            <dd className="mt-1 text-lg font-semibold">{value}</dd>
          </div>
        ))}
      </dl>
      {info.chosen_on && (
        <p className="text-sm text-slate-600" data-testid="model-chosen-on">
          Behavioural model, recency and alpha {info.chosen_on}.
        </p>
      )}
    </div>
  );
}

/** "rp3beta:0.3" as a reader knows it. */
export function behaviorName(label: string | null | undefined): string {
  if (!label) return "–";
  const [kind, strength] = label.split(":");
  if (kind === "ease") return `EASE (lambda ${strength})`;
  if (kind === "rp3beta") return `RP3beta (beta ${strength})`;
  if (kind === "cosine") return "item-item cosine";
  return label;
}

function ModelTable({ metrics, protocol, alpha }: { metrics: EvalMetric[]; protocol: string; alpha: number | null }) {
  const test = metrics.filter((m) => m.protocol === protocol && m.split === "test");
  const models = [
    { name: "Popularity", pick: (m: EvalMetric) => m.model === "popularity" },
    { name: "EASE", pick: (m: EvalMetric) => m.model === "ease" },
    { name: "Content only (alpha 0)", pick: (m: EvalMetric) => m.model === "hybrid" && m.alpha === 0 },
    { name: "Behaviour only (alpha 1)", pick: (m: EvalMetric) => m.model === "hybrid" && m.alpha === 1 },
    { name: `Hybrid, published (alpha ${alpha?.toFixed(1) ?? "–"})`, pick: (m: EvalMetric) => m.model === "hybrid" && m.alpha === alpha },
  ];
  return (
    <section aria-labelledby="table-heading" className="overflow-x-auto rounded-xl border border-slate-200 bg-white p-4">
      <h2 id="table-heading" className="font-semibold">Test metrics at 10, with 95% intervals</h2>
      <table className="mt-3 w-full min-w-[40rem] text-left text-sm" data-testid="metrics-table">
        <thead>
          <tr className="border-b border-slate-200">
            <th scope="col" className="py-2">Model</th>
            {METRICS.map((m) => <th key={m.metric} scope="col" className="py-2">{m.label}</th>)}
          </tr>
        </thead>
        <tbody>
          {models.map((model) => (
            <tr key={model.name} className="border-b border-slate-100">
              <th scope="row" className="py-2 font-medium">{model.name}</th>
              {METRICS.map(({ metric }) => {
                const row = test.find((m) => model.pick(m) && m.metric === metric);
                return <td key={metric} className="py-2">{row ? withInterval(row.value, row.ci_low, row.ci_high) : "–"}</td>;
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function withInterval(value?: number | null, low?: number | null, high?: number | null): string {
  if (value === undefined || value === null) return "–";
  if (low === undefined || low === null || high === undefined || high === null) return score(value);
  return `${score(value)} [${score(low)}, ${score(high)}]`;
}
