"""The Pi0 / Pi0.5 network: prefix (images + text) through the VLM, suffix (state, noisy
actions, flow time) through the action expert, one joint attention, a velocity out.

Token layout and masks (``blocks``: 1 starts a new causal block)::

    prefix  [cam_1 x 256][cam_2 x 256]...[text x L]   blocks 0 ...           bidirectional
    suffix  Pi0:   [state][action x chunk]            blocks 1, 1, 0 ... 0
            Pi0.5: [action x chunk]                   blocks 1, 0 ... 0

so the prefix never sees the suffix, the state token (Pi0) sees the prefix, and the action
tokens see everything before them and each other. Pi0 feeds the flow time through an MLP
together with each noisy action; Pi0.5 turns it into the condition of the expert's adaptive
RMSNorms and writes the (discretized) state into the text instead.

All tensors use the padded sizes ``max_state_dim`` / ``max_action_dim`` (32); the policy
pads and unpads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlaexp.config.policy import Pi0Config
from vlaexp.policies.pi0.flow import (
    attention_mask_2d,
    euler_times,
    positions_from_pad,
    sample_time,
    time_embedding,
)
from vlaexp.policies.pi0.gemma import FusedWeights, GemmaStack, fused_weights
from vlaexp.policies.pi0.joint import KVCache, Stream, check_compatible, joint_forward
from vlaexp.policies.pi0.vision import build_vision_tower

Prefix = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # embeddings, pad, blocks


class Pi0Model(nn.Module):
    """``flow_heads=False`` builds the backbone alone (vision tower, projector, token
    embedding, VLM, expert), for heads of other kinds on it (the RVQ code head)."""

    def __init__(self, cfg: Pi0Config, flow_heads: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.pi05 = cfg.type != "pi0"  # pi05 and the models built on its backbone
        # causal blocks start at the suffix's first this many tokens (Pi0: state, first action)
        self.suffix_blocks = 1 if self.pi05 else 2
        ew = cfg.expert.width
        self.vision_tower = build_vision_tower(cfg.vision, cfg.image_size, cfg.attention)
        self.projector = nn.Linear(cfg.vision.width, cfg.vlm.width)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.vlm.width)
        if cfg.embedding_init_std is not None:
            nn.init.normal_(self.embed_tokens.weight, std=float(cfg.embedding_init_std))
        self.vlm = GemmaStack(cfg.vlm)
        self.expert = GemmaStack(cfg.expert, cond_dim=ew if self.pi05 else None)
        check_compatible(self.vlm, self.expert)
        self.gradient_checkpointing = cfg.gradient_checkpointing
        if not flow_heads:
            return
        self.action_in_proj = nn.Linear(cfg.max_action_dim, ew)
        self.action_out_proj = nn.Linear(ew, cfg.max_action_dim)
        if self.pi05:
            self.time_mlp_in = nn.Linear(ew, ew)
            self.time_mlp_out = nn.Linear(ew, ew)
        else:
            self.state_proj = nn.Linear(cfg.max_state_dim, ew)
            self.action_time_mlp_in = nn.Linear(2 * ew, ew)
            self.action_time_mlp_out = nn.Linear(ew, ew)

    # ----- embeddings -------------------------------------------------------------------
    def compute_dtype(self) -> torch.dtype:
        """The residual stream's dtype: that of the Gemma weights (float32 or bfloat16)."""
        return self.vlm.layers[0].self_attn.q_proj.weight.dtype

    def embed_images(self, images: list[torch.Tensor], project: bool = True) -> list[torch.Tensor]:
        """Each float[B, 3, S, S] in [-1, 1] -> float[B, tokens, vlm width]; one SigLIP pass
        for all cameras. Not rescaled (openpi's PaliGemma; stock transformers divides by
        sqrt(width) here). ``project=False``: the vision tower's features (float[B, tokens,
        vision width]) before the projector."""
        pixels = torch.cat(images, dim=0)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            hidden = checkpoint(self.vision_tower, pixels, use_reentrant=False)
        else:
            hidden = self.vision_tower(pixels)
        feats = self.projector(hidden) if project else hidden
        return list(feats.chunk(len(images), dim=0))

    def embed_prefix(
        self,
        images: list[torch.Tensor],
        image_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> Prefix:
        """Images (list of float[B, 3, S, S]) with bool[B] masks (False = missing camera),
        text tokens long[B, L] with bool[B, L] mask -> (float[B, P, W], bool[B, P], long[B, P])."""
        embs, pads = [], []
        for emb, present in zip(self.embed_images(images), image_masks, strict=True):
            embs.append(emb)
            pads.append(present[:, None].expand(emb.shape[0], emb.shape[1]))
        text = self.embed_tokens(tokens)
        embs.append(text * math.sqrt(text.shape[-1]))
        pads.append(token_mask)
        dtype = self.compute_dtype()
        emb = torch.cat([e.to(dtype) for e in embs], dim=1)
        pad = torch.cat(pads, dim=1)
        return emb, pad, torch.zeros_like(pad, dtype=torch.long)

    def embed_suffix(
        self, state: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """State float[B, 32] (Pi0 only), noisy actions float[B, C, 32], times float[B] ->
        (float[B, S, We], pad bool[B, S], blocks long[B, S], adaRMS condition or None)."""
        b = x_t.shape[0]
        time = time_embedding(
            t, self.action_in_proj.out_features, self.cfg.min_period, self.cfg.max_period
        )
        actions = self.action_in_proj(x_t)
        if self.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time))))
            emb = actions
        else:
            cond = None
            mixed = torch.cat(
                [actions, time[:, None, :].expand_as(actions).to(actions.dtype)], dim=2
            )
            mixed = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(mixed)))
            state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
            emb = torch.cat([state_emb.to(mixed.dtype), mixed], dim=1)
        pad = torch.ones(b, emb.shape[1], dtype=torch.bool, device=x_t.device)
        # A block starts at the first token and (Pi0) at the first action. Built on the device
        # so that sampling can be captured in a CUDA graph (no host-to-device copies).
        blocks = torch.zeros(b, emb.shape[1], dtype=torch.long, device=x_t.device)
        blocks[:, : self.suffix_blocks] = 1
        return emb.to(self.compute_dtype()), pad, blocks, cond

    # ----- training ---------------------------------------------------------------------
    def forward(
        self,
        images: list[torch.Tensor],
        image_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor | None,
        actions: torch.Tensor,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
        unpadded: bool | None = None,
    ) -> torch.Tensor:
        """Flow-matching loss per element, float[B, C, 32] (actions float[B, C, 32]).

        ``unpadded``: whether every camera is present and every text token valid, if the
        caller knows it on the host (the policy does, from the tokenizer); None reads the
        masks (a device sync, a graph break under torch.compile). Without padding each causal
        block attends without a mask (joint.UNMASKED_BLOCKS): cuDNN's fast kernel."""
        cfg = self.cfg
        if unpadded is None:
            unpadded = self.is_unpadded(token_mask, image_masks)
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            time = sample_time(
                actions.shape[0],
                cfg.time_beta_alpha,
                cfg.time_beta_beta,
                cfg.time_scale,
                cfg.time_offset,
                actions.device,
            )
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        prefix, prefix_pad, prefix_blocks = self.embed_prefix(
            images, image_masks, tokens, token_mask
        )
        suffix, suffix_pad, suffix_blocks, cond = self.embed_suffix(state, x_t, time)
        pad = torch.cat([prefix_pad, suffix_pad], dim=1)
        mask = attention_mask_2d(pad, torch.cat([prefix_blocks, suffix_blocks], dim=1))
        (_, out), _ = joint_forward(
            [Stream(self.vlm, prefix, output=False), Stream(self.expert, suffix, cond)],
            mask,
            positions_from_pad(pad),
            attention_impl=cfg.attention,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
            block_ends=self.block_ends(prefix.shape[1], pad.shape[1]) if unpadded else None,
        )
        velocity = self.action_out_proj(out[:, -actions.shape[1] :].float())
        return F.mse_loss(velocity, target, reduction="none")

    @staticmethod
    def is_unpadded(token_mask: torch.Tensor, image_masks: list[torch.Tensor]) -> bool:
        """Whether every text token is valid and every camera present: the ``unpadded`` of
        :meth:`forward` (a device sync when the masks live on the GPU; compute it on the host
        where the caller can)."""
        return bool(torch.stack([token_mask.all(), *(m.all() for m in image_masks)]).all())

    def block_ends(self, prefix_len: int, length: int) -> tuple[int, ...]:
        """Where the causal blocks of [prefix, suffix] end (:func:`attention_mask_2d` with
        the blocks of :meth:`embed_prefix` and :meth:`embed_suffix`): one bidirectional
        prefix block, then the suffix's."""
        return (prefix_len, *range(prefix_len + 1, prefix_len + self.suffix_blocks), length)

    # ----- inference --------------------------------------------------------------------
    def prefix_cache(self, prefix: Prefix) -> KVCache:
        """Keys/values of every VLM layer for the prefix, computed once per chunk."""
        emb, pad, blocks = prefix
        mask = attention_mask_2d(pad, blocks)
        _, cache = joint_forward(
            [Stream(self.vlm, emb, output=False)],
            mask,
            positions_from_pad(pad),
            build_cache=True,
            attention_impl=self.cfg.attention,
        )
        assert cache is not None
        return cache

    def encode_prefix(
        self,
        images: list[torch.Tensor],
        image_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, KVCache]:
        """A chunk's prefix pass: (the prefix's pad mask bool[B, P], its KV cache)."""
        prefix = self.embed_prefix(images, image_masks, tokens, token_mask)
        return prefix[1], self.prefix_cache(prefix)

    def denoise_step(
        self,
        state: torch.Tensor | None,
        prefix_pad: torch.Tensor,
        cache: KVCache,
        x_t: torch.Tensor,
        t: torch.Tensor,
        fused: list[FusedWeights] | None = None,
    ) -> torch.Tensor:
        """Velocity float[B, C, 32] at noisy actions ``x_t`` and times ``t`` float[B];
        ``fused``: the expert's stacked projections (:func:`fused_weights`), or None."""
        suffix, suffix_pad, suffix_blocks, cond = self.embed_suffix(state, x_t, t)
        b, s = suffix_pad.shape
        to_prefix = prefix_pad[:, None, :].expand(b, s, prefix_pad.shape[1])
        mask = torch.cat([to_prefix, attention_mask_2d(suffix_pad, suffix_blocks)], dim=2)
        positions = positions_from_pad(suffix_pad, offset=prefix_pad.sum(dim=1))
        (out,), _ = joint_forward(
            [Stream(self.expert, suffix, cond, fused=fused)],
            mask,
            positions,
            cache=cache,
            attention_impl=self.cfg.attention,
        )
        return self.action_out_proj(out[:, -x_t.shape[1] :].float())

    @torch.no_grad()
    def sample_actions(
        self,
        images: list[torch.Tensor],
        image_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor | None,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        guidance: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> torch.Tensor:
        """Euler integration from noise (t=1) to actions (t=0): float[B, C, 32].

        ``guidance``: (tokens, token mask of the unconditioned prompt, beta) for
        classifier-free guidance. Both prompts then go through as one batch of 2B (one
        prefix pass, one expert pass per step) and each step moves along
        ``v_uncond + beta * (v_cond - v_uncond)``."""
        b = tokens.shape[0]
        if noise is None:
            shape = (b, self.cfg.chunk_size, self.cfg.max_action_dim)
            noise = torch.randn(shape, device=tokens.device, dtype=torch.float32)
        if guidance is not None:
            u_tokens, u_mask, beta = guidance
            images = [torch.cat([i, i]) for i in images]
            image_masks = [torch.cat([m, m]) for m in image_masks]
            tokens, token_mask = torch.cat([tokens, u_tokens]), torch.cat([token_mask, u_mask])
            state = None if state is None else torch.cat([state, state])
        prefix_pad, cache = self.encode_prefix(images, image_masks, tokens, token_mask)
        # stacked once per chunk, shared by the denoising steps
        fused = fused_weights(self.expert)
        times, dt = euler_times(num_steps or self.cfg.num_inference_steps)
        x_t = noise
        for time in times:
            t = torch.full((tokens.shape[0],), time, dtype=torch.float32, device=tokens.device)
            if guidance is None:
                v = self.denoise_step(state, prefix_pad, cache, x_t, t, fused)
            else:
                both = self.denoise_step(state, prefix_pad, cache, torch.cat([x_t, x_t]), t, fused)
                v_cond, v_uncond = both.chunk(2)
                v = v_uncond + beta * (v_cond - v_uncond)
            x_t = x_t + dt * v
        return x_t


def compile_sampling(model: Pi0Model, mode: str | None = None) -> None:
    """``torch.compile`` the prefix pass (images, text, VLM cache) and the denoising step in
    place (each once, not the unrolled loop, so compiling takes seconds to a minute); the
    compiled kernels can be captured by :class:`CudaGraphSampler`. ``mode``: torch.compile's
    (``max-autotune-no-cudagraphs`` searches GEMM kernels for the small shapes, minutes)."""
    if not getattr(model, "_sampling_compiled", False):
        model.encode_prefix = torch.compile(model.encode_prefix, mode=mode)
        model.denoise_step = torch.compile(model.denoise_step, mode=mode)
        model._sampling_compiled = True


def uncompile_sampling(model: Pi0Model) -> None:
    """Undo :func:`compile_sampling`."""
    for name in ("encode_prefix", "denoise_step"):
        model.__dict__.pop(name, None)
    model._sampling_compiled = False


def _shapes(inputs: tuple) -> list:
    return [
        [t.shape for t in x] if isinstance(x, list) else (None if x is None else x.shape)
        for x in inputs
    ]


class CapturedCall:
    """``fn(*inputs)`` captured as one CUDA graph for fixed input shapes.

    At batch 1 an eager pass is dominated by launching thousands of small kernels; replaying
    a captured graph launches them at once. ``inputs`` (tensors, lists of tensors or None) are
    copied into static buffers before each replay; the output lives in the graph's memory
    (``self.output``) and is overwritten by the next replay. Weights are read where they live,
    so in-place updates are seen; moved or replaced parameters of ``module`` need a new capture
    (:meth:`matches` tells). Several calls may share a memory ``pool`` when they are replayed
    in the order they were captured: a later call may then read an earlier one's ``output``
    (call it with no inputs).

    Args:
        autocast: a context-manager factory for the capture (its cache must be off: cached
            casts do not survive a graph capture).
    """

    def __init__(self, fn, inputs: tuple, autocast, module: nn.Module, pool=None) -> None:
        self.static = [
            [t.clone() for t in x] if isinstance(x, list) else (None if x is None else x.clone())
            for x in inputs
        ]
        self.signature = self._signature(module)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast():
            for _ in range(2):  # warm up kernels and the allocator outside the capture
                fn(*self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), autocast():
            self.output = fn(*self.static)

    @staticmethod
    def _signature(module: nn.Module) -> tuple[int, ...]:
        return tuple(p.data_ptr() for p in module.parameters())

    def matches(self, module: nn.Module, inputs: tuple) -> bool:
        """Whether this graph serves ``inputs`` (same shapes, same parameter storage)."""
        return _shapes(inputs) == _shapes(tuple(self.static)) and (
            self._signature(module) == self.signature
        )

    def replay(self, *inputs) -> Any:
        """Copy ``inputs`` in, replay; ``self.output``, valid until the next replay."""
        for dst, src in zip(self.static, inputs, strict=True):
            if isinstance(dst, list):
                for d, s in zip(dst, src, strict=True):
                    d.copy_(s)
            elif dst is not None:
                dst.copy_(src)
        self.graph.replay()
        return self.output


class CudaGraphSampler(CapturedCall):
    """:meth:`Pi0Model.sample_actions` captured as one CUDA graph (:class:`CapturedCall`):
    the vision tower, 18 VLM layers, then 10 x 18 expert layers launched at once. Inputs
    ``(images, image_masks, tokens, token_mask, state, noise)``."""

    def __init__(self, model: Pi0Model, inputs: tuple, autocast) -> None:
        super().__init__(model.sample_actions, inputs, autocast, model)

    def __call__(self, *inputs) -> torch.Tensor:
        """float[B, C, max_action_dim], as ``sample_actions`` returns."""
        return self.replay(*inputs).clone()
