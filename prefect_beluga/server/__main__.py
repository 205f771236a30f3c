"""`python -m prefect_beluga.server --workflow module:attr [...]`: serve workflows with uvicorn.

The token comes from `--token-env` (an environment variable's name, `BELUGA_APP_TOKEN` by
default), never from the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any


def load(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"--workflow {spec!r}: expected module:attribute, e.g. flows.support:workflow")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"--workflow {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_beluga.server", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", action="append", required=True, metavar="MODULE:ATTR",
                        help="a Workflow to serve (repeat for several)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-env", default="BELUGA_APP_TOKEN",
                        help="environment variable holding the bearer token (unset or empty: no token)")
    parser.add_argument("--input-model", action="append", default=[], metavar="WORKFLOW_ID=MODULE:ATTR",
                        help="a pydantic model a workflow's input must validate against")
    parser.add_argument("--cors-origin", action="append", default=[], help="an origin allowed by CORS")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    from prefect_beluga.server import create_app

    models = {}
    for item in args.input_model:
        workflow_id, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"--input-model {item!r}: expected WORKFLOW_ID=MODULE:ATTR")
        models[workflow_id] = load(spec)
    app = create_app(workflows=[load(spec) for spec in args.workflow], token=os.environ.get(args.token_env) or None,
                     input_models=models, cors_origins=args.cors_origin)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
