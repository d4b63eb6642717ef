"""Action tokenizers: residual VQ (``rvq``) and the DCT baseline (``dct``), with analysis."""

from __future__ import annotations

from typing import Any

from vlaexp.errors import unknown_choice

TOKENIZERS = ("none", "rvq", "dct")


def make_tokenizer(cfg: Any) -> Any:
    """The tokenizer of a ``tokenizer`` config node (None for ``none``)."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    from vlaexp.config.tokenizer import GROUP_ONLY

    kind = settings["type"]
    settings = {k: v for k, v in settings.items() if k not in GROUP_ONLY}
    if kind == "none":
        return None
    if kind == "rvq":
        from vlaexp.tokenizers.rvq import RVQTokenizer

        return RVQTokenizer(settings)
    if kind == "dct":
        from vlaexp.tokenizers.dct import DCTTokenizer

        return DCTTokenizer(settings)
    raise unknown_choice("tokenizer.type", kind, TOKENIZERS)
