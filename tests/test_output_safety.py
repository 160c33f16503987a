"""What the bot shows is shown, never acted on: Discord markup in an article or a file name is
escaped in every Discord reply, control sequences never reach a terminal, an unpacked archive
cannot smuggle in a file from outside it, and quoted flag values are read as meant."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.cogs import rendering
from bot.console import Console
from bot.core.articles import GLOBAL_SCOPE, ArticleError
from bot.core.importers import Metadata, decode
from bot.core.library import Library, collect_files
from bot.core.text_safety import first_control, terminal_safe

dpytest = pytest.importorskip("discord.ext.test")
from conftest import make_settings, mock_interaction  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Each piece of Discord markup, and exactly how a reply must show it. "<" gets a zero-width space
# (a backslash would be swallowed by a bare link just before it), the rest a backslash.
ZW = "\u200b"
MARKUP = {
    "</ban:1>": f"<{ZW}/ban:1>",
    "<#1>": f"<{ZW}#1>",
    "<t:0:F>": f"<{ZW}t\\:0:F>",
    "<@123>": f"<{ZW}@123>",
    "<@&1>": f"<{ZW}@&1>",
    "<:blob:1>": f"<{ZW}\\:blob:1>",
    "<a:wave:2>": f"<{ZW}a\\:wave:2>",
    "@everyone": f"@{ZW}everyone",
    "||secret||": "\\|\\|secret\\|\\|",
    "**loud**": "\\*\\*loud\\*\\*",
    "[click](https://evil.example/x)": "\\[click](https://evil.example/x)",
    "```py": "\\`\\`\\`py",
}
LINE_START_MARKUP = {"# Heading": "\\# Heading", "-# small": "\\-# small", "- item": "\\- item", "12. item": "12\\. item", "  ## Indented": "  \\## Indented"}

# The ferry sentence is what the question finds; every piece of markup sits in it, away from the
# words the question matches (those are bolded, which would split them).
HOSTILE_ARTICLE = (
    "Harbour notes\n\nThe ferry to Kestrel Bay leaves at nine, beside "
    + " and ".join(MARKUP)
    + " on the quay.\n\nThe museum opens on Sundays only, the curator said.\n"
)


async def said(content: str, channel, member, **kwargs) -> tuple[Exception | None, list]:
    """A member's message (with attachments, if given): (command error if any, bot replies)."""
    error = None
    try:
        await dpytest.message(content, channel=channel, member=member, **kwargs)
    except Exception as exc:  # dpytest re-raises command errors after the bot's handler ran
        error = exc
    sent = []
    while not dpytest.sent_queue.empty():
        sent.append(await dpytest.sent_queue.get())
    return error, sent


def text_of(messages) -> str:
    return "\n".join(
        (m.content or "")
        + "".join((e.title or "") + (e.description or "") + "".join(f.name + f.value for f in e.fields) for e in m.embeds)
        for m in messages
    )


def assert_escaped(shown: str, cases: dict[str, str]) -> None:
    for raw, escaped in cases.items():
        assert escaped in shown, (raw, escaped, shown[:1500])
        # The raw form is nowhere but inside its escaped form ("\\[x](y)" holds "[x](y)").
        assert raw not in shown.replace(escaped, ""), (raw, shown[:1500])


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, max_article_bytes=100_000)


class Options(SimpleNamespace):
    """A slash command's options as discord.py reads them: attributes, and (name, value) pairs."""

    def __iter__(self):
        return iter(self.__dict__.items())


# --- Discord ----------------------------------------------------------------------------------------


