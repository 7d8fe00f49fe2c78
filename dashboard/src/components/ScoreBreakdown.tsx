import { score } from "../format";
import type { ScoreParts } from "../scoring";

/** The score as its two alpha-weighted parts: a bar and the arithmetic behind it. */
export function ScoreBreakdown({ parts }: { parts: ScoreParts }) {
  const width = (part: number) => `${Math.max(0, Math.min(1, part)) * 100}%`;
  const alpha = parts.alpha.toFixed(2);
  const rest = (1 - parts.alpha).toFixed(2);
  return (
    <div className="mt-3" data-testid="score-breakdown">
      <div className="flex h-2 overflow-hidden rounded-full bg-slate-100" aria-hidden="true">
        <div className="bg-indigo-500" style={{ width: width(parts.behaviorPart) }} />
        <div className="bg-emerald-500" style={{ width: width(parts.contentPart) }} />
      </div>
      <p className="mt-1 text-xs text-slate-600">
        <span className="text-indigo-700">behaviour {alpha} × {score(parts.behavior)} = {score(parts.behaviorPart)}</span>
        {" + "}
        <span className="text-emerald-700">content {rest} × {score(parts.content)} = {score(parts.contentPart)}</span>
      </p>
    </div>
  );
}
