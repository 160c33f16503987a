"""The Discord skin: one extension per concern, each a thin layer over `bot.core.library.Library`.

- `ask`: questions (`/ask`, `!ask`, a mention, optional auto-answer channels)
- `articles`: the `/article` group for managers (add, remove, list, show)
- `admin`: the owner's `sync` command
- `errors`: the one error handler
- `checks` and `rendering` are helpers, not extensions.
"""
