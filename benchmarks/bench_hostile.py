"""Hostile uploads through the library, timed: every family at two sizes (x1 and x4), beside a
benign article of the same size, so linear growth (x4 time for x4 bytes) is visible.

Each case runs in a fresh process: `Library.add_bytes` (or `add_url` for a declared charset)
on a new database, the worker pool warmed first, a 5 ms ticker measuring how late the event
loop runs. Printed per case: outcome, seconds, the longest event-loop stall, and peak memory of
the bot process and of the worker processes (the pool is shut down at the end so the kernel
reports the workers' peak too).

    .venv/bin/python benchmarks/bench_hostile.py            # x1 = 480 KB, x4 = 1.92 MB
    .venv/bin/python benchmarks/bench_hostile.py --base 100000 --only md_brackets,benign_text
    # before/after in one run: each case also run by another checkout (e.g. `git archive main`)
    .venv/bin/python benchmarks/bench_hostile.py --only benign_text,benign_html --baseline /tmp/main-copy
    # what holds the loop: every thread's stack (C calls holding the GIL included) when 20 ms late
    .venv/bin/python benchmarks/bench_hostile.py --only benign_text --explain-stalls 20

Figures are printed, never asserted: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.articles import ArticleError  # noqa: E402
from bot.core.library import Library, Limits  # noqa: E402

PROSE = (
    "The harbour at Kestrel Bay reopened on Wednesday after the storm closed it for four days, "
    "the port authority said. Fishing boats returned to their moorings by the afternoon, and "
    "ferries resumed a normal timetable on Thursday.\n\n"
)


def _fill(unit: str, size: int, head: str = "", tail: str = "") -> bytes:
    body_bytes = size - len((head + tail).encode())
    unit_bytes = len(unit.encode())
    return (head + unit * max(1, body_bytes // unit_bytes) + tail).encode()


def _alias_bomb(levels: int) -> bytes:
    # Each level is a list of nine references to the one before: 9**levels strings when expanded.
    lines = ["---", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"title: *a{levels - 1}")
    lines += ["---", "", PROSE]
    return "\n".join(lines).encode()


def make(family: str, size: int) -> tuple[bytes, str]:
    """(data, file name) of `family` at about `size` bytes."""
    story = "Storm closes the harbour\n\n" + PROSE
    if family == "benign_text":
        return _fill(PROSE, size, "Harbour reopens\n\n"), "story.txt"
    if family == "benign_html":
        para = "<p>" + PROSE.strip() + "</p>\n"
        return _fill(para, size, "<html><head><title>Harbour reopens</title></head><body><article>", "</article></body></html>"), "page.html"
    if family == "md_brackets":  # one line of "[": the old link regex was quadratic
        return _fill("[", size, "# Harbour\n\n" + PROSE, "\n"), "note.md"
    if family == "md_emphasis":  # unclosed emphasis everywhere: the old lazy scan to the line end
        return _fill("*a ", size, "# Harbour\n\n" + PROSE, "\n"), "note.md"
    if family == "text_debris":  # short navigation lines before and after the story
        half = _fill("Home | News | Sport\n\nShare\n\n", size // 2).decode()
        return (half + story + half).encode()[:size], "page.txt"
    if family == "wrapped_no_stop":  # hard-wrapped lines, no full stop anywhere
        return _fill("and the harbour stayed closed for the whole week\n", size, "Harbour\n\n"), "story.txt"
    if family == "html_attributes":  # one tag with tens of thousands of attributes
        n = size // 11
        attrs = " ".join(f"a{i:06d}=x" for i in range(n))
        return f"<html><body><article><p {attrs}>{PROSE.strip()}</p></article></body></html>".encode()[:size], "page.html"
    if family == "nfkc_ligatures":  # U+FDFA: one character, 18 after NFKC
        return _fill("\ufdfa", size, "Harbour\n\n" + PROSE), "story.txt"
    if family == "mr_abbreviations":  # Punkt checks every period of "Mr. Mr. Mr. ..."
        return _fill("Mr. ", size, "Harbour\n\n" + PROSE), "story.txt"
    if family == "yaml_alias_bomb":  # 373 bytes at x1; x4: more levels
        return _alias_bomb(9 if size < 1_000_000 else 12), "bomb.md"
    if family == "jsonl_deep_line":  # a deeply nested line between good ones
        good = json.dumps({"title": "Harbour", "text": PROSE.strip()})
        return (good + "\n" + "[" * (size - 2 * len(good) - 2) + "\n" + good.replace("Harbour", "Ferries") + "\n").encode(), "feed.jsonl"
    if family == "charset_punycode":  # a page declaring a pure-Python, quadratic codec
        return _fill("harbour-", size), "page.html"
    raise ValueError(family)


FAMILIES = [
    "benign_text", "benign_html", "md_brackets", "md_emphasis", "text_debris", "wrapped_no_stop",
    "html_attributes", "nfkc_ligatures", "mr_abbreviations", "yaml_alias_bomb", "jsonl_deep_line",
    "charset_punycode",
]


async def _serve(data: bytes, charset: str):
    from aiohttp import web

    async def page(_request):
        return web.Response(body=data, content_type="text/html", charset=charset)

    app = web.Application()
    app.router.add_get("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/page"


async def one_case(family: str, size: int, explain_ms: float = 0) -> dict:
    from bot.core import preparing
    from bot.core.fetch import FetchPolicy

    data, name = make(family, size)
    with tempfile.TemporaryDirectory() as tmp:
        library = await Library.open(Path(tmp) / "library.sqlite3", limits=Limits(max_article_bytes=2_000_000))
        await library.add_bytes(b"Warm-up. The pool of workers starts here, before the clock.", "warm.txt", scope=1, added_by="bench")
        runner = url = None
        if family == "charset_punycode":
            runner, url = await _serve(data, "punycode")
        stall = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal stall
            while not done.is_set():
                if explain_ms:
                    # faulthandler's own thread needs no GIL: it names a C call that holds it too.
                    faulthandler.dump_traceback_later(explain_ms / 1000)
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                stall = max(stall, time.perf_counter() - before - 0.005)

        tick = asyncio.create_task(ticker())
        start = time.perf_counter()
        try:
            if url is not None:
                summary = await library.add_url(url, scope=1, added_by="bench", policy=FetchPolicy(allow_private=True))
            else:
                summary = await library.add_bytes(data, name, scope=1, added_by="bench")
            outcome = summary.line() + "".join(f"; {reason}" for _, reason in summary.failed[:1])
        except ArticleError as exc:
            outcome = f"refused: {exc}"
        seconds = time.perf_counter() - start
        done.set()
        await tick
        faulthandler.cancel_dump_traceback_later()
        await library.close()
        if runner is not None:
            await runner.cleanup()
    await asyncio.to_thread(preparing.shutdown)
    return {
        "family": family,
        "bytes": len(data),
        "seconds": round(seconds, 2),
        "stall_ms": round(stall * 1000, 1),
        "bot_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "outcome": outcome[:110],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=480_000, help="x1 size in bytes (x4 is four times it)")
    parser.add_argument("--only", default="", help="comma-separated families")
    parser.add_argument("--baseline", type=Path, help="another checkout: each case runs there too (before) and here (after)")
    parser.add_argument(
        "--explain-stalls", type=float, default=0, metavar="MS",
        help="print every thread's stack whenever the event loop is MS late (stall figures are then not comparable)",
    )
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(asyncio.run(one_case(args.case[0], int(args.case[1]), args.explain_stalls))))
        return
    families = [f for f in FAMILIES if not args.only or f in args.only.split(",")]
    print(f"{'family':<18} {'size':>4} {'bytes':>9} {'s':>6} {'stall ms':>8} {'bot MB':>6} {'workers MB':>10}  outcome")
    versions = [("", Path(__file__))]
    if args.baseline:
        versions = [("before ", args.baseline / "benchmarks" / Path(__file__).name), ("after ", Path(__file__))]
    for family in families:
        for label, size in (("x1", args.base), ("x4", 4 * args.base)):
            for version, script in versions:
                proc = subprocess.run(
                    [sys.executable, str(script), "--case", family, str(size)]
                    + (["--explain-stalls", str(args.explain_stalls)] if args.explain_stalls and version != "before " else []),
                    capture_output=True, text=True, timeout=300,
                )
                if args.explain_stalls and proc.stderr:
                    print(proc.stderr, file=sys.stderr)
                name = f"{version}{family}"
                if proc.returncode != 0:
                    print(f"{name:<18} {label:>4} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    f"{name:<18} {label:>4} {r['bytes']:>9,} {r['seconds']:>6.2f} {r['stall_ms']:>8.1f} "
                    f"{r['bot_mb']:>6} {r['workers_mb']:>10}  {r['outcome']}",
                    flush=True,
                )

if __name__ == "__main__":
    main()
