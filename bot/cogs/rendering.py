"""Discord's rendering of the core's answer and article records, and the one way replies are sent.

Everything that came from an article (or a user) is Markdown- and mention-escaped here, and
Discord's size limits are enforced here: dpytest does not enforce them and Discord answers an
oversized message with a 400, so the limits are ours to keep. Text is cut at a sentence end or
a word boundary with an ellipsis, never mid-word.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import discord
from discord.ext import commands

from bot.core.answers import Answer, Passage, decline_text
from bot.core.articles import GLOBAL_SCOPE, ArticleInfo
from bot.core.feedback import PassageContext
from bot.core.library import ImportSummary
from bot.core.tokens import matched_word_spans

log = logging.getLogger(__name__)

# Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
CONTENT_LIMIT = 2000
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
FIELD_COUNT_LIMIT = 25
EMBED_TOTAL_LIMIT = 6000  # per message, summed over all of its embeds
EMBED_COUNT_LIMIT = 10

ELLIPSIS = " …"
ANSWER_COLOUR = discord.Colour.blurple()
# Headroom in the per-message embed total for what is added around the descriptions.
_TOTAL_HEADROOM = 200

_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)")
_WHITESPACE = re.compile(r"\s+")


@dataclass(slots=True)
class Reply:
    """One Discord message: what the cogs send, built only here."""

    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)

    def kwargs(self) -> dict:
        # allowed_mentions is also set on the bot; passing it here keeps every send safe even
        # through paths (webhook follow-ups, tests) that do not merge the bot's default.
        return {"content": self.content, "embeds": self.embeds, "allowed_mentions": discord.AllowedMentions.none()}


# --- escaping and cutting ----------------------------------------------------------------------


# Stands in for "[" while discord.utils.escape_markdown runs (a noncharacter, never in real text).
_BRACKET = "\uffff"


# What discord.utils.escape_markdown and escape_mentions leave live (tests/test_output_safety.py
# checks each): "<" opens channel, role, user, slash-command, timestamp and custom-emoji markup (`<#1>`, `<@&1>`,
# `</ban:1>`, `<t:0:F>`, `<:x:1>`); `:name:` is an emoji shortcode; a heading after indentation
# and a numbered list item start a line. Bare links are left whole, as escape_markdown leaves
# them: the link pattern is discord.utils._URL_REGEX without "<" inside a <...> link, which makes
# it linear (the original rescans a run of "<" from each one) and never wider than the original.
_MORE_MARKUP = re.compile(
    r"(?P<url><[^: <>]+:/[^ <>]+>|(?:https?|steam)://[^\s<]+[^<.,:;\"'\]\s])"
    r"|(?P<mark><|:(?=\w+:)|^[ \t]*#|^[ \t]*\d+\.(?=\s))",
    re.MULTILINE,
)


def _escape_more(match: re.Match[str]) -> str:
    if match.group("url"):
        return match.group("url")
    mark = match.group("mark")
    if mark == "<":
        # A zero-width space, as escape_mentions does for "@everyone": a backslash would not do
        # right after a bare link, whose pattern takes the backslash in and leaves "<" live.
        return "<\u200b"
    return f"{mark[:-1]}\\{mark[-1]}"


def escape_markdown(text: str) -> str:
    """discord.utils.escape_markdown, plus every "[" (it escapes only the first masked link
    `[text](url)` of a text, and none that a bold marker has split) and the markup above."""
    escaped = discord.utils.escape_markdown(text.replace(_BRACKET, "").replace("[", _BRACKET))
    return _MORE_MARKUP.sub(_escape_more, escaped.replace(_BRACKET, "\\["))


def escape(text: str) -> str:
    """Text from an article or a user, safe to show: no Markdown, no mentions."""
    return discord.utils.escape_mentions(escape_markdown(text))


def fit(text: str, limit: int, render: Callable[[str], str] = escape) -> str:
    """`render(text)` if it fits `limit` characters; otherwise the rendering of the longest
    prefix ending at a sentence end (preferred, unless it loses too much) or a word boundary,
    followed by an ellipsis. A first word that alone is too long gives just the ellipsis."""
    if len(text) <= limit:
        rendered = render(text)
        if len(rendered) <= limit:
            return rendered
    # Rendering never shortens text, so nothing past `limit` raw characters can be kept: cutting
    # there first bounds the work (this runs on the event loop) whatever the passage's size.
    text = text[: limit + 1]
    room = limit - len(ELLIPSIS)
    word_cuts = [m.start() for m in _WHITESPACE.finditer(text) if m.start() > 0]

    def fits(cut: int) -> bool:
        return len(render(text[:cut])) <= room

    # Rendered length grows with the prefix, so the longest fitting word cut is a binary search.
    lo, hi, best = 0, len(word_cuts) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(word_cuts[mid]):
            best, lo = word_cuts[mid], mid + 1
        else:
            hi = mid - 1
    if best is None:
        return ELLIPSIS.strip()
    sentence_cuts = [m.end() for m in _SENTENCE_END.finditer(text, 0, best + 1) if m.end() <= best]
    if sentence_cuts and sentence_cuts[-1] >= best * 0.6 and fits(sentence_cuts[-1]):
        best = sentence_cuts[-1]
    out = render(text[:best].rstrip()) + ELLIPSIS
    # Belt and braces for a render that is not quite monotonic (escapes around a cut).
    while len(out) > limit and best > 0:
        best = max((c for c in word_cuts if c < best), default=0)
        out = (render(text[:best].rstrip()) + ELLIPSIS) if best else ELLIPSIS.strip()
    return out


def one_line(text: str) -> str:
    return " ".join(text.split())


def clip_content(text: str) -> str:
    """Already-rendered message content, cut to Discord's 2000 characters."""
    return fit(text, CONTENT_LIMIT, render=lambda s: s)


