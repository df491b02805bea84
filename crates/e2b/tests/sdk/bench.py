"""Benchmark: E2B Sandbox.create -> first commands.run result, with the official Python SDK.

E2B_URL, E2B_KEY as for python_sdk.py; E2B_BENCH_N runs (default 5), E2B_BENCH_GAP seconds
between runs so the server's pool refills (default 30). Prints one JSON line.
"""
import json
import os
import statistics
import time

from e2b import Sandbox

URL, KEY = os.environ["E2B_URL"], os.environ["E2B_KEY"]
N = int(os.environ.get("E2B_BENCH_N", "5"))
GAP = float(os.environ.get("E2B_BENCH_GAP", "30"))
times = []
for i in range(N):
    if i:
        time.sleep(GAP)
    t0 = time.perf_counter()
    sbx = Sandbox.create(api_url=URL, sandbox_url=URL, api_key=KEY)
    out = sbx.commands.run("echo ready").stdout.strip()
    times.append(time.perf_counter() - t0)
    assert out == "ready", out
    sbx.kill()
print(json.dumps({"bench": "e2b_create_to_first_run", "runs": N, "p50_s": round(statistics.median(times), 3),
                  "min_s": round(min(times), 3), "max_s": round(max(times), 3)}))
