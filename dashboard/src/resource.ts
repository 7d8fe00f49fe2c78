// Loading one thing from the API: its state for rendering, and a reload that a refresh can trigger.
import { useEffect, useState } from "react";
import { Problem } from "./api";

export type Resource<T> =
  | { state: "loading" }
  | { state: "ready"; data: T }
  | { state: "failed"; problem: Problem };

/** Runs `load` whenever one of `deps` changes, cancelling the previous request. */
export function useResource<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Resource<T> {
  const [resource, setResource] = useState<Resource<T>>({ state: "loading" });
  useEffect(() => {
    const controller = new AbortController();
    setResource({ state: "loading" });
    load(controller.signal).then(
      (data) => controller.signal.aborted || setResource({ state: "ready", data }),
      (error) => {
        if (controller.signal.aborted) return;
        const problem = error instanceof Problem ? error : new Problem("server", String(error));
        setResource({ state: "failed", problem });
      },
    );
    return () => controller.abort();
  }, deps); // `load` is a new closure every render; `deps` says when it means something new
  return resource;
}