async def test_markup_in_a_quoted_article_is_shown_verbatim_to_the_member(fake, tmp_path):
    upload = tmp_path / "harbour.txt"
    upload.write_text(HOSTILE_ARTICLE, encoding="utf-8")
    error, sent = await said("!article add", fake.channel_a, fake.admin_a, attachments=[str(upload)])
    assert error is None and "Stored article" in text_of(sent)

    error, sent = await said("!ask When does the ferry to Kestrel Bay leave?", fake.channel_a, fake.member_a)
    assert error is None
    quote = sent[0].embeds[0].description
    assert "**ferry**" in quote  # the matched words are still ours to bold
    assert_escaped(quote, MARKUP)
    assert not sent[0].mention_everyone and not sent[0].mentions and not sent[0].role_mentions


async def test_markup_in_titles_and_sources_is_escaped_on_the_card_the_list_and_the_report(fake, library):
    # Short enough for the list's 120 characters a title.
    shown_in_title = {k: v for k, v in MARKUP.items() if k in ("<#1>", "</ban:1>", "<t:0:F>", "<a:wave:2>", "@everyone", "||secret||", "**loud**")}
    title = "# Ferry " + " ".join(shown_in_title)
    error, sent = await said(
        f'!article add --title "{title}" --source "-# Port news <t:0:F>" The ferry to Kestrel Bay leaves at nine, the port said.',
        fake.channel_a,
        fake.admin_a,
    )
    assert error is None
    [info] = await library.list(scopes=[fake.guild_a.id])
    assert info.title == title and info.source == "-# Port news <t:0:F>"  # stored exactly
    report = text_of(sent)
    assert "**\\# Ferry" in report
    assert_escaped(report, shown_in_title)

    for command in ("!article list", f"!article show {info.id}"):
        error, sent = await said(command, fake.channel_a, fake.admin_a)
        assert error is None
        shown = text_of(sent)
        assert_escaped(shown, shown_in_title)
    card = sent[0].embeds[0]
    assert card.title == "\\# Ferry " + " ".join(shown_in_title.values())
    assert {f.name: f.value for f in card.fields}["Source"] == f"\\-# Port news <{ZW}t\\:0:F>"


async def test_an_error_naming_a_users_file_shows_its_markup_escaped(fake, tmp_path):
    upload = tmp_path / "notes.||x||<#1>"
    upload.write_text("The ferry leaves at nine.", encoding="utf-8")
    error, sent = await said("!article add", fake.channel_a, fake.admin_a, attachments=[str(upload)])
    assert error is not None
    shown = text_of(sent)
    assert f".\\|\\|x\\|\\|<{ZW}#1>" in shown and "||x||" not in shown and "<#1>" not in shown


async def test_the_slash_path_escapes_the_card_too(fake, library):
    await library.add_bytes(
        b"The ferry to Kestrel Bay leaves at nine, the port said.", "f.txt", scope=fake.guild_a.id, added_by="1",
        meta=Metadata(title="<t:0:F> ## <@&1> -# x"),
    )
    [info] = await library.list(scopes=[fake.guild_a.id])
    command = fake.bot.get_command("article").get_command("show")
    interaction = mock_interaction(fake.bot, fake.admin_a, fake.channel_a, command)

    interaction.namespace = Options(article_id=info.id)
    await command.app_command._invoke_with_namespace(interaction, interaction.namespace)
    await dpytest.empty_queue()
    sends = interaction.response.send_message.await_args_list + interaction.followup.send.await_args_list
    titles = [e.title for c in sends for e in c.kwargs.get("embeds") or []]
    assert titles == [f"<{ZW}t\\:0:F> ## <{ZW}@&1> -# x"], sends


@pytest.mark.parametrize("raw, escaped", list(MARKUP.items()) + list(LINE_START_MARKUP.items()))
def test_escape_shows_each_piece_of_markup_as_typed(raw, escaped):
    assert rendering.escape(raw) == escaped
    assert rendering.escape(f"{raw}\n{raw}").split("\n") == [escaped, escaped]  # at every line start


