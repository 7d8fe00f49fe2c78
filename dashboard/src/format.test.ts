import { describe, expect, it } from "vitest";
import { niceCeiling } from "./components/SweepChart";
import { price, timeAgo } from "./format";

describe("how times and numbers read", () => {
  const now = new Date("2026-11-26T12:00:00Z");
  it("says how long ago a run finished", () => {
    expect(timeAgo("2026-11-26T09:00:00Z", now)).toBe("3 hours ago");
    expect(timeAgo("2026-11-25T11:00:00Z", now)).toBe("yesterday");
    expect(timeAgo("2026-11-26T11:59:30Z", now)).toBe("just now");
  });

  it("shows a missing price as such, not as zero", () => {
    expect(price(null)).toBe("price not listed");
    expect(price(12.5)).toBe("$12.50");
  });

  it("rounds the chart's axis up to a round number", () => {
    expect(niceCeiling(0.0623)).toBeCloseTo(0.07);
    expect(niceCeiling(0.31)).toBeCloseTo(0.4);
    expect(niceCeiling(0)).toBe(1);
  });
});
