import { useState } from "react";
import type { UserHistory } from "../api";
import { timeAgo } from "../format";
import { href } from "../router";

const EVENT_STYLES: Record<string, string> = {
  purchase: "bg-emerald-100 text-emerald-900",
  cart: "bg-sky-100 text-sky-900",
  rating: "bg-amber-100 text-amber-900",
  view: "bg-slate-100 text-slate-700",
};

/** The user's recent events, newest first: what the recommendations were made from. */
const SHOWN_AT_FIRST = 12;

export function HistoryPanel({ history }: { history: UserHistory }) {
  const [showAll, setShowAll] = useState(false);
  if (!history.known) return <p className="text-sm text-slate-600">No history for this user in the published run.</p>;
  const events = showAll ? history.events : history.events.slice(0, SHOWN_AT_FIRST);
  return (
    <>
    <ol className="space-y-2" data-testid="history">
      {events.map((event, i) => (
        <li key={`${event.product_id}-${event.timestamp}-${i}`} className="text-sm">
          <span className={`badge mr-2 ${EVENT_STYLES[event.event_type] ?? EVENT_STYLES.view}`}>
            {event.event_type}{event.event_type === "rating" ? ` ${event.value}` : ""}
          </span>
          <a href={href.product(event.product_id)} className="hover:underline">{event.title ?? event.product_id}</a>
          <span className="block text-xs text-slate-500"><time dateTime={event.timestamp}>{timeAgo(event.timestamp)}</time></span>
        </li>
      ))}
    </ol>
    {history.events.length > events.length && (
      <button type="button" className="btn-link mt-3" onClick={() => setShowAll(true)}>
        Show all {history.events.length} events
      </button>
    )}
    </>
  );
}
