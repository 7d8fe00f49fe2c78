import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { SweepPoint } from "../api";
import { SweepChart } from "./SweepChart";

const alphas = [0, 0.5, 1];
const points: SweepPoint[] = ["test", "validation"].flatMap((split) =>
  ["ndcg", "hit"].flatMap((metric) =>
    alphas.map((alpha) => ({
      alpha, split, metric, users: 90, chosen: alpha === 0.5,
      value: (metric === "hit" ? 0.3 : 0.1) + alpha / 10, ci_low: 0.01, ci_high: 0.45,
    }))));

describe("the alpha sweep chart", () => {
  it("draws one line per metric for the chosen split and marks the chosen alpha", () => {
    const { container } = render(<SweepChart points={points} split="test" />);
    const chart = screen.getByRole("img", { name: /NDCG@10 and Hit@10 against alpha \(test split\)/ });
    expect(chart.querySelectorAll("polyline")).toHaveLength(2);
    expect(container.querySelector("[data-metric=ndcg] polyline")?.getAttribute("points")?.split(" ")).toHaveLength(3);
    expect(screen.getByTestId("chosen-alpha")).toHaveTextContent("chosen 0.5");
    expect(screen.getByText("Bands: 95% bootstrap intervals over 90 users.")).toBeInTheDocument();
  });

  it("gives the numbers as a table too", () => {
    render(<SweepChart points={points} split="validation" />);
    const rows = within(screen.getByTestId("sweep-table")).getAllByRole("row");
    expect(rows.map((r) => r.textContent)).toEqual([
      "alphaNDCG@10Hit@10", "0.00.1000.300", "0.5 (chosen)0.1500.350", "1.00.2000.400",
    ]);
  });

  it("says when a run has no sweep", () => {
    render(<SweepChart points={[]} split="test" />);
    expect(screen.getByText("No alpha sweep in this run.")).toBeInTheDocument();
  });
});
