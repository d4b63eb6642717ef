"""Random Network Distillation over vision tokens, one model per (task type x camera).

A frozen, randomly initialized *target* network maps each token embedding to 512 features; a
deeper *predictor* is trained to reproduce them on tokens of successful demonstrations. Its
error on a new token is that token's novelty: small where the scene looks like the training
data, large where it does not. The layer sizes, LeakyReLU/ReLU placement and orthogonal
initialization (gain sqrt 2, zero biases) follow FIPER's RND.

No library ships RND as a module (it is two MLPs and a loss), hence this file; the training
loop, checkpoints and early stopping are Lightning's. :func:`for_inference` gives a trained RND
in the precision it scores in (``rnd.score.precision``).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

OUT_DIM = 512
PRECISIONS = ("float32", "bfloat16", "int8")


def _mlp(sizes: list[int], activations: list[type[nn.Module] | None]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for (i, o), act in zip(itertools.pairwise(sizes), activations, strict=True):
        layers.append(nn.Linear(i, o))
        if act is not None:
            layers.append(act())
    return nn.Sequential(*layers)


def target_network(in_dim: int) -> nn.Sequential:
    """Linear(d,1024)-LeakyReLU-Linear(1024,2048)-LeakyReLU-Linear(2048,4096)-LeakyReLU-Linear(4096,512)."""
    leaky = nn.LeakyReLU
    return _mlp([in_dim, 1024, 2048, 4096, OUT_DIM], [leaky, leaky, leaky, None])


def predictor_network(in_dim: int) -> nn.Sequential:
    """Linear(d,1024)-LeakyReLU-(2048)-LeakyReLU-(4096)-LeakyReLU-Linear(4096,2048)-ReLU-
    Linear(2048,1024)-ReLU-Linear(1024,512)."""
    leaky, relu = nn.LeakyReLU, nn.ReLU
    return _mlp(
        [in_dim, 1024, 2048, 4096, 2048, 1024, OUT_DIM], [leaky, leaky, leaky, relu, relu, None]
    )


def _init_orthogonal(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
            nn.init.zeros_(m.bias)


class RND(nn.Module):
    """Target and predictor over ``in_dim``-wide tokens; ``forward`` gives per-token scores."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"RND input width must be positive, got {in_dim}")
        self.in_dim = in_dim
        self.target = target_network(in_dim)
        self.predictor = predictor_network(in_dim)
        _init_orthogonal(self)
        self.target.requires_grad_(False)

    @property
    def input_dtype(self) -> torch.dtype:
        """The weights' dtype; float32 for an int8 RND, whose packed weights are no parameters
        and whose layers read float32 (they quantize their inputs themselves)."""
        p = next(self.predictor.parameters(), None)
        return torch.float32 if p is None else p.dtype

    @property
    def device(self) -> torch.device:
        """Where the weights are (an int8 RND is always on the CPU)."""
        p = next(self.predictor.parameters(), None)
        return torch.device("cpu") if p is None else p.device

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """float[..., in_dim] -> float32[...]: mean squared error of the predictor per token.
        Runs in the weights' dtype (bfloat16 weights score in bfloat16), the error in float32."""
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(
                f"tokens are {tokens.shape[-1]}-wide, this RND was built for {self.in_dim}"
            )
        x = tokens.to(self.input_dtype)
        with torch.no_grad():
            target = self.target(x)
        return F.mse_loss(self.predictor(x).float(), target.float(), reduction="none").mean(dim=-1)


