"""How long the first `workflow.execute` of a process takes, and the ones after it.

One `prefect server` (SQLite, `prefect_beluga.testing.PrefectServer`) is started first, so the
embedded API's own start (docs/operations.md) is not in the figures. Then `--processes` fresh
Python processes, one after another, each: import the package, define a one-step workflow,
time its first `execute` (the run is started by this process's background runner: no
deployment), then `--later` more. Printed: the median and range of the first execute across
processes, and the median of the later ones.

    python benchmarks/first_execute.py [--processes 7] [--later 5]
"""

from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse
import json
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from prefect_beluga import Orchestrator
imported = time.perf_counter() - t0

def echo(state: dict) -> dict:
    return {"echo": state["x"]}

workflow = Orchestrator().create_workflow(echo, workflow_id="bench-first-execute")
times = []
for i in range(1 + int(sys.argv[1])):
    start = time.perf_counter()
    workflow.execute({"x": i})
    times.append(time.perf_counter() - start)
print(json.dumps({"import": imported, "execute": times}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=7)
    parser.add_argument("--later", type=int, default=5)
    args = parser.parse_args()

    from prefect_beluga.testing import PrefectServer

    with PrefectServer(startup_timeout=240) as server:
        env = {**os.environ, **server.env}
        samples = []
        for _ in range(args.processes):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.later)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            samples.append(json.loads(out.strip().splitlines()[-1]))
    first = [s["execute"][0] for s in samples]
    later = [t for s in samples for t in s["execute"][1:]]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"{args.processes} processes on a SQLite prefect server")
    print(f"import prefect_beluga: median {statistics.median(s['import'] for s in samples):.3f} s")
    print(f"first execute: median {statistics.median(first):.3f} s (min {min(first):.3f}, max {max(first):.3f})")
    print(f"later execute: median {statistics.median(later):.3f} s")


if __name__ == "__main__":
    main()
