// Test data for the component tests: cards and an in-memory Api shaped like the real one's answers.
import { Problem, type Api, type FrontendSettings, type Recommendation, type RecommendationsForMe } from "./api";

export function card(overrides: Partial<Recommendation> = {}): Recommendation {
  return {
    rank: 1,
    product_id: "T03",
    title: "Trail Running Shoe Summit",
    category: "Running",
    price: 140,
    score: 0.9,
    content_score: 0.636,
    behavior_score: 1,
    semantic_similarity: 0.71,
    description: "Cushioned trail running shoe for long mountain ultramarathons.",
    blurb: "A cushioned shoe for long trail days.",
    explanation: "Recommended because you bought 2 items with 'trail running' and viewed 1 more.",
    reasoning_factors: ["you bought 2 items with 'trail running' and viewed 1 more"],
    evidence_product_ids: ["T01", "T02"],
    created_at: "2026-11-26T08:00:00Z",
    ...overrides,
  };
}

export function listOf(cards: Recommendation[], fallback = false, userId = "U1"): RecommendationsForMe {
  return {
    user_id: userId,
    total_recommendations: cards.length,
    fallback,
    top_recommendations: cards,
    model_info: { model_type: "Hybrid Recommendation", hybrid_alpha: 0.8, hit_at_10: 0.1, ndcg_at_10: 0.05 },
    run_id: "run-1",
  };
}

/** An Api answering from `lists` (by user); a Problem in place of a list is thrown. */
export function memoryApi(lists: Record<string, RecommendationsForMe | Problem>, settings: Partial<FrontendSettings> = {}): Api {
  const answer = <T,>(value: T | Problem) => (value instanceof Problem ? Promise.reject(value) : Promise.resolve(value));
  return {
    recommendations: (userId) => answer(lists[userId] ?? listOf([], true, userId)),
    history: (userId) => answer(lists[userId] instanceof Problem ? (lists[userId] as Problem) : {
      user_id: userId, known: true,
      events: [
        { product_id: "T01", title: "Trail Running Shoe Alpine", event_type: "purchase", value: 1, timestamp: "2026-11-20T10:00:00Z" },
        { product_id: "T02", title: "Trail Running Shoe Ridge", event_type: "view", value: 1, timestamp: "2026-11-19T10:00:00Z" },
      ],
    }),
    product: () => Promise.reject(new Problem("not-found", "unknown product", 404)),
    similar: () => Promise.resolve({ product_id: "", similar: [] }),
    model: () => Promise.reject(new Problem("server", "not used here")),
    latestRun: () => Promise.resolve({ run_id: "run-1", started_at: null, finished_at: "2026-11-26T08:00:00Z", status: "success", hybrid_alpha: 0.8, top_k: 10 }),
    settings: () => Promise.resolve({ items_per_page: 12, max_k: 100, api_key_required: false, example_user_ids: [], ...settings }),
  };
}
