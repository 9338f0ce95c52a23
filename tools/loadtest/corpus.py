"""The load-test corpora, one per workload: passages (project-written sentences of realistic, varied length, some
far past 128 tokens) and short search-style queries (2 to 12 words), which stress the per-request cost of the
ensemble's hops rather than the encoder.

Everything here is written for this project and shipped under the project's licence (Apache-2.0); nothing is
downloaded. The generators are deterministic, so both files can be rebuilt (`python -m tools.loadtest.corpus`) and
any run reproduced.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from pathlib import Path

from tools.errors import UsageError

DEFAULT_CORPUS = Path(__file__).with_name("corpus.txt")  # package data: found wherever tools is installed
QUERIES_CORPUS = Path(__file__).with_name("queries.txt")
DEFAULT_SIZE = 1000
DEFAULT_SEED = 20261128
QUERY_WORDS = (2, 12)  # the bounds of a search-style query, in words


class Workload(enum.StrEnum):
    """What the texts of a load look like; every command that loads the model names its workloads from here."""

    PASSAGES = "passages"
    QUERIES = "queries"


DEFAULT_WORKLOAD = Workload.PASSAGES
CORPORA = {Workload.PASSAGES: DEFAULT_CORPUS, Workload.QUERIES: QUERIES_CORPUS}

_SUBJECTS = ["the new laptop", "my order", "this coffee grinder", "the support team", "the mobile app",
             "the hotel room", "our quarterly report", "the train to Lyon", "the city library", "the update",
             "the checkout page", "the rental car", "the pasta recipe", "the insurance claim", "the invoice",
             "the weather service", "the delivery driver", "the museum tour", "the password reset email",
             "the battery", "the conference keynote", "the onboarding guide", "the database migration"]
_VERBS = ["arrived two days late", "works better than expected", "keeps crashing on start",
          "was friendly and quick", "costs too much for what it does", "needs a clearer manual",
          "stopped syncing after the last release", "was spotless", "missed the deadline again",
          "made the whole trip easier", "charged me twice", "is surprisingly quiet", "could not find my booking",
          "took forty minutes to answer", "finally fixed the login bug", "smells of fresh paint"]
_OPENERS = ["Honestly,", "To be fair,", "As I wrote last week,", "In short,", "Unfortunately,", "Good news:",
            "For the record,", "After three attempts,", "Compared with last year,", ""]
_QUESTIONS = ["how do I reset my password", "where is my parcel", "can I change the delivery address",
              "what is the refund policy", "does the app work offline", "which plan includes priority support",
              "why was I charged twice", "how long does shipping to Norway take", "is breakfast included",
              "can I export my data as CSV"]
_DETAILS = ["The serial number is printed under the stand.", "I attached the receipt and two photos.",
            "Nobody answered the chat for an hour.", "The same thing happened on my partner's phone.",
            "We tried restarting, reinstalling and clearing the cache.", "The courier left a note but no parcel.",
            "Prices went up by twelve percent since spring.", "The staff spoke English, French and Italian.",
            "Our team of eight people uses it every day.", "The error code on screen was E-4012.",
            "It rained the whole week, so we stayed inside.", "The second unit behaved exactly like the first."]


def _sentence(rng: random.Random) -> str:
    opener = rng.choice(_OPENERS)
    body = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}."
    text = f"{opener} {body}" if opener else body
    return text[0].upper() + text[1:]


def _text(rng: random.Random) -> str:
    """One request's text; the mix of kinds gives a long-tailed length distribution."""
    kind = rng.random()
    if kind < 0.25:  # a search query or question: a handful of words
        return rng.choice(_QUESTIONS) + rng.choice(["?", "", " please", " asap"])
    if kind < 0.70:  # a review or chat message: one to three sentences
        return " ".join(_sentence(rng) for _ in range(rng.randint(1, 3)))
    if kind < 0.93:  # a support ticket: sentences mixed with details
        parts = [_sentence(rng) if rng.random() < 0.5 else rng.choice(_DETAILS) for _ in range(rng.randint(4, 9))]
        return " ".join(parts)
    # a long document (an e-mail thread, a report section): well past the encoder's sequence length
    return " ".join(_sentence(rng) + " " + rng.choice(_DETAILS) for _ in range(rng.randint(12, 30)))


