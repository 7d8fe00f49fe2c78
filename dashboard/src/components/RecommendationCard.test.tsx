import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { card } from "../testing";
import { RecommendationCard } from "./RecommendationCard";

const titles = new Map([["T01", "Trail Running Shoe Alpine"]]);

describe("a recommendation card", () => {
  it("shows rank, title, category, price, score and blurb", () => {
    render(<RecommendationCard card={card({ rank: 2 })} alpha={0.8} titles={titles} />);
    const article = screen.getByRole("article", { name: "Trail Running Shoe Summit" });
    expect(within(article).getByText("#2")).toBeInTheDocument();
    expect(within(article).getByText("Score 0.900")).toBeInTheDocument();
    expect(within(article).getByText("Running")).toBeInTheDocument();
    expect(within(article).getByText("$140.00")).toBeInTheDocument();
    expect(within(article).getByText("A cushioned shoe for long trail days.")).toBeInTheDocument();
    expect(within(article).getByRole("link", { name: "Trail Running Shoe Summit" })).toHaveAttribute("href", "#/products/T03");
  });

  it("takes the score apart into its alpha-weighted behavioural and content parts", () => {
    render(<RecommendationCard card={card()} alpha={0.8} titles={titles} />);
    expect(screen.getByText("behaviour 0.80 × 1.000 = 0.800")).toBeInTheDocument();
    expect(screen.getByText("content 0.20 × 0.636 = 0.127")).toBeInTheDocument();
  });

  it("expands the explanation, its reasoning factors and the evidence from the user's history", async () => {
    render(<RecommendationCard card={card()} alpha={0.8} titles={titles} />);
    const toggle = screen.getByRole("button", { name: "Why this recommendation?" });
    expect(toggle).toHaveAttribute("aria-expanded", "false");
    expect(screen.queryByText(/Recommended because you bought 2 items/)).not.toBeInTheDocument();
    await userEvent.click(toggle);
    expect(toggle).toHaveAttribute("aria-expanded", "true");
    expect(screen.getByText(/Recommended because you bought 2 items/)).toBeInTheDocument();
    expect(screen.getByText("you bought 2 items with 'trail running' and viewed 1 more")).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Trail Running Shoe Alpine" })).toHaveAttribute("href", "#/products/T01");
    expect(screen.getByRole("link", { name: "T02" })).toHaveAttribute("href", "#/products/T02"); // no title known: the id
    await userEvent.click(toggle);
    expect(screen.queryByText(/Recommended because you bought 2 items/)).not.toBeInTheDocument();
  });

  it("renders markup in warehouse text as text", () => {
    const planted = `Shoe <img src=x onerror="window.__xss=1">`;
    const { container } = render(
      <RecommendationCard card={card({ title: planted, blurb: "<b>bold</b>" })} alpha={0.8} titles={titles} />,
    );
    expect(screen.getByRole("link", { name: planted })).toBeInTheDocument();
    expect(screen.getByText("<b>bold</b>")).toBeInTheDocument();
    expect(container.querySelector("img, b")).toBeNull();
  });

  it("labels a fallback card as popular, with no score to take apart", () => {
    render(<RecommendationCard card={card({ score: null, content_score: null, behavior_score: null })} alpha={0.8} titles={titles} />);
    expect(screen.getByText("Popular")).toBeInTheDocument();
    expect(screen.queryByTestId("score-breakdown")).not.toBeInTheDocument();
  });

  it("copies the product id and says so", async () => {
    const user = userEvent.setup();
    const writeText = vi.spyOn(navigator.clipboard, "writeText");
    render(<RecommendationCard card={card()} alpha={0.8} titles={titles} />);
    await user.click(screen.getByRole("button", { name: "Copy product ID T03" }));
    expect(writeText).toHaveBeenCalledWith("T03");
    expect(await screen.findByText("Copied!")).toBeInTheDocument();
  });
});
