// What every page shares: the API client (with the key from the header), a refresh counter the Refresh
// button bumps, and the API's dashboard settings.
import { createContext, useContext, useMemo, useRef, useState, type ReactNode } from "react";
import { createApi, type Api, type FrontendSettings } from "./api";
import { useResource, type Resource } from "./resource";

const KEY_STORAGE = "shoprec.apiKey";
const API_BASE: string = import.meta.env.VITE_API_BASE ?? "";

export const DEFAULT_SETTINGS: FrontendSettings = { items_per_page: 12, max_k: 100, api_key_required: false, example_user_ids: [] };

export interface Session {
  api: Api;
  apiKey: string;
  setApiKey: (key: string) => void;
  /** Bumped by Refresh: resources that depend on it load again. */
  refreshes: number;
  refresh: () => void;
  settings: FrontendSettings;
  settingsResource: Resource<FrontendSettings>;
}

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ children, api: given }: { children: ReactNode; api?: Api }) {
  const [apiKey, storeKey] = useState(() => readStoredKey());
  const [refreshes, setRefreshes] = useState(0);
  const api = useMemo(() => given ?? createApi(API_BASE, apiKey), [given, apiKey]);
  const settingsResource = useResource((signal) => api.settings(signal), [api, refreshes]);
  // The last settings the API gave: a refresh reloads them without falling back to the defaults meanwhile.
  const settings = useRef(DEFAULT_SETTINGS);
  if (settingsResource.state === "ready") settings.current = settingsResource.data;
  const session: Session = {
    api,
    apiKey,
    setApiKey: (key) => {
      storeKey(key);
      try {
        localStorage.setItem(KEY_STORAGE, key);
      } catch {
        // storage may be disabled; the key still works for this page
      }
    },
    refreshes,
    refresh: () => setRefreshes((n) => n + 1),
    settings: settings.current,
    settingsResource,
  };
  return <SessionContext.Provider value={session}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside SessionProvider");
  return session;
}

function readStoredKey(): string {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return "";
  }
}
