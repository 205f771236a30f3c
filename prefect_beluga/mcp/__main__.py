"""`python -m prefect_beluga.mcp --target module:attr [...]`: serve Runnables/Workflows as MCP tools.

Over stdio by default (what a desktop MCP client starts), or `--transport http` (streamable HTTP
at `http://HOST:PORT/mcp`). The HTTP bearer token comes from `--token-env` (an environment
variable's name, `BELUGA_MCP_TOKEN` by default), never from the command line, where `ps` would
show it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any


def load(spec: str) -> Any:
    """The object `module:attr` names (the current directory importable)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"--target {spec!r}: expected module:attribute, e.g. flows.support:workflow")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"--target {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_beluga.mcp", description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, metavar="MODULE:ATTR",
                        help="a Runnable, Workflow or tool(runnable, ...) to serve (repeat for several)")
    parser.add_argument("--name", default="prefect-beluga", help="the server's name, shown by clients")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-env", default="BELUGA_MCP_TOKEN",
                        help="environment variable holding the HTTP bearer token (unset or empty: no token)")
    args = parser.parse_args(argv)

    from prefect_beluga.mcp import serve

    token = (os.environ.get(args.token_env) or None) if args.transport == "http" else None
    serve(*(load(spec) for spec in args.target), name=args.name, transport=args.transport,
          host=args.host, port=args.port, token=token)


if __name__ == "__main__":
    main()