def test_discord_py_alone_leaves_this_markup_live():
    """Why rendering adds to discord.utils: this is what escape_markdown + escape_mentions miss."""
    import discord.utils

    missed = [raw for raw in [*MARKUP, *LINE_START_MARKUP] if discord.utils.escape_mentions(discord.utils.escape_markdown(raw)) == raw]
    assert missed == ["</ban:1>", "<#1>", "<t:0:F>", "<@123>", "<@&1>", "<:blob:1>", "<a:wave:2>", "12. item", "  ## Indented"]


@pytest.mark.parametrize(
    "url",
    ["https://news.example/a\n||spoiler|| **bold**", "https://news.example/a\\", "https://news.example/a)**x**(", "https://news.example/a> [x](y)"],
)
def test_an_article_url_cannot_break_out_of_its_source_line(url):
    line = rendering.source_line("Ferry times", None, None, url, 4)
    link = re.fullmatch(r"— \[Ferry times\]\(<(https://news\.example/a[^\s<>()\\]*)>\) · article 4", line)
    assert link, line
    assert "\n" not in line and "||" not in line  # (a "*" inside the <...> link is part of the link)


@pytest.mark.parametrize("title", ["https://bank.example/login", "bank.example", "www.bank.example sign-in"])
def test_a_title_that_reads_as_a_link_is_never_the_text_of_a_link_elsewhere(title):
    line = rendering.source_line(title, None, None, "https://evil.example/x", 4)
    assert line.startswith(f"— {rendering.escape(title)} ([link](<https://evil.example/x>))"), line
    assert f"[{rendering.escape(title)}]" not in line


# --- terminals --------------------------------------------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\u202c\r\x00"
TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def export_lines(title: str, text: str) -> str:
    """A JSON Lines file: the hostile article, and two plain ones for the ranking to compare it with."""
    return "\n".join(
        json.dumps(record)
        for record in (
            {"title": title, "text": text, "source": "Port \x1b[31mnews"},
            {"title": "Museum", "text": "The museum opens on Sundays only, the curator said."},
            {"title": "School", "text": "The school committee met on Monday to discuss the budget."},
        )
    ) + "\n"


