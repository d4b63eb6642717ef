"""RVQ-conditioned policy: Pi0.5's backbone predicts an RVQ tokenizer's codes layer by layer.

The prefix (images + the prompt with the discretized state) goes through SigLIP and the VLM
once per chunk, as in Pi0.5, and leaves its keys/values per layer
(:meth:`Pi0Model.encode_prefix`, the documented interface the flow head uses too). The action
expert then reads that cache through the joint attention, with a suffix of one block of
``latent_steps`` tokens per RVQ layer::

    block 1: start + depth_1 + step_s            -> logits of layer 1's codes
    block l: embed_{l-1}(code_{l-1,s}) + depth_l + step_s -> logits of layer l's codes

Blocks are causal (block l sees the prefix and blocks <= l), so layer l is predicted from the
prefix features and the codes of layers < l; training feeds the true codes (teacher forcing,
one pass over all blocks), acting runs the expert once per layer and stops after the layers it
needs: decoding 2 layers instead of 8 skips 6 expert passes. The frozen tokenizer decodes the
codes into a chunk. ``decoding=adaptive`` drafts with the first ``draft_layers`` and refines
the samples a monitor (:mod:`vlaexp.tokenizers.adaptive`) flags.

Each acting pass recomputes the suffix blocks so far rather than growing a suffix KV cache:
at most ``layers x latent_steps`` tokens, where a pass costs about the same for 1 or 8 tokens
(reading the expert's weights dominates), and it keeps one code path for training and acting.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from vlaexp.config.policy import RVQPolicyConfig
from vlaexp.config.tokenizer import GROUP_ONLY, MonitorConfig, RVQSettings
from vlaexp.errors import ConfigError, MissingPathError
from vlaexp.policies.base import ACTION
from vlaexp.policies.pi0.flow import attention_mask_2d, positions_from_pad
from vlaexp.policies.pi0.joint import KVCache, Stream, joint_forward
from vlaexp.policies.pi0.model import CapturedCall, Pi0Model
from vlaexp.policies.pi0.policy import Pi05Policy
from vlaexp.policies.pi0.weights import check_against, map_state_dict, resolve
from vlaexp.tokenizers.adaptive import make_monitor
from vlaexp.tokenizers.rvq import RVQTokenizer
from vlaexp.training.pretrained import WEIGHTS_FILE

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.pt"
DECODINGS = ("dense", "coarse", "adaptive")
CODE_DECODINGS = ("argmax", "expected")  # policy.code_decoding
# The flow-matching heads of a Pi0.5 checkpoint: not part of the backbone.
FLOW_HEADS = ("action_in_proj.", "action_out_proj.", "time_mlp_in.", "time_mlp_out.")


def tokenizer_checkpoint(path: str | Path, setting: str = "policy.action_tokenizer") -> Path:
    """The ``tokenizer.pt`` a path names: the file, or one in ``<dir>/`` or
    ``<dir>/tokenizer/`` (a run that ran ``tokenizer_fit``)."""
    p = Path(path).expanduser()
    for candidate in (p, p / TOKENIZER_FILE, p / "tokenizer" / TOKENIZER_FILE):
        if candidate.is_file():
            return candidate
    raise MissingPathError(
        "RVQ tokenizer checkpoint",
        p,
        setting,
        hint="Run the tokenizer_fit stage (tokenizer=rvq) and give its tokenizer.pt or run dir.",
    )


def rvq_settings(rvq: Any) -> tuple[RVQSettings, MonitorConfig]:
    """The tokenizer settings and the monitor of ``policy.rvq`` (the `tokenizer` group)."""
    if dataclasses.is_dataclass(rvq):
        rvq = dataclasses.asdict(rvq)
    elif OmegaConf.is_config(rvq):
        rvq = OmegaConf.to_container(rvq, resolve=True)
    if not isinstance(rvq, dict) or rvq.get("type") != "rvq":
        kind = rvq.get("type") if isinstance(rvq, dict) else rvq
        raise ConfigError(
            f"policy=rvq_policy needs tokenizer=rvq (policy.rvq is the tokenizer group: "
            f"${{tokenizer}}), got {kind!r}"
        )
    settings = RVQSettings(**{k: v for k, v in rvq.items() if k not in GROUP_ONLY})
    monitor = rvq.get("monitor") or {}
    return settings, MonitorConfig(**monitor)


class RVQCodeHead(nn.Module):
    """Inputs and outputs of the code blocks around the action expert (width ``width``)."""

    def __init__(self, width: int, layers: int, codebook_size: int, latent_steps: int) -> None:
        super().__init__()
        self.layers, self.codebook_size, self.latent_steps = layers, codebook_size, latent_steps
        self.start = nn.Parameter(torch.randn(width) * 0.02)
        self.code_embed = nn.ModuleList(
            nn.Embedding(codebook_size, width) for _ in range(layers - 1)
        )
        self.depth_embed = nn.Embedding(layers, width)
        self.step_embed = nn.Embedding(latent_steps, width)
        # The expert's adaptive RMSNorms take a condition (Pi0.5's flow time); here a learned
        # vector. Not zero: the norms' condition weights start at zero, and a zero condition
        # would give them no gradient.
        self.cond = nn.Parameter(torch.randn(width))
        self.out = nn.ModuleList(nn.Linear(width, codebook_size) for _ in range(layers))
        for emb in [*self.code_embed, self.depth_embed, self.step_embed]:
            nn.init.normal_(emb.weight, std=0.02)

    def inputs(self, codes: torch.Tensor | None, n_blocks: int, batch: int) -> torch.Tensor:
        """float[B, n_blocks * S, W]: block 0 from ``start``, block l from layer l's codes
        (``codes`` long[B, >= n_blocks - 1, S])."""
        s = self.latent_steps
        blocks = [self.start.expand(batch, s, -1)]
        for j in range(1, n_blocks):
            blocks.append(self.code_embed[j - 1](codes[:, j - 1]))
        x = torch.stack(blocks, dim=1)  # [B, n, S, W]
        depth = torch.arange(n_blocks, device=x.device)
        steps = torch.arange(s, device=x.device)
        x = x + self.depth_embed(depth)[None, :, None] + self.step_embed(steps)[None, None]
        return x.reshape(batch, n_blocks * s, -1)

    def logits(self, hidden: torch.Tensor, first: int, n: int) -> torch.Tensor:
        """float[B, n, S, K]: codes of layers first..first+n-1 from their blocks' outputs
        (``hidden`` float[B, >= (first + n) * S, W], the suffix's output)."""
        s = self.latent_steps
        out = []
        for j in range(first, first + n):
            out.append(self.out[j](hidden[:, j * s : (j + 1) * s].float()))
        return torch.stack(out, dim=1)


class RVQGraphs:
    """An RVQ policy's acting passes captured as CUDA graphs for one input shape and draft
    depth (``policy.cuda_graphs``, on a GPU): the prefix (vision tower + VLM, its KV cache),
    the draft (layers 1..draft on that cache) and the refinement (layers draft+1..L on the
    same cache and the draft's codes). The three share one memory pool and are replayed in
    that order, each reading the previous one's output where it lies (no copies), so each
    phase can still be timed apart. The refinement is captured for the whole batch: acting at
    batch 1 refines that sample or nothing; in a batch with only some samples refined, their
    rows are taken (a row's codes depend on that row alone)."""

    def __init__(self, policy: RVQPolicy, inputs: tuple, draft: int) -> None:
        pool = torch.cuda.graph_pool_handle()
        b, s = inputs[2].shape[0], policy.code_head.latent_steps
        start = torch.zeros(b, 0, s, dtype=torch.long, device=inputs[2].device)
        self.prefix = CapturedCall(
            policy.model.encode_prefix, inputs, policy.autocast, policy, pool
        )
        cached = self.prefix.output

        def draft_pass() -> tuple[torch.Tensor, torch.Tensor]:
            logits: list[torch.Tensor] = []
            codes = policy._decode_layers(cached, start, draft, logits)
            return codes, torch.stack(logits, dim=1)

        self.draft = CapturedCall(draft_pass, (), policy.autocast, policy, pool)
        self.refine = None
        if draft < policy.n_layers:
            drafted = self.draft.output[0]

            def refine_pass() -> tuple[torch.Tensor, torch.Tensor]:
                logits: list[torch.Tensor] = []
                codes = policy._decode_layers(cached, drafted, policy.n_layers, logits)
                return codes, torch.stack(logits, dim=1)

            self.refine = CapturedCall(refine_pass, (), policy.autocast, policy, pool)


class RVQPolicy(Pi05Policy):
    config_class = RVQPolicyConfig

    def __init__(
        self,
        config: RVQPolicyConfig,
        dataset_stats: dict[str, dict[str, np.ndarray]] | None = None,
        assets_dir: Path | None = None,
    ):
        if config.decoding not in DECODINGS:
            raise ConfigError(
                f"policy.decoding must be one of {list(DECODINGS)}, got '{config.decoding}'"
            )
        if config.code_decoding not in CODE_DECODINGS:
            raise ConfigError(
                f"policy.code_decoding must be one of {list(CODE_DECODINGS)}, "
                f"got '{config.code_decoding}'"
            )
        if config.compile:
            raise ConfigError("policy.compile is not supported by policy=rvq_policy")
        settings, monitor = rvq_settings(config.rvq)
        for what in ("chunk_size", "action_dim"):
            if getattr(config, what) != getattr(settings, what):
                raise ConfigError(
                    f"policy.{what}={getattr(config, what)} but the RVQ tokenizer's is "
                    f"{getattr(settings, what)} (tokenizer.{what})"
                )
        if not 1 <= config.draft_layers <= settings.layers:
            raise ConfigError(
                f"policy.draft_layers={config.draft_layers} must be in 1..{settings.layers} "
                "(tokenizer.layers)"
            )
        super().__init__(config, dataset_stats, assets_dir)
        self.action_tokenizer = RVQTokenizer(settings).eval().requires_grad_(False)
        self.register_buffer("action_q01", torch.zeros(settings.action_dim))
        self.register_buffer("action_q99", torch.ones(settings.action_dim))
        if assets_dir is None:  # new policy: the fitted tokenizer; loading: the saved weights
            self._load_tokenizer(config.action_tokenizer, settings)
        self.code_head = RVQCodeHead(
            config.expert.width, settings.layers, settings.codebook_size, settings.latent_steps
        )
        self.monitor = make_monitor(monitor)
        self.last_chunk: dict[str, Any] = {}  # what the last predicted chunk cost (see below)
        self._graphs: dict[int, RVQGraphs] = {}  # per draft depth (cuda_graphs on a GPU)

    @property
    def monitor_config(self) -> MonitorConfig:
        """The monitor this policy acts with, as its config (``policy.rvq.monitor``) says."""
        return rvq_settings(self.config.rvq)[1]

    def set_monitor(self, monitor: MonitorConfig | dict[str, Any]) -> None:
        """Act with another monitor of adaptive decoding (inference only: the weights do not
        depend on it); saved with the policy from then on (``policy.rvq.monitor``)."""
        if isinstance(monitor, dict):
            monitor = MonitorConfig(**monitor)
        self.monitor = make_monitor(monitor)  # checks the kind and threshold first
        rvq = self.config.rvq
        if dataclasses.is_dataclass(rvq):
            rvq = dataclasses.asdict(rvq)
        elif OmegaConf.is_config(rvq):
            rvq = OmegaConf.to_container(rvq, resolve=True)
        rvq = {**rvq, "monitor": dataclasses.asdict(monitor)}
        self.config = dataclasses.replace(self.config, rvq=rvq)

    # ----- building ---------------------------------------------------------------------
    def build_model(self, config: RVQPolicyConfig) -> Pi0Model:
        model = Pi0Model(config, flow_heads=False)
        if config.backbone:
            self._load_backbone(model, config.backbone)
        return model

    def load_weights(self, source: str) -> Path:
        raise ConfigError(
            "policy=rvq_policy has no flow heads to load policy.pretrained into: give a Pi0.5 "
            "checkpoint as policy.backbone (its vision tower, VLM and expert are loaded)"
        )

    @staticmethod
    def _load_backbone(model: Pi0Model, source: Any) -> None:
        """The backbone tensors of a Pi0.5 checkpoint (LeRobot's/openpi's layout, or a
        ``pretrained_model`` dir of ours), strictly; the flow-matching heads are skipped."""
        directory = resolve(source, "policy.backbone")
        mapped = map_state_dict(load_file(directory / WEIGHTS_FILE), pi05=True)
        # ours save the policy (`model.` prefix is stripped by the mapping) and its normalizer
        mapped = {
            k: v
            for k, v in mapped.items()
            if not k.startswith(FLOW_HEADS) and not k.startswith("normalizer.")
        }
        check_against(model, mapped, f"{directory / WEIGHTS_FILE} (policy.backbone)")
        model.load_state_dict(mapped, strict=True)
        log.info("Backbone: %d tensors from %s", len(mapped), directory)

    def _load_tokenizer(self, source: Any, settings: RVQSettings) -> None:
        if source is None:
            raise ConfigError(
                "policy=rvq_policy needs policy.action_tokenizer (a tokenizer_fit run dir or its "
                "tokenizer.pt), or a `tokenizer_fit` stage before `train` in this run"
            )
        path = tokenizer_checkpoint(source)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        fitted = RVQTokenizer(ckpt["settings"])
        try:
            fitted.check_matches(settings)
        except ConfigError as e:
            raise ConfigError(f"{path} does not fit policy.rvq / the tokenizer group: {e}") from e
        self.action_tokenizer.load_state_dict(ckpt["state_dict"], strict=True)
        self.action_q01.copy_(ckpt["stats"]["q01"])
        self.action_q99.copy_(ckpt["stats"]["q99"])
        log.info("RVQ tokenizer from %s", path)

    def train(self, mode: bool = True) -> RVQPolicy:
        super().train(mode)
        if hasattr(self, "action_tokenizer"):
            self.action_tokenizer.eval()  # frozen: no EMA codebook updates, no dropout
        return self

    # ----- actions <-> codes ------------------------------------------------------------
    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions -> the tokenizer's [-1, 1] (its q01/q99, clipped)."""
        lo, hi = self.action_q01, self.action_q99
        return (2 * (actions - lo) / (hi - lo).clamp_min(1e-8) - 1).clamp(-1, 1)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        lo, hi = self.action_q01, self.action_q99
        return (actions + 1) / 2 * (hi - lo) + lo

    # ----- the expert over code blocks --------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.code_head.layers

    def _suffix_pass(
        self,
        codes: torch.Tensor | None,
        n_blocks: int,
        prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        cached: tuple[torch.Tensor, KVCache] | None = None,
    ) -> torch.Tensor:
        """The expert's output over ``n_blocks`` code blocks, float[B, n_blocks * S, We]:
        with the prefix (training: ``prefix`` = embeddings, pad, blocks) or on its cache
        (acting: ``cached`` = prefix pad, KV cache)."""
        pad_p = prefix[1] if prefix is not None else cached[0]
        b = pad_p.shape[0]
        head = self.code_head
        x = head.inputs(codes, n_blocks, b).to(self.model.compute_dtype())
        s = head.latent_steps
        pad = torch.ones(b, n_blocks * s, dtype=torch.bool, device=x.device)
        blocks = torch.zeros(b, n_blocks * s, dtype=torch.long, device=x.device)
        blocks[:, ::s] = 1  # each layer's block starts a causal block
        cond = head.cond.expand(b, -1).to(x.dtype)
        expert = Stream(self.model.expert, x, cond)
        if prefix is not None:
            emb, _, prefix_blocks = prefix
            full_pad = torch.cat([pad_p, pad], dim=1)
            mask = attention_mask_2d(full_pad, torch.cat([prefix_blocks, blocks], dim=1))
            (_, out), _ = joint_forward(
                [Stream(self.model.vlm, emb, output=False), expert],
                mask,
                positions_from_pad(full_pad),
                attention_impl=self.config.attention,
                gradient_checkpointing=self.model.gradient_checkpointing and self.training,
            )
            return out[:, -n_blocks * s :]
        to_prefix = pad_p[:, None, :].expand(b, pad.shape[1], pad_p.shape[1])
        mask = torch.cat([to_prefix, attention_mask_2d(pad, blocks)], dim=2)
        positions = positions_from_pad(pad, offset=pad_p.sum(dim=1))
        (out,), _ = joint_forward(
            [expert], mask, positions, cache=cached[1], attention_impl=self.config.attention
        )
        return out

    # ----- training ---------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of every layer's codes given the true codes of the layers before it;
        ``code_acc_l<k>``: per-layer token accuracy (teacher-forced)."""
        images, masks, tokens, token_mask, _ = self._inputs(batch, labels=True)
        actions = self.normalize_actions(batch[ACTION].float())
        codes = self.action_tokenizer.encode(actions)  # [B, L, S]
        n = self.n_layers
        with self.autocast():
            prefix = self.model.embed_prefix(images, masks, tokens, token_mask)
            hidden = self._suffix_pass(codes, n, prefix=prefix)
        logits = self.code_head.logits(hidden, 0, n)  # [B, L, S, K]
        losses = F.cross_entropy(logits.flatten(0, 2), codes.flatten(), reduction="none")
        per_layer = losses.reshape(codes.shape).mean(dim=(0, 2))
        correct = (logits.argmax(-1) == codes).float().mean(dim=(0, 2))
        # tensors, not floats: logging them costs no device sync per layer
        info = {f"code_acc_l{k + 1}": correct[k] for k in range(n)}
        info.update({f"code_ce_l{k + 1}": per_layer[k].detach() for k in range(n)})
        if not self.training:
            info.update(self._chunk_errors(logits, codes, actions))
        return per_layer.mean(), info

    @torch.no_grad()
    def _chunk_errors(
        self, logits: torch.Tensor, codes: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """What token accuracy leaves out (validation): the MSE of the chunk decoded from the
        predicted codes (each layer's given the true codes before it) from the draft's and all
        layers, against the true normalized chunk, beside the tokenizer's own error from the
        true codes. A code near a cell boundary can be wrong and decode to almost the same
        chunk (experiments/rvq_adaptive: the codes are brittle). ``chunk_mse_expected_l<k>``:
        the same chunk decoded from each layer's expected codebook vector under the predicted
        distribution (:meth:`RVQTokenizer.decode_expected`): whether hedging the uncertain
        layers beats committing to their most likely codes."""
        out = {}
        predicted, probs = logits.argmax(-1), logits.float().softmax(-1)
        for k in sorted({self.config.draft_layers, self.n_layers}):
            tok = self.action_tokenizer
            out[f"chunk_mse_l{k}"] = F.mse_loss(tok.decode(predicted, n_layers=k).float(), actions)
            out[f"chunk_mse_expected_l{k}"] = F.mse_loss(
                tok.decode_expected(probs, n_layers=k).float(), actions
            )
            out[f"recon_mse_l{k}"] = F.mse_loss(tok.decode(codes, n_layers=k).float(), actions)
        return out

    # ----- acting -----------------------------------------------------------------------
    def _decode_layers(
        self,
        cached: tuple[torch.Tensor, KVCache],
        codes: torch.Tensor,
        upto: int,
        logits: list[torch.Tensor],
    ) -> torch.Tensor:
        """Greedy codes of layers ``codes.shape[1]+1 .. upto``, one expert pass a layer;
        appends each layer's logits float[B, S, K] to ``logits``."""
        for layer in range(codes.shape[1], upto):
            with self.autocast():
                hidden = self._suffix_pass(codes, layer + 1, cached=cached)
            step = self.code_head.logits(hidden, layer, 1)[:, 0]
            logits.append(step)
            codes = torch.cat([codes, step.argmax(-1)[:, None]], dim=1)
        return codes

    @torch.no_grad()
    def predict_codes(self, batch: dict[str, Any], decoding: str | None = None) -> dict[str, Any]:
        """Codes of a batch's chunks: ``{"codes": long[B, L, S] (first ``layers[i]`` valid),
        "logits": float[B, L, S, K] (each decoded layer's, the same rows valid),
        "layers": long[B], "draft_logits": float[B, draft, S, K], "refined": bool[B],
        "seconds": {"prefix", "draft", "refine"}}``."""
        decoding = decoding or self.config.decoding
        if decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {list(DECODINGS)}, got '{decoding}'")
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        images, masks, tokens, token_mask, _ = self._inputs(batch)
        b = tokens.shape[0]
        s = self.code_head.latent_steps
        draft = self.n_layers if decoding == "dense" else self.config.draft_layers
        graphs = None
        if self.config.cuda_graphs and self.device.type == "cuda":
            inputs = (images, masks, tokens, token_mask)
            graphs = self._graphs.get(draft)
            if graphs is None or not graphs.prefix.matches(self, inputs):
                graphs = self._graphs[draft] = RVQGraphs(self, inputs, draft)
        t0 = time.perf_counter()
        if graphs is not None:
            graphs.prefix.replay(images, masks, tokens, token_mask)
        else:
            with self.autocast():
                pad_p, cache = self.model.encode_prefix(images, masks, tokens, token_mask)
        sync()
        t1 = time.perf_counter()
        if graphs is not None:
            codes, draft_logits = (x.clone() for x in graphs.draft.replay())
        else:
            codes = torch.zeros(b, 0, s, dtype=torch.long, device=self.device)
            logits: list[torch.Tensor] = []
            codes = self._decode_layers((pad_p, cache), codes, draft, logits)
            draft_logits = torch.stack(logits, dim=1)
        sync()
        t2 = time.perf_counter()
        refined = torch.zeros(b, dtype=torch.bool)
        if decoding == "adaptive" and draft < self.n_layers:
            refined = self.monitor.should_refine(draft_logits, batch).reshape(-1).cpu()
        layers = torch.full((b,), draft, dtype=torch.long)
        full = torch.zeros(b, self.n_layers, s, dtype=torch.long, device=self.device)
        full[:, :draft] = codes
        all_logits = draft_logits.new_zeros(b, self.n_layers, s, draft_logits.shape[-1])
        all_logits[:, :draft] = draft_logits
        if bool(refined.any()):
            idx = refined.nonzero().flatten().to(self.device)
            if graphs is not None:
                refined_codes, refined_logits = graphs.refine.replay()
                full[idx] = refined_codes[idx]
                all_logits[idx, draft:] = refined_logits[idx]
            else:
                sub_cache = [(k[idx], v[idx]) for k, v in cache]
                sub = (pad_p[idx], sub_cache)
                logits = []
                full[idx] = self._decode_layers(sub, codes[idx], self.n_layers, logits)
                all_logits[idx, draft:] = torch.stack(logits, dim=1)
            layers[refined] = self.n_layers
        sync()
        t3 = time.perf_counter()
        return {
            "codes": full,
            "logits": all_logits,
            "layers": layers,
            "draft_logits": draft_logits,
            "refined": refined,
            "seconds": {"prefix": t1 - t0, "draft": t2 - t1, "refine": t3 - t2},
        }

    @torch.no_grad()
    def predict_action_chunk(
        self, batch: dict[str, Any], decoding: str | None = None
    ) -> torch.Tensor:
        """float[B, chunk, action_dim]: each sample decoded from the layers it was given, from
        their most likely codes or expected codebook vectors (``policy.code_decoding``).
        ``self.last_chunk`` keeps what it cost: layers per sample, refined, seconds."""
        out = self.predict_codes(batch, decoding)
        codes, layers = out["codes"], out["layers"]
        actions = torch.empty(
            codes.shape[0], self.config.chunk_size, self.config.action_dim, device=self.device
        )
        tok = self.action_tokenizer
        for k in layers.unique().tolist():
            rows = (layers == k).nonzero().flatten().to(self.device)
            if self.config.code_decoding == "expected":
                probs = out["logits"][rows, :k].float().softmax(-1)
                actions[rows] = tok.decode_expected(probs, n_layers=k).float()
            else:
                actions[rows] = tok.decode(codes[rows], n_layers=k).float()
        self.last_chunk = {k: v for k, v in out.items() if k in ("layers", "refined", "seconds")}
        return self.unnormalize_actions(actions)

    def reset(self) -> None:
        super().reset()
        self.monitor.reset()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        action = super().select_action(batch)
        # the action_variance monitor watches the executed actions (normalized, so that its
        # threshold does not depend on the action units)
        self.monitor.observe(self.normalize_actions(action.float()).cpu())
        return action
