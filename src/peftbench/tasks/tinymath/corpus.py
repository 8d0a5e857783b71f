"""The synthetic pretraining corpus of the tinymath base model: general text with arithmetic.

Documents mix five kinds of segment: arithmetic facts ("35 + 28 = 63."), chained computations
("35 + 28 = 63. 63 - 16 = 47."), short stories in which quantities change, mostly worked out as
they go ("Tom has 35 apples. He buys 28 more apples. 35 + 28 = 63. Now Tom has 63 apples."),
stories told whole and worked out after ("... Tom starts with 35 apples. 35 + 28 = 63. ...") and
simple sentences about people and things. Every
word of the task's prompt template and problems occurs here, in other contexts, but never the
task's question/answer format ("Question: ... Answer:", "The answer is: N").
The mix follows the prototype's measurements (issue 3): mostly arithmetic, with chains, or the
fine-tuned methods cannot carry a result from one step to the next.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from peftbench.tasks.tinymath.problems import make_story, next_step
from peftbench.tasks.tinymath.words import ADJECTIVES, CONTAINERS, PEOPLE, PLACES, THINGS

# bump when the corpus changes (the base model must then be rebuilt)
CORPUS_VERSION = "3"
# the held-out documents of the forgetting metric come from their own stream and are never trained on
FORGETTING_SEED = 2000
NUM_FORGETTING_TEXTS = 200
# segment kind -> probability (by count of segments)
MIX = {"fact": 0.30, "chain": 0.20, "story": 0.20, "worked": 0.20, "sentence": 0.10}


def fact(rng: random.Random) -> str:
    op = rng.choice("+-x/")
    if op == "+":
        a = rng.randint(0, 98)
        b = rng.randint(0, 99 - a)
        return f"{a} + {b} = {a + b}."
    if op == "-":
        a = rng.randint(0, 99)
        b = rng.randint(0, a)
        return f"{a} - {b} = {a - b}."
    a, b = rng.randint(1, 12), rng.randint(1, 12)
    return f"{a} x {b} = {a * b}." if op == "x" else f"{a * b} / {b} = {a}."


def chain(rng: random.Random) -> str:
    """Two to four computations, each starting from the previous result."""
    who, other = rng.sample(PEOPLE, 2)
    value = rng.randint(2, 99)
    parts = []
    if rng.random() < 0.3:
        k, m = rng.randint(2, 9), rng.randint(2, 11)
        value = k * m
        parts.append(f"{k} x {m} = {value}.")
    for _ in range(rng.randint(2, 4) - len(parts)):
        step = next_step(rng, value=value, who=who, other=other, thing="apples")
        parts.append(f"{value} {step.op} {step.operand} = {step.result}.")
        value = step.result
    return " ".join(parts)


def story(rng: random.Random) -> str:
    """A quantity that changes once to three times, worked out as it goes, and what it is afterwards.

    No question is asked. The numbers of each equation, the name and the thing must be copied from
    earlier in the text: version 1 of the corpus had too little such copying (10% short stories
    without equations), and its model could not carry a number from a sentence into an equation
    (after "Zoe has 21 rocks. Now Zoe has" it said "13 stamps"), so no adapter learnt the task.
    """
    who, other = rng.sample(PEOPLE, 2)
    thing, other_thing = rng.sample(THINGS, 2)
    show_work = rng.random() < 0.7
    if rng.random() < 0.3:
        k, m = rng.randint(2, 9), rng.randint(2, 11)
        plural, singular = rng.choice(CONTAINERS)
        value = k * m
        parts = [f"{who.name} has {k} {plural} with {m} {thing} in each {singular}."]
        if show_work:
            parts.append(f"{k} x {m} = {value}.")
    else:
        value = rng.randint(5, 70)
        verb = rng.choice(("has", "starts with"))
        parts = [f"{who.name} {verb} {value} {thing}."]
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.2:
            parts.append(f"{other.name} has {rng.randint(2, 60)} {other_thing}.")
        step = next_step(rng, value=value, who=who, other=other, thing=thing)
        parts.append(step.sentence)
        if show_work:
            parts.append(f"{value} {step.op} {step.operand} = {step.result}.")
        value = step.result
    parts.append(f"Now {who.name} has {value} {thing}.")
    return " ".join(parts)


def worked_story(rng: random.Random) -> str:
    """A whole story told first and worked out after, then what the quantity is.

    The working must copy numbers, the name and the thing from up to 60 tokens back. Corpus
    version 2 only worked stories out as they went, and then a rank-8 LoRA copied numbers from the
    wrong sentence and scored at most 2.6% (task README). The story is the task's own generator,
    but never asked as a question and never ended with "The answer is".
    """
    story = make_story(rng)
    closing = f"Now {story.who.name} has {story.value} {story.thing}."
    return " ".join([*story.sentences, *story.working, closing])


def sentence(rng: random.Random) -> str:
    """A simple sentence; together they use every word of the prompt template in other contexts."""
    who, other = rng.sample(PEOPLE, 2)
    t1, t2, t3 = rng.sample(THINGS, 3)
    place, adj = rng.choice(PLACES), rng.choice(ADJECTIVES)
    plural, singular = rng.choice(CONTAINERS)
    n = rng.randint(2, 99)
    templates = (
        f"{who.name} likes {adj} {t1}.",
        f"{who.name} and {other.name} walk to the {place}.",
        f"The {t1} are in the {adj} {singular}.",
        f"{who.name} has a question about the {t1}.",
        f"{who.name} asks {other.name} a question.",
        f"Question time at the {place} starts at {rng.randint(1, 12)}.",
        f"Question {rng.randint(1, 20)} on the list is about {t1}.",
        f"{other.name} knows the answer.",
        f"{who.name} writes the answer on the board.",
        f"Answer the letter from {other.name} soon, {who.name}.",
        f"Answer {other.name} when {other.subject.lower()} calls.",
        f"{who.subject} can think step by step.",
        f"Think step by step, {who.name} says to {other.name}.",
        "They climb the hill step by step.",
        f"{who.name} has a list: {t1}, {t2} and {t3}.",
        f"Note: the {place} opens at {rng.randint(1, 12)}.",
        f'"How many {t1} do you have?" asks {who.name}.',
        f"{who.name} does not know how many {t1} {other.name} has.",
        f"{who.name} asks {other.name} how many {plural} are in the {place}.",
        f"Each {singular} at the {place} is {adj}.",
        f"{who.name} puts {n} {t1} in each {singular}.",
        f"The {t1} are in {rng.randint(2, 9)} equal piles.",
        f"{who.subject} keeps one pile of {t1} for {who.possessive} friend.",
        f"{who.name} splits the cake into {rng.randint(2, 9)} equal pieces.",
        f"Then {other.name} goes to the {place} with {who.name}.",
        f"{who.name} sells {t1} at the {place} every day.",
        f"{other.name} loses {who.possessive} {adj} {singular} at the {place}.",
        f"Now {who.name} and {other.name} play with the {t1}.",
        f"{who.name} doubles the {t1} in the recipe.",
        f"The number of {t1} triples in a year.",
        f"{who.name} takes the {adj} {t1} from the {singular}.",
        f"The day starts with a walk to the {place}.",
        f"{who.name} is at the {place} now.",
        f"{who.name} and {other.name} have {adj} {t1} now.",
        f"{who.name} does not have {t1}, but {other.name} does.",
        f"How nice the {place} is now, {who.name} says.",
        f"{who.name} gets {t1} from {other.name} by the {place}.",
    )
    return rng.choice(templates)


SEGMENTS = {"fact": fact, "chain": chain, "story": story, "worked": worked_story, "sentence": sentence}


def document(rng: random.Random) -> str:
    """Four to ten segments, separated by a space or (one in five) a new line."""
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=rng.randint(4, 10))
    text = SEGMENTS[kinds[0]](rng)
    for kind in kinds[1:]:
        text += ("\n" if rng.random() < 0.2 else " ") + SEGMENTS[kind](rng)
    return text


def documents(seed: int) -> Iterator[str]:
    """An endless, deterministic stream of documents."""
    rng = random.Random(seed)
    while True:
        yield document(rng)


def forgetting_texts() -> list[str]:
    """Held-out corpus documents for the forgetting metric (pretraining skips them)."""
    return list(itertools.islice(documents(FORGETTING_SEED), NUM_FORGETTING_TEXTS))