def run(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISCORD_TOKEN": "", "QUOTEBOT_CORPUS_DIR": str(db.parent / "no-corpus")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--db", str(db)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def test_control_sequences_in_titles_never_reach_the_terminal_from_the_command_line(tmp_path):
    # JSON escapes are how control characters get past the file check: "\u001b" is six plain characters.
    bulk = tmp_path / "bulk.jsonl"
    bulk.write_text(export_lines(f"Ferry {ESCAPES} times", f"The ferry to Kestrel Bay leaves at nine {ESCAPES} daily."))
    db = tmp_path / "db.sqlite3"
    assert run("import", str(bulk), db=db).returncode == 0
    for args in (("list",), ("list", "--json"), ("ask", "When does the ferry to Kestrel Bay leave?"), ("ask", "When does the ferry leave?", "--json")):
        result = run(*args, db=db)
        assert result.returncode == 0, result.stderr
        assert TERMINAL_UNSAFE.findall(result.stdout) == [], (args, result.stdout)
        assert "\\x1b" in result.stdout or "\\u001b" in result.stdout, (args, result.stdout)
    listing = json.loads(run("list", "--json", db=db).stdout)
    assert f"Ferry {ESCAPES} times" in [a["title"] for a in listing]  # still the stored title, once parsed


async def test_control_sequences_never_reach_the_terminal_from_the_console(tmp_path):
    lib = await Library.open(tmp_path / "db.sqlite3")
    try:
        bulk = tmp_path / "bulk.jsonl"
        bulk.write_text(export_lines(f"Ferry {ESCAPES}", f"The ferry to Kestrel Bay leaves at nine {ESCAPES} daily."))
        out = io.StringIO()
        console = Console(lib, make_settings(tmp_path), out=out)
        for line in (f"!article add {bulk}", "!article list", "!article show 1", "When does the ferry to Kestrel Bay leave?", "!article remove 1"):
            await console.handle(line)
        shown = out.getvalue()
        assert TERMINAL_UNSAFE.findall(shown) == [], shown
        assert "Ferry \\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202eevil\\u202c\\x0d\\x00" in shown
        assert "Removed article 1" in shown
    finally:
        await lib.close()


def test_terminal_safe_spells_out_every_control_and_keeps_lines_and_tabs():
    assert terminal_safe("a\tb\nc\x1bd\x85e\u2066f") == "a\tb\nc\\x1bd\\x85e\\u2066f"


# --- files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x07", "\x9b"])
def test_a_control_character_anywhere_in_a_file_refuses_it(control):
    text = "The ferry leaves at nine. " * 1000 + control + "More text."
    assert first_control(text) == len(text) - 11
    with pytest.raises(ArticleError, match=r"control character \(U\+00[0-9A-F]{2}\) at character 26,000"):
        decode(text.encode(), "late.txt")


def test_a_text_file_with_tabs_form_feeds_and_line_breaks_is_plain_text():
    assert decode("Ferry\ttimes\r\n\fThe ferry leaves at nine.\n".encode(), "ok.txt").startswith("Ferry")


async def test_a_folder_import_does_not_follow_a_link_out_of_the_folder(tmp_path):
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:The root account lives here for the whole host machine:/root:/bin/bash\n")
    folder = tmp_path / "unpacked"
    (folder / "inner").mkdir(parents=True)
    (folder / "notes.txt").write_text("The ferry to Kestrel Bay leaves at nine, the port said.\n")
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "etc").symlink_to(secret.parent, target_is_directory=True)
    (folder / "inner" / "same.txt").symlink_to(folder / "notes.txt")  # inside: followed (a duplicate)

    refused: list[tuple[str, str]] = []
    assert collect_files([folder], refused) == [folder / "inner" / "same.txt", folder / "notes.txt"]
    assert sorted(where for where, _ in refused) == [str(folder / "etc"), str(folder / "passwd.txt")]

    lib = await Library.open(tmp_path / "db.sqlite3")
    try:
        summary = await lib.import_paths([folder], scope=GLOBAL_SCOPE, added_by="cli")
        assert len(summary.added) == 1 and len(summary.duplicates) == 1
        assert dict(summary.failed)[str(folder / "passwd.txt")] == "a link to a place outside the imported folder; not followed"
        answer = await lib.ask("Where does the root account live?")
        assert all("root" not in p.text for p in answer.passages)
    finally:
        await lib.close()


# --- quoted flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        '!article add --title "Ferry times" --source “Port news” The ferry to Kestrel Bay leaves at nine.',
        '!article add The ferry to Kestrel Bay leaves at nine. --title "Ferry times" --source "Port news"',
        '!article add --title "Ferry times" The ferry to Kestrel Bay leaves at nine. --source "Port news"',
        "!article add The ferry to Kestrel Bay leaves at nine. --source Port news --title Ferry times",
    ],
    ids=["flags-first", "flags-last", "around-the-text", "unquoted"],
)
async def test_quoted_flag_values_are_stored_without_their_quotes_in_any_order(fake, library, command):
    error, sent = await said(command, fake.channel_a, fake.admin_a)
    assert error is None, error
    [info] = await library.list(scopes=[fake.guild_a.id])
    assert (info.title, info.source) == ("Ferry times", "Port news")
    assert await library.first_sentences(info.id) == ["The ferry to Kestrel Bay leaves at nine."]


async def test_an_unclosed_quote_is_a_clear_error_and_stores_nothing(fake, library):
    error, sent = await said('!article add --title "Ferry times The ferry leaves at nine.', fake.channel_a, fake.admin_a)
    assert type(error).__name__ == "ExpectedClosingQuoteError"
    assert "Expected closing" in text_of(sent)
    assert await library.count(scopes=[fake.guild_a.id]) == 0
