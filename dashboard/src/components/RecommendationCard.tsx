import { useId, useState } from "react";
import type { Recommendation } from "../api";
import { price, score } from "../format";
import { href } from "../router";
import { scoreParts } from "../scoring";
import { CopyIdButton } from "./CopyIdButton";
import { ScoreBreakdown } from "./ScoreBreakdown";

interface Props {
  card: Recommendation;
  alpha: number | null;
  /** Titles of the user's history items, to name the evidence. */
  titles: ReadonlyMap<string, string>;
}

/** One recommendation: what it is, how it scored, and (on request) why. All warehouse text renders as text. */
export function RecommendationCard({ card, alpha, titles }: Props) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const parts = scoreParts(card, alpha);
  return (
    <article aria-labelledby={`${id}-title`} data-testid="recommendation-card" data-product-id={card.product_id}
      className="flex flex-col rounded-xl border border-slate-200 bg-white p-4 shadow-sm">
      <div className="flex items-start justify-between gap-2">
        <span className="text-sm font-medium text-slate-500">#{card.rank}</span>
        {card.score === null ? (
          <span className="badge bg-amber-100 text-amber-900" title="From the popular fallback list">Popular</span>
        ) : (
          <span className="badge bg-indigo-100 text-indigo-900" title="Hybrid score, 0 to 1" data-testid="score">
            Score {score(card.score)}
          </span>
        )}
      </div>
      <h3 id={`${id}-title`} className="mt-1 text-lg font-semibold leading-snug">
        <a href={href.product(card.product_id)} className="hover:underline focus-visible:underline">{card.title}</a>
      </h3>
      <p className="text-sm text-slate-600">
        <span data-testid="category">{card.category}</span> · <span data-testid="price">{price(card.price)}</span>
      </p>
      <p className="mt-2 line-clamp-3 text-sm text-slate-700" data-testid="blurb">{card.blurb ?? card.description}</p>
      {parts && <ScoreBreakdown parts={parts} />}
      <div className="mt-auto flex flex-wrap items-center gap-2 pt-3">
        <button type="button" className="btn-link" aria-expanded={open} aria-controls={`${id}-why`} onClick={() => setOpen(!open)}>
          {open ? "Hide explanation" : "Why this recommendation?"}
        </button>
        <span className="flex-1" />
        <CopyIdButton productId={card.product_id} />
      </div>
      {open && (
        <div id={`${id}-why`} className="mt-3 border-t border-slate-100 pt-3 text-sm" data-testid="explanation">
          <p>{card.explanation ?? "No explanation was written for this card."}</p>
          {card.reasoning_factors.length > 0 && (
            <>
              <h4 className="mt-2 font-medium text-slate-700">Reasoning factors</h4>
              <ul className="mt-1 list-disc space-y-0.5 pl-5 text-slate-700">
                {card.reasoning_factors.map((factor) => <li key={factor}>{factor}</li>)}
              </ul>
            </>
          )}
          {card.evidence_product_ids.length > 0 && (
            <>
              <h4 className="mt-2 font-medium text-slate-700">Because of your history</h4>
              <ul className="mt-1 space-y-0.5" data-testid="evidence">
                {card.evidence_product_ids.map((productId) => (
                  <li key={productId}>
                    <a href={href.product(productId)} className="text-indigo-700 hover:underline">{titles.get(productId) ?? productId}</a>
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
      )}
    </article>
  );
}
