"""Tokenizers shipped with vlaexp, one directory each (``policy.tokenizer=<name>``).

``tabletop``: a byte-fallback-free BPE vocabulary of the offline tabletop suites' instructions
and Pi0.5's prompt template (numbers 0..255 are single tokens), Gemma's special tokens, a
``<bos>`` before every prompt. For tiny policies trained from scratch offline, where
PaliGemma's 257k-token vocabulary would dwarf the model. Rebuilt by
``python -m vlaexp.policies.pi0.build_tokenizer``.
"""
