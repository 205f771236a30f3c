"""Chaos: kill what recovery recovers from, with runs in flight, and count what ran twice.

One `prefect server` on a throwaway PostgreSQL (basic auth on), two process workers with their
own `PREFECT_HOME` and 30 s heartbeats, and the `chaos` workflow of `chaos_flows.py` deployed
with its recovery automations (`prefect_beluga.orchestration.recovery`, `lost_after` 90 s: three
heartbeats). Each scenario starts several runs, waits until they are in their chain, then hits
one thing: the server (SIGKILL, SIGTERM), the database (`pg_ctl -m fast stop`), a worker alone
(SIGKILL of its process; its run processes live on, orphaned) or a worker with its runs (SIGKILL
of its process group: a lost machine) or the readers of the runs' streams (each leaves at its first token); two
more runs are left Pending with no process, as a
submission that failed in a database outage leaves them. Nothing in a scenario retries, reschedules or sets a
state by hand. The last test watches every run of the module for one more `lost_after` window,
then asserts, from the marker lines the steps write and from the runs' state histories:

- every run Completed, none Failed, Crashed or stranded (non-final);
- no finished run ran again (its body started after it had completed: 0);
- no finished step ran again: a step's marker line (written as it returns) twice, unless the
  first process was killed after the line and before the step's record was written; that step
  had not finished and runs again, as in any durable-execution engine. Which steps had finished
  is read from the result storage once every killed process is gone.

The table of figures goes to docs/reliability.md ("Chaos"); `BELUGA_CHAOS_TABLE=file` writes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import workflow_fixtures as fx

from prefect_beluga.core._sync import run_sync
from prefect_beluga.orchestration.recovery import RESUME_MESSAGE
from prefect_beluga.testing.helpers import create_process_pool, eventually
from prefect_beluga.testing.prefect_server import PrefectServer, postgres_bin_dir

from .chaos_flows import chaos

LOST_AFTER = 90.0
#: The workers' environment, as docs/operations.md says to set it: 30 s heartbeats, and 500s
#: retried by their client (a database outage answers 500; Prefect 3.9's worker exits on one
#: it meets while submitting a run, e.g. a resume started as the server comes back).
WORKER_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
RUNS = 6  # in flight per scenario
PACE = 1.5  # seconds per step: a run takes ~6 s
POOL = "beluga-chaos"

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL is not installed (apt-get install postgresql)"),
]

#: scenario -> its run ids; filled as the module goes, checked by the last test.
SCENARIOS: dict[str, list[str]] = {}
#: run -> (when the processes running it were killed, the steps whose record could be read then).
RECORDED_AT_KILL: dict[str, tuple[float, set[str]]] = {}
#: A step's result (the running total after it) -> its name: what a record holds tells its step.
STEP_BY_TOTAL = {1: "step1", 3: "step2", 6: "step3", 10: "step4"}


class Cluster:
    """The server, its workers and the marker file of one module."""

    def __init__(self, server: PrefectServer, folder: Path) -> None:
        self.server, self.folder = server, folder
        self.log = folder / "markers.log"
        self.workers: dict[str, object] = {}

    def start_worker(self, name: str) -> None:
        self.workers[name] = fx.start_worker(self.server, POOL, name, self.folder, limit=RUNS, **WORKER_ENV)

    def launch(self, scenario: str, *, stream: bool = False) -> list[str]:
        runs = [chaos.execute({"log": str(self.log), "pace": PACE, "n": i}, stream=stream)[1] for i in range(RUNS)]
        SCENARIOS[scenario] = runs
        self.wait(lambda: all(self.count("step1", run) for run in runs), f"{scenario}: every run in its chain")
        return runs

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def recorded_steps(self, run: str) -> set[str]:
        """The steps of `run` whose durable record is in the result storage, written in full."""
        from prefect.results import ResultRecord

        steps = set()
        for path in Path(self.server.env["PREFECT_LOCAL_STORAGE_PATH"]).glob(f"beluga-run-{run}-*"):
            try:
                result = ResultRecord.deserialize(path.read_bytes()).result
            except Exception:  # a file whose bytes were never written: its step had not finished
                continue
            if isinstance(result, dict) and set(result) == {"total"}:
                steps.add(STEP_BY_TOTAL[result["total"]])
        return steps

    def busiest_worker(self, runs: list[str]) -> str:
        """The worker whose run processes (the steps' parent pid) run most of `runs`."""
        parents = Counter(line[4] for line in self.lines() if line[0] == "step1" and line[1] in runs)
        by_pid = {str(worker.pid): name for name, worker in self.workers.items()}
        return max(by_pid.values(), key=lambda name: parents[str(self.workers[name].pid)])

    def count(self, what: str, run: str) -> int:
        return sum(1 for line in self.lines() if line[0] == what and line[1] == run)

    def wait(self, condition, what: str, timeout: float = 300) -> None:
        try:
            eventually(condition, what, timeout=timeout, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def wait_completed(self, runs: list[str], scenario: str, timeout: float = 400) -> None:
        """Until every run is final; Crashed is not: the recovery automations reschedule it."""
        settled = FINAL - {"CRASHED"}
        states: dict[str, str] = {}

        def done() -> bool:
            states.update({run: state_of(run) for run in runs})
            return all(state in settled for state in states.values())

        try:
            self.wait(done, f"{scenario}: every run final", timeout)
        except AssertionError as exc:
            raise AssertionError(f"the runs' states: {states}\n{exc}") from None

    def logs(self) -> str:
        tails = {p.name: p.read_text(errors="replace")[-2500:] for p in self.folder.glob("*.log") if p != self.log}
        tails["server"] = self.server.log()[-2500:]
        return "\n".join(f"--- {name}\n{text}" for name, text in tails.items())


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def state_of(run: str) -> str:
    try:
        return chaos.status(run)
    except Exception:  # the API is down or restarting: not final yet, as far as we know
        return "UNKNOWN"


async def _histories(runs: list[str]) -> dict[str, list]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {run: await client.read_flow_run_states(uuid.UUID(run)) for run in runs}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chaos")
    with PrefectServer(database="postgresql", auth_string=f"chaos:{uuid.uuid4().hex}") as server:
        with server.settings():
            run_sync(create_process_pool(POOL))
            chaos.deploy(work_pool=POOL, lost_after=LOST_AFTER)
            cluster = Cluster(server, folder)
            cluster.start_worker("w1")
            cluster.start_worker("w2")
            try:
                yield cluster
            finally:
                for worker in cluster.workers.values():
                    fx.kill_group(worker)


async def _create_pending(count: int, log: Path) -> list[str]:
    """Runs of the deployment left Pending with no process: what a worker leaves behind when it
    proposed Pending and then failed to start the run (a database outage mid-submission)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"{chaos.flow.name}/{chaos.deployment_name}")
        runs = [
            await client.create_flow_run_from_deployment(
                deployment.id, parameters={"input": {"log": str(log), "pace": PACE, "n": i}}, state=Pending()
            )
            for i in range(count)
        ]
    return [str(run.id) for run in runs]


def test_server_sigkill(cluster):
    runs = cluster.launch("server SIGKILL")
    # Two more left Pending just before: their lost-run clocks run out after the restart, and the
    # restarted server holds back their Crashed events for up to 15 minutes (it never saw the
    # Pending events they follow): the lost-run automation's own resume must not wait for them.
    SCENARIOS["submission failed, then server SIGKILL"] = run_sync(_create_pending(2, cluster.log))
    time.sleep(3)  # the server has recorded their Pending events (a kill can lose events in flight)
    cluster.server.kill(signal.SIGKILL)
    time.sleep(15)
    cluster.server.restart()
    cluster.wait_completed(runs, "server SIGKILL")


def test_server_sigterm(cluster):
    runs = cluster.launch("server SIGTERM")
    cluster.server.kill(signal.SIGTERM)
    time.sleep(10)
    cluster.server.restart()
    cluster.wait_completed(runs, "server SIGTERM")


def test_postgres_fast_stop(cluster):
    runs = cluster.launch("PostgreSQL fast stop")
    cluster.server.postgres.stop_server()
    time.sleep(15)
    cluster.server.postgres.start_server()
    cluster.wait_completed(runs, "PostgreSQL fast stop")


def test_worker_sigkill_alone(cluster):
    runs = cluster.launch("worker SIGKILL (its runs orphaned)")
    worker = cluster.workers.pop(cluster.busiest_worker(runs))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(15)
    cluster.start_worker("w3")
    cluster.wait_completed(runs, "worker SIGKILL alone")
    fx.kill_group(worker)  # its orphans, if any are left


def test_worker_sigkill_with_its_runs(cluster):
    runs = cluster.launch("worker SIGKILL with its runs (machine lost)")
    for name in list(cluster.workers):  # every worker, and every run process (their own sessions)
        fx.kill_group(cluster.workers.pop(name))
    pids = {int(line[2]) for line in cluster.lines() if line[0] == "body" and line[1] in runs}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    cluster.wait(lambda: not any(_alive(pid) for pid in pids), "the killed run processes to be gone", timeout=60)
    RECORDED_AT_KILL.update({run: (killed_at, cluster.recorded_steps(run)) for run in runs})
    cluster.start_worker("w4")
    cluster.start_worker("w5")
    cluster.wait_completed(runs, "worker SIGKILL with its runs", timeout=LOST_AFTER * 3 + 120)


def test_runs_left_pending_by_a_failed_submission(cluster):
    """Checked by the last test, once the lost-run window has passed (no time spent here)."""
    SCENARIOS["submission failed (left Pending)"] = run_sync(_create_pending(2, cluster.log))


def test_clients_leave_their_streams_mid_run(cluster):
    """Chat clients closing the tab: each reader of a run's stream leaves at its first token;
    the runs (the readers left, not the runs) go on to complete."""
    runs = cluster.launch("client disconnect mid-stream", stream=True)
    for run in runs:
        for event in chaos.stream(run):
            if "__token__" in event:
                break
        else:
            raise AssertionError(f"run {run}: its stream ended without a token")
    cluster.wait_completed(runs, "client disconnect mid-stream")


def test_no_run_lost_stranded_or_run_twice(cluster):
    assert SCENARIOS, "run the whole module: this test checks the scenarios' runs"
    every = [run for runs in SCENARIOS.values() for run in runs]
    cluster.wait_completed(every, "the runs left Pending", timeout=LOST_AFTER * 3 + 120)
    time.sleep(LOST_AFTER + 30)  # one more lost-run window: nothing finished may be reopened
    histories = run_sync(_histories(every))
    lines = cluster.lines()
    rows, problems = [], []
    for scenario, runs in SCENARIOS.items():
        finals = Counter(histories[run][-1].type.value for run in runs)
        stranded = sum(1 for run in runs if histories[run][-1].type.value not in FINAL)
        dup_flows = dup_steps = unfinished_again = 0
        for run in runs:
            completed_at = [s.timestamp.timestamp() for s in histories[run] if s.type.value == "COMPLETED"]
            first_completed = min(completed_at) if completed_at else float("inf")
            bodies = [float(line[3]) for line in lines if line[0] == "body" and line[1] == run]
            dup_flows += sum(1 for started in bodies if started > first_completed)
            steps = Counter(line[0] for line in lines if line[0].startswith("step") and line[1] == run)
            if run in RECORDED_AT_KILL:  # killed mid-step: that step, unrecorded, runs again once
                killed_at, recorded = RECORDED_AT_KILL[run]
                before_kill = {line[0] for line in lines if line[1] == run and float(line[3]) < killed_at}
                again = {step for step, n in steps.items() if n > 1 and step in before_kill and step not in recorded}
                unfinished_again += len(again)
                steps_counted = {step: n - (step in again) for step, n in steps.items()}
            else:
                steps_counted = steps
            dup_steps += sum(n - 1 for n in steps_counted.values() if n > 1)
            if len(completed_at) > 1 or histories[run][-1].type.value != "COMPLETED":
                problems.append(f"{scenario}: run {run}: {[s.name for s in histories[run]]}")
            if sorted(steps) != ["step1", "step2", "step3", "step4"]:
                problems.append(f"{scenario}: run {run}: steps {dict(steps)}")
        rescheduled = sum(1 for run in runs if any(s.message == RESUME_MESSAGE for s in histories[run]))
        rows.append([scenario, len(runs), finals["COMPLETED"], finals["FAILED"], finals["CRASHED"], stranded,
                     rescheduled, unfinished_again, dup_flows, dup_steps])
        if scenario.startswith(("worker SIGKILL with", "submission")) and not rescheduled:
            problems.append(f"{scenario}: no run was rescheduled: the fault missed every run")
        if dup_flows or dup_steps or stranded:
            problems.append(f"{scenario}: {dup_flows} flow and {dup_steps} step re-executions, {stranded} stranded")
    table = render(rows)
    print("\n" + table)
    if os.environ.get("BELUGA_CHAOS_TABLE"):
        Path(os.environ["BELUGA_CHAOS_TABLE"]).write_text(table + "\n")
    assert not problems, "\n".join(problems) + "\n" + table + "\n" + cluster.logs()


def render(rows: list[list[object]]) -> str:
    head = ["fault", "runs in flight", "completed", "failed", "crashed", "stranded", "rescheduled by recovery",
            "unfinished steps run again", "duplicated flow executions", "duplicated step executions"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
