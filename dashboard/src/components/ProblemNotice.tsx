import type { Problem } from "../api";

const TITLES: Record<Problem["kind"], string> = {
  unreachable: "The API is down",
  unauthorized: "Wrong API key",
  "not-found": "Not found",
  "not-published": "Nothing published yet",
  invalid: "Request rejected",
  server: "The API failed",
};

/** A failed request, with what to do about it. */
export function ProblemNotice({ problem, onRetry }: { problem: Problem; onRetry?: () => void }) {
  return (
    <div role="alert" data-problem={problem.kind} className="rounded-xl border border-rose-200 bg-rose-50 p-5 text-rose-900">
      <h2 className="font-semibold">{TITLES[problem.kind]}</h2>
      <p className="mt-1 text-sm">{problem.message}</p>
      {onRetry && (
        <button type="button" onClick={onRetry} className="btn-secondary mt-3">
          Try again
        </button>
      )}
    </div>
  );
}
