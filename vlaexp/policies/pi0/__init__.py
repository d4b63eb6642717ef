"""Pi0 and Pi0.5 (Physical Intelligence's flow-matching VLAs), on stock transformers blocks.

    policy=pi0 | pi05          full size: SigLIP So400m/14 + Gemma-2B VLM, Gemma-300M expert
    policy=pi0_tiny | pi05_tiny  the same code at small widths (CPU tests, offline demos)

Modules, bottom up: ``gemma`` (norms, projections, RoPE, attention), ``joint`` (two stacks,
one attention, KV cache), ``vision`` (SigLIP), ``flow`` (flow-matching times, masks),
``model`` (the network), ``prompt`` (tokenizer, prompts, discretized state), ``weights``
(published checkpoints: key mapping, strict loading, LeRobot's normalization stats),
``policy`` (the LightningModule).
"""
