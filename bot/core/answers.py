"""The answer object: what every skin (console, JSON, Discord) renders, built in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


class QuestionError(ValueError):
    """A question the bot cannot take (empty, too long): the message is shown to the asker."""


@dataclass(frozen=True, slots=True)
class Passage:
    """Verbatim text of one or more adjacent stored sentences, with where it came from."""

    article_id: int
    title: str
    source: str | None
    url: str | None
    published: str | None
    text: str
    score: float
    sentence_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    question: str
    passages: tuple[Passage, ...]
    # Stemmed question terms, so a renderer can bold the words that matched.
    terms: frozenset[str] = field(default_factory=frozenset)
    # Why nothing is quoted, in words for the asker; None when answered.
    declined: str | None = None

    @property
    def answered(self) -> bool:
        return bool(self.passages)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answered": self.answered,
            "passages": [
                {k: v for k, v in asdict(p).items() if k != "sentence_ids"} for p in self.passages
            ],
        }


NOTHING_MATCHES = "No stored article answers that."
ONLY_COMMON_WORDS = "That question has only common words; ask about something specific."
