"""No story text is ever thrown away: every paragraph of SQuAD dev, imported by an admin as
one JSON Lines file, is stored whole, under its title, and every word of it can be quoted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import regex

from bot.core.library import Library
from bot.eval.squad import read_squad

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev-v1.1.json.zip"


def _words(text: str) -> list[str]:
    """Words as a reader sees them: invisible format characters (U+FEFF in SQuAD's
    coordinates) are not text, and the importer drops them."""
    return regex.sub(r"\p{Cf}", "", text).split()


@pytest.fixture(scope="module")
def paragraphs() -> list[tuple[str, str]]:
    if not SQUAD.is_file():
        # CI always has shared/ beside the clone: there a missing file is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"SQuAD dev set not found at {SQUAD}")
        pytest.skip(f"SQuAD dev set not found at {SQUAD} (clone the repo beside shared/)")
    return [
        (article["title"].replace("_", " "), paragraph["context"])
        for article in read_squad(SQUAD)
        for paragraph in article["paragraphs"]
    ]


async def test_every_squad_paragraph_imports_whole_as_json_lines_with_its_title(tmp_path, paragraphs):
    assert len(paragraphs) == 2067
    feed = tmp_path / "squad.jsonl"
    feed.write_text("".join(json.dumps({"title": t, "text": c}) + "\n" for t, c in paragraphs), encoding="utf-8")

    library = await Library.open(tmp_path / "library.sqlite3")
    try:
        summary = await library.import_paths([feed], scope=0, added_by="admin")
        assert summary.failed == []
        # Identical paragraphs under one title are one article; nothing else is a duplicate.
        unique = {(t, " ".join(_words(c))) for t, c in paragraphs}
        assert len(summary.added) == len(unique)

        stored: dict[tuple[str, str], list[str]] = {}
        for added in summary.added:
            title, body = await library.store.article_text(added.article.id)
            sentences = await library.store.sentences_of(added.article.id)
            stored[(title, " ".join(_words(body)))] = [s.text for s in sentences if s.kind != "title"]
        for title, context in paragraphs:
            key = (title, " ".join(_words(context)))
            assert key in stored, f"{title!r}: the paragraph was not stored whole: {context[:80]!r}"
            # Every character of the story but whitespace is in a quotable sentence, in order
            # (a sentence may end inside a "word", as in "Glass.[citation needed]").
            assert "".join(_words("".join(stored[key]))) == "".join(_words(context)), f"{title!r}: {context[:80]!r}"
    finally:
        await library.close()
