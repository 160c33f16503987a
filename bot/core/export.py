"""The whole library as JSON Lines, in the form the JSON Lines importer reads back exactly."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .storage import ArticleStore

EXPORT_FORMAT = "quotebot-export-1"


async def export_jsonl(store: ArticleStore, path: str) -> int:
    """Write every article; the file appears whole or not at all. Returns the article count."""
    lines: list[str] = []
    async for rows in store.iter_articles():
        for (id_, scope, title, source, author, url, published, caption, body, added_by, added_at) in rows:
            record = {
                "format": EXPORT_FORMAT,
                "id": id_,
                "scope": scope,
                "title": title,
                "text": body,
                "source": source,
                "author": author,
                "url": url,
                "published": published,
                "caption": caption,
                "added_by": added_by,
                "added_at": added_at,
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    payload = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(payload)
        return len(lines)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines)
