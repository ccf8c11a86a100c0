"""The support page's routes: each reads a service function and renders a template.

Every request is identified first (security.Gate); actions are POST forms with the CSRF token.
Pages take ids in the path and filters in the query, never personal data beyond ids.
"""
from __future__ import annotations

import math
import threading
from contextlib import asynccontextmanager
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reskontro import services
from reskontro.web.answers import Answers, SitePool
from reskontro.web.security import Gate, Refused, SecurityHeaders

HERE = Path(__file__).resolve().parent
PAGE = 50          # rows per page
HTMX = "htmx-2.0.11.min.js"


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["htmx"] = HTMX
    env.filters["thousands"] = lambda n: f"{n:,}".replace(",", " ")
    return env


class Pages:
    """The handlers, with what they share: the site pool, cached answers, the gate, templates."""

    def __init__(self, site_dir: Path, *, pool_size: int = 4, wait: float | None = None) -> None:
        self.pool = SitePool(site_dir, pool_size)
        self.config = self.pool.config
        self.answers = Answers(self.pool, **({} if wait is None else {"wait": wait}))
        self.gate = Gate(self.config.web)
        self.env = _templates()
        self._file_counts: dict[str, dict[str, int]] = {}

    # --- plumbing -----------------------------------------------------------------------------
    def render(self, request: Request, name: str, code: int = 200, **context) -> HTMLResponse:
        login = request.state.login
        context.setdefault("title", "")
        html = self.env.get_template(name).render(
            request=request, login=login, csrf=self.gate.csrf_token(login), tz=self.config.tz,
            sender_id=self.config.sender_id, path=request.url.path, q=request.query_params.get("q", ""),
            partial=request.headers.get("hx-request") == "true" and "hx-boosted" not in request.headers,
            **context)
        return HTMLResponse(html, status_code=code)

    def kept(self, request: Request, key: str, fn: Callable, title: str) -> tuple[object, Response | None]:
        """A kept answer (web.answers); until the first is computed, a page that says so."""
        got = self.answers.get(key, fn)
        if got.value is None:
            return got, self.render(request, "computing.html", title=title, at=got)
        return got, None

    def guarded(self, handler: Callable, *, post: bool = False) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                client = request.client.host if request.client else None
                request.state.login = self.gate.login(client, request.headers)
                if post:
                    form = await request.form()
                    self.gate.check_post(request.state.login, form.get("csrf"), request.headers)
                    request.state.form = form
            except Refused as exc:
                headers = {"www-authenticate": 'Basic realm="reskontro", charset="UTF-8"'} if exc.challenge else {}
                return HTMLResponse(self.env.get_template("refused.html").render(message=exc.message),
                                    status_code=exc.status, headers=headers)
            return await run_in_threadpool(handler, request)
        return endpoint

    def routes(self) -> list:
        g = self.guarded
        return [
            Route("/", g(self.overview)),
            Route("/files", g(self.files)),
            Route("/files/{file_id}", g(self.file)),
            Route("/customers", g(self.customers)),
            Route("/payments", g(self.payments)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def count_files(self) -> None:
        """Count the items of every written file, newest first (a big file's count takes a
        moment; its content never changes once written)."""
        for f in reversed(self.answers.call(services.files)):
            if f.state != "writing" and f.file_id not in self._file_counts:
                found = self.answers.call(lambda site: services.file_contents(site, f.file_id, limit=0))
                if found is not None:
                    self._file_counts[f.file_id] = found.counts

    # --- pages --------------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        st, wait = self.kept(request, "status", services.status, "Overview")
        if wait:
            return wait
        pays, wait = self.kept(request, "payments", services.payments, "Overview")
        if wait:
            return wait
        unmatched = sum(1 for p in pays.value if p["status"] in ("unmatched", "unposted"))
        return self.render(request, "overview.html", title="Overview", status=st.value, at=st, unmatched=unmatched)

    def files(self, request: Request) -> Response:
        got, wait = self.kept(request, "files", services.files, "Files")
        if wait:
            return wait
        files = list(reversed(got.value))
        state = request.query_params.get("state", "")
        if state:
            files = [f for f in files if f.state == state]
        page, rows, pages = _page(request, files)
        return self.render(request, "files.html", title="Files", files=rows, page=page, pages=pages,
                           state=state, states=sorted({f.state for f in got.value}), at=got, link=_link(request))

    def file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        after, before = request.query_params.get("after"), request.query_params.get("before")
        known = self._file_counts.get(file_id)
        found = self.answers.call(lambda site: services.file_contents(site, file_id, after=after, before=before,
                                                                      limit=PAGE, counts=known))
        if found is None:
            return self.render(request, "missing.html", 404, title="No such file",
                               message=f"No transfer file {file_id} in the journal.")
        if found.record.state != "writing":     # its content is final: counted once
            self._file_counts[file_id] = found.counts
        return self.render(request, "file.html", title=found.record.name, f=found, link=_link(request))

    def customers(self, request: Request) -> Response:
        got, wait = self.kept(request, "check", services.check, "Customer data")
        if wait:
            return wait
        reports = [r for r in got.value if r.holds or r.warnings]
        who = request.query_params.get("customer", "").strip()
        if who:
            reports = [r for r in reports if r.customer_id == who]
        page, rows, pages = _page(request, reports)
        return self.render(request, "customers.html", title="Customer data", reports=rows, page=page,
                           pages=pages, total=len(reports), customer=who, at=got, link=_link(request))

    def payments(self, request: Request) -> Response:
        got, wait = self.kept(request, "payments", services.payments, "Payments")
        if wait:
            return wait
        order = {"unmatched": 0, "unposted": 1}
        rows = sorted(got.value, key=lambda p: (order.get(p["status"], 2), p["date"] or "", p["id"]))
        status = request.query_params.get("status", "")
        if status:
            rows = [p for p in rows if p["status"] == status]
        page, shown, pages = _page(request, rows)
        return self.render(request, "payments.html", title="Payments", payments=shown, page=page, pages=pages,
                           status=status, total=len(rows), at=got, link=_link(request))


def _page_no(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def _page(request: Request, rows: list) -> tuple[int, list, int]:
    pages = max(1, math.ceil(len(rows) / PAGE))
    page = min(_page_no(request), pages)
    return page, rows[(page - 1) * PAGE: page * PAGE], pages


def _link(request: Request) -> Callable[..., str]:
    """A link to this page with some query parameters changed (None removes one)."""
    def link(**change) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in change}
        params.update({k: v for k, v in change.items() if v not in (None, "")})
        return request.url.path + ("?" + urlencode(params) if params else "")
    return link


def create_app(site_dir: Path, *, warm: bool = True, **options) -> Starlette:
    """The support page for the site in `site_dir` (see `reskontro web`)."""
    pages = Pages(site_dir, **options)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if warm:     # the slow answers of a big ledger start now, so the first pages are quick
            for key, fn in (("status", services.status), ("check", services.check)):
                pages.answers.warm(key, fn)
            threading.Thread(target=pages.count_files, daemon=True, name="web-file-counts").start()
        yield
        pages.answers.close()
        pages.pool.close()

    app = Starlette(routes=pages.routes(), lifespan=lifespan)
    app.state.pages = pages
    return SecurityHeaders(app)
