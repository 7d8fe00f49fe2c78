import { ProblemNotice } from "../components/ProblemNotice";
import { href } from "../router";
import { useSession } from "../session";

/** Where to start: enter a user id above, or pick one of the published users. */
export function HomePage() {
  const { settings, settingsResource } = useSession();
  return (
    <section className="mx-auto max-w-2xl space-y-4 py-8 text-center">
      <h1 className="text-2xl font-semibold">Recommendations, precomputed and explained</h1>
      <p className="text-slate-600">
        Enter a user id above to see that shopper's published list, why each product is on it, and the history it
        came from. The <a href={href.model()} className="text-indigo-700 underline">model page</a> shows how
        well the lists did on held-out data.
      </p>
      {settingsResource.state === "failed" && <ProblemNotice problem={settingsResource.problem} />}
      {settings.example_user_ids.length > 0 && (
        <div>
          <h2 className="text-sm font-medium text-slate-700">Some published users</h2>
          <ul className="mt-2 flex flex-wrap justify-center gap-2">
            {settings.example_user_ids.map((userId) => (
              <li key={userId}><a href={href.user(userId)} className="btn-secondary font-mono">{userId}</a></li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
