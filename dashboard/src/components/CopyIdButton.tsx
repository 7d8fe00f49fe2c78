import { useEffect, useState } from "react";
import { copyText } from "../clipboard";

type CopyState = "idle" | "copied" | "failed";

export function CopyIdButton({ productId }: { productId: string }) {
  const [state, setState] = useState<CopyState>("idle");
  useEffect(() => {
    if (state === "idle") return;
    const timer = setTimeout(() => setState("idle"), 2000);
    return () => clearTimeout(timer);
  }, [state]);
  const copy = () => copyText(productId).then(() => setState("copied"), () => setState("failed"));
  return (
    <button type="button" onClick={copy} className="btn-secondary text-xs" aria-label={`Copy product ID ${productId}`}>
      <span aria-live="polite">{state === "copied" ? "Copied!" : state === "failed" ? `Copy failed: ${productId}` : "Copy ID"}</span>
    </button>
  );
}
