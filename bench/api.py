"""API latency and throughput on loopback: `/recommend_for_me?k=10` for random known users against the
framework's ceiling (a constant-JSON FastAPI endpoint), each behind one uvicorn worker, loaded by wrk.

    python -m bench.api [--seconds 30] [--connections 64]      (needs Debian's `wrk`; after make materialize)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pipeline.config import load_settings
from pipeline.warehouse import current_snapshot, read_snapshot

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1", "--log-level", "warning", "--no-access-log"], cwd=ROOT)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health" if "serve" in app else f"http://127.0.0.1:{port}/constant",
                      timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{app} did not start")


def wrk(url_path: str, port: int, seconds: int, connections: int, script: Path | None) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(command + [f"http://127.0.0.1:{port}{url_path}"], capture_output=True, text=True,
                            check=True).stdout
    def latency(label):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.MULTILINE)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"p50": latency("50"), "p99": latency("99"),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else "none"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = load_settings()
    snapshot = current_snapshot(settings.warehouse_path)
    if snapshot is None:
        sys.exit("nothing published: run `make materialize` first")
    users = read_snapshot(snapshot)["recommendations"]["user_id"].unique().to_list()
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "users.lua"
        script.write_text("users = {" + ",".join(f'"{u}"' for u in users) + "}\n"
                          "request = function()\n"
                          "  return wrk.format('GET', '/recommend_for_me?k=10&user_id=' .. users[math.random(#users)])\n"
                          "end\n")
        rows = []
        for label, app, path, lua in [
            ("/recommend_for_me?k=10 (random known users)", "serve.main:app", "/recommend_for_me", script),
            ("trivial FastAPI endpoint (constant JSON)", "bench.trivial_app:app", "/constant", None),
        ]:
            port = free_port()
            process = serve(app, port)
            try:
                rows.append((label, wrk(path, port, args.seconds, args.connections, lua)))
            finally:
                process.terminate()
                process.wait()
    print(f"\n{args.connections} connections, {args.seconds} s each, one uvicorn worker, wrk with one thread, "
          f"{os.cpu_count()} cores, {len(users)} users\n")
    print("| endpoint | p50 ms | p99 ms | requests/s | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['non_2xx']} | {r['socket_errors']} |")
    print(f"\nthroughput ratio: {rows[0][1]['rps'] / rows[1][1]['rps']:.0%} of the trivial endpoint")


if __name__ == "__main__":
    main()
