import { Header } from "./components/Header";
import { HomePage } from "./pages/HomePage";
import { ModelPage } from "./pages/ModelPage";
import { ProductPage } from "./pages/ProductPage";
import { UserPage } from "./pages/UserPage";
import { useRoute } from "./router";

export function App() {
  const route = useRoute();
  return (
    <>
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:rounded focus:bg-white focus:p-2"
        onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>Skip to content</a>
      <Header route={route} />
      <main id="main" tabIndex={-1} className="mx-auto max-w-7xl px-4 py-6 outline-none">
        {route.page === "home" && <HomePage />}
        {route.page === "user" && <UserPage key={route.userId} userId={route.userId} />}
        {route.page === "product" && <ProductPage key={route.productId} productId={route.productId} />}
        {route.page === "model" && <ModelPage />}
      </main>
    </>
  );
}
