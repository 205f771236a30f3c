"""The workflow the chaos suite deploys (module level, so workers load it from this file).

Its body records one `body <run> <pid> <time> <parent pid>` line per execution, and each of its four chain steps one
`step<i> <run> <pid>` line when it finishes, in the file named by the input's `log`: the suite
counts executions from those lines, not from the code under test. Each step takes `pace`
seconds, so runs are in flight when a fault hits; step 2 also asks the offline chat model, so a
run executed with `stream=True` has tokens to stream.
"""

from __future__ import annotations

import os
import time

from prefect.context import FlowRunContext

from prefect_beluga import Chain, Orchestrator, llms

#: Step 2 asks the offline model (no network): a run executed with stream=True publishes its tokens.
_llm = llms.Factory().create_provider("offline", llms.Config(provider="offline", model_name="offline"))


def _record(state: dict, line: str) -> None:
    with open(state["log"], "a") as f:  # O_APPEND: lines of concurrent processes never interleave
        f.write(f"{line} {state['run']} {os.getpid()} {time.time()} {os.getppid()}\n")


def _step(number: int):
    def step(state: dict) -> dict:
        time.sleep(state.get("pace", 1.0))
        if number == 2:
            _llm.generate(f"Which step is this? Step {number} of run {state['run']}.")
        _record(state, f"step{number}")
        return {"total": state.get("total", 0) + number}

    step.__name__ = step.__qualname__ = f"step{number}"
    return step


chaos_chain = Chain([_step(i) for i in range(1, 5)], name="chaos-chain")


async def chaos_body(state: dict) -> dict:
    state = {**state, "run": str(FlowRunContext.get().flow_run.id)}
    _record(state, "body")
    result = await chaos_chain.ainvoke(state)
    return {"total": result["total"]}


chaos = Orchestrator().create_workflow(chaos_body, workflow_id="chaos")