class FoldedRND(nn.Module):
    """An RND over tokens ``x = P f + b`` of a linear projection (the policy's vision
    projector), run on the features ``f`` themselves: both networks' first Linear, composed
    with the projection, become one Linear(k, 2 x 1024) (W P, W b + bias), then each network's
    remaining layers. The same scores in exact arithmetic (float32: within 1e-6 relative),
    with fewer multiply-adds where k is narrower than the tokens (Pi0.5: 1152-D SigLIP features
    for 2048-D tokens, 4.8% of the RND's arithmetic). Built by :func:`fold_projection`."""

    def __init__(self, rnd: RND, projection: nn.Linear) -> None:
        super().__init__()
        if projection.out_features != rnd.in_dim:
            raise ValueError(
                f"a projection to {projection.out_features}-D tokens cannot feed an RND built "
                f"for {rnd.in_dim}-D ones"
            )
        t0, p0 = rnd.target[0], rnd.predictor[0]
        if not (
            isinstance(rnd.target[1], nn.LeakyReLU) and isinstance(rnd.predictor[1], nn.LeakyReLU)
        ):
            raise ValueError("both networks must start Linear-LeakyReLU to share a first layer")
        with torch.no_grad():
            w = torch.cat([t0.weight, p0.weight]).double()
            b = torch.cat([t0.bias, p0.bias]).double()
            pw, pb = projection.weight.double().cpu(), projection.bias
            pb = torch.zeros(pw.shape[0], dtype=torch.float64) if pb is None else pb.double().cpu()
            self.first = nn.Linear(projection.in_features, w.shape[0])
            self.first.weight.copy_((w.cpu() @ pw).float())
            self.first.bias.copy_((w.cpu() @ pb + b.cpu()).float())
        self.first.to(t0.weight.device)
        self.act = copy.deepcopy(rnd.target[1])
        self.split = t0.out_features
        self.target_rest = copy.deepcopy(rnd.target[2:]).requires_grad_(False)
        self.predictor_rest = copy.deepcopy(rnd.predictor[2:])
        self.in_dim = projection.in_features
        self.token_dim = rnd.in_dim
        self.meta = dict(getattr(rnd, "meta", {}))

    input_dtype = RND.input_dtype
    device = RND.device

    @property
    def predictor(self) -> nn.Module:  # what input_dtype / device read
        return self.predictor_rest

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """float[..., k] features -> float32[...] per-token scores, as :meth:`RND.forward`."""
        if features.shape[-1] != self.in_dim:
            raise ValueError(
                f"features are {features.shape[-1]}-wide, this folded RND reads {self.in_dim}"
            )
        h = self.act(self.first(features.to(self.input_dtype)))
        with torch.no_grad():
            target = self.target_rest(h[..., : self.split].contiguous())
        pred = self.predictor_rest(h[..., self.split :].contiguous())
        return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=-1)


def fold_projection(rnd: RND, projection: nn.Linear) -> FoldedRND:
    """``rnd`` reading the features that ``projection`` maps to its tokens (:class:`FoldedRND`);
    ``rnd`` is left as it is. Fold before :func:`for_inference` (quantize the folded weights)."""
    return FoldedRND(rnd, projection).eval()


def check_precision(precision: str, device: torch.device | str) -> None:
    """ValueError unless RNDs on ``device`` can score in ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown RND precision '{precision}': choose one of {list(PRECISIONS)}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError(
            f"int8 RND scoring runs on the CPU only (torch has no CUDA kernels for dynamically "
            f"quantized layers), not on {device}: use bfloat16 there"
        )


class Int8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamically quantized Linear with the activations' 8th bit back where the CPU
    sums int8 products exactly (``reduce_range``, set by :func:`for_inference`).

    torch quantizes activations to 7 bits everywhere, for CPUs whose int8 dot products pass
    through saturating int16 sums (no VNNI). On RND that coarseness is not harmless: a trained
    predictor nearly matches the target on familiar tokens, so their scores are small
    differences of large outputs, and 7-bit activations reordered them (full size, briefly
    trained: Spearman 0.88 against float32, AUROC against shifted tokens up to 0.025 lower);
    8 bits keep them (0.999, AUROC within 0.002). Same speed."""

    reduce_range = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(
            x, self._packed_params._packed_params, reduce_range=self.reduce_range
        )
        return y.to(x.dtype)


