import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { Problem } from "../api";
import { SessionProvider } from "../session";
import { card, listOf, memoryApi } from "../testing";
import { UserPage } from "./UserPage";

const twelve = Array.from({ length: 12 }, (_, i) =>
  card({ rank: i + 1, product_id: `P${i + 1}`, title: `Product ${String.fromCharCode(76 - i)}`, price: 10 + i, score: 1 - i / 20 }));

function show(userId: string, api = memoryApi({ U1: listOf(twelve) }, { items_per_page: 5 })) {
  return render(<SessionProvider api={api}><UserPage userId={userId} /></SessionProvider>);
}

const cardTitles = () => screen.getAllByTestId("recommendation-card").map((c) => within(c).getByRole("heading").textContent);

describe("a user's page", () => {
  it("shows skeletons while the list loads, then the first page of cards beside the history", async () => {
    show("U1");
    expect(screen.getAllByTestId("card-skeleton").length).toBeGreaterThan(0);
    expect(await screen.findAllByTestId("recommendation-card")).toHaveLength(5); // items_per_page from the API
    expect(screen.getByText("12 recommendations, page 1 of 3")).toBeInTheDocument();
    expect(within(screen.getByTestId("history")).getByText("Trail Running Shoe Alpine")).toBeInTheDocument();
  });

  it("searches, sorts and pages the list", async () => {
    const user = userEvent.setup();
    show("U1");
    await screen.findAllByTestId("recommendation-card");
    await user.click(screen.getByRole("button", { name: "Page 3" }));
    expect(cardTitles()).toEqual(["Product B", "Product A"]); // ranks 11 and 12
    await user.selectOptions(screen.getByLabelText("Sort by"), "title");
    expect(screen.getByText(/page 1 of 3/)).toBeInTheDocument(); // a new order starts at page 1
    expect(cardTitles()[0]).toBe("Product A");
    await user.selectOptions(screen.getByLabelText("Sort by"), "price-desc");
    expect(cardTitles()[0]).toBe("Product A"); // rank 12, the dearest
    await user.type(screen.getByLabelText("Search this list"), "product k");
    expect(cardTitles()).toEqual(["Product K"]);
    expect(screen.getByText("1 of 12 recommendations match")).toBeInTheDocument();
    await user.type(screen.getByLabelText("Search this list"), "zz");
    expect(screen.getByTestId("empty-list")).toHaveTextContent("Nothing in this list matches");
  });

  it("labels the popular fallback list for an unknown user", async () => {
    show("NOBODY", memoryApi({ NOBODY: listOf([card({ score: null })], true, "NOBODY") }));
    expect(await screen.findByTestId("fallback-notice")).toHaveTextContent("Unknown user");
    expect(screen.getByText("Popular")).toBeInTheDocument();
  });

  it("says so when the list is empty", async () => {
    show("U2", memoryApi({ U2: listOf([], false, "U2") }));
    expect(await screen.findByTestId("empty-list")).toHaveTextContent("No recommendations were published");
  });

  it.each([
    [new Problem("unauthorized", "The API refused the API key. Enter the right key above.", 401), "Wrong API key"],
    [new Problem("unreachable", "Cannot reach the API at http://x."), "The API is down"],
    [new Problem("not-published", "Nothing is published yet: run the pipeline first (make run).", 503), "Nothing published yet"],
  ])("shows a failure as something to act on (%s)", async (problem, title) => {
    show("U1", memoryApi({ U1: problem }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent(title);
    expect(alert).toHaveTextContent(problem.message);
    expect(within(alert).getByRole("button", { name: "Try again" })).toBeInTheDocument();
  });
});
