"""The ASGI app: routes over the Workflow API (the Prefect API is the only state)."""

from __future__ import annotations

import functools
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import pydantic
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from prefect_beluga.core.errors import UnknownWorkflowRun, ValidationError, WorkflowError
from prefect_beluga.orchestration import Workflow
from prefect_beluga.orchestration.signals import check_signal_name
from prefect_beluga.server._auth import COOKIE, LOGIN_PAGE, AuthCheck, TokenAuth, allowed
from prefect_beluga.server._json import Scrubber, jsonable
from prefect_beluga.server._runs import RunDirectory, UnknownRun, prefect_url
from prefect_beluga.server._sse import Cursor, comment, frame, retry_hint
from prefect_beluga.server._stream import RunFeeds, run_events

_log = logging.getLogger("prefect_beluga.server")
Handler = Callable[[Request], Awaitable[Response]]
#: Seconds of silence after which an event stream sends an SSE comment (proxies keep it open).
KEEPALIVE = 15.0


def create_app(
    workflows: Sequence[Workflow],
    token: Any = None,
    *,
    auth: AuthCheck | None = None,
    input_models: dict[str, type[pydantic.BaseModel]] | None = None,
    cors_origins: Sequence[str] = (),
    title: str = "prefect-beluga",
) -> Starlette:
    """An ASGI app that starts runs of `workflows` and streams their events to apps and browsers.

    Routes: `POST /runs` `{"workflow_id", "input"}` (header `Idempotency-Key` honoured) ->
    `{"run_id", ...}`; `GET /runs/{id}/events` (Server-Sent Events of AG-UI events, or the
    package's own with `?format=plain`; resumable with `Last-Event-ID`); `GET /runs/{id}`
    (status, result); `POST /runs/{id}/signals/{name}` (JSON body: the payload; approvals are
    `approve:<tool>`); `POST /runs/{id}/cancel`; `GET /workflows`; `GET /health`; the chat page
    at `/`. Every run goes through the workflow's own API (`aexecute(..., stream=True)`,
    `astream`, `asignal`, `acancel`), so any number of replicas serve any run.

    Args:
        workflows: The workflows the app serves, by their `workflow_id`.
        token: A bearer token (str or pydantic `SecretStr`, 8+ characters) every route but
            `/health` requires; None: no token (put the app behind your own auth then).
        auth: Your own check instead of a token: `auth(request) -> bool` (sync or async).
        input_models: Per workflow id, a pydantic model the input must validate against (a 422
            names the field); without one, the input must be a JSON object or a string.
        cors_origins: Origins allowed to call the app from a browser (CORS is off by default).
        title: The chat page's title.

    Examples:
        ```python
        import os
        import secrets

        from prefect_beluga import Orchestrator
        from prefect_beluga.server import create_app

        def support(ticket):
            return {"output": f"On it: {ticket['input']}."}

        support_workflow = Orchestrator().create_workflow(support, workflow_id="support")
        app = create_app(workflows=[support_workflow], token=os.environ.get("APP_TOKEN") or secrets.token_urlsafe())
        # uvicorn module:app  — or: python -m prefect_beluga.server --workflow module:support_workflow
        ```
    """
    served: dict[str, Workflow] = {}
    for wf in workflows:
        if not isinstance(wf, Workflow):
            raise TypeError(f"workflows must be Workflow objects (Orchestrator().create_workflow(...)), got {wf!r}")
        if wf.workflow_id in served:
            raise ValueError(f"two workflows share the id {wf.workflow_id!r}")
        served[wf.workflow_id] = wf
    if not served:
        raise ValueError("create_app needs at least one workflow")
    if token is not None and auth is not None:
        raise ValueError("pass token= or auth=, not both")
    secret = token.get_secret_value() if isinstance(token, pydantic.SecretStr) else token
    check: AuthCheck | None = TokenAuth(secret) if secret is not None else auth
    models = dict(input_models or {})
    for name in models:
        if name not in served:
            raise ValueError(f"input_models names {name!r}, which is not one of the workflows {sorted(served)}")
    scrub = Scrubber([secret])
    directory = RunDirectory(served)
    feeds = RunFeeds()  # one reader per run, shared by its clients

    def guarded(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guard(request: Request) -> Response:
            if not await allowed(check, request):
                return JSONResponse({"error": "unauthorized: send Authorization: Bearer <token>"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except UnknownRun as exc:
                return _error(404, scrub(str(exc)))
            except _Invalid as exc:
                return JSONResponse({"error": scrub(exc.message), "field": exc.field}, status_code=422)
            except Exception as exc:  # noqa: BLE001 - never a traceback (or a secret) to the client
                what = scrub(f"{type(exc).__name__}: {exc}")
                _log.warning("%s %s failed: %s", request.method, request.url.path, what)
                if _is_unreachable(exc):
                    return _error(503, "the Prefect API is unreachable; try again")
                return _error(500, f"internal error ({type(exc).__name__})")

        return guard

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def index(request: Request) -> Response:
        if not await allowed(check, request):
            return HTMLResponse(LOGIN_PAGE.format(error=""), status_code=401)
        page = resources.files("prefect_beluga.server").joinpath("static/index.html").read_text()
        return HTMLResponse(page.replace("{{title}}", title))

    async def login(request: Request) -> Response:
        if not isinstance(check, TokenAuth):
            return RedirectResponse("/", status_code=303)
        form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
        candidate = (form.get("token") or [""])[0]
        if not check.matches(candidate):
            return HTMLResponse(LOGIN_PAGE.format(error='<p class="err">That token is not right.</p>'),
                                status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, check.session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @guarded
    async def list_workflows(request: Request) -> Response:
        return JSONResponse({"workflows": [
            {"workflow_id": wid, "input_schema": models[wid].model_json_schema() if wid in models else None}
            for wid in served
        ]})

    @guarded
    async def start_run(request: Request) -> Response:
        body = await _json_body(request, required=True)
        if not isinstance(body, dict):
            raise _Invalid("body", "the body must be a JSON object {\"workflow_id\": ..., \"input\": {...}}")
        workflow_id = body.get("workflow_id")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise _Invalid("workflow_id", "workflow_id is required: the id of a workflow this app serves")
        workflow = served.get(workflow_id)
        if workflow is None:
            return _error(404, f"no workflow {workflow_id[:100]!r}; this app serves {sorted(served)}")
        if "input" not in body:
            raise _Invalid("input", "input is required: a JSON object (or a string, read as {\"input\": s})")
        data = body["input"]
        if workflow_id in models:
            try:
                data = models[workflow_id].model_validate(data).model_dump(mode="json")
            except pydantic.ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                field = ".".join(["input", *(str(p) for p in first.get("loc", ()))])
                raise _Invalid(field, f"{field}: {first.get('msg', 'invalid')}") from None
        elif not isinstance(data, (dict, str)):
            raise _Invalid("input", f"input must be a JSON object or a string, got {type(data).__name__}")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
            raise _Invalid("Idempotency-Key", "the Idempotency-Key header must be 1-200 printable characters")
        try:
            _, run_id = await workflow.aexecute(data, idempotency_key=key, stream=True)
        except ValidationError as exc:
            raise _Invalid("input", str(exc)) from None
        directory.remember(run_id, workflow)
        return JSONResponse(
            {"run_id": run_id, "workflow_id": workflow_id, "events": f"/runs/{run_id}/events",
             "status": f"/runs/{run_id}", "prefect_url": prefect_url(run_id)},
            status_code=201,
        )

    @guarded
    async def read_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        workflow, state = await directory.resolve(run_id)
        body: dict[str, Any] = {
            "run_id": run_id, "workflow_id": workflow.workflow_id, "status": state.type, "state": state.name,
            "final": state.final, "waiting_for": state.signal, "prefect_url": prefect_url(run_id),
        }
        if state.type == "COMPLETED":
            body["result"] = jsonable(await workflow.aget_result(workflow.workflow_id, run_id, timeout=30))
        elif state.final and state.message:
            body["message"] = scrub(state.message)
        return JSONResponse(body)

    @guarded
    async def events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        fmt = request.query_params.get("format", "agui")
        if fmt not in ("agui", "plain"):
            raise _Invalid("format", "format must be 'agui' (default) or 'plain'")
        try:
            cursor = Cursor.parse(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
        except ValueError as exc:
            raise _Invalid("Last-Event-ID", str(exc)) from None
        workflow, _ = await directory.resolve(run_id)

        async def body() -> Any:
            yield retry_hint(1000)
            async for item in run_events(workflow, run_id, directory, after=cursor, plain=fmt == "plain",
                                         scrub=scrub, keepalive=KEEPALIVE, feeds=feeds):
                yield comment() if item is None else frame(scrub(item[1]), id=item[0])

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @guarded
    async def signal(request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        try:
            check_signal_name(name)
        except ValidationError as exc:
            raise _Invalid("name", str(exc)) from None
        payload = await _json_body(request, required=False)
        workflow, _ = await directory.resolve(run_id)
        try:
            await workflow.asignal(run_id, name, payload)
        except UnknownWorkflowRun:
            raise UnknownRun(f"no run {run_id!r}") from None
        except ValidationError as exc:
            raise _Invalid("body", str(exc)) from None
        except WorkflowError as exc:
            return _error(409, scrub(str(exc)))
        return JSONResponse({"run_id": run_id, "signal": name}, status_code=202)

    @guarded
    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        workflow, _ = await directory.resolve(run_id)
        await workflow.acancel(run_id, message="cancelled through the app")
        state = await directory.state(run_id)
        return JSONResponse({"run_id": run_id, "status": state.type}, status_code=202)

    static = StaticFiles(directory=str(resources.files("prefect_beluga.server").joinpath("static")))

    @guarded
    async def static_file(request: Request) -> Response:
        return await static.get_response(request.path_params["path"], request.scope)

    middleware = []
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type", "Last-Event-ID",
                                                    "Idempotency-Key"]))
    routes = [
        Route("/health", health),
        Route("/", index),
        Route("/login", login, methods=["POST"]),
        Route("/workflows", list_workflows),
        Route("/runs", start_run, methods=["POST"]),
        Route("/runs/{run_id}", read_run),
        Route("/runs/{run_id}/events", events),
        Route("/runs/{run_id}/signals/{name:path}", signal, methods=["POST"]),
        Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Mount("/static", routes=[Route("/{path:path}", static_file)]),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.workflows = served
    return app


class _Invalid(Exception):
    """Bad input: a 422 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request, *, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise _Invalid("body", "the body must be JSON")
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _Invalid("body", "the body is not valid JSON") from None


def _is_unreachable(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, (httpx.TransportError, OSError))
