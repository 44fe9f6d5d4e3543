"""`ablate serve`: a live, read-only web view of a results database while matrices write it.

Built on Starlette (routing, responses, middleware) served by uvicorn: small, maintained, ASGI,
and an optional extra (`ablate[serve]`), so nobody who only trains pays for it. The page is one
static file of HTML and script (ablate/static/); it polls small JSON documents and draws the
curves itself. What the JSON says comes from `results.live`, which reads the database only:
nothing here writes to it, starts a run or reads a file the database does not name (it names
none: failures show the traceback the run stored).

Safe by default: it listens on 127.0.0.1. Any other host needs `--allow-remote`, and then every
request needs the token printed once at start (in the URL's `?token=`, kept as a cookie after).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import threading
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .results import live
from .results.html import STYLE
from .results.frames import ResultsError
from .storage.database import StoreError

COOKIE = "ablate_token"
LIVE_STYLE = """
.live-head h1 a { color: inherit; text-decoration: none; } .muted { color: #57606a; }
table.grid td { text-align: center; } table.grid td a { text-decoration: none; color: inherit; }
td.status-completed { color: #1d232b; } td.status-running { background: #eaf2fb; }
td.status-failed, td.status-interrupted { background: #fbeaea; } td.status-queued { color: #8c959f; }
figure svg { width: 100%; max-width: 46rem; } .legend .entry { margin-right: 1rem; white-space: nowrap; }
.failure pre { max-height: 14rem; overflow: auto; }
"""
POLL_MS = 1000  # how often the page asks for what is new


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenGate:
    """Every request carries the token: `?token=` (then kept as a cookie) or the cookie."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given, self.token):
            async def with_cookie(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", []).append(
                        (b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()))
                await send(message)
            return await self.app(scope, receive, with_cookie)
        if hmac.compare_digest(request.cookies.get(COOKIE, ""), self.token):
            return await self.app(scope, receive, send)
        await PlainTextResponse("this ablate view needs the token it printed when it started (?token=…)",
                                status_code=403)(scope, receive, send)


class Reports:
    """Each experiment's report, built again only when its data changed (its `version`), one
    build at a time per experiment. The first is built while its requests wait (there is
    nothing else to show); after that a request answers at once with the last one built and a
    stale one is rebuilt in the background (the page sees the older version and asks again),
    so a report that takes seconds to build never holds up a poll."""

    def __init__(self, db: str):
        self.db = db
        self.built: dict[str, tuple[str, dict]] = {}
        self.failed: dict[str, Exception] = {}  # a background build's error, raised to the next request
        self.building: set[str] = set()
        self.lock = threading.Lock()
        self.first: dict[str, threading.Lock] = {}

    def get(self, experiment: str) -> dict:
        version = live.version(self.db, experiment)
        with self.lock:
            cached, error = self.built.get(experiment), self.failed.pop(experiment, None)
            first = self.first.setdefault(experiment, threading.Lock())
        if error is not None:
            raise error
        if cached is None:
            with first:  # one first build; a second request waits for it
                if experiment not in self.built:
                    self.built[experiment] = (version, live.report_view(self.db, experiment))
                cached = self.built[experiment]
        elif cached[0] != version:
            with self.lock:
                start = experiment not in self.building
                self.building.add(experiment)
            if start:
                threading.Thread(target=self._rebuild, args=(experiment, version), daemon=True).start()
        return {"version": cached[0], **cached[1]}

    def _rebuild(self, experiment: str, version: str) -> None:
        try:
            view = live.report_view(self.db, experiment)
            with self.lock:
                self.built[experiment] = (version, view)
        except (ResultsError, StoreError) as e:  # a database being replaced: said on the next request
            with self.lock:
                self.failed[experiment] = e
        finally:
            with self.lock:
                self.building.discard(experiment)


def create_app(db: str, token: str | None = None) -> Starlette:
    """The view over `db` (a SQLAlchemy URL), gated by `token` when one is given."""
    reports = Reports(db)
    page = resources.files("ablate").joinpath("static/live.html").read_text(encoding="utf-8")
    script = resources.files("ablate").joinpath("static/live.js").read_text(encoding="utf-8")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    async def index(request: Request) -> Response:
        return HTMLResponse(page.replace("__POLL_MS__", str(POLL_MS)),
                            headers={"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
                                     "Cache-Control": "no-store"})

    async def javascript(request: Request) -> Response:
        return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-store"})

    async def stylesheet(request: Request) -> Response:  # the static page's, so colours mean the same
        return Response(STYLE + LIVE_STYLE, media_type="text/css", headers={"Cache-Control": "no-store"})

    async def experiments(request: Request) -> Response:
        try:  # no database yet, or one being created: the page says so and waits
            return JSONResponse({"experiments": await asyncio.to_thread(live.experiments, db), "waiting": None})
        except StoreError as e:
            return JSONResponse({"experiments": [], "waiting": str(e)})

    async def progress(request: Request) -> Response:
        try:
            since = max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            return JSONResponse({"error": "since must be an evaluation id (an integer)"}, status_code=400)
        return await _json(live.progress, db, request.path_params["name"], since, request.query_params.get("known"))

    async def report(request: Request) -> Response:
        return await _json(reports.get, request.path_params["name"])

    async def run(request: Request) -> Response:
        return await _json(live.run_view, db, request.path_params["run_id"])

    routes = [Route("/", index), Route("/experiment/{name:path}", index), Route("/run/{run_id:int}", index),
              Route("/static/live.js", javascript), Route("/static/live.css", stylesheet),
              Route("/favicon.ico", no_icon), Route("/api/experiments", experiments),
              Route("/api/experiments/{name:path}/progress", progress),
              Route("/api/experiments/{name:path}/report", report), Route("/api/runs/{run_id:int}", run)]
    middleware = [Middleware(TokenGate, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware)


async def _json(fn: Any, *args: Any) -> Response:
    """fn(*args) off the event loop, as JSON; a database being written, replaced or gone is an
    error document the page shows while it keeps polling, never a crash."""
    try:
        return JSONResponse(await asyncio.to_thread(fn, *args))
    except ResultsError as e:
        return JSONResponse({"error": str(e).strip("'\"")}, status_code=404)
    except StoreError as e:
        return JSONResponse({"error": str(e)}, status_code=503)


def serve(db: str, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
          say: Any = print) -> None:
    """Serve until interrupted. A host other than loopback needs allow_remote and gets a token."""
    import uvicorn

    token = None
    if not is_loopback(host):
        if not allow_remote:
            raise ValueError(f"--host {host} would let other machines read this database: pass "
                             "--allow-remote to do so (every request then needs a token), or leave "
                             "--host at 127.0.0.1")
        token = secrets.token_urlsafe(24)
        say(f"warning: serving to the network on {host}:{port}; anyone with this URL reads the database")
        say(f"open http://{host}:{port}/?token={token}")
    else:
        say(f"ablate view at http://{host}:{port}/ (read-only; Ctrl-C stops it)")
    uvicorn.run(create_app(db, token), host=host, port=port, log_level="warning")
