import { describe, expect, it } from "vitest";
import { createApi, Problem } from "./api";

// The client's contract with fetch: the key goes in X-API-Key, and each failure becomes the Problem the
// dashboard shows. (The browser tests run the same client against the real API.)
function answering(status: number, body: unknown) {
  const calls: { url: string; headers: Record<string, string> }[] = [];
  const fetcher = (async (url: string, init?: RequestInit) => {
    calls.push({ url, headers: (init?.headers ?? {}) as Record<string, string> });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  }) as typeof fetch;
  return { fetcher, calls };
}

describe("the API client", () => {
  it("sends the key and the user id, encoded", async () => {
    const { fetcher, calls } = answering(200, { user_id: "a b" });
    await createApi("http://api", "s3cret", fetcher).recommendations("a b", 12);
    expect(calls[0].url).toBe("http://api/recommend_for_me?user_id=a+b&k=12");
    expect(calls[0].headers["X-API-Key"]).toBe("s3cret");
  });

  it("sends no key header when no key is set", async () => {
    const { fetcher, calls } = answering(200, {});
    await createApi("", "", fetcher).history("U/1");
    expect(calls[0].url).toBe("/users/U%2F1/history");
    expect(calls[0].headers).toEqual({});
  });

  it.each([
    [401, "unauthorized"],
    [404, "not-found"],
    [422, "invalid"],
    [503, "not-published"],
    [500, "server"],
  ])("turns HTTP %i into a %s problem", async (status, kind) => {
    const { fetcher } = answering(status, { detail: "why" });
    const failure = createApi("", "", fetcher).model();
    await expect(failure).rejects.toBeInstanceOf(Problem);
    await expect(failure).rejects.toMatchObject({ kind, status });
  });

  it("says the API is unreachable when the connection fails", async () => {
    const refused = (async () => { throw new TypeError("Failed to fetch"); }) as typeof fetch;
    await expect(createApi("http://127.0.0.1:9", "", refused).latestRun()).rejects.toMatchObject({
      kind: "unreachable",
      message: expect.stringContaining("http://127.0.0.1:9"),
    });
  });
});
