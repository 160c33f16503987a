"""Answer-quality evaluations: `python -m bot.eval squad PATH` (see docs/answer-quality.md)."""
