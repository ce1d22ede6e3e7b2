"""``mote serve``'s HTTP face: a Starlette app over a ``SearchService``.

Routes: ``POST /api/search``, ``GET /api/videos/{id}`` (metadata), ``/api/videos/{id}/frames``
(evenly spaced frames), ``/api/videos/{id}/frames/{n}.jpg`` (a thumbnail), ``/api/videos/{id}/file``
(the video, with range requests so a browser can seek), ``/api/health``, ``/metrics``
(Prometheus) and ``/`` (the search page). Read-only; every error is a JSON object with one line
under ``error``: 400 for a request that cannot be answered as asked, 404 for an id (or a path)
that is not in the collection, 413 past the body limit. Blocking work (the models, decoding)
runs in Starlette's thread pool so the event loop keeps accepting requests.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mote.pipeline.search.served_metrics import CONTENT_TYPE, ServedMetrics
from mote.pipeline.search.served_page import PAGE
from mote.pipeline.search.service import NotFound, RequestError, SearchService

MAX_BODY = 8 * 1024 * 1024  # bytes of a request body (a base64 image fits; more is refused)
Endpoint = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    pass


def error(status: int, message: str) -> JSONResponse:
    """The one shape of every error: ``{"error": "one line"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes (by its Content-Length, or as it streams)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


class Endpoints:
    """The routes' handlers over one service; each a coroutine Starlette calls per request."""

    def __init__(self, service: SearchService, metrics: ServedMetrics, max_body: int) -> None:
        self.service = service
        self.metrics = metrics
        self.max_body = max_body

    def timed(self, name: str, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` with its errors as JSON lines and its time recorded under ``name``."""

        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await endpoint(request)
            except NotFound as missing:
                response = error(404, str(missing).strip("'\""))
            except RequestError as bad:
                response = error(400, str(bad))
            except BodyTooLarge:
                response = error(413, f"the request body is larger than {self.max_body} bytes")
            self.metrics.observe(name, response.status_code, time.perf_counter() - started)
            return response

        return answer

    async def search(self, request: Request) -> Response:
        body = await read_body(request, self.max_body)
        try:
            asked = json.loads(body)
        except (ValueError, UnicodeDecodeError) as bad:
            raise RequestError(f"the body is not JSON ({bad})") from None
        return JSONResponse(await run_in_threadpool(self.service.search, asked))

    async def video(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.service.video, _id(request)))

    async def frames(self, request: Request) -> Response:
        video_id = _id(request)
        shown = await run_in_threadpool(self.service.frames, video_id)
        base = f"/api/videos/{quote(video_id)}/frames/"
        return JSONResponse({"frames": [{**f, "src": f"{base}{f['frame']}.jpg"} for f in shown]})

    async def thumbnail(self, request: Request) -> Response:
        frame = int(request.path_params["frame"])
        data = await run_in_threadpool(self.service.thumbnail, _id(request), frame)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def video_file(self, request: Request) -> Response:
        path = await run_in_threadpool(self.service.video_file, _id(request))
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind)

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.service.health())

    async def exposition(self, request: Request) -> Response:
        return Response(self.metrics.text(), media_type=CONTENT_TYPE)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        reason = "not found" if status == 404 else exc.detail if status != 500 else "error"
        response = error(status, f"{request.method} {request.url.path}: {reason}")
        self.metrics.observe("other", status, 0.0)
        return response


def make_app(service: SearchService, max_body: int = MAX_BODY) -> Starlette:
    """The app: every route timed into ``/metrics`` under its name."""
    metrics = ServedMetrics(service.loaded.file.n_rows)
    ends = Endpoints(service, metrics, max_body)
    video = "/api/videos/{video_id:path}"
    routes = [
        Route("/", ends.timed("page", ends.page)),
        Route("/api/search", ends.timed("search", ends.search), methods=["POST"]),
        Route("/api/health", ends.timed("health", ends.health)),
        Route("/metrics", ends.timed("metrics", ends.exposition)),
        Route(f"{video}/frames/{{frame:int}}.jpg", ends.timed("thumbnail", ends.thumbnail)),
        Route(f"{video}/frames", ends.timed("frames", ends.frames)),
        Route(f"{video}/file", ends.timed("file", ends.video_file)),
        Route(video, ends.timed("video", ends.video)),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: ends.not_found})
    app.state.metrics = metrics
    return app


def _id(request: Request) -> str:
    return str(request.path_params["video_id"])
