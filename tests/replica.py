"""One bot process without Discord, driven through stdin: what the many-process tests and
benchmarks/bench_cluster.py run two (or more) of, over one database.

    python tests/replica.py DATABASE [--shards 0/2] [--snapshot FILE]

It opens a Library on DATABASE (a PostgreSQL URL or a SQLite file) exactly as the bot does,
prints {"ready": seconds, "sentences": n}, then answers one JSON command per line with one
JSON line:

    {"op": "ask", "q": "...", "guild": null}          -> {"titles": [...], "ms": 1.2}
    {"op": "add", "title": "...", "body": "...", "scope": 0} -> {"id": 12}
    {"op": "import", "path": "...", "scope": 0}       -> {"added": 40, "duplicates": 0}
    {"op": "remove", "id": 12}                        -> {"removed": 12}
    {"op": "wait", "q": "...", "title": "...", "present": true, "timeout": 10}
        -> {"seconds": 0.2} once the answer to q does (or does not) quote that title
    {"op": "state"}                                   -> {"sentences": n, "generation": g, "rss_mb": 400.0}
    {"op": "until", "generation": g, "timeout": 10}   -> {"seconds": 0.05} once the index holds
        every change up to g, with no question asked (the background follower's work)
    {"op": "bench", "qs": [...], "seconds": 5}        -> {"answered": n, "ms": [...]}

EOF closes the library (saving its snapshot) and ends the process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.articles import ArticleDraft  # noqa: E402
from bot.core.cluster import Shards  # noqa: E402
from bot.core.library import Library  # noqa: E402


async def titles(lib: Library, question: str, guild: int | None) -> list[str]:
    return [p.title for p in (await lib.ask(question, guild_id=guild)).passages]


async def handle(lib: Library, cmd: dict) -> dict:
    op = cmd["op"]
    if op == "ask":
        start = time.perf_counter()
        found = await titles(lib, cmd["q"], cmd.get("guild"))
        return {"titles": found, "ms": (time.perf_counter() - start) * 1000}
    if op == "add":
        draft = ArticleDraft(title=cmd["title"], body=cmd["body"], source=cmd.get("source", "Wire"))
        added = await lib.add_draft(draft, scope=cmd.get("scope", 0), added_by="driver")
        return {"id": added.article.id}
    if op == "import":
        summary = await lib.import_paths([Path(cmd["path"])], scope=cmd.get("scope", 0), added_by="driver")
        return {"added": len(summary.added), "duplicates": len(summary.duplicates)}
    if op == "remove":
        await lib.remove(cmd["id"], scopes=None)
        return {"removed": cmd["id"]}
    if op == "wait":
        start = time.perf_counter()
        deadline = start + cmd.get("timeout", 10)
        while True:
            present = cmd["title"] in await titles(lib, cmd["q"], cmd.get("guild"))
            if present == cmd.get("present", True):
                return {"seconds": time.perf_counter() - start}
            if time.perf_counter() > deadline:
                return {"timeout": True}
            await asyncio.sleep(0.01)
    if op == "until":
        start = time.perf_counter()
        while lib._generation < cmd["generation"]:
            if time.perf_counter() - start > cmd.get("timeout", 10):
                return {"timeout": True}
            await asyncio.sleep(0.002)
        return {"seconds": time.perf_counter() - start}
    if op == "state":
        return {"sentences": len(lib.retriever), "generation": lib._generation, "rss_mb": _rss_mb()}
    if op == "bench":
        ms: list[float] = []
        end = time.perf_counter() + cmd["seconds"]
        i = 0
        while time.perf_counter() < end:
            start = time.perf_counter()
            await lib.ask(cmd["qs"][i % len(cmd["qs"])])
            ms.append((time.perf_counter() - start) * 1000)
            i += 1
        return {"answered": len(ms), "ms": ms}
    return {"error": f"unknown op {op}"}


def _rss_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--shards", help="IDS/COUNT, e.g. 0,1/4")
    parser.add_argument("--snapshot", type=Path, help="the index cache file, for a PostgreSQL library")
    args = parser.parse_args()
    shards = None
    if args.shards:
        ids, count = args.shards.split("/")
        shards = Shards.of((int(i) for i in ids.split(",")), int(count))
    start = time.perf_counter()
    lib = await Library.open(args.database, corpus_dir=None, shards=shards, snapshot=args.snapshot)
    print(json.dumps({"ready": time.perf_counter() - start, "sentences": len(lib.retriever)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)  # a bench command carries its questions
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                reply = await handle(lib, json.loads(line))
            except Exception as exc:  # a driver reports, the test decides
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        await lib.close()


if __name__ == "__main__":
    asyncio.run(main())
