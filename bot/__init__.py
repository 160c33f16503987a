"""Quotebot: answers questions by quoting stored articles word for word."""
