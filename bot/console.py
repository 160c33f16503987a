"""The interactive console: the chat channel without Discord.

A line is a question, answered exactly as the channel would answer it. Lines that start with
`!` mirror the chat commands (`!article add PATH|URL`, `!article list`, ...), with the console
user as the library's owner, managing the global articles.
"""
from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from pathlib import Path
from typing import TextIO

from .app import open_library
from .core.answers import QuestionError
from .core.articles import GLOBAL_SCOPE, ArticleError
from .core.fetch import FetchPolicy
from .core.library import Library
from .core.storage import StoreError
from .core.stores import describe
from .core.render import answer_text, article_row, source_line
from .core.text_safety import terminal_safe
from .settings import Settings

log = logging.getLogger(__name__)

HELP = """\
Type a question and press Enter to have it answered from the stored articles.
Commands (the same as in the chat channel):
  !ask QUESTION                 answer a question (plain text works too)
  !article add PATH|URL         add a file (.txt .md .html .jsonl), a folder, or a web page
  !article list [PAGE]          stored articles, newest first
  !article show ID              an article's details and first sentences
  !article remove ID            remove an article
  !help                         this text
  !quit                         leave (Ctrl-D works too)"""


class Console:
    def __init__(self, library: Library, settings: Settings, out: TextIO = sys.stdout) -> None:
        self.library = library
        self.settings = settings
        self.out = out

    def say(self, text: str) -> None:
        # Titles, file names and errors echo stored or typed text: no control sequence gets through.
        self.out.write(terminal_safe(text) + "\n")
        self.out.flush()

    async def handle(self, line: str) -> bool:
        """Act on one line; False when the user wants to leave."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("!"):
            await self.ask(line)
            return True
        try:
            words = shlex.split(line[1:])
        except ValueError:
            words = line[1:].split()
        if not words:
            return True
        command, rest = words[0].lower(), words[1:]
        if command in ("quit", "exit", "q"):
            return False
        if command == "help":
            self.say(HELP)
        elif command == "ask":
            await self.ask(line[1:].split(None, 1)[1] if rest else "")
        elif command == "article" and rest:
            await self.article(rest[0].lower(), rest[1:])
        else:
            self.say(f"Unknown command {line.split()[0]!r}. Type !help.")
        return True

    async def ask(self, question: str) -> None:
        try:
            answer = await self.library.ask(question)
        except (QuestionError, StoreError) as exc:  # StoreError: a damaged or vanished database
            self.say(str(exc))
            return
        self.say(answer_text(answer))

    async def article(self, action: str, args: list[str]) -> None:
        try:
            if action == "add" and args:
                await self.add(" ".join(args))
            elif action == "list":
                page = int(args[0]) if args else 1
                infos = await self.library.list(scopes=None, page=page)
                self.say("\n".join(article_row(i) for i in infos) if infos else "No articles on that page.")
            elif action == "show" and args:
                info = await self.library.get(int(args[0]), scopes=None)
                first = await self.library.first_sentences(info.id)
                self.say(article_row(info))
                self.say("  " + source_line(info.title, info.source, info.published, info.url, info.id))
                for sentence in first:
                    self.say(f"  > {sentence}")
                dropped = await self.library.dropped_lines(info.id)
                if dropped:
                    self.say(f"  Dropped as page debris when imported ({len(dropped)} line(s) kept):")
                    for line in dropped:
                        self.say(f"    {line}")
            elif action in ("remove", "delete") and args:
                info = await self.library.remove(int(args[0]), scopes=None)
                self.say(f"Removed article {info.id}: {info.title}")
            else:
                self.say("Usage: !article add PATH|URL, !article list [PAGE], !article show ID, !article remove ID")
        except StoreError as exc:
            self.say(str(exc))
        except ValueError as exc:
            # ArticleError is a ValueError; a bad number from int() lands here too.
            self.say(str(exc) if isinstance(exc, ArticleError) else "An article id is a number.")

    async def add(self, target: str) -> None:
        if target.lower().startswith(("http://", "https://")):
            policy = FetchPolicy(
                timeout=self.settings.fetch_timeout_seconds,
                max_bytes=self.settings.fetch_max_bytes,
                max_redirects=self.settings.fetch_max_redirects,
                allow_private=self.settings.allow_private_urls,
            )
            summary = await self.library.add_url(target, scope=GLOBAL_SCOPE, added_by="console", policy=policy)
        else:
            path = Path(target).expanduser()
            if not await asyncio.to_thread(path.exists):
                raise ArticleError(f"No such file or folder: {target}")
            summary = await self.library.import_paths([path], scope=GLOBAL_SCOPE, added_by="console")
        for added in summary.added:
            a = added.article
            self.say(f"Stored article {a.id}: {a.title} ({a.source or 'no source'}, {added.sentence_count} sentences)")
        for where, existing in summary.duplicates:
            self.say(f"Already stored: {where} is article {existing}.")
        for where, reason in summary.failed:
            self.say(f"Not stored: {where}: {reason}")


async def run_console(settings: Settings, stdin: TextIO = sys.stdin) -> int:
    library = await open_library(settings)
    console = Console(library, settings)
    count = await library.count(scopes=None)
    interactive = stdin.isatty()
    console.say(f"Quotebot console: {count} article(s) in {describe(settings.store_target())}. Type a question, or !help.")
    try:
        while True:
            if interactive:
                console.out.write("> ")
                console.out.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            if not await console.handle(line):
                break
    finally:
        await library.close()
    return 0
