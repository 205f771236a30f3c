"""`python -m prefect_beluga.mcp --target module:attr [...]`: serve Runnables/Workflows as MCP tools.

Over stdio by default (what a desktop MCP client starts), or `--transport http` (streamable HTTP
at `http://HOST:PORT/mcp`). The HTTP bearer token comes from `--token-env` (an environment
variable's name, `BELUGA_MCP_TOKEN` by default), never from the command line, where `ps` would
show it.
"""

from __future__ import annotations

import argparse

from prefect_beluga.core._cli import add_listen_options, load, token_from


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_beluga.mcp", description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, metavar="MODULE:ATTR",
                        help="a Runnable, Workflow or tool(runnable, ...) to serve (repeat for several)")
    parser.add_argument("--name", default="prefect-beluga", help="the server's name, shown by clients")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    add_listen_options(parser, token_env="BELUGA_MCP_TOKEN", token_help=" HTTP")
    args = parser.parse_args(argv)

    from prefect_beluga.mcp import serve

    token = token_from(args) if args.transport == "http" else None
    serve(*(load(spec, "--target") for spec in args.target), name=args.name, transport=args.transport,
          host=args.host, port=args.port, token=token)


if __name__ == "__main__":
    main()
