"""The command line: `python -m bot [run|ask|list|import|export]`.

With no sub-command the bot runs: on Discord when a token is set, otherwise as the
interactive console over the same library.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from .app import open_library
from .core.answers import QuestionError
from .core.articles import GLOBAL_SCOPE
from .core.library import collect_files
from .core.render import answer_json, answer_text, article_dict, article_row, to_json
from .core.text_safety import terminal_safe
from .core.storage import MAX_ID, StoreError
from .core.stores import is_postgres_url
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_TOP = 50  # passages one answer may quote


def parse_scope(value: str) -> int:
    if value == "global":
        return GLOBAL_SCOPE
    try:
        scope = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("scope must be 'global' or a server id") from None
    if not 0 < scope <= MAX_ID:
        raise argparse.ArgumentTypeError("a server id is a positive number of at most 19 digits")
    return scope


def parse_top(value: str) -> int:
    try:
        top = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("K must be a whole number") from None
    if not 1 <= top <= MAX_TOP:
        raise argparse.ArgumentTypeError(f"K must be between 1 and {MAX_TOP}")
    return top


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="library database: a SQLite file or a postgresql:// URL (default: from settings)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("run", help="run the bot (Discord with a token, else the console)")

    ask = sub.add_parser("ask", help="answer one question, or a batch")
    ask.add_argument("question", nargs="?", help="the question")
    ask.add_argument("--batch", metavar="FILE", help="one question per line ('-' for standard input)")
    ask.add_argument("--top", type=parse_top, metavar="K", help="passages to quote (default from settings)")
    ask.add_argument("--json", action="store_true", help="JSON output (one object per answer)")
    ask.add_argument("--scope", type=parse_scope, help="answer as in this server (default: global only)")

    lst = sub.add_parser("list", help="list stored articles")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--scope", type=parse_scope, help="only this scope ('global' or a server id)")

    imp = sub.add_parser("import", help="import files, folders and .jsonl files")
    imp.add_argument("paths", nargs="+", type=Path)
    imp.add_argument("--scope", type=parse_scope, help="scope of the new articles (default: global; an export keeps its own)")

    exp = sub.add_parser("export", help="write the whole library as JSON Lines")
    exp.add_argument("path", help="output file ('-' for standard output)")
    for p in (ask, lst, imp, exp):
        p.add_argument("--db", default=argparse.SUPPRESS, help="library database: a SQLite file or a postgresql:// URL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.db is not None:
        settings = with_database(settings, args.db)
    _setup_logging(args.verbose)
    command = args.command or "run"
    try:
        if command == "run":
            if settings.discord_token is not None and settings.discord_token.get_secret_value().strip():
                from .discord_bot import run_bot

                return run_bot(settings)
            from .console import run_console

            return run_until_signal(run_console(settings))
        return run_until_signal(_COMMANDS[command](args, settings))
    except StoreError as exc:
        print(terminal_safe(f"error: {exc}"), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


def with_database(settings: Settings, db: str) -> Settings:
    """`--db`: a postgresql:// URL, or a SQLite file (which then wins over a URL in the settings)."""
    if is_postgres_url(db):
        return settings.model_copy(update={"database_url": SecretStr(db)})
    return settings.model_copy(update={"db_path": Path(db), "database_url": None})


def run_until_signal(coro: Coroutine[Any, Any, int]) -> int:
    """Run `coro`; SIGTERM cancels it like Ctrl-C does, so the write under way rolls back
    and the database closes before the process exits."""

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(main())


def _setup_logging(verbose: bool) -> None:
    import discord.utils

    discord.utils.setup_logging(level=logging.DEBUG if verbose else logging.WARNING, root=True)
    # aiosqlite's debug log carries every statement's parameters: article text and user ids.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


async def _ask(args: argparse.Namespace, settings: Settings) -> int:
    if (args.question is None) == (args.batch is None):
        print("error: give a question or --batch FILE", file=sys.stderr)
        return 2
    library = await open_library(settings)
    status = 0
    try:
        if args.batch is None:
            questions = [args.question]
        elif args.batch == "-":
            questions = sys.stdin.read().splitlines()
        else:
            questions = Path(args.batch).read_text(encoding="utf-8").splitlines()
        for question in questions:
            if args.batch is not None and not question.strip():
                continue
            try:
                answer = await library.ask(question, guild_id=args.scope, top_k=args.top)
            except QuestionError as exc:
                if args.json:
                    print(json.dumps({"question": question, "answered": False, "passages": [], "error": str(exc)}))
                else:
                    print(terminal_safe(f"error: {exc}"), file=sys.stderr)
                status = 1
                continue
            print(answer_json(answer) if args.json else answer_text(answer))
            if not args.json and args.batch is not None:
                print()
    finally:
        await library.close()
    return status


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    library = await open_library(settings)
    try:
        scopes = None if args.scope is None else [args.scope]
        infos = await library.store.list_articles(scopes, limit=-1)
    finally:
        await library.close()
    if args.json:
        print(to_json([article_dict(i) for i in infos]))
    else:
        for info in infos:
            print(article_row(info))
        print(f"{len(infos)} article(s)")
    return 0


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    library = await open_library(settings)
    try:
        files = collect_files(args.paths)
        with tqdm(total=len(files), unit="file", file=sys.stderr, disable=None) as bar:
            summary = await library.import_paths(
                args.paths,
                scope=GLOBAL_SCOPE if args.scope is None else args.scope,
                added_by="cli",
                progress=bar.update,
                preserve_scope=args.scope is None,
            )
    finally:
        await library.close()
    for where, reason in summary.failed:
        print(terminal_safe(f"failed: {where}: {reason}"), file=sys.stderr)
    for where, existing in summary.duplicates:
        print(terminal_safe(f"duplicate: {where} (already stored as article {existing})"), file=sys.stderr)
    print(summary.line())
    return 1 if summary.failed else 0


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from .core.export import export_jsonl

    library = await open_library(settings)
    try:
        count = await export_jsonl(library.store, args.path)
    finally:
        await library.close()
    print(f"exported {count} article(s)", file=sys.stderr)
    return 0


_COMMANDS = {"ask": _ask, "list": _list, "import": _import, "export": _export}
