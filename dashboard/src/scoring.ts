// The hybrid score of a card taken apart: score = alpha * behavioral + (1 - alpha) * content.
import type { Recommendation } from "./api";

export interface ScoreParts {
  alpha: number;
  behavior: number;
  content: number;
  /** alpha * behavior_score */
  behaviorPart: number;
  /** (1 - alpha) * content_score */
  contentPart: number;
}

/** The parts of a personalised card's score, or null for cards without one (the popular fallback). */
export function scoreParts(card: Recommendation, alpha: number | null): ScoreParts | null {
  if (alpha === null || card.score === null || card.behavior_score === null || card.content_score === null) return null;
  const behaviorPart = alpha * card.behavior_score;
  const contentPart = (1 - alpha) * card.content_score;
  return {
    alpha,
    behavior: card.behavior_score,
    content: card.content_score,
    behaviorPart,
    contentPart,
  };
}
