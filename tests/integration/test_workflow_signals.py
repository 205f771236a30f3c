"""Signals are durable messages: recorded at once, received one per wait in the order sent, from
any number of senders, across a killed-and-retried run; cancelling a paused run ends it; a script
whose run is paused or running exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import workflow_fixtures as fx

from prefect_beluga import WorkflowCancelled, WorkflowError
from prefect_beluga.testing.helpers import eventually, reaped


def test_signals_sent_before_the_wait_are_received_in_order(tmp_path):
    gate = tmp_path / "gate"
    wid, rid = fx.collector.execute({"names": ["a", "a", "b"], "gate": str(gate)})
    fx.collector.signal(rid, "a", {"n": 1})  # returns at once: the run is not waiting yet
    fx.collector.signal(rid, "b", "bee")
    fx.collector.signal(rid, "a", {"n": 2})
    gate.touch()
    assert fx.collector.get_result(wid, rid, timeout=60) == {"got": [{"n": 1}, {"n": 2}, "bee"]}
    with pytest.raises(WorkflowError, match="already ended Completed"):
        fx.collector.signal(rid, "a", {"n": 3})


def test_two_waits_of_one_name_pause_for_their_own_signal_and_names_interleave():
    wid, rid = fx.collector.execute({"names": ["step", "other", "step"]})
    eventually(lambda: fx.collector.status(rid) == "PAUSED", "the run to pause")
    fx.collector.signal(rid, "step", {"n": 1})
    fx.collector.signal(rid, "step", {"n": 2})  # for the second "step" wait, not the "other" one
    time.sleep(1.5)
    assert fx.collector.status(rid) == "PAUSED"  # now waiting for "other"
    fx.collector.signal(rid, "other", None)
    assert fx.collector.get_result(wid, rid, timeout=60) == {"got": [{"n": 1}, None, {"n": 2}]}


def test_signals_from_two_processes_at_once_all_arrive_once(tmp_path):
    count = 10
    wid, rid = fx.collector.execute({"names": ["vote"] * (2 * count)})
    code = (
        "import sys, workflow_fixtures as fx\n"
        f"for i in range({count}):\n"
        f"    fx.collector.signal({rid!r}, 'vote', [sys.argv[1], i])\n"
    )
    senders = [
        subprocess.Popen([sys.executable, "-c", code, who], env=fx.subprocess_env(), stderr=subprocess.PIPE, text=True)
        for who in ("x", "y")
    ]
    for sender in senders:
        assert sender.wait(120) == 0, sender.stderr.read()[-3000:]
    got = fx.collector.get_result(wid, rid, timeout=120)["got"]
    assert sorted(map(tuple, got)) == sorted((who, i) for who in "xy" for i in range(count))
    for who in "xy":  # each sender's signals in the order it sent them
        assert [i for w, i in got if w == who] == list(range(count))


def test_a_killed_run_retried_sees_the_signals_it_had_not_consumed(tmp_path):
    log = tmp_path / "got.log"
    code = (
        "import time, workflow_fixtures as fx\n"
        f"wid, rid = fx.collector.execute({{'names': ['s', 's', 's'], 'log': {str(log)!r}}})\n"
        "print(rid, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=fx.subprocess_env(), stdout=subprocess.PIPE, text=True)
    with reaped(child):
        rid = child.stdout.readline().strip()
        fx.collector.signal(rid, "s", 1)
        eventually(lambda: log.exists() and log.read_text().count("got s") == 1, "the first signal", process=child)
        eventually(lambda: fx.collector.status(rid) == "PAUSED", "the second wait")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    fx.collector.signal(rid, "s", 2)  # while no process runs it
    fx.collector.retry(rid)
    eventually(lambda: fx.collector.status(rid) == "PAUSED", "the third wait")  # replayed 1 and 2
    fx.collector.signal(rid, "s", 3)
    assert fx.collector.get_result("test-collector", rid, timeout=60) == {"got": [1, 2, 3]}


@pytest.mark.parametrize("workflow_name", ["collector", "acollector"])
def test_cancelling_a_run_paused_in_a_wait_ends_it_and_the_process_exits(workflow_name):
    code = (
        "import sys, time, workflow_fixtures as fx\n"
        "from prefect_beluga.testing.helpers import eventually\n"
        f"wf = fx.{workflow_name}\n"
        "wid, rid = wf.execute({'names': ['never']})\n"
        "print(rid, flush=True)\n"
        "eventually(lambda: wf.status(rid) == 'PAUSED', 'the run to pause')\n"
        "print('paused', flush=True)\n"
        "try:\n"
        "    wf.get_result(wid, rid, timeout=120)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=fx.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with reaped(child):
        rid = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "paused", child.stderr.read()[-3000:]
        workflow = getattr(fx, workflow_name)
        workflow.cancel(rid)
        out, err = child.communicate(timeout=60)  # exits by itself, promptly
    assert out.strip().splitlines()[-1] == "WorkflowCancelled"
    assert child.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    assert workflow.status(rid) == "CANCELLED"
    with pytest.raises(WorkflowCancelled):
        workflow.get_result(workflow.workflow_id, rid, timeout=10)


def test_a_script_exits_cleanly_waiting_for_its_runs_and_leaving_a_paused_run_paused(tmp_path):
    code = (
        "import workflow_fixtures as fx\n"
        "_, slow = fx.spread.execute({'a': 1, 'b': 2, 'seconds': 3})\n"
        "_, paused = fx.collector.execute({'names': ['late']})\n"
        "print(slow, paused, flush=True)\n"
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], env=fx.subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Logging error" not in out.stderr, out.stderr[-5000:]
    assert "cannot schedule new futures" not in out.stderr
    slow, paused = out.stdout.split()
    assert fx.spread.get_result("test-spread", slow, timeout=5)["sum"] == 3  # waited for at exit
    assert fx.collector.status(paused) == "PAUSED"  # left for a later signal and retry
    assert "stays Paused" in out.stderr
    assert time.monotonic() - started < 150
    fx.collector.signal(paused, "late", "here")
    fx.collector.retry(paused)  # resumable from another process
    assert fx.collector.get_result("test-collector", paused, timeout=60) == {"got": ["here"]}


def test_the_stream_of_a_run_paused_and_resumed_in_its_process_ends_at_its_end_marker():
    """A pause and resume count two attempts (`run_count` 2) in one process that publishes one:
    the reader ends at the end marker of the body that returned, not after its 30 s grace."""
    wid, rid = fx.collector.execute({"names": ["go"]}, stream=True)
    eventually(lambda: fx.collector.status(rid) == "PAUSED", "the run to pause")
    fx.collector.signal(rid, "go", "went")
    assert fx.collector.get_result(wid, rid, timeout=60) == {"got": ["went"]}
    started = time.monotonic()
    events = list(fx.collector.stream(rid))
    assert events[-1] == {"__end__": {"got": ["went"]}}
    assert time.monotonic() - started < 20  # the grace path would take 30 s


def test_a_long_lived_process_keeps_nothing_of_its_finished_runs():
    """What signals and published progress keep per run in this process (wait counts, merged
    published values, wakers) is dropped when the run ends: it does not grow with finished runs."""
    from prefect_beluga.orchestration import _progress, signals

    def kept() -> list[dict]:
        return [signals._waits, signals._wakers, signals._paused, _progress._published]

    before = [len(state) for state in kept()]
    run_ids = []
    for i in range(3):
        wid, rid = fx.reviewer.execute({"text": f"draft number {i}"})
        fx.reviewer.signal(rid, "approval", {"ok": True, "by": "me"})
        assert fx.reviewer.get_result(wid, rid, timeout=60) == {"approved": True, "by": "me"}
        assert fx.reviewer.query(rid) == {"stage": "reviewed", "words": 3}
        run_ids.append(rid)
    assert not any(rid in state for state in kept() for rid in run_ids)
    assert all(len(state) <= count for state, count in zip(kept(), before, strict=True))
