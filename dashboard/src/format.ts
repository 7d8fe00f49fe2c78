// How numbers and times read on screen.

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["day", 86_400],
  ["hour", 3_600],
  ["minute", 60],
];

/** "3 hours ago", "yesterday", "now"; `now` is injectable for tests. */
export function timeAgo(iso: string, now: Date = new Date()): string {
  const seconds = (new Date(iso).getTime() - now.getTime()) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

const money = new Intl.NumberFormat("en", { style: "currency", currency: "USD" });

export function price(value: number | null): string {
  return value === null ? "price not listed" : money.format(value);
}

export function score(value: number | null, digits = 3): string {
  return value === null ? "–" : value.toFixed(digits);
}

export function shortRun(runId: string): string {
  return runId.slice(0, 8);
}
