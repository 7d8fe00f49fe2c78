import { describe, expect, it } from "vitest";
import { matches, paginate, sorted } from "./listing";
import { card } from "./testing";

describe("search, sort and pages of a list", () => {
  it("finds cards by title, category or blurb, ignoring case and spaces around the query", () => {
    const shoe = card();
    expect(matches(shoe, "  SUMMIT ")).toBe(true);
    expect(matches(shoe, "running")).toBe(true);
    expect(matches(shoe, "long trail days")).toBe(true);
    expect(matches(shoe, "kettle")).toBe(false);
    expect(matches(shoe, "")).toBe(true);
  });

  it("sorts by title and price, keeping rank order on ties and listing missing prices last", () => {
    const cards = [
      card({ rank: 1, product_id: "a", title: "Zip Jacket", price: null }),
      card({ rank: 2, product_id: "b", title: "Apron", price: 30 }),
      card({ rank: 3, product_id: "c", title: "Mug", price: 10 }),
      card({ rank: 4, product_id: "d", title: "Apron", price: 30 }),
    ];
    const ids = (list: typeof cards) => list.map((c) => c.product_id).join("");
    expect(ids(sorted(cards, "title"))).toBe("bdca");
    expect(ids(sorted(cards, "price-asc"))).toBe("cbda");
    expect(ids(sorted(cards, "price-desc"))).toBe("bdca");
    expect(ids(sorted(cards, "score"))).toBe("abcd");
    expect(ids(cards)).toBe("abcd"); // the published order is left alone
  });

  it("cuts pages of the configured size and keeps the page number in range", () => {
    const items = Array.from({ length: 25 }, (_, i) => i);
    expect(paginate(items, 1, 12)).toEqual({ items: items.slice(0, 12), page: 1, pages: 3 });
    expect(paginate(items, 3, 12).items).toEqual([24]);
    expect(paginate(items, 9, 12).page).toBe(3);
    expect(paginate([], 1, 12)).toEqual({ items: [], page: 1, pages: 1 });
  });
});
