"""One server's library never moves another server's answers: a question asked in a server is
ranked over the global articles and that server's own, with the statistics of those alone."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.core.articles import GLOBAL_SCOPE
from bot.core.library import Library

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
SERVER_A, SERVER_B = 111_111_111_111_111_111, 222_222_222_222_222_222
QUESTIONS = (
    "Who released the footage?",
    "Where was the footage shot?",
    "What share of households had borderline or poor food consumption?",
    "What did the North Korean karaoke salons sell?",
    "How much does a ferry ticket to Oslo cost?",  # nothing answers it: declined
)


@pytest.fixture
async def library(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3", corpus_dir=CORPUS)
    yield lib
    await lib.close()


def korea_articles(n: int) -> bytes:
    lines = []
    for i in range(n):
        text = (
            f"North Korea released new footage of the Pyongyang factory number {i}. "
            f"State media said Kim Jong Un visited the markets of Chongjin on day {i}. "
            f"The video shows households, karaoke salons and food stalls in district {i}."
        )
        lines.append(json.dumps({"title": f"Korea bulletin {i}", "text": text, "source": "Server B wire"}))
    return "\n".join(lines).encode()


async def answers(lib: Library, guild_id: int | None) -> list[tuple]:
    out = []
    for q in QUESTIONS:
        a = await lib.ask(q, guild_id=guild_id)
        out.append((a.declined, [(p.article_id, p.text, p.score) for p in a.passages]))
    return out


async def test_server_b_importing_hundreds_of_korea_articles_changes_nothing_in_server_a(library):
    await library.add_bytes(
        json.dumps({"title": "Our own notes", "text": "The footage was released again by our club. The club meets on Tuesdays."}).encode(),
        "notes.jsonl", scope=SERVER_A, added_by="admin-a",
    )
    in_a, in_dm = await answers(library, SERVER_A), await answers(library, None)
    assert in_a[0][1] and in_a[-1][0] is not None  # answered, and the ferry question declined

    summary = await library.add_bytes(korea_articles(300), "korea.jsonl", scope=SERVER_B, added_by="admin-b")
    assert len(summary.added) == 300

    # Server A and direct messages get the same quotes with the same scores.
    assert await answers(library, SERVER_A) == in_a
    assert await answers(library, None) == in_dm
    # Server B's own view did change: its articles are part of its statistics.
    in_b = await answers(library, SERVER_B)
    assert [s for _, ps in in_b for *_, s in ps] != [s for _, ps in in_dm for *_, s in ps]

    # Server B deleting its articles again changes nothing in A either.
    for info in await library.list(scopes=[SERVER_B], per_page=1000):
        await library.remove(info.id, scopes=[SERVER_B])
    assert await answers(library, SERVER_A) == in_a
    assert await answers(library, SERVER_B) == in_dm


async def test_the_decline_rule_weighs_words_by_what_the_server_sees(library):
    # "Pyongyang" is rare in what server A sees (the global article names it once) and common in
    # server B, whose 300 articles all name it: the same word is worth less to B's questions.
    summary = await library.add_bytes(korea_articles(300), "korea.jsonl", scope=SERVER_B, added_by="admin-b")
    b_sentences = sum(a.sentence_count for a in summary.added)
    terms = ["pyongyang", "footag"]
    retriever = library.retriever
    n_a, dfs_a = retriever.document_frequencies(terms, (GLOBAL_SCOPE, SERVER_A))
    n_b, dfs_b = retriever.document_frequencies(terms, (GLOBAL_SCOPE, SERVER_B))
    assert n_a == retriever.size((GLOBAL_SCOPE,)) and n_b == n_a + b_sentences
    _, dfs_global = retriever.document_frequencies(terms, (GLOBAL_SCOPE,))
    assert dfs_a == dfs_global and dfs_b[0] == dfs_global[0] + 300
    assert retriever.information(terms, (GLOBAL_SCOPE, SERVER_A)) > retriever.information(terms, (GLOBAL_SCOPE, SERVER_B))
