"""An exact quote or an honest no: a server holding only the shipped article answers what the
article says, declines what merely shares a word with it, says whether anything came close,
and gives every answer a confidence a skin can act on."""
from __future__ import annotations

import json
from pathlib import Path

import discord
import numpy as np
import pytest

from bot.cogs.rendering import answer_reply
from bot.core.answers import NOTHING_MATCHES, Answer, Nearest, decline_text
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft
from bot.core.confidence import FEATURES, MODEL_PATH, load_model, rarity
from bot.core.library import Library
from bot.core.render import answer_json, answer_text

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"

# Questions a member might ask that share a word with the shipped article (a North Korean
# karaoke video, markets, famine, food) but that it does not answer.
OFF_TOPIC = [
    "What should I feed my dog?",
    "What do children eat for breakfast?",
    "What are good hand exercises?",
    "How do I sing better?",
    "Where can I buy cheap beer?",
    "What is the best karaoke machine for home?",
    "How do I start a small restaurant?",
    "Which cell phone has the best battery?",
    "How do I train for a dancing competition?",
    "What time does the market open on Sunday?",
    "What is the weather like in Seoul in spring?",
    "How do I apply for a tourist visa?",
    "Who won the last election in South Korea?",
    "How many calories are in a glass of beer?",
    "How do I record a video on my phone?",
    "What is the best camera for night photography?",
    "What music is popular with teenagers?",
    "How much does a flight to Singapore cost?",
    "How do I get paint out of my clothes?",
    "Which electronics store has the best prices?",
    "How long should a child sleep each night?",
    "What is the population of the port city of Hamburg?",
    "How do I improve my English for a job interview?",
    "Who won the football World Cup in 2014?",
    "How do market vendors take card payments?",
    "What programmes are on television tonight?",
    "How do I become a journalist?",
    "How do I bake bread for my family?",
    "What should I pack for a night out camping?",
    "How do I escape from a locked room game?",
    "What is a healthy diet for a pregnant woman?",
    "How do I smuggle more leg room on a budget flight?",
]

# What the article does say, asked as a member would.
ON_TOPIC = [
    "Who released the footage?",
    "How were the women dressed?",
    "Where was the footage shot?",
    "What do families rely on to feed themselves?",
    "Who died of starvation?",
    "What share of households had borderline or poor food consumption?",
    "What did the outdoor market sell?",
    "Who funds the new night-life establishments?",
]


