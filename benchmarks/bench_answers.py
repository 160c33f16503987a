"""What the buttons under an answer cost: a Discord answer is `Feedback.ask` (the question
asked for one passage more than is shown, plus the answer record written), against the bare
`Library.ask` measured in the same run; then More, Context and a vote on those answers.

Library: the SQuAD v1.1 dev paragraphs; questions: SQuAD dev questions.

    .venv/bin/python benchmarks/bench_answers.py --questions 500

Figures are printed, never asserted: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_library import DEFAULT_SQUAD, load_squad  # noqa: E402

from bot.core.articles import GLOBAL_SCOPE  # noqa: E402
from bot.core.feedback import Feedback  # noqa: E402
from bot.core.library import Library  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms   (n={len(ordered)})"


async def timed(fn: Callable[[], Awaitable[object]], into: list[float]) -> object:
    start = time.perf_counter()
    result = await fn()
    into.append((time.perf_counter() - start) * 1000)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD)
    parser.add_argument("--questions", type=int, default=500)
    args = parser.parse_args()

    articles, questions = load_squad(args.squad)
    questions = questions[: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "squad.jsonl"
        jsonl.write_text("\n".join(json.dumps(a) for a in articles), encoding="utf-8")
        library = await Library.open(Path(tmp) / "db.sqlite3", corpus_dir=None)
        try:
            summary = await library.import_paths([jsonl], scope=GLOBAL_SCOPE, added_by="bench")
            print(f"library: {summary.line()}, {len(library.retriever):,} sentences; {len(questions)} questions")
            feedback = Feedback(library)
            bare: list[float] = []
            recorded: list[float] = []
            more: list[float] = []
            context: list[float] = []
            vote: list[float] = []
            answer_ids: list[int] = []
            # Interleaved, so both see the same machine load.
            for question in questions:
                await timed(lambda: library.ask(question, guild_id=None), bare)
                _, answer_id = await timed(lambda: feedback.ask(question, guild_id=None, asker_id=1), recorded)  # type: ignore[misc]
                if answer_id is not None:
                    answer_ids.append(answer_id)
            for answer_id in answer_ids:
                record = await feedback.get(answer_id)
                assert record is not None
                await timed(lambda: feedback.context(record, 0), context)
                await timed(lambda: feedback.vote(answer_id, 7, True), vote)
                await timed(lambda: feedback.more(record), more)
            print(f"Library.ask (baseline)         {percentiles(bare)}")
            print(f"Feedback.ask (answer + record) {percentiles(recorded)}")
            print(f"More                           {percentiles(more)}")
            print(f"Context                        {percentiles(context)}")
            print(f"vote                           {percentiles(vote)}")
        finally:
            await library.close()


if __name__ == "__main__":
    asyncio.run(main())
