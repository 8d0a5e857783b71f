"""The tinymath base model's tokenizer: a small byte-level BPE with one token per digit.

Byte-level pre-tokenization and decoding give back any text exactly (spaces, new lines, any
character), which a Whitespace pre-tokenizer does not (issue 3). Digits are split one per token
so that the model can learn arithmetic digit by digit.
"""

from __future__ import annotations

import itertools

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from peftbench.tasks.tinymath.corpus import documents

EOS = "<|endoftext|>"
VOCAB_SIZE = 768
# documents the BPE merges are learnt from (a separate stream from the pretraining data)
TOKENIZER_SEED = 1000
TOKENIZER_DOCS = 4000


def build_tokenizer(
    *, vocab_size: int = VOCAB_SIZE, num_docs: int = TOKENIZER_DOCS
) -> PreTrainedTokenizerFast:
    """Train the BPE on a sample of the corpus; deterministic for the same arguments."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # one digit per token; a space before a number stays with its first digit (" 35" is
            # " 3", "5"), which saves a token per number
            pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(itertools.islice(documents(TOKENIZER_SEED), num_docs), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        bos_token=EOS,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
