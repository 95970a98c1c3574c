"""The exporter's HTTP application without sockets (as prometheus_client tests
its make_*_app): routing, /metrics negotiation and gzip, the auth hook, the
framing check, and what request logs may show."""

from __future__ import annotations

import asyncio
import gzip
import html
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter

from modelmon.app import Exporter
from modelmon.config import config_from_dict
from modelmon.web import ExporterApp, Route, gzip_wanted, redact_query


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def app() -> ExporterApp:
    reg = CollectorRegistry()
    Counter("modelmon_test_things", "Things.", registry=reg).inc(3)

    async def echo(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="posted")

    a = ExporterApp(reg, ready=lambda: False, routes=[Route("POST", "/api/x", echo, "posts an x")],
                    default_headers={"X-Frame-Options": "deny"})
    yield a
    a.close()


def call(app: ExporterApp, method: str, path: str, headers: dict[str, str] | None = None, version=None):
    kw = {"version": version} if version else {}
    return run(app(make_mocked_request(method, path, headers=headers or {}, **kw)))


def test_metrics_negotiation_and_gzip(app):
    r = call(app, "GET", "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"modelmon_test_things_total 3.0" in r.body and "Content-Encoding" not in r.headers
    r = call(app, "GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text") and r.body.endswith(b"# EOF\n")
    r = call(app, "GET", "/metrics", {"Accept-Encoding": "br, gzip"})
    assert r.headers["Content-Encoding"] == "gzip" and b"modelmon_test_things" in gzip.decompress(r.body)
    assert "Content-Encoding" not in call(app, "GET", "/metrics", {"Accept-Encoding": "gzip;q=0"}).headers
    assert r.headers["X-Frame-Options"] == "deny" and r.headers["Server"].startswith("modelmon/")


def test_gzip_wanted_reads_q_values():
    assert gzip_wanted("gzip") and gzip_wanted("deflate, GZIP;q=0.5") and gzip_wanted("gzip; q=1")
    assert not gzip_wanted("gzip;q=0") and not gzip_wanted("gzip; q=0.0") and not gzip_wanted("identity")
    assert not gzip_wanted(None) and not gzip_wanted("gzip;q=abc")


def test_routes_pages_and_errors(app):
    assert call(app, "GET", "/-/healthy").text == "Healthy.\n"
    assert call(app, "GET", "/-/ready").status == 503  # ready() is False
    page = call(app, "GET", "/").text
    assert '<a href="/metrics">/metrics</a>' in page and "<code>POST</code> <code>/api/x</code>: posts an x" in page
    assert call(app, "POST", "/api/x").text == "posted"
    assert call(app, "GET", "/api/x").status == 405
    assert call(app, "GET", "/nope").status == 404
    assert call(app, "HEAD", "/metrics").status == 200


def landing_items(page: str) -> dict[str, str]:
    """``METHOD PATH`` -> description, from the landing page's list."""
    items = re.findall(r"<li><code>(\w+)</code> (?:<a href=\"[^\"]+\">|<code>)([^<]+)(?:</a>|</code>)(?:: ([^<]*))?</li>", page)
    return {f"{method} {path}": html.unescape(about) for method, path, about in items}


@pytest.mark.parametrize("lifecycle", [False, True])
def test_landing_page_lists_every_endpoint_with_a_description(tmp_path, lifecycle):
    """The exporter's own routes, the ingestion API's and the CloudEvents sink's; /-/reload only when enabled."""
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "".join(f"{i}\n" for i in range(50)))
    exp = Exporter(config_from_dict({"models": [{"name": "m", "features": [{"name": "x"}],
                                                 "reference": {"path": str(ref)}}]}))
    try:
        exp.lifecycle_api = lifecycle
        r = call(exp.app, "GET", "/")
        assert r.status == 200 and r.content_type == "text/html"
        items = landing_items(r.text)
        want = {"GET /metrics", "GET /-/healthy", "GET /-/ready", "POST /api/v1/events", "POST /api/v1/labels",
                "POST /api/v1/cloudevents"} | ({"POST /-/reload"} if lifecycle else set())
        assert set(items) == want
        assert all(len(about) > 10 and "\n" not in about for about in items.values()), items
        # Every listed endpoint is routed: GET ones answer GET (/-/ready: 503, not started), POST ones say 405.
        for item in items:
            method, path = item.split()
            status = call(exp.app, "GET", path).status
            assert status == 405 if method == "POST" else status in (200, 503), item
        assert '<a href="/metrics">/metrics</a>' in r.text
    finally:
        exp.stop()


def test_landing_page_escapes_descriptions():
    async def noop(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    a = ExporterApp(CollectorRegistry(), routes=[Route("POST", "/api/<y>", noop, "takes <b>bold</b> & more")])
    try:
        page = call(a, "GET", "/").text
        assert "<b>" not in page and landing_items(page)["POST /api/&lt;y&gt;"] == "takes <b>bold</b> & more"
    finally:
        a.close()


def test_transfer_codings_other_than_chunked_are_refused(app):
    from aiohttp import HttpVersion10

    assert call(app, "POST", "/api/x", {"Transfer-Encoding": "gzip, chunked"}).status == 400
    assert call(app, "POST", "/api/x", {"Transfer-Encoding": "chunked"}, version=HttpVersion10).status == 400
    assert app.stats.refused["bad_request"] == 2
    assert call(app, "POST", "/api/x", {"Transfer-Encoding": "chunked"}).status == 200


def test_auth_hook_runs_before_routing(app):
    async def deny(request: web.BaseRequest) -> web.StreamResponse | None:
        return None if request.path == "/-/healthy" else web.Response(status=401)

    app.authenticate = deny
    assert call(app, "GET", "/nope").status == 401  # paths are not revealed before auth
    assert call(app, "GET", "/-/healthy").status == 200


def test_handler_errors_are_500_without_details(app):
    async def boom(request: web.BaseRequest) -> web.StreamResponse:
        raise RuntimeError("secret detail")

    app.add_route(Route("GET", "/boom", boom))
    r = call(app, "GET", "/boom")
    assert r.status == 500 and b"secret" not in r.body


def test_query_strings_are_redacted_in_logs():
    assert redact_query("/api/v1/events?token=abc") == "/api/v1/events?<redacted>"
    assert redact_query("/metrics") == "/metrics"
