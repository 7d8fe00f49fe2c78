/// <reference types="vitest/config" />
import tailwindcss from "@tailwindcss/vite";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The API serves the build from dashboard/dist at http://localhost:8000/ (same origin, so no CORS).
// `npm run dev` proxies API calls to a running `make api` instead.
const apiPaths = ["/recommend_for_me", "/users", "/products", "/model", "/runs", "/frontend", "/health", "/ready"];

export default defineConfig({
  plugins: [react(), tailwindcss()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: Object.fromEntries(apiPaths.map((path) => [path, "http://127.0.0.1:8000"])),
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test-setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
