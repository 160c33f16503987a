"""URL import against a real HTTP server on 127.0.0.1: what is fetched, and what is refused."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bot.core import fetch
from bot.core.articles import ArticleError
from bot.core.fetch import FetchPolicy, fetch_page, fetch_session, is_forbidden_address
from bot.core.library import Library

from conftest import SEED_ARTICLE

LOCAL = FetchPolicy(timeout=5, max_bytes=200_000, max_redirects=3, allow_private=True)
STRICT = FetchPolicy(timeout=5, max_bytes=200_000, max_redirects=3, allow_private=False)

ARTICLE_HTML = """<!doctype html>
<html><head><title>Pastor releases rare North Korea footage</title>
<meta property="og:site_name" content="Agence France-Presse">
<meta property="article:published_time" content="2014-03-27"></head>
<body><article>
<h1>Pastor releases rare North Korea footage</h1>
<p>The content of the hidden-camera footage, which could not be independently verified, was released
by a South Korean pastor, Kim Sung-Eun, known for helping North Koreans escape to Seoul.</p>
<p>The grainy video included footage of a group of men and women, speaking with North Korean accents,
drinking beer, singing, dancing and kissing in a South Korean-style karaoke room salon.</p>
<p>Kim has released similar hidden camera footage before, saying he obtains it from sources in North
Korea who smuggle it out of the country.</p>
</article></body></html>"""


def _routes() -> web.Application:
    app = web.Application()

    async def article(_: web.Request) -> web.Response:
        return web.Response(text=ARTICLE_HTML, content_type="text/html")

    async def plain(_: web.Request) -> web.Response:
        return web.Response(body=SEED_ARTICLE.read_bytes(), content_type="text/plain", charset="utf-8")

    async def latin1(_: web.Request) -> web.Response:
        return web.Response(body="Café owners in Zürich said the façade was repainted.".encode("latin-1"),
                            content_type="text/plain", charset="latin-1")

    async def big_declared(_: web.Request) -> web.Response:
        return web.Response(body=b"x " * 150_000, content_type="text/plain")

    async def big_streamed(request: web.Request) -> web.StreamResponse:
        # Chunked, no Content-Length: the cap must hold while streaming.
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(b"word " * 2_000)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def pdf(_: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4 ...", content_type="application/pdf")

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/hop/{n - 1}" if n > 1 else "/article")

    async def to_metadata(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def to_internal_name(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://intranet.test/secrets")

    async def to_file(_: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    async def missing(_: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def broken(_: web.Request) -> web.Response:
        raise web.HTTPInternalServerError()

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(text="late")

    app.add_routes(
        [
            web.get("/article", article),
            web.get("/plain", plain),
            web.get("/latin1", latin1),
            web.get("/big-declared", big_declared),
            web.get("/big-streamed", big_streamed),
            web.get("/pdf", pdf),
            web.get("/image", image),
            web.get("/loop", loop),
            web.get("/hop/{n}", hop),
            web.get("/to-metadata", to_metadata),
            web.get("/to-internal-name", to_internal_name),
            web.get("/to-file", to_file),
            web.get("/missing", missing),
            web.get("/broken", broken),
            web.get("/slow", slow),
        ]
    )
    return app


@pytest_asyncio.fixture
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(_routes(), shutdown_timeout=0.5)  # do not wait out /slow
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- what is fetched -----------------------------------------------------------------------------


async def test_fetch_with_private_allowed_gets_the_page(server: str) -> None:
    page = await fetch_page(f"{server}/article", LOCAL)
    assert page.name == "page.html"
    assert page.content_type == "text/html"
    assert page.final_url == f"{server}/article"
    assert b"Kim Sung-Eun" in page.data


async def test_a_fetched_page_is_imported_and_answers(server: str, tmp_path: Path) -> None:
    library = await Library.open(tmp_path / "db.sqlite3", corpus_dir=None)
    try:
        summary = await library.add_url(f"{server}/article", scope=7, added_by="test", policy=LOCAL)
        assert len(summary.added) == 1, summary
        info = summary.added[0].article
        assert info.title == "Pastor releases rare North Korea footage"
        assert info.url == f"{server}/article"
        answer = await library.ask("who released the footage?", guild_id=7)
        assert any("Kim Sung-Eun" in p.text for p in answer.passages)
        # Plain text works the same way.
        summary = await library.add_url(f"{server}/plain", scope=7, added_by="test", policy=LOCAL)
        assert summary.added and summary.added[0].article.source == "Agence France-Presse"
    finally:
        await library.close()


async def test_redirects_within_the_limit_are_followed(server: str) -> None:
    page = await fetch_page(f"{server}/hop/3", LOCAL)
    assert page.final_url == f"{server}/article"


async def test_a_declared_charset_is_converted_to_utf8(server: str) -> None:
    page = await fetch_page(f"{server}/latin1", LOCAL)
    assert page.name == "page.txt"
    assert "Café owners in Zürich" in page.data.decode("utf-8")


# --- what is refused -----------------------------------------------------------------------------


async def refused(url: str, policy: FetchPolicy = LOCAL) -> str:
    with pytest.raises(ArticleError) as excinfo:
        await fetch_page(url, policy)
    return str(excinfo.value)


async def test_loopback_is_refused_when_private_addresses_are_not_allowed(server: str) -> None:
    message = await refused(f"{server}/article", STRICT)
    assert "private or local address" in message


async def test_a_name_resolving_to_loopback_is_refused_after_resolution(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    # "localhost" passes every check on the text of the URL: only the resolved address tells.
    message = await refused(f"http://localhost:{port}/article", STRICT)
    assert "localhost resolves to a private or local address" in message


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",
     "100.64.0.1", "::1", "fe80::1", "fc00::1", "ff02::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
     "2002:7f00:1::1"],
)
async def test_private_literal_addresses_are_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    message = await refused(f"http://{host}/", STRICT)
    assert "private or local address" in message


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "LOCALHOST"])
async def test_other_spellings_of_loopback_are_refused(server: str, host: str) -> None:
    # Not IP literals to `ipaddress`, but the resolver turns them into 127.0.0.1 (or aiohttp
    # refuses them as URLs): either way the live server on that port is never reached.
    port = server.rsplit(":", 1)[1]
    message = await refused(f"http://{host}:{port}/article", STRICT)
    assert "private or local address" in message or "not a valid URL" in message, message


def test_public_addresses_are_allowed() -> None:
    import ipaddress

    for address in ("93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"):
        assert not is_forbidden_address(ipaddress.ip_address(address))


async def test_dns_answers_are_filtered_at_connect_time(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose DNS answer is private (rebinding, or an internal name) is refused by the
    resolver the connector uses, whatever the URL looked like."""
    port = int(server.rsplit(":", 1)[1])

    class FakeResolver:
        def __init__(self) -> None:
            pass

        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
            address = {"news.example": "127.0.0.1", "mixed.example": "10.0.0.7"}[host]
            return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            pass

    monkeypatch.setattr(fetch, "DefaultResolver", FakeResolver)
    message = await refused(f"http://news.example:{port}/article", STRICT)
    assert "news.example resolves to a private or local address" in message
    message = await refused(f"http://mixed.example:{port}/article", STRICT)
    assert "mixed.example resolves to a private or local address" in message


