import { useEffect, useMemo, useState } from "react";
import { CardSkeletons, LineSkeletons } from "../components/Skeletons";
import { HistoryPanel } from "../components/HistoryPanel";
import { ListControls, Pagination } from "../components/ListControls";
import { ProblemNotice } from "../components/ProblemNotice";
import { RecommendationCard } from "../components/RecommendationCard";
import { matches, paginate, sorted, type SortKey } from "../listing";
import { useResource } from "../resource";
import { useSession } from "../session";

/** A user's published recommendations beside the history they were made from. */
export function UserPage({ userId }: { userId: string }) {
  const { api, refreshes, refresh, settings } = useSession();
  const lists = useResource((signal) => api.recommendations(userId, settings.max_k, signal), [api, userId, settings.max_k, refreshes]);
  const history = useResource((signal) => api.history(userId, signal), [api, userId, refreshes]);
  const [query, setQuery] = useState("");
  const [sort, setSort] = useState<SortKey>("score");
  const [page, setPage] = useState(1);

  const titles = useMemo(
    () => new Map(history.state === "ready" ? history.data.events.map((e) => [e.product_id, e.title ?? e.product_id]) : []),
    [history],
  );
  const cards = lists.state === "ready" ? lists.data.top_recommendations : [];
  const shown = useMemo(() => sorted(cards.filter((card) => matches(card, query)), sort), [cards, query, sort]);
  const current = paginate(shown, page, settings.items_per_page);

  useEffect(() => {
    // The moment the list is first on screen, for the browser test's Performance API reading.
    if (lists.state === "ready") performance.mark("shoprec:list-rendered", { detail: { userId } });
  }, [lists.state, userId]);

  return (
    <div className="grid gap-6 xl:grid-cols-[1fr_18rem]">
      <section aria-labelledby="recs-heading" className="min-w-0 space-y-4">
        <h1 id="recs-heading" className="text-2xl font-semibold">Recommendations for <span className="font-mono">{userId}</span></h1>
        {lists.state === "loading" && <CardSkeletons count={Math.min(settings.items_per_page, 6)} />}
        {lists.state === "failed" && <ProblemNotice problem={lists.problem} onRetry={refresh} />}
        {lists.state === "ready" && (
          <>
            {lists.data.fallback && (
              <p role="status" data-testid="fallback-notice" className="rounded-lg border border-amber-200 bg-amber-50 p-3 text-sm text-amber-900">
                <strong>Unknown user.</strong> {userId} has no personal list in the published run, so this is the
                popular fallback list: the most bought products of the last 30 days, the same for everyone.
              </p>
            )}
            <ListControls query={query} onQuery={(q) => { setQuery(q); setPage(1); }} sort={sort}
              onSort={(s) => { setSort(s); setPage(1); }} />
            <p className="text-sm text-slate-600" aria-live="polite" data-testid="list-summary">
              {shown.length === cards.length ? `${cards.length} recommendations` : `${shown.length} of ${cards.length} recommendations match`}
              {current.pages > 1 && `, page ${current.page} of ${current.pages}`}
            </p>
            {cards.length === 0 ? (
              <p data-testid="empty-list" className="rounded-lg border border-slate-200 bg-white p-6 text-center text-slate-600">No recommendations were published for this user.</p>
            ) : shown.length === 0 ? (
              <p data-testid="empty-list" className="rounded-lg border border-slate-200 bg-white p-6 text-center text-slate-600">Nothing in this list matches “{query}”.</p>
            ) : (
              <div className="grid grid-cols-1 items-start gap-4 md:grid-cols-2 lg:grid-cols-3" data-testid="card-grid">
                {current.items.map((card) => (
                  <RecommendationCard key={card.product_id} card={card} alpha={lists.data.model_info.hybrid_alpha} titles={titles} />
                ))}
              </div>
            )}
            <Pagination page={current.page} pages={current.pages} onPage={setPage} />
          </>
        )}
      </section>
      <aside aria-labelledby="history-heading" className="rounded-xl border border-slate-200 bg-white p-4 xl:self-start">
        <h2 id="history-heading" className="mb-3 font-semibold">History</h2>
        {history.state === "loading" && <LineSkeletons lines={5} label="Loading history…" />}
        {history.state === "failed" && (lists.state === "failed" && lists.problem.kind === history.problem.kind
          ? <p className="text-sm text-slate-500">Not available: see the message beside.</p>
          : <ProblemNotice problem={history.problem} />)}
        {history.state === "ready" && <HistoryPanel history={history.data} />}
      </aside>
    </div>
  );
}
