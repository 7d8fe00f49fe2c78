// Hash routes, so the dashboard's addresses never collide with the API's own paths (/users/…, /products/…)
// on the origin that serves both, and any address can be bookmarked or shared.
import { useEffect, useState } from "react";

export type Route =
  | { page: "home" }
  | { page: "user"; userId: string }
  | { page: "product"; productId: string }
  | { page: "model" };

export function parseRoute(hash: string): Route {
  const [first, second] = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (first === "users" && second) return { page: "user", userId: second };
  if (first === "products" && second) return { page: "product", productId: second };
  if (first === "model") return { page: "model" };
  return { page: "home" };
}

export const href = {
  home: () => "#/",
  user: (userId: string) => `#/users/${encodeURIComponent(userId)}`,
  product: (productId: string) => `#/products/${encodeURIComponent(productId)}`,
  model: () => "#/model",
};

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const follow = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);
  return route;
}

export function navigate(to: string): void {
  window.location.hash = to;
}
