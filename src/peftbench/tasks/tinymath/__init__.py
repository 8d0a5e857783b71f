"""tinymath: the embedded benchmark, grade-school word problems for a tiny Llama pretrained here.

The task folder `benchmarks/tinymath/` holds the base model (`base_model/`, rebuilt by
`peftbench make-base-model`), the training defaults and the experiments. The data is generated,
not downloaded: the same seed gives the same problems on every machine.
"""

from __future__ import annotations

import random
from pathlib import Path

from peftbench.tasks import answers
from peftbench.tasks.base import Example, Task, TaskData
from peftbench.tasks.tinymath.corpus import CORPUS_VERSION, FORGETTING_SEED, forgetting_texts
from peftbench.tasks.tinymath.problems import GENERATOR_VERSION, make_problems

NUM_TRAIN = 20_000
NUM_VALID = 50  # as in the reference
NUM_TEST = 500


class TinyMath(Task):
    name = "tinymath"
    version = f"1.{GENERATOR_VERSION}"
    base_model_short = "tiny-llama"
    # the base model's loss on the forgetting texts is 1.613 (base_model/pretrain_log.json); another
    # model or corpus lands outside this band (an untrained model: 6.6)
    forgetting_loss_band = (1.2, 1.8)

    def load_data(self, *, task_dir: Path, seed: int = 0) -> TaskData:
        """Problems drawn with `seed` (test first, then validation, then train without any query of
        the other two); the forgetting texts are the corpus documents held out from pretraining."""
        rng = random.Random(seed)
        test = make_problems(rng, count=NUM_TEST)
        valid = make_problems(rng, count=NUM_VALID, exclude={e.query for e in test})
        train = make_problems(rng, count=NUM_TRAIN, exclude={e.query for e in test + valid})
        info = {
            "generator": "peftbench.tasks.tinymath",
            "generator_version": GENERATOR_VERSION,
            "corpus_version": CORPUS_VERSION,
            "seed": seed,
            "forgetting_seed": FORGETTING_SEED,
            "sizes": {"train": len(train), "valid": len(valid), "test": len(test)},
        }
        return TaskData(train=train, valid=valid, test=test, forgetting_texts=forgetting_texts(), info=info)

    def is_correct(self, prediction: str, example: Example, *, prompt: str = "") -> bool:
        """Correct when the number after the last "The answer is" equals the gold answer."""
        return answers.is_correct(prediction, example.answer)
