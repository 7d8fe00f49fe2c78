import { SORTS, type SortKey } from "../listing";

interface Props {
  query: string;
  onQuery: (query: string) => void;
  sort: SortKey;
  onSort: (sort: SortKey) => void;
}

/** Search within the list and choose its order. */
export function ListControls({ query, onQuery, sort, onSort }: Props) {
  return (
    <div className="flex flex-col gap-3 sm:flex-row sm:items-end">
      <label className="flex flex-1 flex-col text-sm font-medium text-slate-700">
        Search this list
        <input type="search" value={query} onChange={(e) => onQuery(e.target.value)} placeholder="title, category, words…" className="input mt-1" />
      </label>
      <label className="flex flex-col text-sm font-medium text-slate-700">
        Sort by
        <select value={sort} onChange={(e) => onSort(e.target.value as SortKey)} className="input mt-1">
          {SORTS.map((option) => <option key={option.key} value={option.key}>{option.label}</option>)}
        </select>
      </label>
    </div>
  );
}

/** Previous / page numbers / next, for `pages` pages. */
export function Pagination({ page, pages, onPage }: { page: number; pages: number; onPage: (page: number) => void }) {
  if (pages <= 1) return null;
  return (
    <nav aria-label="Pages" className="flex flex-wrap items-center justify-center gap-1">
      <button type="button" className="btn-secondary" disabled={page === 1} onClick={() => onPage(page - 1)}>Previous</button>
      {Array.from({ length: pages }, (_, i) => i + 1).map((n) => (
        <button key={n} type="button" aria-current={n === page ? "page" : undefined} aria-label={`Page ${n}`}
          className={n === page ? "btn-primary" : "btn-secondary"} onClick={() => onPage(n)}>{n}</button>
      ))}
      <button type="button" className="btn-secondary" disabled={page === pages} onClick={() => onPage(page + 1)}>Next</button>
    </nav>
  );
}
