"""A seeded generator of distinct, natural English sentences for the built-in corpus.

A small grammar over built-in word lists: statements, questions, clauses joined with a comma
(which gives a pause inside the utterance), and two short sentences in one utterance. Tens
of thousands of distinct sentences are reachable; ``sentences(n, seed)`` returns ``n``
distinct ones, the same for the same arguments on every machine (Python's ``random.Random``
with an integer seed is stable across versions and platforms).
"""

from __future__ import annotations

import random

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Julia", "Kevin",
         "Laura", "Martin", "Nora", "Oliver", "Peter", "Rachel", "Simon", "Sarah", "Thomas",
         "Victor", "Helen", "James", "Lucy", "Daniel"]

# (singular, plural)
NOUNS = [("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("farmer", "farmers"),
         ("child", "children"), ("doctor", "doctors"), ("neighbour", "neighbours"),
         ("student", "students"), ("driver", "drivers"), ("baker", "bakers"), ("bird", "birds"),
         ("horse", "horses"), ("sailor", "sailors"), ("painter", "painters"),
         ("soldier", "soldiers"), ("woman", "women"), ("man", "men"), ("girl", "girls"),
         ("boy", "boys"), ("friend", "friends")]

THINGS = ["book", "letter", "basket", "umbrella", "bag", "bottle", "ticket", "chair", "table",
          "picture", "coat", "ladder", "lamp", "key", "box", "candle", "map", "hat", "clock",
          "cup", "plate", "newspaper", "bench", "bicycle", "kettle", "apple", "orange",
          "parcel", "blanket", "mirror", "camera", "radio", "scarf", "pencil"]

RELATIONS = ["friend", "neighbour", "teacher", "doctor", "brother", "sister", "uncle", "aunt",
             "cousin", "grandmother"]

PLACES = ["the station", "the market", "the library", "the harbour", "the village",
          "the kitchen", "the garden", "the office", "the hospital", "the school", "the park",
          "the museum", "the bakery", "the farm", "the hotel", "the church", "the bank",
          "the beach", "the forest", "the river"]

ADJECTIVES = ["old", "young", "small", "large", "quiet", "busy", "happy", "tired", "clever",
              "careful", "friendly", "brave", "gentle", "angry", "curious", "polite", "proud",
              "lucky", "patient", "cheerful"]

THING_ADJECTIVES = ["red", "blue", "green", "heavy", "empty", "broken", "wooden", "shiny",
                    "little", "new", "dusty", "yellow", "strange", "beautiful", "tiny", "white"]

# (past tense, transitive)
VERBS_T = ["found", "carried", "painted", "opened", "cleaned", "bought", "sold", "dropped",
           "moved", "borrowed", "fixed", "watched", "noticed", "forgot", "wanted", "needed",
           "brought", "hid", "lost", "wrapped"]

VERBS_I = ["waited", "smiled", "laughed", "slept", "worked", "arrived", "stayed", "sang",
           "danced", "listened", "walked", "rested", "played", "called", "left", "returned"]

TIMES = ["yesterday", "this morning", "last night", "on Sunday", "after lunch",
         "before dinner", "in the evening", "at noon", "last week", "every day",
         "in the spring", "on Monday", "at dawn", "late at night", "in the autumn"]

PREPOSITIONS = ["near", "behind", "beside", "under", "inside", "outside", "next to", "across"]

ADVERBS = ["slowly", "quickly", "quietly", "happily", "carefully", "suddenly", "politely",
           "gently", "loudly", "patiently"]

CONNECTIVES = ["but", "and", "so"]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _subject(r: random.Random) -> str:
    k = r.randrange(4)
    if k == 0:
        return r.choice(NAMES)
    if k == 1:
        return "the " + r.choice(ADJECTIVES) + " " + r.choice(NOUNS)[0]
    if k == 2:
        return r.choice(["my ", "our ", "your "]) + r.choice(RELATIONS)
    return "the " + r.choice(NOUNS)[1]


def _object(r: random.Random) -> str:
    thing = r.choice(THINGS)
    k = r.randrange(3)
    if k == 0:
        return "the " + thing
    if k == 1:
        return _a(r.choice(THING_ADJECTIVES) + " " + thing)
    return "the " + r.choice(THING_ADJECTIVES) + " " + thing


# Sentence shapes, drawn uniformly; each draws its words left to right (the corpus's bytes
# depend on this order).
_CLAUSES = (
    lambda r, subj: f"{subj} {r.choice(VERBS_T)} {_object(r)} {r.choice(TIMES)}",
    lambda r, subj: f"{subj} {r.choice(VERBS_I)} {r.choice(PREPOSITIONS)} {r.choice(PLACES)}",
    lambda r, subj: f"{subj} {r.choice(VERBS_I)} {r.choice(ADVERBS)} {r.choice(TIMES)}",
    lambda r, subj: f"{subj} {r.choice(VERBS_T)} {_object(r)} at {r.choice(PLACES)} {r.choice(TIMES)}",
    lambda r, subj: f"{subj} {r.choice(VERBS_T)} {_object(r)} {r.choice(PREPOSITIONS)} {r.choice(PLACES)}",
)
_QUESTIONS = (
    lambda r: f"Did you see {_object(r)} {r.choice(PREPOSITIONS)} {r.choice(PLACES)}?",
    lambda r: f"Why did {_subject(r)} leave {r.choice(PLACES)} so {r.choice(['early', 'late', 'soon'])}?",
    lambda r: f"Where did {_subject(r)} put {_object(r)}?",
    lambda r: f"Is {_subject(r)} still waiting at {r.choice(PLACES)}?",
)


def _clause(r: random.Random) -> str:
    k = r.randrange(len(_CLAUSES))
    return _CLAUSES[k](r, _subject(r))


def _question(r: random.Random) -> str:
    return _QUESTIONS[r.randrange(len(_QUESTIONS))](r)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def sentence(r: random.Random) -> str:
    """One sentence drawn from the grammar with the random source ``r``."""
    k = r.randrange(10)
    if k <= 3:
        return _cap(_clause(r)) + "."
    if k == 4:
        return _question(r)
    if k in (5, 6):  # a comma: a pause inside the utterance
        return _cap(_clause(r)) + ", " + r.choice(CONNECTIVES) + " " + _clause(r) + "."
    if k == 7:
        return "When " + _clause(r) + ", " + _clause(r) + "."
    # two sentences in one utterance
    return _cap(_clause(r)) + ". " + _cap(_clause(r)) + "."


def sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences, a pure function of ``(n, seed)``."""
    if n < 0:
        raise ValueError("n must be >= 0")
    r = random.Random(int(seed))
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        s = sentence(r)
        attempts += 1
        if s not in seen:
            seen.add(s)
            out.append(s)
        elif attempts > 50 * n + 1000:  # pragma: no cover - far beyond any sane n
            raise ValueError(f"cannot draw {n} distinct sentences")
    return out
