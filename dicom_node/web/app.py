"""The web face's routes, and who may call them.

Without authentication only the page's own files (``/ui/``), the OpenAPI description,
``/healthz`` and ``/metrics`` answer (none holds patient data); everything else needs an
``Authorization: Bearer <token>`` header or the page's session cookie, or gets 401 with
no data. Requests are logged as method, route, status and token holder: never a query
string, a body or a header value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.config import NodeConfig
from dicom_node.ingest import Ingest
from dicom_node.spool import Spool
from dicom_node.store import Store
from dicom_node.web import review
from dicom_node.web.analyze import AnalysisService
from dicom_node.web.auth import SESSION_COOKIE, Sessions, TokenError, Tokens
from dicom_node.web.http import (
    HttpError,
    Request,
    Response,
    Router,
    error_response,
    json_response,
)
from dicom_node.web.stow import StowService

if TYPE_CHECKING:
    from cxr_core import Engine

log = logging.getLogger(__name__)
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml"}
MAX_LOGIN_BYTES = 4096
PUBLIC = re.compile(r"/|/ui/.*|/api/openapi\.json|/api/session")


def static_folder() -> Path:
    return Path(str(resources.files("dicom_node.web") / "static"))


class WebApp:
    """Callable ``Request -> Response`` for :class:`dicom_node.health.HealthServer`.

    Parameters
    ----------
    config, store, spool:
        The node's; the page reads the store and the review layers in the spool.
    ingest:
        Where STOW-RS instances go (the SCP's, so both ways in share their rules).
    make_engine:
        Builds the engine of the analysis API (on its first request).
    """

    def __init__(self, *, config: NodeConfig, store: Store, spool: Spool, ingest: Ingest,
                 make_engine: Callable[[], Engine]) -> None:
        self.store = store
        self.spool = spool
        self.tokens = Tokens(path=config.tokens_file)
        self.sessions = Sessions()
        self.router = Router()
        max_upload = int(config.web.max_upload_mb * 2**20)
        self._page_routes()
        if config.web.stow:
            self.router.add("POST", r"/studies", StowService(
                ingest=ingest, incoming=spool.incoming, max_upload_bytes=max_upload))
        if config.web.analysis_api:
            service = AnalysisService(
                folder=spool.root / "api", make_engine=make_engine,
                retention_s=config.web.analysis_retention_hours * 3600,
                max_upload_bytes=max_upload)
            self.router.add("POST", r"/api/analyze", service.analyze)
            self.router.add("GET", r"/api/analyses/(?P<id>[^/]+)/(?P<name>.+)", service.file)

    def _page_routes(self) -> None:
        add = self.router.add
        add("GET", r"/", lambda _r, _m: Response(302, headers={"Location": "/ui/"}))
        add("GET", r"/ui/(?P<name>[a-z]*(\.[a-z]+)?)", self._static)
        add("GET", r"/api/openapi\.json",
            lambda _r, _m: Response(200, (static_folder() / "openapi.json").read_bytes()))
        add("POST", r"/api/session", self._login)
        add("DELETE", r"/api/session", self._logout)
        add("GET", r"/api/session", self._whoami)
        add("GET", r"/api/studies", lambda _r, _m: json_response(
            {"studies": review.study_list(self.store)}))
        add("GET", r"/api/studies/(?P<study>\d{1,9})", lambda _r, m: json_response(
            review.study_detail(self.store, self.spool, int(m["study"]))))
        add("GET", r"/api/studies/(?P<study>\d{1,9})/instances/(?P<n>\d{1,6})/(?P<name>.+)",
            lambda _r, m: Response(200, content_type="image/png", file=review.layer_file(
                self.store, self.spool, int(m["study"]), int(m["n"]), m["name"])))
        add("POST", r"/api/studies/(?P<study>\d{1,9})/retry", lambda _r, m: json_response(
            review.retry_study(self.store, int(m["study"]))))

    def __call__(self, request: Request) -> Response:
        route, reason = "-", None
        try:
            handler, match = self.router.find(request.method, request.path)
            route = match.re.pattern
            if not PUBLIC.fullmatch(request.path):
                request.holder = self._authenticate(request)
            response = handler(request, match)
        except HttpError as error:  # its reasons are fixed texts, never request data
            response = error_response(error)
            reason = error.reason
        except Exception as error:  # never a traceback to the client
            log.error("web request failed", extra={"fields": {
                "route": route, "error": type(error).__name__}})
            response = error_response(HttpError(500, "internal error"))
        log.info("web request", extra={"fields": {
            "method": request.method, "route": route, "status": response.status,
            "holder": request.holder, "reason": reason}})
        return response

    def _authenticate(self, request: Request) -> str:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            holder = self._token_holder(authorization.removeprefix("Bearer ").strip())
        else:
            session = request.cookie(SESSION_COOKIE)
            holder = self.sessions.holder(session) if session else None
        if holder is None:
            raise HttpError(401, "authentication required")
        return holder

    def _token_holder(self, token: str) -> str | None:
        try:
            return self.tokens.holder(token)
        except TokenError:
            log.error("tokens file unreadable")
            return None

    def _whoami(self, request: Request, _match: re.Match[str]) -> Response:
        """Who is signed in, or null: the page asks before anything else, so that a
        signed-out visit makes no failing request (no console error)."""
        try:
            holder: str | None = self._authenticate(request)
        except HttpError:
            holder = None
        return json_response({"holder": holder})

    def _login(self, request: Request, _match: re.Match[str]) -> Response:
        try:
            token = str(json.loads(request.read_body(max_bytes=MAX_LOGIN_BYTES))["token"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, 'send {"token": "..."}') from None
        holder = self._token_holder(token)
        if holder is None:
            raise HttpError(401, "unknown token")
        cookie = (f"{SESSION_COOKIE}={self.sessions.open(holder)}; HttpOnly; "
                  "SameSite=Strict; Path=/" + ("; Secure" if request.secure else ""))
        return Response(200, json.dumps({"holder": holder}).encode(),
                        headers={"Set-Cookie": cookie})

    def _logout(self, request: Request, _match: re.Match[str]) -> Response:
        session = request.cookie(SESSION_COOKIE)
        if session:
            self.sessions.close(session)
        return Response(204, headers={
            "Set-Cookie": f"{SESSION_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"})

    def _static(self, _request: Request, match: re.Match[str]) -> Response:
        name = match["name"] or "index.html"
        path = static_folder() / name
        if not path.is_file() or path.suffix not in STATIC_TYPES:
            raise HttpError(404, "not found")
        return Response(200, content_type=STATIC_TYPES[path.suffix], file=path)
