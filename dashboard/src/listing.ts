// What the list controls do to a user's recommendations: search, sort and paginate, all in the browser
// (a list is at most max_k cards).
import type { Recommendation } from "./api";

export type SortKey = "score" | "title" | "price-asc" | "price-desc";

export const SORTS: { key: SortKey; label: string }[] = [
  { key: "score", label: "Score (best first)" },
  { key: "title", label: "Title (A–Z)" },
  { key: "price-asc", label: "Price (low to high)" },
  { key: "price-desc", label: "Price (high to low)" },
];

export function matches(card: Recommendation, query: string): boolean {
  const needle = query.trim().toLocaleLowerCase();
  if (!needle) return true;
  return [card.title, card.category, card.blurb ?? "", card.description, card.product_id]
    .some((text) => text.toLocaleLowerCase().includes(needle));
}

/** Sorted copy; ties and missing prices keep the published rank order (missing prices last). */
export function sorted(cards: Recommendation[], key: SortKey): Recommendation[] {
  const byRank = (a: Recommendation, b: Recommendation) => a.rank - b.rank;
  const price = (card: Recommendation, missing: number) => card.price ?? missing;
  const compare: Record<SortKey, (a: Recommendation, b: Recommendation) => number> = {
    score: byRank,
    title: (a, b) => a.title.localeCompare(b.title) || byRank(a, b),
    "price-asc": (a, b) => price(a, Infinity) - price(b, Infinity) || byRank(a, b),
    "price-desc": (a, b) => price(b, -Infinity) - price(a, -Infinity) || byRank(a, b),
  };
  return [...cards].sort(compare[key]);
}

export interface Page<T> {
  items: T[];
  page: number;
  pages: number;
}

/** Page `page` (1-based, clamped into range) of `items`, `perPage` at a time. */
export function paginate<T>(items: T[], page: number, perPage: number): Page<T> {
  const pages = Math.max(1, Math.ceil(items.length / perPage));
  const current = Math.min(Math.max(1, page), pages);
  return { items: items.slice((current - 1) * perPage, current * perPage), page: current, pages };
}
