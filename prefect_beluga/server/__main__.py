"""`python -m prefect_beluga.server --workflow module:attr [...]`: serve workflows with uvicorn.

The token comes from `--token-env` (an environment variable's name, `BELUGA_APP_TOKEN` by
default), never from the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse

from prefect_beluga.core._cli import add_listen_options, load, run_asgi, token_from


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_beluga.server", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", action="append", required=True, metavar="MODULE:ATTR",
                        help="a Workflow to serve (repeat for several)")
    add_listen_options(parser, token_env="BELUGA_APP_TOKEN")
    parser.add_argument("--input-model", action="append", default=[], metavar="WORKFLOW_ID=MODULE:ATTR",
                        help="a pydantic model a workflow's input must validate against")
    parser.add_argument("--cors-origin", action="append", default=[], help="an origin allowed by CORS")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from prefect_beluga.server import create_app

    models = {}
    for item in args.input_model:
        workflow_id, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"--input-model {item!r}: expected WORKFLOW_ID=MODULE:ATTR")
        models[workflow_id] = load(spec, "--input-model")
    app = create_app(workflows=[load(spec, "--workflow") for spec in args.workflow], token=token_from(args),
                     input_models=models, cors_origins=args.cors_origin)
    run_asgi(app, args.host, args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