# ASCII that may stand in a link as it is: RFC 3986's unreserved and reserved characters, and "%".
# No "@": in a shown link "…/@everyone" reads as a mention (the property test in
# test_hostile_input found one); a link's credentials ("user@host") are not wanted anyway.
_URL_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#[]!$&'*+,;=%")
# Discord's link text shown instead of a title that itself looks like a link (a domain or a URL).
_LOOKS_LIKE_LINK = re.compile(r"://|(?<=[\w-])\.[a-z]{2,}\b", re.IGNORECASE)


def _url_char(ch: str) -> str:
    keep = ch in _URL_ASCII if ch.isascii() else ch.isprintable()
    return ch if keep else "".join(f"%{byte:02X}" for byte in ch.encode())


def _safe_url(url: str | None) -> str | None:
    """An http(s) URL usable inside a Markdown link, or None. Whatever could end the link or
    its <...> wrapper early, or start Markdown after it (whitespace and line breaks, a
    backslash, brackets, "|", controls and bidi marks), is percent-encoded."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return "".join(map(_url_char, url.strip()))


# --- answers -----------------------------------------------------------------------------------


def bold_matches(text: str, terms: Collection[str]) -> str:
    """Escaped `text` with the words matching the question's `terms` in bold."""
    out: list[str] = []
    pos = 0
    for start, end in matched_word_spans(text, set(terms)):
        out.append(escape_markdown(text[pos:start]))
        out.append(f"**{escape_markdown(text[start:end])}**")
        pos = end
    out.append(escape_markdown(text[pos:]))
    # Mentions are escaped over the whole line, so one split by a bold marker is caught too.
    return discord.utils.escape_mentions("".join(out))


