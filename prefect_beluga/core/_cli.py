"""What `python -m prefect_beluga.server` and `python -m prefect_beluga.mcp` share: naming an
object as `module:attr`, the options of a process that listens on a port, and running an ASGI
app with uvicorn.

    ```python
    # example: not run (serves until interrupted)
    import argparse

    from prefect_beluga.core._cli import add_listen_options, run_asgi

    parser = argparse.ArgumentParser(prog="python -m prefect_beluga.server")
    add_listen_options(parser, token_env="BELUGA_APP_TOKEN")
    args = parser.parse_args()
    run_asgi(app, args.host, args.port, log_level="info")  # app: the ASGI app to serve
    ```

A token is read from the environment variable `--token-env` names, never from the command line,
where `ps` would show it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any


def load(spec: str, option: str) -> Any:
    """The object `module:attr` names (the current directory importable); a bad spec exits
    with a message naming `option`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"{option} {spec!r}: expected module:attribute, e.g. flows.support:workflow")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"{option} {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def add_listen_options(parser: argparse.ArgumentParser, *, token_env: str, token_help: str = "") -> None:
    """`--host` (127.0.0.1), `--port` (8000) and `--token-env` (default `token_env`)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-env", default=token_env,
                        help=f"environment variable holding the{token_help} bearer token (unset or empty: no token)")


def token_from(args: argparse.Namespace) -> str | None:
    """The token the environment variable `--token-env` holds (None when unset or empty)."""
    return os.environ.get(args.token_env) or None


def run_asgi(app: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Serve `app` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
