"""Security: SQL is always parameterised, the token never reaches a log or a reply, every limit
in the settings holds, URLs cannot reach the host's network, and only managers of a server
manage that server's articles."""
from __future__ import annotations

import ast
import dataclasses
import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.app import limits_from
from bot.core.answers import QuestionError
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError
from bot.core.importers import Metadata, read_file
from bot.core.library import Library, Limits
from bot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
INJECTION = "'); DROP TABLE articles;--"
FAKE_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GsEcRt.SuPeRsEcReTtOkEnVaLuE_1234567890abc"
TOKEN_SECRET_PART = FAKE_TOKEN.rsplit(".", 1)[1]

FILLERS = [
    ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday to discuss the {topic} budget.")
    for topic in ("school", "railway", "museum", "festival", "hospital")
]


async def open_library(path: Path, **limits) -> Library:
    lib = await Library.open(path, limits=Limits(**limits))
    for draft in FILLERS:
        await lib.add_draft(draft, scope=GLOBAL_SCOPE, added_by="t")
    return lib


@pytest.fixture
async def library(tmp_path):
    lib = await open_library(tmp_path / "library.sqlite3")
    yield lib
    await lib.close()


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# --- SQL --------------------------------------------------------------------------------------------


async def test_an_article_titled_like_sql_injection_is_stored_found_and_removed_harmlessly(library):
    before = tables(library.store.path)
    summary = await library.add_bytes(
        b"The lighthouse at Marrow Point was restored with a new lamp in May, the trust said.",
        "'; DELETE FROM sentences;--.txt",
        scope=42,
        added_by="' OR '1'='1",
        meta=Metadata(title=INJECTION, source=INJECTION, url="https://example.org/?q=' OR 1=1 --", published=INJECTION),
    )
    assert len(summary.added) == 1
    article = summary.added[0].article
    assert (article.title, article.source, article.added_by) == (INJECTION, INJECTION, "' OR '1'='1")

    answer = await library.ask("What was restored at Marrow Point? ' OR 1=1 --", guild_id=42)
    assert answer.passages[0].title == INJECTION
    assert [i.title for i in await library.list(scopes=[42])] == [INJECTION]
    assert (await library.get(article.id, scopes=[42])).title == INJECTION
    # A question that is itself an injection is just words: here, the words of the headline.
    assert (await library.ask(INJECTION, guild_id=42)).passages[0].text == INJECTION
    assert not (await library.ask(INJECTION, guild_id=43)).answered

    assert tables(library.store.path) == before
    assert await library.store.count_articles() == len(FILLERS) + 1
    await library.remove(article.id, scopes=[42])
    assert await library.store.count_articles() == len(FILLERS)
    assert tables(library.store.path) == before


SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|PRAGMA|VALUES|FROM|LIMIT|IN)\b")
# What an f-string that builds SQL may interpolate: column lists and placeholder runs we write
# ourselves, and the schema version number. Never a value.
ALLOWED_INTERPOLATIONS = re.compile(
    r"^(_ARTICLE_COLUMNS|_SENTENCE_COLUMNS|_CANDIDATE_COLUMNS|_CANDIDATE_ARTICLE_COLUMNS|lines|marks|','\.join\('\?' \* len\(\w+\)\)|\",\"\.join\(\"\?\" \* len\(\w+\)\)|number \+ 1|placeholders)$"
)


