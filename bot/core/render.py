"""Plain-text and JSON renderings of an answer (Discord has its own, in the cogs).

Both go to terminals: every title, quote and value is passed through `text_safety`, so a
control sequence stored in an article is shown spelled out, never acted on."""
from __future__ import annotations

import json
import textwrap

from .answers import Answer, decline_text
from .articles import ArticleInfo, GLOBAL_SCOPE
from .text_safety import json_safe, terminal_field, terminal_safe


def source_line(title: str, source: str | None, published: str | None, url: str | None, article_id: int) -> str:
    parts = [terminal_field(p) for p in (title, source, published) if p]
    line = " — ".join(parts) + f" [article {article_id}]"
    return f"{line}\n    {terminal_field(url)}" if url else line


def answer_text(answer: Answer, width: int = 100) -> str:
    if not answer.answered:
        return terminal_safe(decline_text(answer))
    blocks = []
    for number, p in enumerate(answer.passages, start=1):
        quote = textwrap.fill(terminal_field(p.text), width=width, initial_indent="  > ", subsequent_indent="  > ")
        blocks.append(f"{number}.\n{quote}\n  — {source_line(p.title, p.source, p.published, p.url, p.article_id)}")
    return "\n\n".join(blocks)


def answer_json(answer: Answer) -> str:
    return to_json(answer.to_dict())


def to_json(value: object) -> str:
    """JSON for a terminal or a pipe: readable Unicode, but no raw control or bidi character."""
    return json_safe(json.dumps(value, ensure_ascii=False))


def scope_label(scope: int) -> str:
    return "global" if scope == GLOBAL_SCOPE else f"server {scope}"


def article_row(info: ArticleInfo) -> str:
    meta = " — ".join(terminal_field(p) for p in (info.source, info.published) if p)
    return f"[{info.id}] {terminal_field(info.title)}" + (f" — {meta}" if meta else "") + f" ({info.sentence_count} sentences, {scope_label(info.scope)})"


def article_dict(info: ArticleInfo) -> dict:
    return {
        "id": info.id,
        "title": info.title,
        "source": info.source,
        "author": info.author,
        "url": info.url,
        "published": info.published,
        "scope": "global" if info.scope == GLOBAL_SCOPE else str(info.scope),
        "sentence_count": info.sentence_count,
        "added_by": info.added_by,
        "added_at": info.added_at,
    }