@functools.cache
def int8_sums_exactly(engine: str) -> bool:
    """Whether ``engine``'s int8 Linear on this CPU sums full-range products exactly: 255 x 127
    pairs overflow an int16 sum (VNNI accumulates in int32, older kernels saturate)."""
    lin = nn.Linear(256, 1, bias=False)
    nn.init.ones_(lin.weight)  # weights quantize to 127, activations in [0, 1] to 255
    x = torch.ones(1, 256)
    x[0, 0] = 0.0
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            q = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear})
        packed = q[0]._packed_params._packed_params
        y = torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)
    finally:
        torch.backends.quantized.engine = before
    return abs(float(y) - 255.0) < 2.0  # saturated: about half of it


def int8_engine(preferred: str | None = None) -> str:
    """The quantized engine that packs an int8 RND: ``preferred`` when given (an engine this
    torch lacks is an error), else oneDNN where torch has it, else torch's default. On this
    project's 2-core AMD EPYC (Zen 4, AVX512-VNNI) oneDNN's and the default x86/FBGEMM
    engine's kernels score the full-size RND about as fast with the cameras in turn (61.5 vs
    61.7 ms, 0-9% apart over four runs), but only oneDNN's gain from :func:`camera_scores`
    running the cameras side by side (51.6 ms; FBGEMM's did not in a probe):
    ``benchmarks/results/rnd_score_cpu.md``."""
    supported = torch.backends.quantized.supported_engines
    if preferred is not None:
        if preferred not in supported:
            raise ValueError(
                f"quantized engine '{preferred}' is not in this torch build: choose one of {supported}"
            )
        return preferred
    return "onednn" if "onednn" in supported else torch.backends.quantized.engine


