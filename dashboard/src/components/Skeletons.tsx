/** Placeholder cards while a list loads (announced once to screen readers). */
export function CardSkeletons({ count }: { count: number }) {
  return (
    <div role="status" aria-live="polite" className="grid grid-cols-1 gap-4 md:grid-cols-2 lg:grid-cols-3">
      <span className="sr-only">Loading recommendations…</span>
      {Array.from({ length: count }, (_, i) => (
        <div key={i} data-testid="card-skeleton" aria-hidden="true" className="animate-pulse rounded-xl border border-slate-200 bg-white p-4">
          <div className="h-4 w-1/4 rounded bg-slate-200" />
          <div className="mt-3 h-5 w-3/4 rounded bg-slate-200" />
          <div className="mt-2 h-4 w-1/2 rounded bg-slate-200" />
          <div className="mt-4 h-12 rounded bg-slate-100" />
        </div>
      ))}
    </div>
  );
}

export function LineSkeletons({ lines, label }: { lines: number; label: string }) {
  return (
    <div role="status" className="space-y-2">
      <span className="sr-only">{label}</span>
      {Array.from({ length: lines }, (_, i) => (
        <div key={i} aria-hidden="true" className="h-4 animate-pulse rounded bg-slate-200" style={{ width: `${90 - (i % 3) * 15}%` }} />
      ))}
    </div>
  );
}