@pytest.fixture
async def seed_only(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3", corpus_dir=CORPUS)
    yield lib
    await lib.close()


async def test_a_server_with_only_the_shipped_article_declines_what_merely_shares_a_word(seed_only):
    answered = {}
    for question in OFF_TOPIC:
        answer = await seed_only.ask(question)
        if answer.answered:
            answered[question] = answer.passages[0].text
            assert answer.confidence < 0.3, question  # and never with the confidence of a real answer
    # The three, by name; before this work 10 of these 32 were answered.
    for question in OFF_TOPIC[:3]:
        assert question not in answered
    assert len(answered) <= 6, answered


async def test_and_still_answers_what_the_article_says(seed_only):
    for question in ON_TOPIC:
        answer = await seed_only.ask(question)
        assert answer.answered, question
        assert 0.0 < answer.confidence <= 1.0 and all(0.0 < p.confidence <= 1.0 for p in answer.passages)


async def test_the_same_questions_hold_in_a_library_of_many_articles(tmp_path):
    """Adding unrelated articles changes every word's idf; the decisions do not depend on it."""
    lib = await Library.open(tmp_path / "library.sqlite3", corpus_dir=CORPUS)
    try:
        for n in range(40):
            body = (
                f"The council of Townsville {n} met on Monday to discuss the new library building. "
                f"Residents asked for longer opening hours and more parking near the station.\n\n"
                f"The mayor said the budget for {2000 + n} would include repairs to the bridge."
            )
            await lib.add_draft(ArticleDraft(title=f"Council meeting {n}", body=body), scope=GLOBAL_SCOPE, added_by="test")
        for question in ON_TOPIC:
            assert (await lib.ask(question)).answered, question
        answered = [q for q in OFF_TOPIC if (await lib.ask(q)).answered]
        # Alone the article answers 6 of the 32 (measured); with 40 more articles, 7.
        assert not set(OFF_TOPIC[:3]) & set(answered) and len(answered) <= 8, answered
        answer = await lib.ask("When did the council of Townsville 7 meet?")
        assert answer.answered and "Townsville 7 met on Monday" in answer.passages[0].text
    finally:
        await lib.close()


async def test_ask_json_carries_a_confidence_per_answer_and_per_passage(seed_only):
    data = json.loads(answer_json(await seed_only.ask("Who released the footage?")))
    assert data["answered"] is True
    assert 0.5 <= data["confidence"] <= 1.0
    assert data["passages"] and all(0.0 < p["confidence"] <= 1.0 for p in data["passages"])
    assert data["passages"][0]["confidence"] >= data["passages"][-1]["confidence"] or len(data["passages"]) > 1
    declined = json.loads(answer_json(await seed_only.ask("What should I feed my dog?")))
    assert declined["answered"] is False and declined["passages"] == []
    assert 0.0 <= declined["confidence"] < data["confidence"]
    assert "declined" in declined and "nearest" in declined


async def test_nothing_matches_reads_differently_from_something_close(seed_only):
    nothing = await seed_only.ask("zzyzx quux")
    assert not nothing.answered and nothing.nearest is None
    assert answer_text(nothing) == NOTHING_MATCHES
    close = Answer("Who owns the karaoke salon?", (), frozenset(), NOTHING_MATCHES, 0.1, 0.1, Nearest(1, "Rare N. Korea video"))
    text = answer_text(close)
    assert text != NOTHING_MATCHES
    assert "“Rare N. Korea video” (article 1)" in text and "no sentence in it clearly answers" in text


async def test_a_close_decline_names_the_article_and_quotes_nothing(seed_only):
    """Something close: a question near the article's subject that it does not answer."""
    found = None
    for question in ("Where can I buy cheap beer?", "What programmes are on television tonight?"):
        answer = await seed_only.ask(question)
        if not answer.answered and answer.nearest is not None:
            found = answer
            break
    assert found is not None
    assert found.nearest.title == "Rare N. Korea video shows karaoke salons, markets"
    text = answer_text(found)
    assert found.nearest.title in text
    body = (CORPUS / "000_07a41ce63a0344ef.txt").read_text()
    # No sentence of the article is presented: only its title.
    assert not any(len(s) > 40 and s in text for s in body.split(". "))


def test_discord_escapes_the_closest_title_and_cannot_ping():
    title = "**Breaking** @everyone [click](http://evil.example) <@123>"
    reply = answer_reply(Answer("q", (), frozenset(), NOTHING_MATCHES, 0.1, 0.1, Nearest(7, title)))
    assert reply.embeds == [] and reply.content is not None
    assert "**Breaking**" not in reply.content and "\\*\\*Breaking" in reply.content
    assert "@everyone" not in reply.content.replace("@\u200beveryone", "")
    assert "(article 7)" in reply.content
    assert reply.kwargs()["allowed_mentions"] == discord.AllowedMentions.none() or reply.kwargs()["allowed_mentions"].everyone is False
    assert decline_text(Answer("q", (), frozenset(), NOTHING_MATCHES)) == NOTHING_MATCHES


def test_the_shipped_model_fits_the_features_and_says_how_it_was_made():
    data = json.loads(MODEL_PATH.read_text())
    model = load_model()
    assert tuple(data["features"]) == FEATURES
    assert "python -m bot.eval train" in data["trained_with"]
    assert 0.0 < model.answer_threshold < 1.0 and 0.0 <= model.close_threshold < model.answer_threshold
    x = np.zeros(len(FEATURES))
    assert 0.0 < model.answer_confidence(x) < 1.0


def test_word_rarity_comes_from_english_at_large_not_the_library():
    assert rarity("the") < rarity("dog") < rarity("pastor") < rarity("chongjin") <= 8.0


async def test_when_no_word_of_the_question_tells_sentences_apart_the_bot_declines(library: Library) -> None:
    """Two harbour notices and nothing else: every word of the question is in exactly half of
    the sentences, so BM25 gives every sentence 0 (rank_bm25's idf, kept exactly) and the order
    is arbitrary. The bot says nothing matches rather than quote the other town's notice."""
    for town in ("Kestrel Bay", "Gull Point"):
        body = f"The harbour at {town} reopened on Monday. Boats from {town} sailed at dawn. The mayor of {town} was there."
        await library.add_draft(ArticleDraft(title=f"Harbour at {town} reopens", body=body), scope=GLOBAL_SCOPE, added_by="admin")
    terms, candidates = await library.assess("When did the harbour at Gull Point reopen?")
    assert terms and candidates == []
    answer = await library.ask("When did the harbour at Gull Point reopen?")
    assert not answer.answered and answer.passages == () and answer.declined == NOTHING_MATCHES