def generate(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> list[str]:
    rng = random.Random(seed)
    return [_text(rng) for _ in range(size)]


_PRODUCTS = ["laptop", "coffee grinder", "wireless earbuds", "rental car", "hotel room", "train ticket", "invoice",
             "mobile app", "password", "parcel", "insurance claim", "gift card", "standing desk", "e-bike",
             "phone case", "router", "museum pass", "pasta maker", "winter jacket", "printer ink"]
_TRAITS = ["cheap", "quiet", "waterproof", "lightweight", "refurbished", "second hand", "eco friendly", "compact",
           "fast", "family size"]
_PLACES = ["Lyon", "Norway", "Berlin", "the airport", "Madrid", "Oslo", "the city centre", "Lisbon"]
_ACTIONS = ["reset", "cancel", "return", "track", "renew", "update", "export", "pair", "repair", "upgrade"]
_PROBLEMS = ["not working", "keeps crashing", "charged twice", "arrived late", "missing", "too loud",
             "will not turn on", "error E-4012", "login failed", "battery drains fast"]
_QUERY_FORMS: list[Callable[[random.Random], str]] = [
    lambda r: f"{r.choice(_PRODUCTS)} {r.choice(_PROBLEMS)}",
    lambda r: f"how to {r.choice(_ACTIONS)} my {r.choice(_PRODUCTS)}",
    lambda r: f"best {r.choice(_TRAITS)} {r.choice(_PRODUCTS)} {r.choice(['2026', 'under 100 euros', 'reviews'])}",
    lambda r: f"{r.choice(_PRODUCTS)} near {r.choice(_PLACES)}",
    lambda r: f"{r.choice(_PRODUCTS)} price",
    lambda r: f"{r.choice(_TRAITS)} {r.choice(_PRODUCTS)}",
    lambda r: " vs ".join(r.sample(_PRODUCTS, 2)),
    lambda r: f"why is my {r.choice(_PRODUCTS)} {r.choice(_PROBLEMS)} after the update",
    lambda r: f"{r.choice(_QUESTIONS)}{r.choice(['?', ''])}",
    lambda r: f"can I {r.choice(_ACTIONS)} a {r.choice(_TRAITS)} {r.choice(_PRODUCTS)} bought in "
              f"{r.choice(_PLACES)}",
]


def _query(rng: random.Random) -> str:
    """One search-style query; forms that come out outside QUERY_WORDS are drawn again."""
    low, high = QUERY_WORDS
    while True:
        text = rng.choice(_QUERY_FORMS)(rng)
        if low <= len(text.split()) <= high:
            return text


def generate_queries(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> list[str]:
    rng = random.Random(seed)
    return [_query(rng) for _ in range(size)]


GENERATORS: dict[Workload, Callable[[int, int], list[str]]] = {Workload.PASSAGES: generate,
                                                                Workload.QUERIES: generate_queries}


def write(path: Path = DEFAULT_CORPUS, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED,
          workload: Workload = DEFAULT_WORKLOAD) -> Path:
    path.write_text("\n".join(GENERATORS[workload](size, seed)) + "\n")
    return path


def resolve(workload: Workload | None, path: Path | None) -> Path:
    """The corpus a run reads: the user's own file, or the built-in one of a workload (passages by default)."""
    if workload is not None and path is not None:
        raise UsageError("--workload picks a built-in corpus and --corpus gives your own: use one of them")
    return path if path is not None else CORPORA[workload or DEFAULT_WORKLOAD]


def workload_of(path: Path) -> str:
    """The workload a corpus file is built in for, or 'custom' for a user's own file."""
    return next((str(w) for w, built_in in CORPORA.items() if Path(path).resolve() == built_in.resolve()), "custom")


def load(path: Path | str = DEFAULT_CORPUS) -> list[str]:
    """One text per non-empty line; a corpus that is missing, unreadable or empty is a usage error."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"corpus {path} is not a file (a folder); give a text file, one text per line")
    try:
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read corpus {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read corpus {path}: not UTF-8 text") from None
    if not texts:
        raise UsageError(f"corpus {path} holds no text")
    return texts


if __name__ == "__main__":
    for workload, corpus_path in CORPORA.items():
        print(write(corpus_path, workload=workload))
