"""The vocabulary shared by the tinymath problems and the pretraining corpus.

Both draw their words from here, so that every word a problem uses also occurs in pretraining
(an embedding the base model never trained stays random, and then only full fine-tuning can use it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Person:
    name: str
    subject: str  # "He" / "She"
    object: str  # "him" / "her"
    possessive: str  # "his" / "her"


_MALE = ("Tom", "Sam", "Ben", "Max", "Leo", "Jack", "Omar", "Paul", "Ivan", "Noah")
_FEMALE = ("Mia", "Ana", "Lily", "Emma", "Zoe", "Nina", "Rosa", "Lena", "Sara", "Ella")
PEOPLE: tuple[Person, ...] = tuple(Person(n, "He", "him", "his") for n in _MALE) + tuple(
    Person(n, "She", "her", "her") for n in _FEMALE
)

# countable things (plural forms); problems and corpus both count them
THINGS = (
    "apples",
    "pens",
    "books",
    "marbles",
    "stickers",
    "coins",
    "cards",
    "cookies",
    "shells",
    "stamps",
    "balls",
    "toys",
    "eggs",
    "flowers",
    "pencils",
    "candies",
    "beads",
    "rocks",
)

# containers for "k bags with m things in each bag": (plural, singular)
CONTAINERS = (("bags", "bag"), ("boxes", "box"), ("baskets", "basket"), ("jars", "jar"))

PLACES = ("park", "school", "shop", "garden", "library", "market", "lake", "farm", "house", "beach")
ADJECTIVES = ("red", "blue", "small", "big", "old", "new", "green", "shiny", "round", "heavy")
# how a multiplication step is worded: factor -> verb
MULTIPLY_VERBS = {2: "doubles", 3: "triples"}