def test_sql_built_with_f_strings_interpolates_only_placeholders_and_column_lists():
    offenders = []
    for path in sorted((REPO / "bot").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.JoinedStr):
                continue
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if not SQL_WORDS.search(literal) or not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA)\b|\bIN \(|\bWHERE\b", literal):
                continue
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    expr = ast.get_source_segment(source, value.value) or ""
                    if not ALLOWED_INTERPOLATIONS.match(expr):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {{{expr}}}")
    assert offenders == []


def test_sql_is_never_built_with_percent_formatting_or_concatenated_values():
    offenders = []
    for path in sorted((REPO / "bot").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("execute", "executemany", "executescript"):
                if node.args and isinstance(node.args[0], ast.BinOp) and isinstance(node.args[0].op, ast.Mod):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
                if node.args and isinstance(node.args[0], ast.Call) and getattr(node.args[0].func, "attr", "") == "format":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


# --- secrets ------------------------------------------------------------------------------------------


def test_the_settings_never_show_the_token():
    settings = Settings(DISCORD_TOKEN=FAKE_TOKEN, _env_file=None)
    assert settings.discord_token.get_secret_value() == FAKE_TOKEN
    for shown in (repr(settings), str(settings), settings.model_dump_json(), json.dumps(settings.model_dump(mode="json"))):
        assert TOKEN_SECRET_PART not in shown


class _Discord401(BaseHTTPRequestHandler):
    """A stand-in for Discord's API on loopback that refuses every token."""

    def do_GET(self):  # noqa: N802
        body = b'{"message": "401: Unauthorized", "code": 0}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_discord():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discord401)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v10"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connecting is refused


def start_bot(api_base: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m bot -v run` with a token, its Discord API pointed at `api_base` (loopback only)."""
    launcher = (
        "import sys, discord.http\n"
        "discord.http.Route.BASE = sys.argv[1]\n"
        "from bot.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    env = {
        **os.environ,
        "DISCORD_TOKEN": FAKE_TOKEN,
        "QUOTEBOT_CORPUS_DIR": str(REPO / "corpus"),
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", launcher, api_base, "-v", "--db", str(tmp_path / "library.sqlite3"), "run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )


def test_a_refused_token_is_reported_without_showing_it(tmp_path, fake_discord):
    result = start_bot(fake_discord, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Discord refused the token" in output
    assert "Traceback" not in output
    assert FAKE_TOKEN not in output and TOKEN_SECRET_PART not in output


def test_an_unreachable_discord_is_reported_without_showing_the_token(tmp_path):
    result = start_bot(f"http://127.0.0.1:{closed_port()}/api/v10", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert FAKE_TOKEN not in output and TOKEN_SECRET_PART not in output
    assert "Library closed" in output  # the database was closed in order even so
    assert "Traceback" not in output


def test_an_internal_error_reply_shows_a_reference_not_the_error():
    from bot.cogs.errors import user_message
    from bot.core.storage import StoreError

    for error in (RuntimeError(f"token {FAKE_TOKEN}"), StoreError("Cannot open /srv/secret/library.sqlite3"), sqlite3.OperationalError("disk I/O error"), KeyError("x")):
        assert user_message(None, error) is None  # -> "Sorry, something went wrong ... (reference `ab12cd34`)"


# --- limits ---------------------------------------------------------------------------------------------


def test_the_limits_have_sane_defaults_and_refuse_nonsense(monkeypatch):
    for name in list(os.environ):
        if name.startswith("QUOTEBOT_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)
    assert 100 <= settings.max_question_chars <= 2000
    assert 10_000 <= settings.max_article_bytes <= 25_000_000
    assert 10 <= settings.max_articles_per_server <= 1_000_000
    assert 1 <= settings.imports_per_admin_per_hour <= 1000
    assert 1 <= settings.fetch_timeout_seconds <= 60
    assert 10_000 <= settings.fetch_max_bytes <= 25_000_000
    assert 0 <= settings.fetch_max_redirects <= 10
    assert settings.allow_private_urls is False
    for field, bad in (
        ("max_question_chars", 0),
        ("max_article_bytes", -1),
        ("max_articles_per_server", 0),
        ("imports_per_admin_per_hour", 0),
        ("fetch_timeout_seconds", 0),
        ("fetch_max_bytes", 10),
        ("fetch_max_redirects", -1),
    ):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, **{field: bad})


def test_the_limits_from_settings_reach_the_library():
    settings = Settings(_env_file=None, max_question_chars=77, max_article_bytes=12_345, max_articles_per_server=9)
    limits = limits_from(settings)
    assert (limits.max_question_chars, limits.max_article_bytes, limits.max_articles_per_scope) == (77, 12_345, 9)


async def test_a_question_over_the_length_limit_is_refused_at_the_limit_exactly(tmp_path):
    at_limit = "When did the school committee meet to discuss the school budget?"
    lib = await open_library(tmp_path / "library.sqlite3", max_question_chars=len(at_limit))
    try:
        assert (await lib.ask(at_limit)).answered
        with pytest.raises(QuestionError, match=str(len(at_limit))):
            await lib.ask(at_limit + "x")
    finally:
        await lib.close()


async def test_an_article_over_the_size_limit_is_refused_and_nothing_is_stored(tmp_path):
    lib = await open_library(tmp_path / "library.sqlite3", max_article_bytes=2_000)
    try:
        sentence = b"The lighthouse at Marrow Point was restored with a new lamp in May. "
        fits = sentence * (2_000 // len(sentence))
        assert len(fits) <= 2_000
        assert len((await lib.add_bytes(fits, "ok.txt", scope=1, added_by="a")).added) == 1
        before = await lib.store.count_articles()
        with pytest.raises(ArticleError, match="limit"):
            await lib.add_bytes(fits + sentence, "big.txt", scope=1, added_by="a")
        # One oversize line of a JSON Lines file fails alone.
        lines = json.dumps({"title": "big", "text": (sentence * 40).decode()}) + "\n" + json.dumps({"title": "small", "text": "The ferry runs at noon."})
        summary = await lib.add_bytes(lines.encode(), "bulk.jsonl", scope=1, added_by="a")
        assert [a.article.title for a in summary.added] == ["small"] and len(summary.failed) == 1
        assert await lib.store.count_articles() == before + 1
    finally:
        await lib.close()


def test_a_bulk_file_over_its_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "bulk.jsonl"
    path.write_bytes(b"{}\n" * 1000)
    with pytest.raises(ArticleError, match="limit"):
        read_file(path, max_bytes=100, bulk_max_bytes=2_000)
    assert read_file(path, max_bytes=100, bulk_max_bytes=3_000)


async def test_a_server_cannot_store_more_than_its_article_limit(tmp_path):
    lib = await open_library(tmp_path / "library.sqlite3", max_articles_per_scope=3)
    try:
        for i in range(3):
            await lib.add_draft(ArticleDraft(title=f"Note {i}", body=f"Ferry {i} leaves at dawn."), scope=7, added_by="a")
        with pytest.raises(ArticleError, match="limit"):
            await lib.add_draft(ArticleDraft(title="Note 3", body="Ferry 3 leaves at dawn."), scope=7, added_by="a")
        # The bulk path counts the same way, and another server has its own allowance.
        lines = "\n".join(json.dumps({"title": f"Bulk {i}", "text": f"Barge {i} docks at noon."}) for i in range(5))
        summary = await lib.add_bytes(lines.encode(), "bulk.jsonl", scope=7, added_by="a")
        assert summary.added == [] and len(summary.failed) == 5
        summary = await lib.add_bytes(lines.encode(), "bulk.jsonl", scope=8, added_by="a")
        assert len(summary.added) == 3 and len(summary.failed) == 2
        assert await lib.store.count_articles(7) == 3 and await lib.store.count_articles(8) == 3
        # The owner's global scope is not a server and has no such limit.
        await lib.add_draft(ArticleDraft(title="Global", body="The canal reopened."), scope=GLOBAL_SCOPE, added_by="owner")
    finally:
        await lib.close()


# --- URL fetching: size, time, and the host's own network ---------------------------------------------------

fetch = pytest.importorskip("bot.core.fetch")


@pytest.fixture
async def web_server():
    """A loopback web server with a few pages; yields (base_url, hits)."""
    from aiohttp import web

    hits: list[str] = []
    page = b"<html><body><article><p>" + b"The harbour reopened on Wednesday. " * 20 + b"</p></article></body></html>"

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/big":
            return web.Response(body=b"<p>" + b"x" * 50_000 + b"</p>", content_type="text/html")
        if request.path == "/big-chunked":
            response = web.StreamResponse(headers={"Content-Type": "text/html"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(100):
                await response.write(b"<p>" + b"y" * 1000 + b"</p>")
            return response
        if request.path == "/slow":
            await asyncio.sleep(30)
        if request.path == "/redirect-loop":
            raise web.HTTPFound("/redirect-loop")
        if request.path.startswith("/to/"):
            raise web.HTTPFound("http://" + request.path[len("/to/") :])
        if request.path == "/binary":
            return web.Response(body=b"\x89PNG" + bytes(100), content_type="image/png")
        return web.Response(body=page, content_type="text/html")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


LOOPBACK_ALLOWED = fetch.FetchPolicy(timeout=20.0, max_bytes=10_000, max_redirects=2, allow_private=True)


async def test_a_page_over_the_fetch_size_limit_is_refused(web_server):
    base, _ = web_server
    assert (await fetch.fetch_page(base + "/ok", LOOPBACK_ALLOWED)).data.startswith(b"<html>")
    for path in ("/big", "/big-chunked"):
        with pytest.raises(ArticleError, match="limit"):
            await fetch.fetch_page(base + path, LOOPBACK_ALLOWED)


async def test_a_page_that_does_not_answer_in_time_is_given_up(web_server):
    base, _ = web_server
    impatient = dataclasses.replace(LOOPBACK_ALLOWED, timeout=1.5)
    with pytest.raises(ArticleError, match="did not answer within 1.5 seconds"):
        await fetch.fetch_page(base + "/slow", impatient)


async def test_redirect_loops_and_non_text_pages_are_refused(web_server):
    base, _ = web_server
    with pytest.raises(ArticleError, match="redirected more than 2"):
        await fetch.fetch_page(base + "/redirect-loop", LOOPBACK_ALLOWED)
    with pytest.raises(ArticleError, match="image/png"):
        await fetch.fetch_page(base + "/binary", LOOPBACK_ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/article.txt",
        "gopher://example.org/",
        "javascript:alert(1)",
        "https://user:password@example.org/",
        "http://127.0.0.1:{port}/ok",
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://[::ffff:127.0.0.1]:{port}/ok",
        "http://2130706433:{port}/ok",
        "http://127.1:{port}/ok",
        "http://0.0.0.0:{port}/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
    ],
)
async def test_urls_that_reach_the_hosts_own_network_are_refused(web_server, url):
    base, hits = web_server
    port = base.rsplit(":", 1)[1]
    policy = fetch.FetchPolicy(timeout=20.0, max_bytes=10_000)  # the default: no private addresses
    with pytest.raises(ArticleError):
        await fetch.fetch_page(url.format(port=port), policy)
    assert hits == []  # refused before any connection reached the server


async def test_a_redirect_to_a_private_address_is_refused_before_connecting(web_server, monkeypatch):
    """Treat only 127.0.0.1 as "public" so the loopback server can play the outside world: its
    redirect to another loopback address (or the metadata service) is refused, unconnected."""
    base, hits = web_server
    real = fetch.is_forbidden_address
    monkeypatch.setattr(fetch, "is_forbidden_address", lambda ip: str(ip) != "127.0.0.1" and real(ip))
    policy = fetch.FetchPolicy(timeout=20.0, max_bytes=10_000)
    assert (await fetch.fetch_page(base + "/ok", policy)).data
    second = ThreadingHTTPServer(("127.0.0.2", 0), _Discord401)
    threading.Thread(target=second.serve_forever, daemon=True).start()
    try:
        for target in (f"127.0.0.2:{second.server_address[1]}/x", "169.254.169.254/latest/meta-data/"):
            with pytest.raises(ArticleError, match="private or local"):
                await fetch.fetch_page(f"{base}/to/{target}", policy)
    finally:
        second.shutdown()
        second.server_close()
    assert hits == ["/ok", "/to/" + f"127.0.0.2:{second.server_address[1]}/x", "/to/169.254.169.254/latest/meta-data/"]


# --- who may manage articles (the simulated Discord) ----------------------------------------------------

dpytest = pytest.importorskip("discord.ext.test")
from conftest import make_settings, mock_interaction, said  # noqa: E402

IMPORTS_PER_HOUR = 2


class Options(SimpleNamespace):
    """A slash command's options as discord.py reads them: attributes, and (name, value) pairs."""

    def __iter__(self):
        return iter(self.__dict__.items())


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, imports_per_admin_per_hour=IMPORTS_PER_HOUR, max_article_bytes=1_000)


def text_of(messages) -> str:
    return "\n".join((m.content or "") + "".join((e.title or "") + (e.description or "") for e in m.embeds) for m in messages)


@pytest.fixture
async def server_a_article(fake, library):
    """Server A's own article, added by its admin."""
    error, sent = await said(
        "!article add The lighthouse at Marrow Point was restored with a new lamp in May, the trust said. --title Lighthouse",
        fake.channel_a,
        fake.admin_a,
    )
    assert error is None and "Stored article" in text_of(sent)
    infos = await library.list(scopes=[fake.guild_a.id])
    assert [i.title for i in infos] == ["Lighthouse"]
    return infos[0]


def admin_commands(article_id: int) -> list[str]:
    return [
        "!article add The ferry strike ended on Friday after talks, the union said. --title Ferry",
        f"!article remove {article_id}",
        "!article list",
        f"!article show {article_id}",
        "!article",
    ]


async def library_state(library) -> list[tuple]:
    return [(i.id, i.scope, i.title) for i in await library.store.list_articles(None, limit=-1)]


@pytest.mark.parametrize("which", range(5), ids=["add", "remove", "list", "show", "group"])
async def test_a_member_without_permission_is_refused_every_article_command(fake, library, server_a_article, which):
    before = await library_state(library)
    command = admin_commands(server_a_article.id)[which]
    error, sent = await said(command, fake.channel_a, fake.member_a)
    assert type(error).__name__ == "NotManager", error
    assert "Manage Server" in text_of(sent) and "Lighthouse" not in text_of(sent)
    assert await library_state(library) == before


@pytest.mark.parametrize("which", range(5), ids=["add", "remove", "list", "show", "group"])
async def test_an_admin_of_another_server_is_refused_in_this_one(fake, library, server_a_article, which):
    before = await library_state(library)
    visitor = await dpytest.member_join(fake.guild_a, fake.admin_b._user)  # a plain member here
    error, sent = await said(admin_commands(server_a_article.id)[which], fake.channel_a, visitor)
    assert type(error).__name__ == "NotManager", error
    assert "Lighthouse" not in text_of(sent)
    assert await library_state(library) == before


async def test_an_admin_of_another_server_cannot_reach_this_servers_articles_from_their_own(fake, library, server_a_article):
    before = await library_state(library)
    for command in (f"!article remove {server_a_article.id}", f"!article show {server_a_article.id}"):
        error, sent = await said(command, fake.channel_b, fake.admin_b)
        assert f"No article {server_a_article.id} here" in text_of(sent), command
    error, sent = await said("!article list", fake.channel_b, fake.admin_b)
    assert "Lighthouse" not in text_of(sent)
    assert await library_state(library) == before
    # What they add goes to their own server, and answers only there.
    error, sent = await said("!article add The ferry strike ended on Friday after talks, the union said. --title Ferry", fake.channel_b, fake.admin_b)
    assert error is None
    added = [row for row in await library_state(library) if row not in before]
    assert [(scope, title) for _, scope, title in added] == [(fake.guild_b.id, "Ferry")]
    error, sent = await said("!ask When did the ferry strike end?", fake.channel_a, fake.member_a)
    assert "union" not in text_of(sent)


async def test_only_the_owner_may_sync_commands(fake):
    for member, channel in ((fake.member_a, fake.channel_a), (fake.admin_a, fake.channel_a), (fake.admin_b, fake.channel_b)):
        error, sent = await said("!sync global", channel, member)
        assert type(error).__name__ == "NotOwner"
        assert "Only the bot owner" in text_of(sent)


@pytest.mark.parametrize("name", ["add", "remove", "list", "show"])
async def test_the_slash_path_checks_permissions_too(fake, library, server_a_article, name):
    """default_permissions only hides a slash command; the check must hold when it is invoked."""
    group = fake.bot.get_command("article")
    command = group.get_command(name)
    before = await library_state(library)
    interaction = mock_interaction(fake.bot, fake.member_a, fake.channel_a, command)
    if name in ("remove", "show"):
        interaction.namespace = Options(article_id=server_a_article.id)
    else:
        interaction.namespace = Options()
    # What the command tree does when Discord delivers the interaction.
    await command.app_command._invoke_with_namespace(interaction, interaction.namespace)
    await dpytest.empty_queue()
    while not dpytest.error_queue.empty():
        await dpytest.error_queue.get()
    sends = interaction.response.send_message.await_args_list + interaction.followup.send.await_args_list
    shown = " ".join(str(c.kwargs.get("content")) for c in sends)
    assert "Manage Server" in shown, sends
    assert "Lighthouse" not in shown
    assert await library_state(library) == before


async def test_imports_per_admin_per_hour_are_limited(fake, library):
    stored = 0
    for i in range(IMPORTS_PER_HOUR + 1):
        error, sent = await said(
            f"!article add Barge {i} docked at the quay at noon with timber, the harbour master said. --title Barge {i}",
            fake.channel_a,
            fake.admin_a,
        )
        if "Stored article" in text_of(sent):
            stored += 1
    assert stored == IMPORTS_PER_HOUR
    assert "Slow down" in text_of(sent)
    assert len(await library.list(scopes=[fake.guild_a.id])) == IMPORTS_PER_HOUR
    # Another admin has their own allowance.
    error, sent = await said("!article add The canal reopened on Monday, the trust said. --title Canal", fake.channel_b, fake.admin_b)
    assert "Stored article" in text_of(sent)


async def test_an_attachment_over_the_size_limit_is_refused_before_it_is_downloaded(fake):
    from unittest.mock import AsyncMock, MagicMock

    from discord.ext import commands

    cog = fake.bot.get_cog("Articles")
    for filename, size in (("big.txt", 5_000), ("tool.exe", 10), ("noext", 10)):
        attachment = MagicMock(filename=filename, size=size)
        attachment.read = AsyncMock(return_value=b"x")
        with pytest.raises(commands.BadArgument):
            await cog._add_attachment(attachment, fake.guild_a.id, "1", Metadata())
        attachment.read.assert_not_awaited()


async def test_the_slash_path_lets_the_servers_admin_in(fake, library, server_a_article):
    """The control for the test above: the same call by server A's admin lists its article."""
    command = fake.bot.get_command("article").get_command("list")
    interaction = mock_interaction(fake.bot, fake.admin_a, fake.channel_a, command)
    interaction.namespace = Options()
    await command.app_command._invoke_with_namespace(interaction, interaction.namespace)
    sends = interaction.response.send_message.await_args_list + interaction.followup.send.await_args_list
    shown = " ".join(e.description or "" for c in sends for e in c.kwargs.get("embeds") or [])
    assert "Lighthouse" in shown, sends
