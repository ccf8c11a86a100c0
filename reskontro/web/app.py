"""The support page's routes: each reads a service function and renders a template.

Every request is identified first (security.Gate); actions are POST forms with the CSRF token.
Pages take ids in the path and filters in the query, never personal data beyond ids.
"""
from __future__ import annotations

import logging
import math
import threading
from contextlib import asynccontextmanager
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reskontro import services
from reskontro.cli_views import FOUND_BY, delivery_line
from reskontro.domain import InputError
from reskontro.errors import OPERATOR_ERRORS
from reskontro.rules.facts import fact_for_people
from reskontro.support.resolve import AmbiguousId
from reskontro.web.answers import Answers, SitePool
from reskontro.web.security import Gate, Refused, SecurityHeaders

HERE = Path(__file__).resolve().parent
log = logging.getLogger("reskontro.web")
PAGE = 50          # rows per page
HTMX = "htmx-2.0.11.min.js"


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["htmx"] = HTMX
    env.filters["thousands"] = lambda n: f"{n:,}".replace(",", " ")
    env.filters["words"] = lambda text: str(text).replace("_", " ")
    env.globals["money"] = lambda amount, currency: f"{amount:,.2f} {currency}".replace(",", " ")
    env.globals["found_by"] = lambda how: FOUND_BY.get(how, how)
    env.globals["delivery_line"] = delivery_line
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
        context.setdefault("q", "")
        html = self.env.get_template(name).render(
            request=request, login=login, csrf=self.gate.csrf_token(login), tz=self.config.tz,
            when=lambda t: "" if t is None else t.astimezone(self.config.tz).strftime("%Y-%m-%d %H:%M"),
            sender_id=self.config.sender_id, path=request.url.path,
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
                if exc.status == 403 or "authorization" in request.headers:   # not the first challenge
                    log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, exc.message)
                headers = {"www-authenticate": 'Basic realm="reskontro", charset="UTF-8"'} if exc.challenge else {}
                return HTMLResponse(self.env.get_template("refused.html").render(message=exc.message),
                                    status_code=exc.status, headers=headers)
            try:
                return await run_in_threadpool(handler, request)
            except OPERATOR_ERRORS as exc:    # the store or a file: one line, as the CLI says it
                log.error("%s %s: %s", request.method, request.url.path, exc)
                return self.render(request, "missing.html", 503, title="Cannot answer now", message=str(exc),
                                   hint="Nothing was changed. Look at the store and the disk, then reload.")
        return endpoint

    def routes(self) -> list:
        g = self.guarded
        return [
            Route("/", g(self.overview)),
            Route("/files", g(self.files)),
            Route("/files/{file_id}", g(self.file)),
            Route("/customers", g(self.customers)),
            Route("/customers/{customer_id:path}", g(self.customer)),
            Route("/entries/{ident:path}", g(self.entry)),
            Route("/search", g(self.search_page)),
            Route("/search", g(self.search, post=True), methods=["POST"]),
            Route("/held", g(self.held)),
            Route("/excluded", g(self.excluded)),
            Route("/payments", g(self.payments)),
            Route("/payments/{payment}/match", g(self.match, post=True), methods=["POST"]),
            Route("/payments/{payment}/dismiss", g(self.dismiss, post=True), methods=["POST"]),
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
        status = request.query_params.get("status", "") or None
        pageno = _page_no(request)
        page = self.answers.call(lambda site: services.payment_page(site, status=status, offset=(pageno - 1) * PAGE,
                                                                    limit=PAGE))
        return self.render(request, "payments.html", title="Payments", page=page, payments=page.rows,
                           pageno=pageno, pages=max(1, math.ceil(page.total / PAGE)), status=status or "",
                           link=_link(request))

    def _action(self, request: Request, act: Callable) -> Response:
        """A payment action (POST): its row again, with the error if it was refused; a
        browser without htmx is sent back to the list."""
        pid = request.path_params["payment"]
        error = None
        try:
            self.answers.call(lambda site: act(site, pid, f"web:{request.state.login}"))
        except InputError as exc:               # refused: unknown, closed, other currency, …
            error = str(exc)
        if request.headers.get("hx-request") != "true":
            if error:
                return self.render(request, "missing.html", 409, title="Refused", message=error,
                                   hint="Nothing was changed.")
            return RedirectResponse(f"/entries/{quote(pid, safe='')}", status_code=303)
        rows = self.answers.call(lambda site: services.payment_rows(site, [pid]))
        row = rows[0] if rows else None
        if row is None:
            return self.render(request, "missing.html", 404, title="No such payment",
                               message=error or f"No bank payment {pid}.")
        return self.render(request, "_payment_row.html", p=row, error=error,
                           done=None if error else f"{row.status}: {row.note or ''}")

    def match(self, request: Request) -> Response:
        form = request.state.form
        invoice, reason = (form.get("to") or "").strip(), (form.get("reason") or "").strip() or None
        return self._action(request, lambda site, pid, who: services.match_payment(site, pid, invoice, who=who,
                                                                                    reason=reason))

    def dismiss(self, request: Request) -> Response:
        reason = (request.state.form.get("reason") or "").strip()
        return self._action(request, lambda site, pid, who: services.dismiss_payment(site, pid, reason, who=who))

    def entry(self, request: Request) -> Response:
        ident = request.path_params["ident"]
        try:
            found = self.answers.call(lambda site: services.explain(site, ident))
        except AmbiguousId as exc:
            return self.render(request, "ambiguous.html", 300, title=ident, ident=ident, message=str(exc),
                               candidates=exc.candidates)
        if found is None:
            hits = self.answers.call(lambda site: services.find(site, ident, limit=5))
            return self.render(request, "missing.html", 404, title="Not found",
                               message=f"Nothing in the ledger or the bank payments is called {ident}.",
                               hint=_did_you_mean(hits))
        facts = fact_for_people(found.explanation.fact) if found.explanation is not None else {}
        return self.render(request, "entry.html", title=found.entry_id or ident, found=found, facts=facts)

    def search_page(self, request: Request) -> Response:
        return self.render(request, "search.html", title="Search")

    def search(self, request: Request) -> Response:
        q = (request.state.form.get("q") or "").strip()[:100]
        partial = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "hits"
        if not q:
            return HTMLResponse("") if partial else self.render(request, "search.html", title="Search")
        found = self.answers.call(lambda site: services.find(site, q, limit=10 if partial else 50))
        if partial:
            return self.render(request, "_hits.html", found=found)
        hits = [("/entries/", h.id) for h in found.entries + found.payments] + [("/customers/", h.id)
                                                                                for h in found.customers]
        if len(hits) == 1 and not found.truncated:        # one answer: go there
            return RedirectResponse(hits[0][0] + quote(hits[0][1], safe=""), status_code=303)
        return self.render(request, "search.html", title="Search", found=found, q=q)

    def _kept_page(self, request: Request, which: str, title: str, blurb: str) -> Response:
        # the lists are kept in the store and brought up to date before a read: on a big
        # ledger the first read after a start decides everything, so it runs in the background
        ready, wait = self.kept(request, "kept", lambda site: services.held(site, limit=0), title)
        if wait:
            return wait
        rule = request.query_params.get("rule", "").strip() or None
        customer = request.query_params.get("customer", "").strip() or None
        pageno = _page_no(request)
        service = getattr(services, which)
        by_rule = None
        if customer is None:     # the whole list's counts per rule are kept (one customer's are quick)
            counts = self.answers.get(f"{which}-by-rule", lambda site: service(site, limit=0).by_rule)
            by_rule = counts.value if counts.current else None
        page = self.answers.call(lambda site: service(site, rule=rule, customer=customer, offset=(pageno - 1) * PAGE,
                                                      limit=PAGE, by_rule=by_rule))
        return self.render(request, "kept.html", title=title, blurb=blurb, page=page, rule=rule or "",
                           customer=customer or "", pageno=pageno, pages=max(1, math.ceil(page.total / PAGE)),
                           held=which == "held", link=_link(request))

    def held(self, request: Request) -> Response:
        return self._kept_page(request, "held", "Held and waiting",
                               "Held: a person must act (the reason says what). Waiting: they go by themselves "
                               "once the reason is over.")

    def excluded(self, request: Request) -> Response:
        return self._kept_page(request, "excluded", "Excluded", "Never sent to Lowell, by the rules' decision.")

    def customer(self, request: Request) -> Response:
        cid = request.path_params["customer_id"]
        found = self.answers.call(lambda site: services.find(site, cid, limit=5))
        hit = next((h for h in found.customers if h.id == cid), None)
        if hit is None:
            return self.render(request, "missing.html", 404, title="No such customer",
                               message=f"No customer {cid} in the ledger.", hint=_did_you_mean(found))
        check = self.answers.get("check", services.check)
        report = next((r for r in check.value or [] if r.customer_id == cid), None)
        held = self.answers.call(lambda site: services.held(site, customer=cid, limit=0))
        excluded = self.answers.call(lambda site: services.excluded(site, customer=cid, limit=0))
        return self.render(request, "customer.html", title=f"Customer {cid}", customer_id=cid, hit=hit,
                           report=report if report and (report.holds or report.warnings) else None,
                           report_known=check.value is not None, held=held, excluded=excluded)

def _did_you_mean(found) -> str:
    names = [h.id for h in found.entries + found.payments + found.customers] or found.suggestions
    return f"Did you mean {', '.join(names[:5])}?" if names else ""


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
