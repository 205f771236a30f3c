"""A script on Prefect's embedded API, as a newcomer runs one: it starts, runs and exits quietly.

Each test runs a script in a fresh process with its own PREFECT_HOME, no PREFECT_API_URL and
none of the settings this package defaults (start-up timeout, server telemetry), so the first
call starts Prefect's temporary API server (see `prefect_beluga.orchestration._embedded_api`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

# A log line at WARNING or above, as Prefect's console handler prints it ("12:00:00.000 | ERROR | ...").
LOUD = re.compile(r"^\S+ \| (WARNING|ERROR|CRITICAL) +\|", re.MULTILINE)

SCRIPT = textwrap.dedent(
    """
    import os
    from prefect.settings import get_current_settings
    from prefect_beluga import Chain, Orchestrator, wait_for_signal
    from prefect_beluga.testing.helpers import eventually
    from prefect_beluga.orchestration.signals import paused_runs

    def shout(state):
        return {"output": state["input"].upper()}

    print("chain:", Chain([shout], name="quiet-chain").invoke({"input": "hi"})["output"])

    def review(input):
        return {"ok": wait_for_signal("approval")["ok"]}

    workflow = Orchestrator().create_workflow(review, workflow_id="left-paused")
    workflow_id, run_id = workflow.execute({})
    eventually(lambda: str(run_id) in paused_runs(), "the run to pause", timeout=120, interval=0.1, raises=False)
    print("paused:", run_id, str(run_id) in paused_runs())
    settings = get_current_settings()
    print("unchanged:", os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"),
          os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED"),
          settings.server.ephemeral.startup_timeout_seconds, settings.server.analytics_enabled)
    """
)

DEFAULTED = ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED",
             "PREFECT_LOGGING_LEVEL")


def run_script(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code, encoding="utf-8")
    environment = {k: v for k, v in os.environ.items()
                   if k not in DEFAULTED and not k.startswith(("OPENAI_", "PINECONE_", "BELUGA_"))}
    environment.update(PREFECT_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_a_script_on_the_embedded_api_runs_quietly_and_leaves_a_paused_run_with_a_warning(tmp_path):
    done = run_script(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "chain: HI" in done.stdout
    run_id = re.search(r"^paused: (\S+) True$", done.stdout, re.MULTILINE).group(1)
    # Prefect's own settings stay as the user left them: the defaults went to the server only.
    assert "unchanged: None None 20 True" in done.stdout, done.stdout

    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert "telemetry" not in done.stderr, done.stderr[-4000:]
    loud = [line for line in done.stderr.splitlines() if LOUD.match(line)]
    assert len(loud) == 1, "\n".join(loud)
    [warning] = loud
    assert "| WARNING |" in warning and run_id in warning
    assert "workflow.signal(run_id, 'approval', payload)" in warning and "workflow.retry(run_id)" in warning
    assert re.search(r"\| INFO +\| Flow run '[^']+' - Finished in state Paused\(\)", done.stderr), done.stderr[-2000:]


def test_a_start_up_timeout_the_user_set_is_kept_and_a_timeout_says_what_to_set(tmp_path):
    code = "from prefect_beluga import Chain\nChain([lambda s: {}], name='never').invoke({})\n"
    done = run_script(tmp_path, code, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    assert done.returncode != 0
    assert "Timed out while attempting to connect to ephemeral Prefect API server" in done.stderr
    assert "did not answer within 1 s" in done.stderr
    assert "set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher" in done.stderr
    assert "prefect server start" in done.stderr and "PREFECT_API_URL" in done.stderr
