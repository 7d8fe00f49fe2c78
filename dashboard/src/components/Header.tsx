import { useEffect, useState, type FormEvent } from "react";
import { href, navigate, type Route } from "../router";
import { useSession } from "../session";
import { Freshness } from "./Freshness";

/** The user id and API key fields, refresh, and where to go. A typed key takes effect on Show or Refresh,
 * not on every keystroke. */
export function Header({ route }: { route: Route }) {
  const { apiKey, setApiKey, refresh } = useSession();
  const shownUser = route.page === "user" ? route.userId : "";
  const [userId, setUserId] = useState(shownUser);
  const [typedKey, setTypedKey] = useState(apiKey);
  useEffect(() => setUserId(shownUser), [shownUser]);

  const show = (event: FormEvent) => {
    event.preventDefault();
    setApiKey(typedKey);
    const wanted = userId.trim();
    if (wanted) navigate(href.user(wanted));
  };
  const reload = () => {
    setApiKey(typedKey);
    refresh();
  };

  return (
    <header className="border-b border-slate-200 bg-white">
      <div className="mx-auto flex max-w-7xl flex-col gap-3 px-4 py-3 lg:flex-row lg:items-end">
        <div className="flex items-baseline gap-4">
          <a href={href.home()} className="text-xl font-bold text-indigo-700">shoprec</a>
          <nav aria-label="Main" className="flex gap-3 text-sm">
            <a href={href.home()} aria-current={route.page === "home" || route.page === "user" ? "page" : undefined} className="nav-link">Recommendations</a>
            <a href={href.model()} aria-current={route.page === "model" ? "page" : undefined} className="nav-link">Model</a>
          </nav>
        </div>
        <form onSubmit={show} className="flex flex-1 flex-col gap-2 sm:flex-row sm:items-end lg:justify-end" role="search" aria-label="Show a user's recommendations">
          <label className="flex flex-col text-sm font-medium text-slate-700">
            User ID
            <input value={userId} onChange={(e) => setUserId(e.target.value)} placeholder="e.g. U0000985" className="input mt-1" autoComplete="off" spellCheck={false} />
          </label>
          <label className="flex flex-col text-sm font-medium text-slate-700">
            API key
            <input type="password" value={typedKey} onChange={(e) => setTypedKey(e.target.value)} placeholder="if the API needs one" className="input mt-1" autoComplete="off" />
          </label>
          <div className="flex gap-2">
            <button type="submit" className="btn-primary">Show</button>
            <button type="button" className="btn-secondary" onClick={reload}>Refresh</button>
          </div>
        </form>
      </div>
      <div className="mx-auto max-w-7xl px-4 pb-2"><Freshness /></div>
    </header>
  );
}
