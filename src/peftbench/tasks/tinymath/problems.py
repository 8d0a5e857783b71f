"""The tinymath problem generator: grade-school word problems with one to three computations.

A problem starts with a quantity ("Tom has 35 apples." or "Tom has 4 bags with 7 apples in each
bag."), changes it by steps (buy/find/get: +, give/lose/sell: -, doubles/triples: x, equal piles: /),
may mention an irrelevant fact about someone else, and asks for the final quantity. The response
shows the working as one equation per step and ends with "The answer is: N", like MetaMathQA.
Every number stays in 1..99 so that the arithmetic stays within what the base model was taught.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from peftbench.tasks.base import Example
from peftbench.tasks.tinymath.words import CONTAINERS, MULTIPLY_VERBS, PEOPLE, THINGS, Person

# bump when the generated problems change (it goes into the task version and the results)
GENERATOR_VERSION = "1"
MAX_VALUE = 99


@dataclass(frozen=True)
class Step:
    """One computation: `value <op> operand = result`, with the sentence that tells it."""

    op: str  # "+", "-", "x", "/"
    operand: int
    result: int
    sentence: str


def add_sentence(rng: random.Random, *, who: Person, other: Person, n: int, thing: str) -> str:
    return rng.choice(
        (
            f"{who.subject} buys {n} more {thing}.",
            f"{who.subject} finds {n} more {thing}.",
            f"{other.name} gives {who.object} {n} more {thing}.",
            f"{who.subject} gets {n} more {thing} from {other.name}.",
        )
    )


def subtract_sentence(rng: random.Random, *, who: Person, other: Person, n: int, thing: str) -> str:
    return rng.choice(
        (
            f"{who.subject} gives {n} {thing} to {other.name}.",
            f"{who.subject} loses {n} {thing}.",
            f"{who.subject} sells {n} {thing}.",
            f"{other.name} takes {n} {thing} from {who.object}.",
        )
    )


def multiply_sentence(*, who: Person, factor: int, thing: str) -> str:
    subject = who.subject.lower() if who.subject in ("He", "She") else who.subject
    return f"Then {subject} {MULTIPLY_VERBS[factor]} {who.possessive} {thing}."


def divide_sentence(*, who: Person, k: int, thing: str) -> str:
    return f"{who.subject} splits the {thing} into {k} equal piles and keeps one pile."


def next_step(rng: random.Random, *, value: int, who: Person, other: Person, thing: str) -> Step:
    """A random step that keeps every number in 1..MAX_VALUE (operations that cannot are redrawn)."""
    while True:
        op = rng.choice("++--x/")
        if op == "+" and value <= MAX_VALUE - 2:
            n = rng.randint(2, min(60, MAX_VALUE - value))
            return Step(op, n, value + n, add_sentence(rng, who=who, other=other, n=n, thing=thing))
        if op == "-" and value >= 3:
            n = rng.randint(1, value - 1)
            return Step(op, n, value - n, subtract_sentence(rng, who=who, other=other, n=n, thing=thing))
        if op == "x" and value * 2 <= MAX_VALUE and value <= 30:
            factors = [f for f in MULTIPLY_VERBS if value * f <= MAX_VALUE]
            f = rng.choice(factors)
            return Step(op, f, value * f, multiply_sentence(who=who, factor=f, thing=thing))
        if op == "/":
            divisors = [k for k in range(2, 10) if value % k == 0 and value // k >= 1]
            if divisors:
                k = rng.choice(divisors)
                return Step(op, k, value // k, divide_sentence(who=who, k=k, thing=thing))


def start_value(rng: random.Random, *, who: Person, thing: str) -> tuple[int, str, str]:
    """(value, sentence, working) of the starting quantity; one in three is a multiplication."""
    if rng.random() < 1 / 3:
        k, m = rng.randint(2, 9), rng.randint(2, 11)
        plural, singular = rng.choice(CONTAINERS)
        sentence = f"{who.name} has {k} {plural} with {m} {thing} in each {singular}."
        return k * m, sentence, f"{who.name} starts with {k} x {m} = {k * m} {thing}."
    a = rng.randint(5, 70)
    return a, f"{who.name} has {a} {thing}.", f"{who.name} starts with {a} {thing}."


def distractor(rng: random.Random, *, other: Person, thing: str) -> str:
    n = rng.randint(2, 60)
    return rng.choice((f"{other.name} has {n} {thing}.", f"{other.name} buys {n} {thing}."))


@dataclass(frozen=True)
class Story:
    """A problem's story before it is asked: its sentences, the working, and the final quantity."""

    who: Person
    thing: str
    sentences: list[str]
    working: list[str]
    value: int


def make_story(rng: random.Random) -> Story:
    """The body of a problem (the pretraining corpus also tells such stories, worked out after)."""
    who, other = rng.sample(PEOPLE, 2)
    thing, other_thing = rng.sample(THINGS, 2)
    value, first, first_working = start_value(rng, who=who, thing=thing)
    # a multiplying start is a computation of its own: at most three computations in all
    computations = 1 if "x" in first_working else 0
    n_steps = rng.randint(max(1, 1 - computations), 3 - computations)
    # an irrelevant sentence about someone else, before step `distract_at` (or before the question)
    distract_at = rng.randint(0, n_steps) if rng.random() < 0.4 else None
    sentences, working = [first], [first_working]
    for i in range(n_steps):
        # after the irrelevant sentence "he"/"she" could mean the other person: use the name
        named = i == distract_at
        if named:
            sentences.append(distractor(rng, other=other, thing=other_thing))
        actor = replace(who, subject=who.name, object=who.name) if named else who
        step = next_step(rng, value=value, who=actor, other=other, thing=thing)
        sentences.append(step.sentence)
        working.append(f"{value} {step.op} {step.operand} = {step.result}.")
        value = step.result
    if distract_at == n_steps:
        sentences.append(distractor(rng, other=other, thing=other_thing))
    return Story(who=who, thing=thing, sentences=sentences, working=working, value=value)


def make_problem(rng: random.Random) -> Example:
    story = make_story(rng)
    query = " ".join([*story.sentences, f"How many {story.thing} does {story.who.name} have now?"])
    response = " " + " ".join([*story.working, f"The answer is: {story.value}"])
    return Example(query=query, response=response, answer=str(story.value))


def make_problems(rng: random.Random, *, count: int, exclude: set[str] = frozenset()) -> list[Example]:
    """`count` problems with distinct queries, none of them in `exclude`."""
    seen = set(exclude)
    out: list[Example] = []
    while len(out) < count:
        ex = make_problem(rng)
        if ex.query not in seen:
            seen.add(ex.query)
            out.append(ex)
    return out
