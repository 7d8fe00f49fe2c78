// The read-only API the dashboard shows: response types (mirroring serve/schemas.py) and one client
// that turns every failure into a Problem a person can act on.

export interface Recommendation {
  rank: number;
  product_id: string;
  title: string;
  category: string;
  price: number | null;
  score: number | null;
  content_score: number | null;
  behavior_score: number | null;
  semantic_similarity: number | null;
  description: string;
  blurb: string | null;
  explanation: string | null;
  reasoning_factors: string[];
  evidence_product_ids: string[];
  created_at: string | null;
}

export interface RecommendationsForMe {
  user_id: string;
  total_recommendations: number;
  fallback: boolean;
  top_recommendations: Recommendation[];
  model_info: { model_type: string | null; hybrid_alpha: number | null; hit_at_10: number | null; ndcg_at_10: number | null };
  run_id: string;
}

export interface HistoryEvent {
  product_id: string;
  title: string | null;
  event_type: string;
  value: number;
  timestamp: string;
}

export interface UserHistory {
  user_id: string;
  known: boolean;
  events: HistoryEvent[];
}

export interface Product {
  product_id: string;
  title: string;
  description: string;
  category: string;
  attributes: string[];
  price: number | null;
  in_stock: boolean;
  updated_at: string | null;
}

export interface SimilarProducts {
  product_id: string;
  similar: { rank: number; product_id: string; title: string; category: string; similarity: number }[];
}

export interface ModelInfo {
  model_type?: string;
  /** The behavioural side of the fusion: "cosine", "rp3beta:0.3", "ease:100", … */
  behavior_model?: string | null;
  /** Where the model was chosen, and why there, in a sentence. */
  chosen_on?: string | null;
  hybrid_alpha?: number;
  alpha_source?: string;
  validation_best_alpha?: number | null;
  recency_half_life_events?: number | null;
  protocol?: string;
  hit_at_10?: number;
  hit_at_10_ci_low?: number;
  hit_at_10_ci_high?: number;
  ndcg_at_10?: number;
  ndcg_at_10_ci_low?: number;
  ndcg_at_10_ci_high?: number;
  coverage_at_10?: number;
  users_evaluated?: number;
  run_id?: string;
}

export interface EvalMetric {
  protocol: string;
  split: string;
  model: string;
  alpha: number | null;
  k: number;
  metric: string;
  value: number;
  ci_low: number | null;
  ci_high: number | null;
  users: number;
}

export interface SweepPoint {
  alpha: number;
  split: string;
  metric: string;
  value: number;
  ci_low: number | null;
  ci_high: number | null;
  users: number;
  chosen: boolean;
}

export interface ModelReport {
  model_info: ModelInfo;
  eval_metrics: EvalMetric[];
  alpha_sweep: SweepPoint[];
}

export interface RunInfo {
  run_id: string;
  started_at: string | null;
  finished_at: string | null;
  status: string;
  hybrid_alpha: number | null;
  top_k: number | null;
}

export interface FrontendSettings {
  items_per_page: number;
  max_k: number;
  api_key_required: boolean;
  example_user_ids: string[];
}

export type ProblemKind = "unreachable" | "unauthorized" | "not-found" | "not-published" | "invalid" | "server";

/** A failed request, said so a person knows what to do next. */
export class Problem extends Error {
  constructor(
    readonly kind: ProblemKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "Problem";
  }
}

export interface Api {
  recommendations(userId: string, k: number, signal?: AbortSignal): Promise<RecommendationsForMe>;
  history(userId: string, signal?: AbortSignal): Promise<UserHistory>;
  product(productId: string, signal?: AbortSignal): Promise<Product>;
  similar(productId: string, k: number, signal?: AbortSignal): Promise<SimilarProducts>;
  model(signal?: AbortSignal): Promise<ModelReport>;
  latestRun(signal?: AbortSignal): Promise<RunInfo>;
  settings(signal?: AbortSignal): Promise<FrontendSettings>;
}

/** A client for the API at `baseUrl` ("" = the page's own origin, where the API serves the dashboard). */
export function createApi(baseUrl: string, apiKey: string, fetcher: typeof fetch = fetch): Api {
  async function get<T>(path: string, params: Record<string, string | number> = {}, signal?: AbortSignal): Promise<T> {
    const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
    const url = `${baseUrl}${path}${query ? `?${query}` : ""}`;
    let response: Response;
    try {
      response = await fetcher(url, { headers: apiKey ? { "X-API-Key": apiKey } : {}, signal });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new Problem("unreachable", `Cannot reach the API at ${baseUrl || window.location.origin}. Is it running? (make run starts it.)`);
    }
    if (response.ok) return (await response.json()) as T;
    const detail = await readDetail(response);
    switch (response.status) {
      case 401:
        throw new Problem("unauthorized", "The API refused the API key. Enter the right key above.", 401);
      case 404:
        throw new Problem("not-found", detail || "Not found.", 404);
      case 422:
        throw new Problem("invalid", `The API rejected the request: ${detail}`, 422);
      case 503:
        throw new Problem("not-published", "Nothing is published yet: run the pipeline first (make run).", 503);
      default:
        throw new Problem("server", `The API answered ${response.status}${detail ? `: ${detail}` : ""}.`, response.status);
    }
  }

  const segment = encodeURIComponent;
  return {
    recommendations: (userId, k, signal) => get("/recommend_for_me", { user_id: userId, k }, signal),
    history: (userId, signal) => get(`/users/${segment(userId)}/history`, {}, signal),
    product: (productId, signal) => get(`/products/${segment(productId)}`, {}, signal),
    similar: (productId, k, signal) => get(`/products/${segment(productId)}/similar`, { k }, signal),
    model: (signal) => get("/model", {}, signal),
    latestRun: (signal) => get("/runs/latest", {}, signal),
    settings: (signal) => get("/frontend", {}, signal),
  };
}

async function readDetail(response: Response): Promise<string> {
  try {
    const body = await response.json();
    const detail = body?.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d?.msg ?? String(d)).join("; ");
    return "";
  } catch {
    return "";
  }
}