async def test_every_redirect_hop_is_checked(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Treat the test server's 127.0.0.1 as "public", everything else as the policy says, so the
    # first hop is allowed and only the redirect target can be refused.
    real = fetch.is_forbidden_address
    monkeypatch.setattr(fetch, "is_forbidden_address", lambda ip: str(ip) != "127.0.0.1" and real(ip))

    class FakeResolver:
        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
            return [{"hostname": host, "host": "192.168.0.10", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            pass

    monkeypatch.setattr(fetch, "DefaultResolver", FakeResolver)
    assert (await fetch_page(f"{server}/article", STRICT)).name == "page.html"  # the server itself is fine
    assert "169.254.169.254 is a private or local address" in await refused(f"{server}/to-metadata", STRICT)
    assert "intranet.test resolves to a private or local address" in await refused(f"{server}/to-internal-name", STRICT)
    assert "not file:" in await refused(f"{server}/to-file", STRICT)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("file:///etc/passwd", "not file:"),
        ("ftp://example.com/article.txt", "not ftp:"),
        ("gopher://example.com/", "not gopher:"),
        ("javascript:alert(1)", "not javascript:"),
        ("example.com/article", "http:// or https://"),
        ("http://user:secret@example.com/article", "user name or password"),
        ("https://:secret@example.com/article", "user name or password"),
        ("http:///nohost", "no host"),
    ],
)
async def test_bad_urls_are_refused_before_any_request(url: str, expected: str) -> None:
    assert expected in await refused(url, STRICT)


async def test_oversize_pages_are_refused(server: str) -> None:
    policy = FetchPolicy(timeout=5, max_bytes=100_000, allow_private=True)
    assert "larger than the limit of 100,000 bytes" in await refused(f"{server}/big-declared", policy)
    assert "larger than the limit of 100,000 bytes" in await refused(f"{server}/big-streamed", policy)


async def test_wrong_content_types_are_refused(server: str) -> None:
    assert "application/pdf; only HTML and plain text" in await refused(f"{server}/pdf")
    assert "image/png" in await refused(f"{server}/image")


async def test_redirect_loops_and_long_chains_are_refused(server: str) -> None:
    assert "redirected more than 3 times" in await refused(f"{server}/loop")
    assert "redirected more than 3 times" in await refused(f"{server}/hop/4")
    no_redirects = FetchPolicy(timeout=5, max_redirects=0, allow_private=True)
    assert "redirected more than 0 times" in await refused(f"{server}/hop/1", no_redirects)


async def test_http_errors_are_reported(server: str) -> None:
    assert "HTTP 404" in await refused(f"{server}/missing")
    assert "HTTP 500" in await refused(f"{server}/broken")


async def test_an_unreachable_port_is_reported() -> None:
    assert "Could not connect to 127.0.0.1" in await refused(f"http://127.0.0.1:{closed_port()}/article")


async def test_a_slow_server_times_out(server: str) -> None:
    policy = FetchPolicy(timeout=0.5, allow_private=True)
    assert "did not answer within 0.5 seconds" in await refused(f"{server}/slow", policy)


async def test_a_shared_session_must_be_a_guarded_one(server: str) -> None:
    async with fetch_session(STRICT) as guarded:
        with pytest.raises(ArticleError, match="private or local"):
            await fetch_page("http://localhost:1/", STRICT, guarded)
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError):
            await fetch_page(f"{server}/article", STRICT, plain)
    async with fetch_session(LOCAL) as loose:
        with pytest.raises(ValueError):  # a session allowing private addresses, used under a strict policy
            await fetch_page(f"{server}/article", STRICT, loose)
        assert (await fetch_page(f"{server}/article", LOCAL, loose)).name == "page.html"


async def test_a_refused_url_adds_nothing(server: str, tmp_path: Path) -> None:
    library = await Library.open(tmp_path / "db.sqlite3", corpus_dir=None)
    try:
        with pytest.raises(ArticleError):
            await library.add_url(f"{server}/article", scope=7, added_by="test", policy=STRICT)
        assert await library.store.count_articles() == 0
    finally:
        await library.close()