def for_inference(
    rnd: RND | FoldedRND, precision: str = "float32", engine: str | None = None
) -> RND | FoldedRND:
    """A copy of ``rnd`` in eval mode that scores in ``precision`` (``rnd`` is left as it is):

    - ``float32``: as trained.
    - ``bfloat16``: weights and tokens in bfloat16 (the error in float32): ~2.5x float32 on a CPU
      with AVX512-BF16, and the fast path on a GPU.
    - ``int8``: every Linear dynamically quantized (:class:`Int8Linear`: int8 weights per
      output channel, each pass's activations to 8 bits on the fly), CPU only: ~4x float32 on
      a CPU with VNNI. torch's eager dynamic quantization: torchao's replacement needs
      torch >= 2.11 (lerobot caps torch below it) and was no faster here, even compiled.
      The weights are packed for ``engine`` (:func:`int8_engine`; packed weights carry their
      kernels, so the global ``torch.backends.quantized.engine`` is left as it was).

    Scores stay float32 in every precision; ``benchmarks/results/rnd_score_cpu.md`` has the
    times and how closely each precision's scores follow float32's."""
    check_precision(precision, rnd.device)
    model = copy.deepcopy(rnd).eval()
    if precision == "bfloat16":
        return model.to(torch.bfloat16)
    if precision == "float32":
        return model.float()
    engine = int8_engine(engine)
    full_range = int8_sums_exactly(engine)
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():  # torch.ao.quantization's notice that torchao replaces it
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.ao.quantization.quantize_dynamic(
                model.float(),
                {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8,
                mapping={nn.Linear: Int8Linear},
                inplace=True,
            )
    finally:
        torch.backends.quantized.engine = before
    model.int8_engine = engine
    for m in model.modules():
        if isinstance(m, Int8Linear):
            m.reduce_range = not full_range
    return model


class RNDModule(pl.LightningModule):
    """One RND trained on the shared Trainer: batches are float[B, d] tokens (any float
    dtype; the stores hold fp16), the loss is their mean score, logged as
    ``rnd/<camera>/train_loss`` and ``rnd/<camera>/val_loss`` (``rnd/...`` without a camera)."""

    def __init__(self, in_dim: int, lr: float = 1e-4, camera: str = "", task_type: str = ""):
        super().__init__()
        self.save_hyperparameters()
        self.rnd = RND(in_dim)
        self.prefix = f"rnd/{camera}" if camera else "rnd"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.rnd(tokens)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.rnd(batch).mean()
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.rnd(batch).mean()
        self.log(f"{self.prefix}/val_loss", loss, prog_bar=True, batch_size=batch.shape[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.rnd.predictor.parameters(), lr=self.hparams.lr)


def spatial_map(scores: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Per-token scores float[..., N] of a square token grid -> float[..., g, g] (g = sqrt N),
    bilinearly upsampled to ``size`` x ``size`` when given (224 for Pi0's images)."""
    n = scores.shape[-1]
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    grid = scores.reshape(*scores.shape[:-1], g, g)
    if size is None:
        return grid
    flat = grid.reshape(-1, 1, g, g).float()
    up = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return up.reshape(*scores.shape[:-1], size, size)


_POOL: tuple[ThreadPoolExecutor, int] | None = None  # the cameras' threads and their number


def _score_with_threads(model: RND, tokens: torch.Tensor, threads: int) -> torch.Tensor:
    torch.set_num_threads(threads)  # this worker's share of the cores
    with torch.no_grad():  # grad mode is per thread
        return model(tokens.to(model.device)).float().cpu()


def camera_scores(
    models: dict[str, RND], tokens: dict[str, torch.Tensor], parallel: bool = True
) -> dict[str, torch.Tensor]:
    """Per-token scores float32[..., N] (on the CPU) of every camera's tokens through its RND.

    On the CPU the cameras run side by side, one thread each with an equal share of torch's
    threads, when there are at least as many threads as cameras: each camera's GEMMs then run
    on its own cores instead of every GEMM being split over all of them (full size, 2 cores,
    int8: 51.6 ms a step instead of 61.5 ms, ``benchmarks/results/rnd_score_cpu.md``). torch
    has no call that runs two modules concurrently in eager mode, hence the threads (its
    kernels release the GIL). On a GPU, or with ``parallel=False``, the cameras run one after
    the other."""
    global _POOL
    missing = sorted(set(tokens) - set(models))
    if missing:
        raise KeyError(f"no RND for camera(s) {missing}; have {sorted(models)}")
    cams = list(tokens)
    total = torch.get_num_threads()
    on_cpu = all(models[c].device.type == "cpu" for c in cams)
    if not parallel or len(cams) < 2 or not on_cpu or total < len(cams):
        with torch.no_grad():
            return {c: models[c](tokens[c].to(models[c].device)).float().cpu() for c in cams}
    if _POOL is None or _POOL[1] < len(cams):
        _POOL = (ThreadPoolExecutor(len(cams), thread_name_prefix="rnd-score"), len(cams))
    shares = [total // len(cams) + (i < total % len(cams)) for i in range(len(cams))]
    try:
        futures = [
            _POOL[0].submit(_score_with_threads, models[c], tokens[c], n)
            for c, n in zip(cams, shares, strict=True)
        ]
        return {c: f.result() for c, f in zip(cams, futures, strict=True)}
    finally:
        torch.set_num_threads(total)  # the workers changed torch's default for new threads


@torch.no_grad()
def score_cameras(
    models: dict[str, RND], tokens: dict[str, torch.Tensor], maps: bool = True
) -> dict[str, Any]:
    """One step's uncertainty: every camera's tokens float[N, d] through its RND in one
    batched pass. Returns ``{camera: mean score, 'overall': mean over cameras,
    'spatial_maps': {camera: float[g, g]}}`` (maps only when ``maps``)."""
    out: dict[str, Any] = {}
    grids = {}
    for cam, s in camera_scores(models, tokens).items():
        out[cam] = float(s.mean())
        if maps:
            grids[cam] = spatial_map(s)
    out["overall"] = sum(out[c] for c in tokens) / len(tokens)
    if maps:
        out["spatial_maps"] = grids
    return out
