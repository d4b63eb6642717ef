"""Build the bundled ``tabletop`` tokenizer (see ``vlaexp/policies/pi0/tokenizers``).

    python -m vlaexp.policies.pi0.build_tokenizer [--out DIR] [--vocab-size 1024]

Trains a BPE model with the ``tokenizers`` library on the instructions of every tabletop
task, Pi0's and Pi0.5's prompt templates and the numbers 0..255; the training is
deterministic, so the committed files can be checked against a rebuild. Punctuation is split
from words, so each state bin is one token wherever it stands in the prompt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlaexp.policies.pi0.prompt import BUNDLED, pi0_prompt, pi05_prompt

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0..3


def corpus() -> list[str]:
    import numpy as np

    from vlaexp.sim.tabletop.tasks import SUITES

    instructions = sorted({t.instruction for tasks in SUITES.values() for t in tasks})
    numbers = np.arange(256)
    lines = [pi0_prompt(i) for i in instructions]
    lines += [pi05_prompt(i, np.roll(numbers, k)[:32]) for k, i in enumerate(instructions)]
    lines += [" ".join(str(n) for n in numbers)] * 4
    return lines


def build(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Punctuation stands alone: with words split at spaces only, BPE merged the last state
    # number with the ";\nAction:" after it (40 of 256 values got a token of their own there,
    # the others did not), so one bin had two spellings depending on its position
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False, min_frequency=1
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", SPECIALS.index("<bos>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


def main() -> None:
    import importlib.resources

    default = Path(str(importlib.resources.files(BUNDLED))) / "tabletop"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args()
    tokenizer = build(args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(f"{len(tokenizer)} tokens -> {args.out}")


if __name__ == "__main__":
    main()
