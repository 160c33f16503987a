"""The answer object: what every skin (console, JSON, Discord) renders, built in one place."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


class QuestionError(ValueError):
    """A question the bot cannot take (empty, too long): the message is shown to the asker."""


NOTHING_MATCHES = "No stored article answers that."
ONLY_COMMON_WORDS = "That question has only common words; ask about something specific."


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
    # The chance that this passage holds the answer (calibrated on SQuAD: confidence.py).
    confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class Nearest:
    """The article that came closest to a question the library declined."""

    article_id: int
    title: str


@dataclass(frozen=True, slots=True)
class Answer:
    question: str
    passages: tuple[Passage, ...]
    # Stemmed question terms, so a renderer can bold the words that matched.
    terms: frozenset[str] = field(default_factory=frozenset)
    # Why nothing is quoted, in words for the asker; None when answered.
    declined: str | None = None
    # The chance that the quoted passages hold the answer (when declined: that the best
    # sentence found would have); skins may ask for more than the library does to speak.
    confidence: float = 0.0
    # The chance that the library holds an answer at all, which is what declining is decided on.
    answerable: float = 0.0
    # When declined although something came close: that article (never quoted as an answer).
    nearest: Nearest | None = None

    @property
    def answered(self) -> bool:
        return bool(self.passages)

    def to_dict(self) -> dict:
        out = {
            "question": self.question,
            "answered": self.answered,
            "confidence": self.confidence,
            "answerable": self.answerable,
            "passages": [
                {k: v for k, v in asdict(p).items() if k != "sentence_ids"} for p in self.passages
            ],
        }
        if not self.answered:
            out["declined"] = self.declined
            out["nearest"] = asdict(self.nearest) if self.nearest else None
        return out


def decline_text(answer: Answer, shown: Callable[[str], str] = str) -> str:
    """Why nothing is quoted, for the asker. "Nothing matches" and "something close, but no
    answer" read differently; the close article is named (through `shown`, the skin's escaping),
    never quoted. The one place this wording is built."""
    reason = answer.declined or NOTHING_MATCHES
    if answer.nearest is None:
        return reason
    return (
        f"Nothing stored answers that for sure. The closest is the article “{shown(answer.nearest.title)}” "
        f"(article {answer.nearest.article_id}), but no sentence in it clearly answers the question."
    )

