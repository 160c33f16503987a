"""The Discord skin: one extension per concern, each a thin layer over `bot.core.library.Library`.

- `ask`: questions (`/ask`, `!ask`, a mention, optional auto-answer channels, "Ask Quotebot")
- `answer_view`: the buttons under an answer (More, Context, Helpful / Not helpful)
- `articles`: the `/article` group for managers (add, remove, list, show, search)
- `help`: `/help` and `!help`, one card
- `admin`: the owner's `sync` command
- `errors`: the one error handler
- `checks` and `rendering` are helpers, not extensions.
"""