def source_line(
    title: str, source: str | None, published: str | None, url: str | None, article_id: int, limit: int = 1000
) -> str:
    """`— [Title](url) · Publisher · date · article 12`, escaped, in at most about half of `limit`
    (the rest is the quote's): long titles are cut and a long URL is left out rather than cut."""
    title_text = fit(one_line(title), min(200, limit // 4))
    link = _safe_url(url)
    if link is None or len(link) > limit // 4:
        parts = [title_text]
    elif "[" in title or "]" in title or _LOOKS_LIKE_LINK.search(title):
        # Discord ends a link's text at the first "]", escaped or not, and a title that reads as
        # a link would pass for where the link goes: link a word of ours instead.
        parts = [f"{title_text} ([link](<{link}>))"]
    else:
        parts = [f"[{title_text}](<{link}>)"]
    if source:
        parts.append(fit(one_line(source), min(100, limit // 8)))
    if published:
        parts.append(fit(one_line(published), 40))
    parts.append(f"article {article_id}")
    return "— " + " · ".join(parts)


def passage_embed(passage: Passage, terms: Collection[str], limit: int) -> discord.Embed:
    """One passage: the verbatim quote (matched words bold) and its source, within `limit`."""
    source = source_line(passage.title, passage.source, passage.published, passage.url, passage.article_id, limit)
    quote = fit(one_line(passage.text), limit - len(source) - 1, render=lambda s: "> " + bold_matches(s, terms))
    return discord.Embed(description=f"{quote}\n{source}", colour=ANSWER_COLOUR)


def answer_reply(answer: Answer) -> Reply:
    if not answer.answered:
        return Reply(content=clip_content(decline_text(answer, shown=lambda title: fit(one_line(title), 200))))
    passages = answer.passages[:EMBED_COUNT_LIMIT]
    # The 6000-character total is shared by all embeds of the message.
    share = min(EMBED_DESCRIPTION_LIMIT, (EMBED_TOTAL_LIMIT - _TOTAL_HEADROOM) // len(passages))
    embeds = [passage_embed(p, answer.terms, share) for p in passages]
    while sum(len(e) for e in embeds) > EMBED_TOTAL_LIMIT and len(embeds) > 1:
        # Cannot happen with the budgets above; if it ever does, fewer quotes beat a refused message.
        log.warning("Answer embeds over Discord's total; dropping the last passage")
        embeds.pop()
    return Reply(embeds=embeds)


def context_reply(contexts: Sequence[PassageContext]) -> Reply:
    """Each quote of an answer with the sentences around it; the quoted ones in bold."""
    if not contexts:
        return Reply(content="The quoted articles are no longer stored here.")
    contexts = contexts[:EMBED_COUNT_LIMIT]
    share = min(EMBED_DESCRIPTION_LIMIT, (EMBED_TOTAL_LIMIT - _TOTAL_HEADROOM) // len(contexts))
    embeds = []
    for ctx in contexts:
        source = source_line(ctx.title, ctx.source, ctx.published, ctx.url, ctx.article_id, share)

        parts = [(one_line(s.text), s.quoted) for s in ctx.sentences]

        def render(text: str, parts: list[tuple[str, bool]] = parts) -> str:
            # `text` is a prefix of the sentences joined by spaces: bold the quoted ones within it.
            out, pos = [], 0
            for sentence, quoted in parts:
                if pos >= len(text):
                    break
                piece = text[pos : pos + len(sentence)].strip()
                out.append(f"**{escape(piece)}**" if quoted and piece else escape(piece))
                pos += len(sentence) + 1
            return "> " + " ".join(out)

        text = fit(" ".join(p for p, _ in parts), share - len(source) - 1, render=render)
        embeds.append(discord.Embed(description=f"{text}\n{source}", colour=ANSWER_COLOUR))
    return Reply(embeds=embeds)


# --- articles ----------------------------------------------------------------------------------


def _meta(info: ArticleInfo) -> str:
    parts = [fit(one_line(p), 60) for p in (info.source, info.published) if p]
    parts.append(f"{info.sentence_count} sentences")
    if info.scope == GLOBAL_SCOPE:
        parts.append("global")
    return " · ".join(parts)


def article_list_reply(infos: Sequence[ArticleInfo], page: int, pages: int, total: int, hint: str) -> Reply:
    if not infos:
        text = "No articles stored here yet." if total == 0 else f"There is no page {page}; the last is {pages}."
        return Reply(content=text)
    rows = [f"`{info.id}` **{fit(one_line(info.title), 120)}** — {_meta(info)}" for info in infos]
    embed = discord.Embed(
        title=f"Articles — page {page} of {pages} ({total} in all)",
        description=fit("\n".join(rows), EMBED_DESCRIPTION_LIMIT, render=lambda s: s),
        colour=ANSWER_COLOUR,
    )
    if page < pages:
        embed.set_footer(text=fit(hint, FOOTER_LIMIT, render=lambda s: s))
    return Reply(embeds=[embed])


def article_search_reply(infos: Sequence[ArticleInfo], text: str, more: bool) -> Reply:
    if not infos:
        return Reply(content=clip_content(f"No article title here contains “{escape(one_line(text))}”."))
    rows = [f"`{info.id}` **{fit(one_line(info.title), 120)}** — {_meta(info)}" for info in infos]
    embed = discord.Embed(
        title=fit(f"Articles with “{one_line(text)}” in the title", EMBED_TITLE_LIMIT, render=lambda s: s),
        description=fit("\n".join(rows), EMBED_DESCRIPTION_LIMIT, render=lambda s: s),
        colour=ANSWER_COLOUR,
    )
    if more:
        embed.set_footer(text=f"Showing the newest {len(infos)}; add words to narrow the search.")
    return Reply(embeds=[embed])


def article_reply(info: ArticleInfo, first_sentences: Sequence[str], dropped: Sequence[str] = ()) -> Reply:
    embed = discord.Embed(title=fit(one_line(info.title), EMBED_TITLE_LIMIT), colour=ANSWER_COLOUR)
    if first_sentences:
        embed.description = fit(one_line(" ".join(first_sentences)), 2500, render=lambda s: "> " + escape(s))
    fields: list[tuple[str, str | None]] = [
        ("ID", str(info.id)),
        ("Source", info.source),
        ("Author", info.author),
        ("Published", discord_date(info.published)),
        ("URL", _safe_url(info.url) or info.url),
        ("Sentences", str(info.sentence_count)),
        ("Scope", "global" if info.scope == GLOBAL_SCOPE else "this server"),
        ("Added", _added(info)),
    ]
    for name, value in fields:
        if value:
            # "Added" is built here (with a deliberate user mention), a recognised date is a
            # Discord timestamp; everything else is escaped.
            built = name == "Added" or (name == "Published" and value != info.published)
            render = (lambda s: s) if built else escape
            embed.add_field(name=name, value=fit(one_line(value), 512 if name == "URL" else 256, render), inline=name != "URL")
    if dropped:
        _add_dropped_field(embed, dropped)
    return Reply(embeds=[embed])


def _add_dropped_field(embed: discord.Embed, dropped: Sequence[str]) -> None:
    """The lines the importer dropped as page debris, whole lines first to last while they fit
    the field and the message's total, then how many more there are."""
    name = f"Dropped as page debris ({len(dropped)} line{'s' if len(dropped) != 1 else ''})"
    room = min(FIELD_VALUE_LIMIT, EMBED_TOTAL_LIMIT - _TOTAL_HEADROOM - len(embed) - len(name))
    shown: list[str] = []
    for n, line in enumerate(dropped):
        rendered = fit(one_line(line), 200) or "…"
        rest = len(dropped) - n - 1
        more = f"\n… and {rest} more" if rest else ""
        if len("\n".join([*shown, rendered]) + more) > room:
            break
        shown.append(rendered)
    hidden = len(dropped) - len(shown)
    value = "\n".join(shown + ([f"… and {hidden} more"] if hidden else []))
    if value and len(value) <= room:
        embed.add_field(name=name, value=value, inline=False)


def _added(info: ArticleInfo) -> str:
    who = info.added_by or ""
    # Discord user ids are stored bare; a user mention in an embed renders as a name and never pings.
    by = f" by <@{who}>" if who.isdigit() else (f" by {escape(who)}" if who else "")
    return f"{discord_date(info.added_at)}{by}"


def discord_date(text: str | None) -> str | None:
    """An ISO date or date-time as a Discord timestamp (`<t:…:d>`, shown in the reader's own
    locale and time zone); anything else (a free-text date) unchanged."""
    if not text:
        return text
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return discord.utils.format_dt(when, "d")


def import_reply(summary: ImportSummary) -> Reply:
    lines: list[str] = []
    for added in summary.added[:5]:
        info = added.article
        source = f" — {fit(one_line(info.source), 100)}" if info.source else ""
        debris = f" Dropped {len(added.dropped)} line(s) of page debris." if added.dropped else ""
        lines.append(f"Stored article {info.id}: **{fit(one_line(info.title), 200)}**{source} ({added.sentence_count} sentences).{debris}")
    if len(summary.added) > 5:
        lines.append(f"…and {len(summary.added) - 5} more.")
    for where, existing in summary.duplicates[:5]:
        lines.append(f"Already stored as article {existing}: {fit(where, 100)}.")
    for where, reason in summary.failed[:5]:
        lines.append(f"Not stored: {fit(where, 100)}: {fit(reason, 200)}")
    if len(summary.duplicates) + len(summary.failed) > 10:
        lines.append(f"({summary.line()})")
    if not lines:
        lines.append("Nothing was stored.")
    return Reply(content=clip_content("\n".join(lines)))


def removed_reply(info: ArticleInfo) -> Reply:
    return Reply(content=f"Removed article {info.id}: **{fit(one_line(info.title), 200)}**. It no longer answers questions.")


def message_reply(text: str) -> Reply:
    """A short message written by us (errors, confirmations). Mentions are escaped anyway: some
    messages name what a user gave (a file name, a URL)."""
    return Reply(content=clip_content(discord.utils.escape_mentions(text)))


# --- sending -----------------------------------------------------------------------------------


async def send_reply(
    target: commands.Context | discord.Message,
    reply: Reply,
    *,
    ephemeral: bool = False,
    view: discord.ui.View | None = None,
) -> discord.Message | None:
    """Send `reply` as an answer to a command or a message. A failure on Discord's side is
    logged and swallowed: one lost reply must not take a command handler or listener down."""
    kwargs = reply.kwargs()
    if view is not None:
        kwargs["view"] = view
    try:
        if isinstance(target, commands.Context):
            if target.interaction is None:
                # Reply to the command message, without failing if it was deleted meanwhile.
                kwargs["reference"] = target.message.to_reference(fail_if_not_exists=False)
                kwargs["mention_author"] = False
            return await target.send(**kwargs, ephemeral=ephemeral)
        return await target.channel.send(
            **kwargs, reference=target.to_reference(fail_if_not_exists=False), mention_author=False
        )
    except discord.HTTPException:
        channel = target.channel
        log.exception("Could not send a reply in channel %s", getattr(channel, "id", channel))
        return None


def check_limits(reply: Reply) -> None:
    """Raise AssertionError if `reply` breaks one of Discord's limits (used by tests and debug runs)."""
    assert reply.content is None or len(reply.content) <= CONTENT_LIMIT, "content"
    assert len(reply.embeds) <= EMBED_COUNT_LIMIT, "embed count"
    assert sum(len(e) for e in reply.embeds) <= EMBED_TOTAL_LIMIT, "embed total"
    for e in reply.embeds:
        assert e.title is None or len(e.title) <= EMBED_TITLE_LIMIT, "title"
        assert e.description is None or len(e.description) <= EMBED_DESCRIPTION_LIMIT, "description"
        assert len(e.fields) <= FIELD_COUNT_LIMIT, "field count"
        for f in e.fields:
            assert len(f.name or "") <= FIELD_NAME_LIMIT and len(f.value or "") <= FIELD_VALUE_LIMIT, "field"
        assert e.footer.text is None or len(e.footer.text) <= FOOTER_LIMIT, "footer"
