import { LineSkeletons } from "../components/Skeletons";
import { ProblemNotice } from "../components/ProblemNotice";
import { CopyIdButton } from "../components/CopyIdButton";
import { price, score } from "../format";
import { useResource } from "../resource";
import { href } from "../router";
import { useSession } from "../session";

/** One product and the products most like it. */
export function ProductPage({ productId }: { productId: string }) {
  const { api, refreshes, refresh } = useSession();
  const product = useResource((signal) => api.product(productId, signal), [api, productId, refreshes]);
  const similar = useResource((signal) => api.similar(productId, 10, signal), [api, productId, refreshes]);

  if (product.state === "loading") return <LineSkeletons lines={6} label="Loading product…" />;
  if (product.state === "failed") return <ProblemNotice problem={product.problem} onRetry={refresh} />;
  const p = product.data;
  return (
    <div className="grid gap-6 lg:grid-cols-[1fr_22rem]">
      <article aria-labelledby="product-title" className="space-y-3 rounded-xl border border-slate-200 bg-white p-6">
        <p className="text-sm text-slate-500"><span className="font-mono">{p.product_id}</span> · {p.category}</p>
        <h1 id="product-title" className="text-2xl font-semibold">{p.title}</h1>
        <p className="text-lg">{price(p.price)} {!p.in_stock && <span className="badge bg-rose-100 text-rose-900">out of stock</span>}</p>
        <p className="text-slate-700">{p.description}</p>
        {p.attributes.length > 0 && (
          <ul className="flex flex-wrap gap-2" aria-label="Attributes">
            {p.attributes.map((attribute) => <li key={attribute} className="badge bg-slate-100 text-slate-700">{attribute}</li>)}
          </ul>
        )}
        <CopyIdButton productId={p.product_id} />
      </article>
      <section aria-labelledby="similar-heading" className="rounded-xl border border-slate-200 bg-white p-4">
        <h2 id="similar-heading" className="mb-3 font-semibold">Similar products</h2>
        {similar.state === "loading" && <LineSkeletons lines={5} label="Loading similar products…" />}
        {similar.state === "failed" && <ProblemNotice problem={similar.problem} />}
        {similar.state === "ready" && (
          similar.data.similar.length === 0 ? <p className="text-sm text-slate-600">None published.</p> : (
            <ol className="space-y-2" data-testid="similar">
              {similar.data.similar.map((s) => (
                <li key={s.product_id} className="flex items-baseline justify-between gap-2 text-sm">
                  <span><a href={href.product(s.product_id)} className="hover:underline">{s.title}</a> <span className="text-slate-500">· {s.category}</span></span>
                  <span className="font-mono text-xs text-slate-500" title="cosine similarity of the product embeddings">{score(s.similarity, 2)}</span>
                </li>
              ))}
            </ol>
          )
        )}
      </section>
    </div>
  );
}
