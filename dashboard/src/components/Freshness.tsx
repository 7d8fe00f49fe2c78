import { timeAgo, shortRun } from "../format";
import { useResource } from "../resource";
import { useSession } from "../session";

/** How old the published lists are, and which run made them. */
export function Freshness() {
  const { api, refreshes } = useSession();
  const run = useResource((signal) => api.latestRun(signal), [api, refreshes]);
  if (run.state !== "ready" || !run.data.finished_at) return null;
  const { finished_at, run_id } = run.data;
  return (
    <p className="text-xs text-slate-500" data-testid="freshness">
      Computed <time dateTime={finished_at} title={new Date(finished_at).toLocaleString()}>{timeAgo(finished_at)}</time>
      {", run "}<span title={run_id} className="font-mono">{shortRun(run_id)}</span>
    </p>
  );
}
