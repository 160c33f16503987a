"""Hostile or broken input: members and admins paste anything. Property tests (hypothesis)
throw arbitrary Unicode, huge lines and broken HTML at the importer, the sentence splitter,
the question tokeniser and the Discord renderer: nothing raises except the one error meant
for users, and what reaches Discord stays within its limits, pings nobody and carries no live
Markdown from an article."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bot.core.answers import Answer, Passage, QuestionError
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError, ArticleInfo
from bot.core.importers import Metadata, parse_bytes
from bot.core.library import Added, ImportSummary, Library, Limits
from bot.core.sentences import article_sentences, split_sentences
from bot.core.tokens import tokenize

LIMIT = 2_000_000
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW_PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Every example hypothesis generated in this module, for the report.
GENERATED: dict[str, int] = {}


def count(name: str) -> None:
    GENERATED[name] = GENERATED.get(name, 0) + 1


# --- strategies -----------------------------------------------------------------------------------

CONTROL = [chr(c) for c in range(0, 32)] + ["\x7f", "\x85"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"]
BIDI = ["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u20dd", "\u0489"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇰🇵", "❤️", "🫠", "\U0001f9d1\u200d\U0001f680"]
SPACES = [" ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u2028", "\u2029", "\u3000", "\u2003"]
MARKUP = ["*", "**", "_", "__", "~~", "||", "`", "```", ">", ">>> ", "# ", "-# ", "- ", "1. ", "\\", "[", "]", "(", ")", "<", ">", "|"]
MENTIONS = ["@everyone", "@here", "<@123456789012345678>", "<@!123456789012345678>", "<@&987654321098765432>", "<#123456789012345678>"]
LINKS = ["[click here](https://evil.example/phish)", "[x](<https://evil.example>)", "https://example.org/a_b*c*", "<https://example.org/x>"]
WORDS = "the harbour reopened storm council bridge river footage Kim Pyongyang said officials Dr. U.S. 3.5 percent don't cross-border Café naïve".split()
SQL = ["'); DROP TABLE articles;--", "\" OR 1=1 --", "'; DELETE FROM sentences; --", "%", "_", "?"]

piece = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(CONTROL + INVISIBLE + BIDI + COMBINING + EMOJI + SPACES + MARKUP + MENTIONS + LINKS + SQL),
    st.sampled_from([".", "!", "?", "…", ",", ";", ":", '"', "'", "”", "’", "(", ")"]),
    st.text(min_size=1, max_size=8),  # any code point but surrogates
)
hostile_text = st.lists(piece, max_size=60).map(" ".join) | st.lists(piece, max_size=60).map("".join)
huge_line = st.builds(lambda unit, n: unit * n, st.sampled_from(["word ", "x", "Mr. ", "a.b.", "😀", "\u0301", "ab" * 50]), st.integers(1000, 30_000))
any_text = st.one_of(hostile_text, hostile_text, st.text(max_size=300), huge_line, st.sampled_from(["", " ", "\n\n\n", "\t \u00a0 \u3000", "."]))

TAGS = ["div", "p", "span", "article", "section", "b", "i", "table", "tr", "td", "ul", "li", "script", "style", "title", "svg"]


@st.composite
def nested_html(draw) -> str:
    depth = draw(st.integers(0, 400))
    tags = draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=5))
    opening = "".join(f"<{tags[i % len(tags)]}>" for i in range(depth))
    closing = "".join(f"</{tags[i % len(tags)]}>" for i in reversed(range(depth)))
    inner = draw(hostile_text)
    html = f"<!doctype html><html><head><title>{draw(hostile_text)}</title></head><body>{opening}<p>{inner}</p>{closing}</body></html>"
    cut = draw(st.integers(0, len(html)))
    return html if draw(st.booleans()) else html[:cut]  # truncated anywhere


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


any_bytes = st.one_of(
    st.binary(max_size=2000),
    any_text.map(as_bytes),
    nested_html().map(as_bytes),
    st.builds(lambda b, t: b + as_bytes(t), st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"PK\x03\x04", b"GIF89a"]), any_text),
)
NAMES = ["upload.txt", "upload.md", "upload.html", "upload.htm", "bulk.jsonl", "noext", "photo.png.txt", "../../etc/passwd.txt", "x" * 300 + ".md"]


# --- the importer ---------------------------------------------------------------------------------


def _check_items(items) -> None:
    for item in items:
        assert isinstance(item.where, str)
        assert (item.draft is None) != (item.error is None)
        if item.draft is not None:
            assert isinstance(item.draft.title, str) and isinstance(item.draft.body, str)
            # A stored draft must survive the rest of the pipeline too.
            for record in article_sentences(item.draft.title, item.draft.body, item.draft.caption):
                source = item.draft.title if record.kind == "title" else item.draft.body
                assert source[record.start : record.end] == record.text


@PROPS
@given(data=any_bytes, name=st.sampled_from(NAMES))
@example(data=b"", name="upload.txt")
@example(data=b"<html><body>" + b"<div>" * 5000 + b"deep" + b"</div>" * 10, name="upload.html")
@example(data="\u202eevil\u202c title\n\nThe harbour reopened on Wednesday.".encode(), name="upload.txt")
def test_the_importer_never_raises_anything_but_a_message_for_the_user(data, name):
    count("importer")
    try:
        items = parse_bytes(data, name, Metadata(), max_bytes=LIMIT)
    except ArticleError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    _check_items(items)


@SLOW_PROPS
@given(html=nested_html(), name=st.sampled_from(["page.html", "page.txt", "noext"]))
@example(html="<html><body>" + "<div>" * 3000 + "<p>The harbour reopened on Wednesday after the storm.</p>", name="page.html")
def test_deeply_nested_or_truncated_html_is_read_or_refused_plainly(html, name):
    count("html")
    try:
        items = parse_bytes(as_bytes(html), name, max_bytes=LIMIT)
    except ArticleError:
        return
    _check_items(items)


@PROPS
@given(lines=st.lists(st.one_of(any_text, st.dictionaries(st.sampled_from(["title", "text", "source", "scope", "format", "caption", "url"]), st.one_of(any_text, st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.just("quotebot-export-1"))).map(json.dumps)), max_size=8))
def test_json_lines_with_any_lines_report_per_line_and_never_raise(lines):
    count("jsonl")
    # Known gap, tested on its own below: our export format with a non-text field.
    assume(not any(_bad_export_line(line) for line in lines))
    data = as_bytes("\n".join(['{"title": "ok", "text": "The harbour reopened."}', *lines]))
    try:
        items = parse_bytes(data, "bulk.jsonl", max_bytes=LIMIT)
    except ArticleError:
        return
    _check_items(items)


def _bad_export_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return (
        isinstance(record, dict)
        and record.get("format") == "quotebot-export-1"
        and any(
            record.get(k) is not None and not isinstance(record.get(k), str)
            for k in ("title", "source", "author", "url", "published", "caption")
        )
    )


BAD_EXPORT_LINES = [
    '{"format": "quotebot-export-1", "text": "The harbour reopened on Wednesday.", "title": 0}',
    '{"format": "quotebot-export-1", "text": "The harbour reopened on Wednesday.", "title": "ok", "source": ["x"]}',
    '{"format": "quotebot-export-1", "text": "The harbour reopened on Wednesday.", "title": "ok", "caption": 5}',
]


@pytest.mark.parametrize("line", BAD_EXPORT_LINES)
async def test_an_export_line_with_non_text_fields_fails_alone_and_the_rest_loads(tmp_path, line):
    """A crafted "export" line must be one failed line, not a crash of the whole import."""
    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        good = '{"title": "Harbour", "text": "The harbour at Kestrel Bay reopened on Wednesday."}'
        summary = await lib.add_bytes(as_bytes(line + "\n" + good), "bulk.jsonl", scope=0, added_by="t")
        assert [a.article.title for a in summary.added] == ["Harbour"]
        assert [where for where, _ in summary.failed] == ["bulk.jsonl:1"]
    finally:
        await lib.close()


# --- the sentence splitter and the tokeniser ------------------------------------------------------------


@PROPS
@given(text=any_text)
@example(text="Mr. Kim met U.S. envoys.\u2028Then he left.\u2029\u2029A new paragraph\u00a0here.")
@example(text="\u0301\u0301\u0301. \u200b. \ufeff?")
def test_sentences_are_exact_slices_of_the_source_in_order(text):
    count("splitter")
    spans = split_sentences(text)
    last_end = 0
    for span in spans:
        assert text[span.start : span.end] == span.text
        assert span.text.strip()
        assert span.start >= last_end
        last_end = span.end
    paragraphs = [s.paragraph for s in spans]
    assert paragraphs == sorted(paragraphs)


@PROPS
@given(text=any_text)
def test_no_word_of_the_article_is_dropped_by_the_splitter(text):
    """Every non-space character lies inside some sentence: nothing said is lost to search."""
    count("coverage")
    spans = split_sentences(text)
    covered = bytearray(len(text))
    for span in spans:
        covered[span.start : span.end] = b"\x01" * (span.end - span.start)
    lost = [ch for i, ch in enumerate(text) if not covered[i] and not ch.isspace() and ch.strip()]
    assert lost == [], repr(lost[:20])


@PROPS
@given(text=any_text)
@example(text="İstanbul ǅemal ﬁnance Ⅻ ẞ ß ﬀ ｆｕｌｌ ㎏ ℌ \u0345")
def test_the_tokeniser_never_raises_and_gives_words_that_survive_storage(text):
    count("tokeniser")
    tokens = tokenize(text)
    assert all(isinstance(t, str) and t for t in tokens)
    # Tokens are stored space-joined and split again on reload: they must round-trip.
    assert " ".join(tokens).split() == tokens
    assert tokenize(text) == tokens  # deterministic


@pytest.fixture(scope="module")
def loop_and_library(tmp_path_factory):
    loop = asyncio.new_event_loop()
    db = tmp_path_factory.mktemp("hostile") / "library.sqlite3"
    library = loop.run_until_complete(Library.open(db, limits=Limits(max_question_chars=500)))
    for i, body in enumerate(
        [
            "The harbour at Kestrel Bay reopened on Wednesday after the storm, officials said.",
            "Rare footage from Pyongyang was released by a pastor, Kim, on Thursday.",
            "The council approved a new bridge over the river for 3.5 million dollars.",
            "Café owners in the old town said the cross-border trade had doubled.",
        ]
    ):
        loop.run_until_complete(library.add_draft(ArticleDraft(title=f"Story {i}", body=body), scope=GLOBAL_SCOPE, added_by="t"))
    yield loop, library
    loop.run_until_complete(library.close())
    loop.close()


@PROPS
@given(question=any_text, guild=st.sampled_from([None, 1, 2**63 - 1]))
@example(question="'); DROP TABLE articles;--", guild=None)
@example(question="harbour " * 100, guild=1)
def test_any_question_is_answered_or_refused_plainly(loop_and_library, question, guild):
    count("questions")
    loop, library = loop_and_library
    try:
        answer = loop.run_until_complete(library.ask(question, guild_id=guild))
    except QuestionError as exc:
        assert str(exc)
        return
    assert answer.answered or answer.declined
    for passage in answer.passages:
        assert passage.text


# --- the Discord renderer ---------------------------------------------------------------------------

from bot.cogs import rendering  # noqa: E402

LIVE_MENTION = re.compile(r"@(?:everyone|here)|<@[!&]?\d{17,20}>")


def live_mentions(text: str | None) -> list[str]:
    return LIVE_MENTION.findall(text or "")


def _mask_escapes(text: str) -> str:
    """`text` with every backslash-escaped character (and its backslash) blanked out."""
    return re.sub(r"\\[\s\S]", "\x00\x00", text)


def live_links(rendered: str) -> list[str]:
    """Masked links `[text](url)` Discord would render. Only an escaped `[` stops one: Discord's
    link rule reads `\\]` inside the link text as a backslash and a closing bracket."""
    masked = _mask_escapes(rendered)  # an escaped "[" is blanked out here, so never found
    found = []
    for start in (m.start() for m in re.finditer(r"\[", masked)):
        link = re.match(r"\[[^\[]*?\]\(", rendered[start:])
        if link:
            found.append(link.group())
    return found


def live_markdown(rendered: str) -> list[str]:
    """Markdown in `rendered` that Discord would act on, apart from the renderer's own `**`
    around matched words (pass text rendered without terms to check those too)."""
    import discord.utils

    text = re.sub(discord.utils._URL_REGEX, "", rendered)  # bare links are shown as links, not Markdown
    masked = _mask_escapes(text)
    return [ch for ch in masked if ch in "*_~|`"] + live_links(text)


def all_texts(reply) -> list[str]:
    out = [reply.content or ""]
    for embed in reply.embeds:
        out += [embed.title or "", embed.description or "", embed.footer.text or ""]
        out += [f.name or "" for f in embed.fields] + [f.value or "" for f in embed.fields]
    return out


def quote_of(embed) -> str:
    """The article text of a passage embed: its first line, after the block-quote marker."""
    first = (embed.description or "").split("\n", 1)[0]
    if first == "…":  # a first word too long for the embed is shown as an ellipsis alone
        return ""
    assert first.startswith("> ")
    return first[2:]


meta_text = st.one_of(st.none(), hostile_text.map(lambda s: s[:300]), st.sampled_from(MENTIONS + LINKS + SQL + ["x" * 10_000]))
url_text = st.one_of(st.none(), st.sampled_from(["https://example.org/a_(b)", "javascript:alert(1)", "https://x/<@&1>", "http://[::1]/", "ftp://x", "https://example.org/" + "a" * 3000]), hostile_text)


@st.composite
def passages(draw, n_max: int = 10) -> list[Passage]:
    out = []
    for i in range(draw(st.integers(1, n_max))):
        text = draw(st.one_of(hostile_text, huge_line).filter(lambda s: s.strip()))
        out.append(
            Passage(
                article_id=draw(st.integers(1, 2**62)),
                title=draw(st.one_of(hostile_text, st.just("x" * 10_000))) or "t",
                source=draw(meta_text),
                url=draw(url_text),
                published=draw(meta_text),
                text=text,
                score=1.0,
            )
        )
    return out


@PROPS
@given(found=passages(), question=hostile_text)
@example(found=[Passage(1, "@everyone", "<@&987654321098765432>", None, None, "Ping @here and <@123456789012345678> now.", 1.0)], question="ping now")
def test_a_rendered_answer_fits_discord_and_pings_nobody(found, question):
    count("renderer")
    answer = Answer(question, tuple(found), frozenset(tokenize(question)))
    reply = rendering.answer_reply(answer)
    rendering.check_limits(reply)
    for text in all_texts(reply):
        assert live_mentions(text) == [], text[:300]
    assert reply.kwargs()["allowed_mentions"].everyone is False


@PROPS
@given(found=passages(n_max=3))
@example(found=[Passage(1, "t", None, None, None, "**bold** __under__ ~~strike~~ ||spoiler|| `code` > quote # head", 1.0)])
@example(found=[Passage(1, "t", None, None, None, "Read [click here](https://evil.example/phish) now.", 1.0)])
def test_article_text_in_a_rendered_answer_carries_no_live_markdown(found):
    count("renderer-markdown")
    reply = rendering.answer_reply(Answer("q", tuple(found), frozenset()))
    for embed in reply.embeds:
        assert live_markdown(quote_of(embed)) == [], quote_of(embed)[:300]


# Two cases the property found (fixed in rendering.escape_markdown): discord.utils.escape_markdown
# escapes only the first masked link of a text, and bolding a matched word split a link so that
# escape_markdown missed it.
MASKED_LINK_CASES = [
    ("Read [this](https://a.example) and [click here](https://evil.example/phish) now.", frozenset()),
    ("Read the [click here](https://evil.example/phish) notice now.", frozenset(tokenize("click"))),
]


@pytest.mark.parametrize("text, terms", MASKED_LINK_CASES)
def test_a_masked_link_in_article_text_is_never_live(text, terms):
    reply = rendering.answer_reply(Answer("q", (Passage(1, "t", None, None, None, text, 1.0),), terms))
    quote = quote_of(reply.embeds[0])
    assert live_links(quote.replace("**", "")) == [], quote


@PROPS
@given(
    title=hostile_text | st.just("x" * 10_000),
    source=meta_text,
    author=meta_text,
    url=url_text,
    published=meta_text,
    first=st.lists(hostile_text, max_size=3),
    added_by=st.one_of(st.none(), st.sampled_from(["123456789012345678", "cli", "corpus", "@everyone"])),
)
def test_article_cards_lists_and_import_reports_fit_and_ping_nobody(title, source, author, url, published, first, added_by):
    count("renderer-articles")
    info = ArticleInfo(7, 5, title or "t", source, author, url, published, None, added_by, "2026-01-01T00:00:00+00:00", 3)
    replies = [
        rendering.article_reply(info, first),
        rendering.article_list_reply([info] * 10, 1, 3, 25, "Next: !article list 2"),
        rendering.import_reply(
            ImportSummary(
                added=[Added(info, 3)] * 7,
                duplicates=[(title or "t", 3)] * 6,
                failed=[(source or "f", title or "reason")] * 6,
            )
        ),
        rendering.removed_reply(info),
    ]
    for reply in replies:
        rendering.check_limits(reply)
        for text in all_texts(reply):
            # The card's "Added by <@id>" is our own user mention in an embed field: it shows a
            # name and never pings (and AllowedMentions.none() is on every send).
            text = re.sub(r"by <@\d+>$", "", text)
            assert live_mentions(text) == [], text[:300]


@PROPS
@given(text=hostile_text | huge_line)
def test_escape_leaves_no_markdown_and_no_mention(text):
    count("escape")
    out = rendering.escape(text)
    assert live_mentions(out) == []
    assert live_markdown(out) == [], out[:300]


# --- admin input through the library -------------------------------------------------------------------

ADMIN_VALUES = [
    "[Official statement](https://evil.example/login)",
    "@everyone read this",
    "<@&987654321098765432> <@123456789012345678>",
    "'); DROP TABLE articles;--",
    "Robert'); DELETE FROM sentences WHERE ('1'='1",
    "**bold** __x__ ||spoiler|| `code`",
    "\u202eelbisivni\u202c \u200b\u200b",
    "T" * 10_000,
]


@pytest.fixture
async def library(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3", limits=Limits(max_article_bytes=100_000))
    for topic in ("school", "railway", "museum", "festival"):
        await lib.add_draft(
            ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday about the {topic} budget."),
            scope=GLOBAL_SCOPE,
            added_by="t",
        )
    yield lib
    await lib.close()


@pytest.mark.parametrize("value", ADMIN_VALUES)
async def test_hostile_titles_and_sources_are_stored_exactly_and_rendered_safely(library, value):
    body = b"The lighthouse at Marrow Point was restored with a new lamp in May, the trust said."
    summary = await library.add_bytes(
        body, "note.txt", scope=42, added_by="123456789012345678", meta=Metadata(title=value, source=value, published=value)
    )
    assert len(summary.added) == 1, summary
    info = summary.added[0].article
    assert (info.title, info.source, info.published) == (value, value, value)
    answer = await library.ask("What was restored at Marrow Point?", guild_id=42)
    assert answer.passages and answer.passages[0].title == value
    with sqlite3.connect(library.store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0] == 5
    replies = [
        rendering.answer_reply(answer),
        rendering.article_reply(info, await library.first_sentences(info.id)),
        rendering.import_reply(summary),
        rendering.article_list_reply(await library.list(scopes=[42]), 1, 1, 1, ""),
        rendering.removed_reply(info),
    ]
    for reply in replies:
        rendering.check_limits(reply)
        for text in all_texts(reply):
            assert live_mentions(re.sub(r"by <@\d+>$", "", text)) == [], text[:200]
    # The title is shown as the escaped link text of the source line, never as a live link.
    source_line = replies[0].embeds[0].description.split("\n", 1)[1]
    assert live_links(source_line) == [], source_line


MISLABELLED = [
    ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4),
    ("report.md", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(128, 256)) * 8),
    ("archive.html", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(200)),
    ("story.txt", "The harbour reopened on Wednesday after the storm.".encode("utf-16")),
    ("story.jsonl", "Caf\u00e9 owners said trade doubled across the border.".encode("latin-1")),
    ("page.txt", b"<!doctype html><html><body><article><p>The harbour at Kestrel Bay reopened on Wednesday after the storm closed it, the port authority said.</p></article></body></html>"),
    ("notes.html", b"Just plain words about the harbour at Kestrel Bay reopening on Wednesday after the storm."),
    ("bulk.md", b'{"title": "Harbour", "text": "The harbour at Kestrel Bay reopened on Wednesday after the storm."}\n'),
    ("empty.md", b"\n\n   \n"),
    ("script.html", b"<html><body><script>alert('x')</script><style>p{}</style></body></html>"),
    ("gzip.txt", b"\x1f\x8b\x08\x00" + bytes(300)),
    ("exe.txt", b"MZ\x90\x00\x03" + bytes(500)),
]


@pytest.mark.parametrize("name, data", MISLABELLED, ids=[n for n, _ in MISLABELLED])
async def test_an_attachment_that_is_not_what_its_name_says_is_read_by_content_or_refused(library, name, data):
    before = await library.store.count_articles()
    try:
        summary = await library.add_bytes(data, name, scope=42, added_by="1")
    except ArticleError as exc:
        assert str(exc)
        assert await library.store.count_articles() == before
        return
    for added in summary.added:
        # Whatever was stored is readable text, never binary junk.
        assert "\x00" not in added.article.title
        assert "Kestrel Bay" in (await library.store.article_text(added.article.id))[1]
    assert await library.store.count_articles() == before + len(summary.added)


USER_CAUSED_ERRORS = [
    ArticleError("@everyone.txt is empty."),
    ArticleError("<@&987654321098765432>.md is not UTF-8 text (bad byte at offset 3)."),
    QuestionError("@here"),
]


@pytest.mark.parametrize("error", USER_CAUSED_ERRORS, ids=str)
def test_an_error_reply_naming_a_users_file_does_not_carry_a_mention(error):
    from bot.cogs.errors import user_message

    reply = rendering.message_reply(user_message(None, error))
    assert reply.kwargs()["allowed_mentions"].everyone is False  # never pings either way
    assert live_mentions(reply.content) == [], reply.content


def test_report_generated_counts():
    """Not a check: prints how many hostile inputs this module generated (for the issue's report)."""
    print("hostile inputs generated:", sum(GENERATED.values()), GENERATED)


# --- hostile uploads: linear parsing, deadlines, every bad item alone (issue 13) -----------------------

from bot.core import preparing  # noqa: E402
from bot.core.sentences import MAX_SENTENCE_CHARS  # noqa: E402
from conftest import index_agrees_with_database  # noqa: E402

STORY = "The harbour at Kestrel Bay reopened on Wednesday after the storm, the port authority said.\n\n"
ALIAS_BOMB = (
    "---\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\ntitle: *i\n---\n" + STORY
)

# Uploads that used to take seconds to hours (quadratic regexes, list copies, rescans, libxml2's
# attribute check, NFKC expansion); each must now be stored with its story intact.
HOSTILE_UPLOADS = {
    "a line of 50,000 [": ("note.md", "# Brackets\n\n" + STORY + "[" * 50_000 + "\n", "Kestrel Bay"),
    "unclosed emphasis": ("note.md", "# Stars\n\n" + STORY + "*a " * 30_000 + "\n", "Kestrel Bay"),
    "30,000 debris lines": ("page.txt", "Home | News | Sport\n\nShare\n\n" * 15_000 + "Storm news\n\n" + STORY + "Share\n\n" * 15_000, "Kestrel Bay"),
    "wrapped lines, no full stop": ("story.txt", "Harbour week\n\n" + "and the harbour stayed closed for the whole week\n" * 20_000, "stayed closed"),
    "40,000 attributes": ("page.html", "<html><body><article><p " + " ".join(f"a{i}=x" for i in range(40_000)) + ">" + STORY + "</p></article></body></html>", "Kestrel Bay"),
    "NFKC bomb": ("story.txt", "Ligatures\n\n" + STORY + "\ufdfa" * 100_000, "Kestrel Bay"),
}


@pytest.mark.parametrize("case", HOSTILE_UPLOADS, ids=list(HOSTILE_UPLOADS))
async def test_an_admin_uploads_a_hostile_file_and_it_is_stored_whole_and_answerable(tmp_path, case):
    name, text, phrase = HOSTILE_UPLOADS[case]
    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        summary = await lib.add_bytes(text.encode(), name, scope=7, added_by="admin")
        assert len(summary.added) == 1, summary
        article_id = summary.added[0].article.id
        title, body = await lib.store.article_text(article_id)
        assert phrase in body
        # No sentence grows without bound: a page without a full stop is quoted in pieces.
        sentences = await lib.store.sentences_of(article_id, limit=10_000)
        assert sentences and max(len(s.text) for s in sentences) <= MAX_SENTENCE_CHARS
        assert any(phrase in s.text for s in sentences)
    finally:
        await lib.close()


async def test_a_story_paragraph_with_slashes_is_kept_and_dropped_debris_is_counted(tmp_path):
    """Issue 10: coordinates written with " / " are story text, not a breadcrumb; the lines that
    are dropped as debris are counted in the reply and kept on the draft."""
    page = (
        "Home | World | Sport\n\nShare\n\n"
        "Lake town\n\n"
        "Friedrichshafen lies on the northern shore of Lake Constance at "
        "47°39′N 9°19′E / 47.650°N 9.317°E / 47.650; 9.317.\n\n"
        "Follow us on Twitter\n\nBack to top"
    )
    items = parse_bytes(page.encode(), "town.txt", max_bytes=LIMIT)
    draft = items[0].draft
    assert draft.title == "Lake town"
    assert "47.650°N 9.317°E / 47.650; 9.317." in draft.body
    assert draft.dropped == ("Home | World | Sport", "Share", "Follow us on Twitter", "Back to top")

    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        summary = await lib.add_bytes(page.encode(), "town.txt", scope=7, added_by="admin")
        assert summary.line() == "added 1 (dropped 4 lines of page debris), duplicates 0, failed 0"
        assert summary.added[0].dropped == draft.dropped
        # Kept with the article, so a manager can see later what was left out.
        assert await lib.dropped_lines(summary.added[0].article.id) == list(draft.dropped)
        # A lone coordinates paragraph is an article too, not "a title but no text".
        alone = await lib.add_bytes("Coordinates\n\n47°39′N 9°19′E / 47.650°N 9.317°E / 47.650; 9.317.".encode(), "c.txt", scope=7, added_by="admin")
        assert len(alone.added) == 1
    finally:
        await lib.close()


FRONT_MATTER_BAD = {
    "alias.md": (ALIAS_BOMB, "alias"),
    "date.md": ("---\ntitle: Leap\npublished: 2014-02-30\n---\n" + STORY, "2014-02-30 is not a date"),
    "digits.md": ("---\ntitle: " + "9" * 5_000 + "\n---\n" + STORY, "title is 5,000 characters"),
    "brackets.md": ("---\ntitle: " + "[" * 20_000 + "\n---\n" + STORY, "longer than 16,384 characters"),
    "nested.md": ("---\ntitle: " + "[" * 10_000 + "\n---\n" + STORY, "nested more than"),
    "list.md": ("---\ntitle: [one, two]\n---\n" + STORY, "one line of text"),
}


def test_a_373_byte_alias_bomb_is_refused_before_anything_is_built():
    assert len(ALIAS_BOMB.split("---\n" + STORY)[0]) < 400
    with pytest.raises(ArticleError, match="alias"):
        parse_bytes(ALIAS_BOMB.encode(), "bomb.md", max_bytes=LIMIT)


@pytest.mark.parametrize("name", FRONT_MATTER_BAD)
def test_bad_front_matter_fails_with_a_message_that_names_the_problem(name):
    text, message = FRONT_MATTER_BAD[name]
    with pytest.raises(ArticleError, match=message):
        parse_bytes(text.encode(), name, max_bytes=LIMIT)


def _json_lines(n: int) -> list[str]:
    return [json.dumps({"title": f"Ferry {i}", "text": f"Ferry {i} left the quay at Kestrel Bay at dawn on day {i}."}) for i in range(n)]


async def test_an_operator_imports_a_folder_of_bad_items_and_each_fails_alone_by_name(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    for name, (text, _) in FRONT_MATTER_BAD.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "mr.txt").write_text("Misters\n\n" + STORY + "Mr. " * 100_000)
    lines = _json_lines(1_000)
    lines[10] = '{"title": "Half", "text": "A lone surrogate \\ud800 is not text."}'
    lines[20] = "[" * 100_000
    lines[30] = '{"title": 1' + "0" * 5_000 + ', "text": "x"}'
    (folder / "feed.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "good.txt").write_text("Harbour\n\n" + STORY)

    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        summary = await lib.import_paths([folder], scope=7, added_by="cli")
        failed = dict(summary.failed)
        for name, (_, message) in FRONT_MATTER_BAD.items():
            assert re.search(message, failed[str(folder / name)]), failed
        feed = str(folder / "feed.jsonl")
        assert "surrogate" in failed[f"{feed}:11"] and "nested too deeply" in failed[f"{feed}:21"]
        assert failed[f"{feed}:31"] == "not valid JSON"
        # 997 good lines of the feed (the bad one did not roll back its batch), good.txt, and the
        # Mr. file either split or refused for its time, alone.
        titles = {a.article.title for a in summary.added}
        assert {f"Ferry {i}" for i in range(1_000) if i not in (10, 20, 30)} | {"Harbour"} <= titles
        assert len(summary.added) + len(summary.failed) == 997 + 1 + 1 + len(FRONT_MATTER_BAD) + 3
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


def test_a_json_lines_file_whose_first_line_is_broken_is_still_json_lines():
    for name in ("feed.jsonl", "feed.txt"):
        data = ('{"title": "Broken", "text": "no closing brace"\n' + "\n".join(_json_lines(3))).encode()
        items = parse_bytes(data, name, max_bytes=LIMIT)
        assert [i.where for i in items if i.error] == [f"{name}:1"]
        assert [i.draft.title for i in items if i.draft] == ["Ferry 0", "Ferry 1", "Ferry 2"]


async def test_an_article_past_its_deadline_fails_alone_and_the_next_one_is_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(preparing, "SPLIT_SECONDS", 0.5)
    slow = ArticleDraft(title="Misters", body="Mr. " * 200_000 + "Kim.")
    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        with pytest.raises(ArticleError, match="took longer than 0.5 s"):
            await lib.add_draft(slow, scope=7, added_by="admin")
        # The worker that ran it was replaced: the next article goes through at once.
        added = await lib.add_draft(ArticleDraft(title="Harbour", body=STORY), scope=7, added_by="admin")
        assert added.sentence_count >= 2
        assert await lib.store.count_articles(7) == 1
    finally:
        await lib.close()


def _children() -> set[int]:
    import os

    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            kids.add(int(stat.parent.name))
    return kids


async def test_cancelling_an_import_stops_its_worker_and_members_are_answered_meanwhile(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3", corpus_dir=Path(__file__).resolve().parents[1] / "corpus")
    try:
        before = _children()
        upload = asyncio.create_task(lib.add_bytes(("Misters\n\n" + "Mr. " * 400_000).encode(), "mr.txt", scope=7, added_by="admin"))
        await asyncio.sleep(0.5)
        # While the upload is split in a worker process, a member's question is answered.
        answer = await lib.ask("Who released the footage?", guild_id=7)
        assert answer.passages and "Kim" in answer.passages[0].text and not upload.done()
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        for _ in range(100):  # the worker that ran the upload is killed (and replaced)
            if before - _children():
                break
            await asyncio.sleep(0.05)
        assert before - _children(), "the worker splitting the cancelled upload is still running"
        assert await lib.store.count_articles(7) == 0
    finally:
        await lib.close()


async def test_a_page_declaring_a_quadratic_charset_is_refused(tmp_path):
    from aiohttp import web

    from bot.core.fetch import FetchPolicy

    async def page(_request):
        return web.Response(body=b"harbour-" * 10_000, content_type="text/html", charset="punycode")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    lib = await Library.open(tmp_path / "library.sqlite3")
    try:
        with pytest.raises(ArticleError, match="charset 'punycode'"):
            await lib.add_url(f"http://127.0.0.1:{port}/", scope=7, added_by="admin", policy=FetchPolicy(allow_private=True))
    finally:
        await lib.close()
        await runner.cleanup()


def _run_bot(*args: str, db: Path, stdin: str | None = None):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DISCORD_TOKEN": "", "QUOTEBOT_CORPUS_DIR": str(repo / "corpus")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--db", str(db)], input=stdin, capture_output=True, text=True, cwd=repo, env=env, timeout=180
    )


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "alias.md").write_text(ALIAS_BOMB)
    (folder / "date.md").write_text(FRONT_MATTER_BAD["date.md"][0])
    lines = _json_lines(3)
    lines.insert(1, '{"title": "Half", "text": "A lone surrogate \\udc00 here."}')
    (folder / "feed.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "good.txt").write_text("Harbour\n\n" + STORY)
    return folder


def test_the_command_line_and_the_console_report_each_bad_item_and_store_the_rest(tmp_path):
    folder = _bad_folder(tmp_path)
    result = _run_bot("import", str(folder), db=tmp_path / "cli.sqlite3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "added 4, duplicates 0, failed 3"
    assert f"{folder / 'alias.md'}: The front matter uses a YAML alias" in result.stderr
    assert "2014-02-30 is not a date" in result.stderr and f"{folder / 'feed.jsonl'}:2: the text holds half a surrogate pair" in result.stderr

    page = tmp_path / "page.txt"
    page.write_text("Home | World | Sport\n\nShare\n\nLake town\n\n" + STORY + "Back to top")
    console = _run_bot(db=tmp_path / "console.sqlite3", stdin=f"!article add {folder}\n!article add {page}\n!article show 6\n!quit\n")
    assert console.returncode == 0 and "Traceback" not in console.stderr
    assert "Stored article 2: Ferry 0" in console.stdout and "Stored article 5: Harbour" in console.stdout
    assert "Dropped as page debris when imported (3 line(s) kept):\n    Home | World | Sport\n    Share\n    Back to top" in console.stdout
    assert f"Not stored: {folder / 'alias.md'}: The front matter uses a YAML alias" in console.stdout
    assert "An article id is a number" not in console.stdout


async def test_a_manager_attaches_an_alias_bomb_on_discord_and_gets_the_reason(fake, tmp_path):
    import discord.ext.test as dpytest

    upload = tmp_path / "bomb.md"
    upload.write_text(ALIAS_BOMB)
    before = await fake.bot.library.count(scopes=None)
    try:
        await dpytest.message("!article add", channel=fake.channel_a, member=fake.admin_a, attachments=[str(upload)])
    except Exception as exc:  # dpytest re-raises the command's error after the bot's handler replied
        assert isinstance(exc.__cause__ or exc, ArticleError)
    reply = dpytest.get_message()
    assert "YAML alias" in reply.content
    assert await fake.bot.library.count(scopes=None) == before

    page = tmp_path / "page.txt"
    page.write_text("Home | World | Sport\n\nShare\n\nHarbour\n\n" + STORY + "Back to top")
    await dpytest.message("!article add", channel=fake.channel_a, member=fake.admin_a, attachments=[str(page)])
    assert "Dropped 3 line(s) of page debris." in dpytest.get_message().content


def test_sigterm_during_an_import_of_slow_files_stops_it_and_its_workers(tmp_path):
    """Before, parsing ran in threads that could not be stopped: a SIGTERM'd import ran on for
    minutes. Now the workers parsing the current files are killed with it."""
    import signal
    import time

    from test_faults import alive, descendants, start_cli

    folder = tmp_path / "slow"
    folder.mkdir()
    for i in range(12):  # each about as slow to split as the deadline allows: a minute in all
        (folder / f"mr{i}.txt").write_text(f"Misters {i}\n\n" + "Mr. " * 300_000)
    db = tmp_path / "library.sqlite3"
    proc = start_cli("import", str(folder), db=db, out=tmp_path / "import")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(descendants(proc.pid)) < 2:
            time.sleep(0.1)
        time.sleep(2)  # the workers are splitting the first files now
        workers = descendants(proc.pid)
        assert proc.poll() is None and workers
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        grace = time.monotonic() + 10
        while time.monotonic() < grace and any(alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if alive(w)], "a worker of the stopped import kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "import.out").read_text()
    assert "added" not in out  # stopped, not finished
    assert "Traceback" not in (tmp_path / "import.err").read_text()
