"""Benchmark the live page: the overview over a catalog of many archives (target: 5,000 in
<= 300 ms), the other pages for comparison, and one request through the DSM CGI program,
Python's start-up included (target: <= 1 s).

.venv/bin/python bench/bench_page.py [--archives 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_prune import fill_catalog
from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.web.app import App, Sources
from nas_receiver.web.auth import Verdict
from tests.daemon_helpers import write_config
from tests.dsm_web import ADMIN, cgi_server, cgi_wrapper, make_dsm_root


def request(app: App, query: str) -> tuple[str, bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
        answer["status"] = status

    body = b"".join(app({"QUERY_STRING": query, "REQUEST_METHOD": "GET"}, start_response))
    return answer["status"], body


def timed(runs: int, work: Any) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archives", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_path = write_config(root, expect_every="1d")
        text = config_path.read_text() + (
            f"destinations:\n  - {{name: usb, type: local, path: {root / 'usb'}}}\n"
            f"log_file: {root / 'data/nas-receiver.log'}\n"
        )
        config_path.write_text(text)
        config = load_config(config_path)
        fill_catalog(Catalog(config.catalog_path), args.archives)
        (root / "data/nas-receiver.log").write_text(
            "".join(f"2026-11-30 12:00:{i % 60:02d} INFO line {i}\n" for i in range(20000))
        )
        app = App(Sources(lambda: config), lambda _environ: Verdict(200))
        print(f"catalog: {args.archives} archives, median of {args.runs} runs (max)")
        for query in ("view=overview", "view=jobs", "view=backups", "view=log"):
            status, body = request(app, query)
            assert status.startswith("200"), (query, status, body[:300])
            median, worst = timed(args.runs, lambda q=query: request(app, q))
            target = "  (target <= 300 ms)" if query == "view=overview" else ""
            print(f"  {query:15} {median * 1000:7.0f} ms ({worst * 1000:.0f}){target}")

        program = cgi_wrapper(root / "index.cgi", config_path, sys.executable)
        with cgi_server(program, make_dsm_root(root / "dsm")) as url:
            import urllib.request

            def cgi_get(query: str = "") -> None:
                headers = {"Cookie": ADMIN}
                request = urllib.request.Request(url + query, headers=headers)  # noqa: S310
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    response.read()

            for label, query in (("overview", ""), ("log", "?view=log")):
                median, worst = timed(args.runs, lambda q=query: cgi_get(q))
                print(
                    f"  CGI {label:11} {median * 1000:7.0f} ms ({worst * 1000:.0f})"
                    "  (whole request, start-up included; target <= 1000 ms)"
                )
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"  bare Python start-up: {(time.perf_counter() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
