"""Residual vector quantizer (RVQ) of the content stream, at the 50 Hz frame rate.

Shapes: the RVQ takes ``x: B x D x T`` (``D`` = ``codebook_dim``, ``T`` frames of 20 ms) and
returns ``quantized: B x D x T`` plus one ``codes: B x T`` tensor per active stage. Inside,
frames are flattened to ``N x D`` vectors (``N = B * T``) once, and every stage works on
those; nothing is done per sample or per frame in Python.

Tricks used, each a config switch of the ``model.rvq`` section:

* **Straight-through estimator** (VQ-VAE, van den Oord et al. 2017): the forward pass
  outputs the sum of the chosen codes, the backward pass treats quantization as identity
  (``d quantized / d x = I``). It is applied once, to the whole residual stack.
* **Rotation trick** (Fifty et al. 2024): with ``straight_through: rotation`` the gradient
  crosses the quantizer through the rotation and rescaling that map the input to its
  quantized value (:func:`rotation_trick`); the forward value is the same. ``rotation``
  takes it once, from the RVQ input to the summed codes (per stage with projections);
  ``rotation_stage`` takes it at every stage, from its residual to its code, and sums the
  stages, as vector-quantize-pytorch's ResidualVQ does (every stage's residual keeps its path
  to the input, so the input's gradient is the sum of the stages' rotated gradients). Under
  progressive RVQ the whole-stack rotation nears the identity as stages join (the summed codes
  come closer to the input); the per-stage one keeps each stage's own angle.
* **Codebook learning rate** (``codebook_lr_scale``): with the gradient update the
  codebooks are parameters, and the trainer gives them the model's learning rate times this
  factor (:meth:`QuantizerStack.codebook_parameters`), so they can move slower than the
  encoder that feeds them.
* **SimVQ** (Zhu et al. 2024, arXiv 2411.02038): with ``codebook_update: simvq`` each
  stage's codebook is a frozen random base ``C`` through one learned linear map, ``C W``; the
  codebook term trains ``W``, so a step moves every code, chosen or not, and no code is left
  behind (no k-means, no dead-code redraws: both would write into the frozen base).
* **Affine re-parameterisation** (Huh et al. 2023, "Straightening out the straight-through
  estimator"): with ``affine_codebook`` every stage's codes are ``scale * c_k + shift``, the
  per-dimension scale and shift shared by all codes and trained by the codebook term, so the
  codebook as a whole follows the input's moving statistics, unused codes included (k-means
  and dead-code redraws store their vectors through the inverse map).
* **Residual quantization** (SoundStream/EnCodec): stage ``i`` quantizes its input residual
  ``r_i``; the next residual is ``r_i - sg(e_i)`` (the *detached* code). Each stage has its
  codebook term ``||sg(r_i) - e_i||^2`` and commitment term ``beta * ||r_i - sg(e_i)||^2``
  (means over elements), both computed against the stage's *input* residual.
* **Progressive RVQ** (Phase 1 fix): :func:`active_quantizers` gives how many stages run at
  a global step; ``forward(x, num_active)`` runs only those (inactive stages cost nothing,
  output nothing and get no gradient).
* **EMA codebooks with Laplace smoothing** (VQ-VAE-2, EnCodec ``core_vq.py``): with
  ``codebook_update: ema`` the codebook is a buffer moved by exponential moving averages of
  the assignment counts and sums; it is not a parameter and receives no gradient, and only
  the commitment term reaches the encoder.
* **Dead-code expiry** (EnCodec, Jukebox): codes whose usage EMA falls below
  ``dead_code_threshold x`` the *expected* assignments per code per step (valid frames of
  the batch / codebook size) are replaced by randomly drawn current residuals of their stage
  (:func:`sample_vectors`, :meth:`VectorQuantizer.expire_codes_`), in both update modes.
  Relative, because an absolute count means nothing without the frames per step: EnCodec's
  2 sits at ~0.4 of its ~4.7 expected assignments, while at the quick config's 512 frames
  for 1024 codes (0.5 expected) the same 2 was unreachable and 984 of 1024 codes were
  redrawn every step. A redrawn code's usage EMA restarts at the expected count, as an
  average code: with fewer frames than codes an average code gets no assignment in most
  steps (Poisson(0.5) is 0 61 % of the time), so judging a new code after one step would
  redraw it almost surely; this way it has ``ln(1 / threshold) / (1 - decay)`` steps to
  attract frames before it can expire again.
* **k-means initialisation** (EnCodec): with ``kmeans_init`` each codebook is set by
  :func:`kmeans` on its stage's input residuals. The trainer calls
  :meth:`VectorQuantizer.init_codebook_` with frames from several batches when the stage
  becomes active (``kmeans_init_frames_per_code x codebook_size`` frames: one batch of 512
  frames cannot seed 1024 clusters); used on its own, a stage initialises from its first
  training batch.
* **Valid frames**: ``forward(x, num_active, valid)`` quantizes every frame (the decoder
  needs them all) but takes losses, code histograms, EMA updates, k-means and dead-code
  samples from the valid frames only (:mod:`streamvc_rvq.model.valid_frames`).
* **Cosine / L2-normalised codes** (ViT-VQGAN, DAC ``quantize.py``): with
  ``distance: cosine`` each stage L2-normalises its input residual and its codebook, picks the
  code with the largest dot product, and its code, losses and next residual live in that
  normalised space, so the scale of the input is ignored. The RVQ output is then the sum of
  unit-norm codes, and the straight-through estimator is taken around ``normalize(x)``.
* **Low-dimensional codes** (DAC ``quantize.py``, Kumar et al. 2023): with
  ``projection_dim: d > 0`` each stage has its own weight-normalised ``in_proj: D -> d`` and
  ``out_proj: d -> D``; the stage looks up, learns and expires its codes in ``d`` dimensions
  (with ``distance: cosine``, DAC's L2-normalised lookup), the straight-through estimator is
  taken per stage in code space, ``z_q = out_proj(z_e + sg(e - z_e))``, so both projections
  and the codebook train, and the next residual is ``r - sg(z_q)`` as without projection.
  DAC returns the raw codebook row after a normalised lookup; here the code, losses and
  output stay in the normalised space, as in the cosine mode above.

Randomness (k-means seeding, dead-code sampling) is drawn from torch's global CPU generator
and moved to the input's device, so a saved ``torch.get_rng_state()`` resumes exactly on any
device. Everything is float32 and uses only ops MPS implements (matmul, argmin/argmax,
index_add_, bincount, where); no CPU fallback is needed. On CUDA, ``index_add_`` is only
bit-reproducible under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from streamvc_rvq.quantization import stats as code_stats

DISTANCES = ("euclidean", "cosine")
CODEBOOK_UPDATES = ("gradient", "ema", "simvq")
STRAIGHT_THROUGH = ("identity", "rotation", "rotation_stage")
KMEANS_ITERS = 10


@dataclass(frozen=True)
class RVQSettings:
    """The ``model.rvq`` config section: ``RVQSettings(**rvq_cfg)`` (an unknown key raises
    TypeError). Both implementations and each of their stages are built from it, so the
    keywords and their defaults are written here only."""

    num_quantizers: int = 8
    codebook_size: int = 1024
    codebook_dim: int = 64  # D, the RVQ's input channels
    distance: str = "euclidean"  # or "cosine"
    codebook_update: str = "gradient"  # or "ema"
    ema_decay: float = 0.99
    laplace_eps: float = 1e-5
    dead_code_threshold: float = 0.0  # x the expected assignments per code per step; 0 = off
    kmeans_init: bool = False
    commitment_cost: float = 0.5  # beta
    progressive_steps: int = 2000  # used by the training loop (:func:`active_quantizers`)
    kmeans_init_frames_per_code: int = 8  # used by the training loop (multi-batch k-means)
    projection_dim: int = 0  # d > 0: DAC-style low-dimensional codes
    implementation: str = "native"  # which class :func:`~.build.build_rvq` builds
    straight_through: str = "identity"  # "rotation" (whole stack) or "rotation_stage" (Fifty et al. 2024)
    codebook_lr_scale: float = 1.0  # the codebooks' learning rate / the model's (gradient update)
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # implementation: fsq (prod = codebook_size)
    affine_codebook: bool = False  # codes = scale * c + shift, scale and shift shared (Huh et al. 2023)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(v) for v in self.fsq_levels))  # a config's list
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {CODEBOOK_UPDATES}, got {self.codebook_update!r}")
        if self.straight_through not in STRAIGHT_THROUGH:
            raise ValueError(f"straight_through must be one of {STRAIGHT_THROUGH}, got {self.straight_through!r}")
        if self.codebook_lr_scale != 1.0 and self.codebook_update != "gradient":
            raise ValueError(f"codebook_lr_scale {self.codebook_lr_scale:g} needs codebook_update: gradient "
                             f"(an {self.codebook_update} codebook has no learning rate)")
        if self.codebook_update == "simvq" and (self.kmeans_init or self.dead_code_threshold > 0):
            raise ValueError("codebook_update: simvq keeps its base codebook frozen: kmeans_init and "
                             "dead_code_threshold would write into it (set them to false / 0)")
        if self.affine_codebook and self.codebook_update != "gradient":
            raise ValueError(f"affine_codebook needs codebook_update: gradient (the shared scale and shift learn "
                             f"from the codebook term), got {self.codebook_update!r}")
        if self.codebook_lr_scale <= 0:
            raise ValueError(f"codebook_lr_scale must be > 0, got {self.codebook_lr_scale:g}")
        if self.num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {self.num_quantizers}")

    @property
    def cosine(self) -> bool:
        return self.distance == "cosine"

    @property
    def code_dim(self) -> int:
        """Dimension a stage looks its codes up in: ``projection_dim`` if set, else ``D``."""
        return self.projection_dim or self.codebook_dim

    @property
    def kmeans_init_frames(self) -> int:
        """Frames a stage's k-means initialisation draws."""
        return self.kmeans_init_frames_per_code * self.codebook_size


def active_quantizers(step: int, num_quantizers: int, progressive_steps: int) -> int:
    """Stages active at global ``step``: ``min(N, 1 + step // progressive_steps)``; all if 0."""
    if progressive_steps == 0:
        return num_quantizers
    return min(num_quantizers, 1 + step // progressive_steps)


def checked_num_active(num_active: int | None, num_quantizers: int) -> int:
    """Stages a forward runs: ``num_active``, all when None; outside ``[1, N]`` raises."""
    if num_active is None:
        return num_quantizers
    if not 1 <= num_active <= num_quantizers:
        raise ValueError(f"num_active must be in [1, {num_quantizers}], got {num_active}")
    return num_active


def checkpoint_stages(step: int, num_quantizers: int, progressive_steps: int) -> int:
    """Stages a checkpoint at ``step`` was trained with: it saw steps ``0 .. step - 1``, so
    ``active_quantizers(step - 1)``; a stage that becomes active at ``step`` is untrained."""
    return active_quantizers(max(step - 1, 0), num_quantizers, progressive_steps)


def stage_trained_steps(stage: int, step: int, progressive_steps: int) -> int:
    """Training steps stage ``stage`` has had in a checkpoint at ``step``."""
    return max(0, step - stage * progressive_steps)


@dataclass(frozen=True)
class StageSchedule:
    """Which stages run when: stage ``i`` starts at global step ``i x progressive_steps`` (all at
    once with 0). The one answer to "stages active at step N" for training, evaluation and inference."""

    num_quantizers: int
    progressive_steps: int

    @classmethod
    def of(cls, model_cfg: dict) -> StageSchedule:
        """The schedule of a resolved ``model`` config."""
        return cls(int(model_cfg["rvq"]["num_quantizers"]), int(model_cfg["rvq"]["progressive_steps"]))

    def active_at(self, step: int) -> int:
        """Stages a training step ``step`` runs."""
        return active_quantizers(step, self.num_quantizers, self.progressive_steps)

    def in_checkpoint(self, step: int) -> int:
        """Stages a checkpoint at ``step`` was trained with (and is evaluated and converts with)."""
        return checkpoint_stages(step, self.num_quantizers, self.progressive_steps)

    def trained_steps(self, stage: int, step: int) -> int:
        """Training steps stage ``stage`` has had in a checkpoint at ``step``."""
        return stage_trained_steps(stage, step, self.progressive_steps)


# ----------------------------------------------------------------------------------------
# Small named functions: the maths of codebook learning.


def sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows drawn at random from ``samples: N x D`` (without replacement if N >= num).

    Indices come from torch's global CPU generator, so the draw is reproducible from a saved
    RNG state whatever device ``samples`` lives on.
    """
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n)[:num]
    else:
        idx = torch.randint(0, n, (num,))
    return samples[idx.to(samples.device)]


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Index of the nearest code for each row of ``x: N x D`` against ``codebook: K x D``.

    Euclidean: argmin over codes of ``||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2`` (one matmul,
    no cdist). ``||x||^2`` is the same for every code of a row, so the argmin leaves it out
    (adding an N x K broadcast costs more than the matmul on CPU).
    Cosine: ``x`` and ``codebook`` are expected already L2-normalised; argmax of ``x.e``.
    """
    if cosine:
        return (x @ codebook.t()).argmax(dim=-1)
    dist = torch.addmm(codebook.pow(2).sum(-1), x, codebook.t(), alpha=-2.0)  # ||e||^2 - 2 x.e
    return dist.argmin(dim=-1)


def kmeans(
    samples: torch.Tensor, num_clusters: int, num_iters: int = KMEANS_ITERS, cosine: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples: N x D``; returns ``(centroids K x D, counts K)``.

    Seeds are drawn by :func:`sample_vectors` (global RNG). An empty cluster keeps its
    previous centroid. With ``cosine`` the assignment uses dot products of unit vectors and
    centroids are re-normalised (spherical k-means).
    """
    means = sample_vectors(samples, num_clusters)
    counts = torch.zeros(num_clusters, dtype=samples.dtype, device=samples.device)
    for _ in range(num_iters):
        assign = nearest_codes(samples, means, cosine)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = cluster_sums(samples, assign, num_clusters)
        new_means = sums / counts.clamp_min(1.0).unsqueeze(-1)
        if cosine:
            new_means = F.normalize(new_means, dim=-1)
        means = torch.where((counts == 0).unsqueeze(-1), means, new_means)
    return means, counts


def cluster_sums(samples: torch.Tensor, assign: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``sums[k] = sum of samples[n] with assign[n] == k`` (``K x D``), by ``index_add_``:
    O(N * D) instead of an N x K one-hot matmul."""
    sums = samples.new_zeros(num_clusters, samples.shape[-1])
    return sums.index_add_(0, assign, samples)


def ema_inplace_(moving_avg: torch.Tensor, new: torch.Tensor, decay: float) -> None:
    """``moving_avg <- decay * moving_avg + (1 - decay) * new``, in place."""
    moving_avg.mul_(decay).add_(new, alpha=1 - decay)


def laplace_smoothing(cluster_size: torch.Tensor, eps: float) -> torch.Tensor:
    """``n_k = (cs_k + eps) / (n + K * eps) * n`` with ``n = sum_k cs_k`` (no empty cluster)."""
    n = cluster_size.sum()
    return (cluster_size + eps) / (n + cluster_size.numel() * eps) * n


# ----------------------------------------------------------------------------------------
# One stage.


@dataclass
class StageOutput:
    """What one :class:`VectorQuantizer` stage returns, for ``N`` flattened frames."""

    inputs: torch.Tensor  # N x D: the stage's input residual in code space (normalised if cosine)
    code_vectors: torch.Tensor  # N x D: chosen codes e, detached
    codes: torch.Tensor  # N: code indices
    codebook_loss: torch.Tensor  # ||sg(r) - e||^2, mean; zero in EMA mode
    commitment_loss: torch.Tensor  # beta * ||r - sg(e)||^2, mean
    stats: dict  # perplexity, usage, top_code_share, dead_codes, redrawn (0-d tensors)


class VectorQuantizer(nn.Module):
    """One RVQ stage: nearest-code lookup in a ``codebook_size x codebook_dim`` codebook.

    Works on flattened frames ``r: N x D``; :class:`ResidualVectorQuantizer` does the
    ``B x D x T`` layout. Buffers: ``cluster_size`` (usage EMA, both update modes, drives
    dead-code expiry), ``embed_sum`` (EMA mode) and ``initialized`` (k-means done).
    Its codes have ``settings.code_dim`` dimensions.
    """

    def __init__(self, settings: RVQSettings):
        super().__init__()
        self.codebook_size = settings.codebook_size
        self.codebook_dim = settings.code_dim
        self.cosine = settings.cosine
        self.use_ema = settings.codebook_update == "ema"
        self.ema_decay = settings.ema_decay
        self.laplace_eps = settings.laplace_eps
        self.dead_code_threshold = settings.dead_code_threshold
        self.kmeans_init = settings.kmeans_init
        self.commitment_cost = settings.commitment_cost

        # N(0, 1) on purpose: the spec's collapse mechanism is encoder std 0.31 vs this std 1.0.
        init = torch.randn(self.codebook_size, self.codebook_dim)
        self.transform = None
        self.affine = None
        if settings.affine_codebook:  # shared per-dimension scale and shift, starting at the identity
            self.affine = nn.ParameterDict({"scale": nn.Parameter(torch.ones(self.codebook_dim)),
                                            "shift": nn.Parameter(torch.zeros(self.codebook_dim))})
        if settings.codebook_update == "simvq":  # a frozen base; the learned map moves every code at once
            self.register_buffer("codebook", init)
            self.transform = nn.Linear(self.codebook_dim, self.codebook_dim, bias=False)
            # the identity: the codes start as the base's N(0, 1), as phase1's do (nn.Linear's default
            # would start them at std ~0.58 and change the code-scale mismatch the arm is not about)
            nn.init.eye_(self.transform.weight)
        elif self.use_ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # Usage EMA; starts at 1 so that codebook = embed_sum / cluster_size holds at init.
        self.register_buffer("cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))

    def extra_repr(self) -> str:
        distance = "cosine" if self.cosine else "euclidean"
        update = "ema" if self.use_ema else ("simvq" if self.transform is not None else "gradient")
        return (
            f"{self.codebook_size}x{self.codebook_dim}, distance={distance}, update={update}, "
            f"dead_code_threshold={self.dead_code_threshold}, kmeans_init={self.kmeans_init}, "
            f"commitment_cost={self.commitment_cost}"
        )

    def lookup_codebook(self) -> torch.Tensor:
        """The codebook in code space (L2-normalised rows if cosine); with SimVQ the frozen
        base through the learned linear map."""
        embed = self.codebook if self.transform is None else self.transform(self.codebook)
        if self.affine is not None:
            embed = embed * self.affine["scale"] + self.affine["shift"]
        return F.normalize(embed, dim=-1) if self.cosine else embed

    @torch.no_grad()
    def map_shift(self) -> torch.Tensor | None:
        """How far the learned map over the whole codebook has moved from where it started (RMS
        per entry: SimVQ's ``W`` from the identity, the affine scale from 1 and shift from 0);
        None without one. 0 means the arm's trick has not acted."""
        if self.transform is not None:
            weight = self.transform.weight
            return (weight - torch.eye(weight.shape[0], device=weight.device)).pow(2).mean().sqrt()
        if self.affine is not None:
            moved = torch.cat([self.affine["scale"] - 1.0, self.affine["shift"]])
            return moved.pow(2).mean().sqrt()
        return None

    def _raw(self, vectors: torch.Tensor) -> torch.Tensor:
        """Code-space vectors as stored rows: what :meth:`lookup_codebook` maps back onto ``vectors``."""
        if self.affine is None:
            return vectors
        return (vectors - self.affine["shift"]) / self.affine["scale"]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer ``codes`` of any shape (shape + ``[D]``)."""
        return F.embedding(codes, self.lookup_codebook())

    @torch.no_grad()
    def init_codebook_(self, r: torch.Tensor, frames_per_step: int | None = None) -> None:
        """k-means initialisation on the stage's residuals ``r: N x D`` (code space).

        ``frames_per_step``: valid frames of one training batch, to put the cluster sizes in
        the per-step units of the usage EMA (default: ``N``, one batch)."""
        if self.cosine:
            r = F.normalize(r, dim=-1)
        means, counts = kmeans(r, self.codebook_size, KMEANS_ITERS, self.cosine)
        counts = counts * ((frames_per_step or r.shape[0]) / r.shape[0])
        # An empty cluster counts as at least the expected count, like a redrawn code, so it
        # keeps its seeded position instead of being pulled to zero by the EMA division.
        expected = (frames_per_step or r.shape[0]) / self.codebook_size
        counts = counts.clamp_min(expected)
        self.codebook.data.copy_(self._raw(means))
        self.cluster_size.copy_(counts)
        if self.use_ema:
            self.embed_sum.copy_(means * counts.unsqueeze(-1))
        self.initialized.fill_(True)

    def expected_assignments(self, num_frames: int) -> float:
        """Assignments per code in a batch of ``num_frames`` frames if all codes were equal."""
        return num_frames / self.codebook_size

    @torch.no_grad()
    def expire_codes_(self, r: torch.Tensor) -> int:
        """Replace codes whose usage EMA is below ``dead_code_threshold x`` the expected
        assignments of a batch of ``r: N x D`` by random rows of ``r`` (current residuals,
        code space); their usage EMA restarts at the expected count. Returns how many."""
        if r.shape[0] == 0:
            return 0
        expected = self.expected_assignments(r.shape[0])
        expired = self.cluster_size < self.dead_code_threshold * expected
        count = int(expired.sum())
        if count == 0:
            return 0
        samples = sample_vectors(r, self.codebook_size)
        mask = expired.unsqueeze(-1)
        self.codebook.data.copy_(torch.where(mask, self._raw(samples), self.codebook))
        self.cluster_size.masked_fill_(expired, expected)
        if self.use_ema:
            self.embed_sum.copy_(torch.where(mask, samples * expected, self.embed_sum))
        return count

    @torch.no_grad()
    def update_ema_(self, r: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        """Usage EMA (both modes); in EMA mode also the codebook from counts and sums."""
        ema_inplace_(self.cluster_size, counts, self.ema_decay)
        if not self.use_ema:
            return
        ema_inplace_(self.embed_sum, cluster_sums(r, codes, self.codebook_size), self.ema_decay)
        n_k = laplace_smoothing(self.cluster_size, self.laplace_eps)
        self.codebook.copy_(self.embed_sum / n_k.unsqueeze(-1))

    def forward(self, r: torch.Tensor, valid: torch.Tensor | None = None) -> StageOutput:
        """Quantize residuals ``r: N x D``; updates codebook state when training.

        ``valid: N`` bool selects the frames that count: losses, histogram, EMA update,
        k-means and dead-code samples use those only; every frame gets a code.
        Training order: k-means init (first call only, unless the trainer initialised the
        stage from several batches), dead-code expiry (judged on the usage EMA of earlier
        steps, so re-drawn codes already compete for this batch), lookup, then the EMA update
        with this batch's assignments. Expiring before the lookup also keeps in-place
        codebook writes away from tensors autograd has saved.
        """
        if self.cosine:
            r = F.normalize(r, dim=-1)
        r_valid = r if valid is None else r[valid]
        redrawn = 0
        if self.training:
            if self.kmeans_init and not bool(self.initialized) and r_valid.shape[0] > 0:
                self.init_codebook_(r_valid.detach())
            if self.dead_code_threshold > 0:
                redrawn = self.expire_codes_(r_valid.detach())

        embed = self.lookup_codebook()
        with torch.no_grad():
            codes = nearest_codes(r.detach(), embed.detach(), self.cosine)
        e = F.embedding(codes, embed)  # N x D; carries the codebook gradient in gradient mode
        e_valid = e if valid is None else e[valid]
        codes_valid = codes if valid is None else codes[valid]

        if r_valid.shape[0] == 0:
            codebook_loss = commitment_loss = (r.sum() + e.sum()) * 0.0
        else:
            if self.use_ema:
                codebook_loss = r.new_zeros(())
            else:
                codebook_loss = F.mse_loss(e_valid, r_valid.detach())
            commitment_loss = self.commitment_cost * F.mse_loss(r_valid, e_valid.detach())

        counts = code_stats.code_histogram(codes_valid, self.codebook_size)
        if self.training and r_valid.shape[0] > 0:
            self.update_ema_(r_valid.detach(), codes_valid, counts)
        if self.dead_code_threshold > 0 and r_valid.shape[0] > 0:
            threshold = self.dead_code_threshold * self.expected_assignments(r_valid.shape[0])
            dead = code_stats.dead_code_count(self.cluster_size, threshold)
        else:
            dead = code_stats.dead_code_count(counts, 1.0)
        stage_stats = code_stats.stage_stats(counts, dead, redrawn / self.codebook_size)
        shift = self.map_shift()
        if shift is not None:
            stage_stats["map_shift"] = shift
        return StageOutput(r, e.detach(), codes, codebook_loss, commitment_loss, stage_stats)


def rotation_trick(x: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``q`` in the forward pass; in the backward pass the gradient reaches ``x: N x D``
    through ``sg(s R)``, the rotation ``R`` taking ``x``'s direction to ``q``'s and the
    rescaling ``s = |q| / |x|`` (Fifty et al. 2024, arXiv 2410.06424), instead of the
    identity of the straight-through estimator. The gradient then depends on where the
    input sits inside its code's cell (the angle between ``x`` and ``q``), which is what
    pushes inputs apart and spreads them over more codes.

    ``R = I - 2 w w^T + 2 v u^T`` with ``u = x / |x|``, ``v = q / |q|``, ``w = (u + v) / |u + v|``
    (Householder form; ``u = -v`` gives ``w = 0`` and still ``R u = v``)."""
    with torch.no_grad():
        x_norm = x.norm(dim=-1, keepdim=True).clamp_min(eps)
        q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
        u, v = x / x_norm, q / q_norm
        w = F.normalize(u + v, dim=-1)
        scale = q_norm / x_norm
    rotated = scale * (x - 2.0 * w * (w * x).sum(-1, keepdim=True) + 2.0 * v * (u * x).sum(-1, keepdim=True))
    return rotated + (q - rotated).detach()  # exactly q forward, float rounding aside


@torch.no_grad()
def mean_angle(x: torch.Tensor, q: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean angle in degrees between the rows of ``x`` and ``q`` (valid rows): the rotation the
    rotation trick applies to the gradient. Near 0 the trick is the straight-through estimator."""
    if valid is not None:
        x, q = x[valid], q[valid]
    cos = F.cosine_similarity(x, q, dim=-1, eps=1e-8).clamp(-1.0, 1.0)
    return torch.acos(cos).mean() * (180.0 / math.pi) if cos.numel() else cos.new_full((), float("nan"))


def straight_through(x: torch.Tensor, q: torch.Tensor, mode: str) -> torch.Tensor:
    """The value ``q`` with the gradient of ``mode`` (``identity``: VQ-VAE's; ``rotation``,
    ``rotation_stage``: :func:`rotation_trick`)."""
    if mode in ("rotation", "rotation_stage"):
        return rotation_trick(x, q)
    return x + (q - x).detach()


# ----------------------------------------------------------------------------------------
# The residual stack.


@dataclass
class RVQOutput:
    """Everything a caller of :class:`ResidualVectorQuantizer` needs.

    ``codes``, ``codebook_losses``, ``commitment_losses`` and ``stats`` have one entry per
    *active* stage, in stage order.
    """

    quantized: torch.Tensor  # B x D x T, straight-through
    codes: list[torch.Tensor]  # each B x T, int64
    codebook_losses: list[torch.Tensor]  # scalars; zeros in EMA mode
    commitment_losses: list[torch.Tensor]  # scalars, beta applied
    loss: torch.Tensor  # sum of all codebook and commitment terms
    stats: list[dict]  # per stage: perplexity, usage, top_code_share, dead_codes, redrawn (0-d
    # tensors on the input's device, so forward never waits for the device: convert when logging)
    latents: torch.Tensor  # B x D x T pre-quantization latents (normalised if cosine without projection)


def _to_bdt(flat: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * T) x D`` frames back to ``B x D x T``."""
    return flat.view(batch, -1, flat.shape[-1]).transpose(1, 2).contiguous()


class QuantizerStack(nn.Module):
    """What every RVQ implementation shares: its :class:`RVQSettings` (``settings``) and the
    attributes the model, the trainer and the summary read from it."""

    def __init__(self, settings: RVQSettings):
        super().__init__()
        self.settings = settings
        self.num_quantizers = settings.num_quantizers
        self.codebook_size = settings.codebook_size
        self.codebook_dim = settings.codebook_dim
        self.cosine = settings.cosine
        self.projection_dim = settings.projection_dim
        self.progressive_steps = settings.progressive_steps
        self.kmeans_init_frames = settings.kmeans_init_frames

    def codebook_parameters(self) -> list[nn.Parameter]:
        """The codebooks the optimiser moves (gradient update), for their own learning rate."""
        return [layer.codebook for layer in getattr(self, "layers", []) if isinstance(layer.codebook, nn.Parameter)]


class ResidualVectorQuantizer(QuantizerStack):
    """``num_quantizers`` :class:`VectorQuantizer` stages applied to successive residuals.

    Built from the ``model.rvq`` config section: ``ResidualVectorQuantizer(**rvq_cfg)``, the
    keywords of :class:`RVQSettings`. ``progressive_steps`` and ``kmeans_init_frames_per_code``
    are accepted (they are part of that section) but used by the training loop
    (:func:`active_quantizers`, the multi-batch k-means initialisation).
    """

    def __init__(self, **settings):
        settings = RVQSettings(**settings)
        if settings.implementation != "native":
            raise ValueError(
                f"ResidualVectorQuantizer is the native implementation, got {settings.implementation!r}: use build_rvq"
            )
        super().__init__(settings)
        self.layers = nn.ModuleList(VectorQuantizer(settings) for _ in range(self.num_quantizers))
        self.in_projs = self.out_projs = None
        if self.projection_dim:
            weight_norm = nn.utils.parametrizations.weight_norm
            D, d = self.codebook_dim, self.projection_dim
            self.in_projs = nn.ModuleList(weight_norm(nn.Linear(D, d)) for _ in range(self.num_quantizers))
            self.out_projs = nn.ModuleList(weight_norm(nn.Linear(d, D)) for _ in range(self.num_quantizers))

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, frames = x.shape
        if dim != self.codebook_dim:
            raise ValueError(f"expected {self.codebook_dim} channels, got {dim}")
        latents = x.transpose(1, 2).reshape(batch * frames, dim)  # N x D
        # with projections each stage normalises its own projected residual instead
        return F.normalize(latents, dim=-1) if self.cosine and not self.projection_dim else latents

    def _code_space(self, stage: int, residual: torch.Tensor) -> torch.Tensor:
        """A stage's input residual ``N x D`` in its code space (projected, normalised if cosine)."""
        r = self.in_projs[stage](residual) if self.projection_dim else residual
        return F.normalize(r, dim=-1) if self.layers[stage].cosine else r

    def _to_input_space(self, stage: int, vectors: torch.Tensor) -> torch.Tensor:
        """Code-space vectors of a stage back in the RVQ's input space."""
        return self.out_projs[stage](vectors) if self.projection_dim else vectors

    @torch.no_grad()
    def input_space_codebook(self, stage: int = 0) -> torch.Tensor:
        """``K x D``: a stage's codes as its input sees them (through ``out_proj``), the scale the
        frame statistics compare the RVQ input with."""
        return self._to_input_space(stage, self.layers[stage].lookup_codebook())

    def pending_kmeans(self, stage: int) -> bool:
        """Whether stage ``stage`` waits for its k-means initialisation."""
        layer = self.layers[stage]
        return layer.kmeans_init and not bool(layer.initialized)

    @torch.no_grad()
    def init_stage_(self, stage: int, samples: torch.Tensor, frames_per_step: int) -> None:
        """k-means initialisation of stage ``stage`` on ``samples`` from :meth:`stage_inputs`."""
        self.layers[stage].init_codebook_(samples, frames_per_step=frames_per_step)

    def forward(self, x: torch.Tensor, num_active: int | None = None, valid: torch.Tensor | None = None) -> RVQOutput:
        """Quantize ``x: B x D x T`` with the first ``num_active`` stages (all if None);
        ``valid: B x T`` bool marks the frames that count (all if None)."""
        n_q = checked_num_active(num_active, self.num_quantizers)
        batch = x.shape[0]
        latents = self._flatten(x)
        flat_valid = None if valid is None else valid.reshape(-1).to(latents.device)

        residual = latents
        quantized = torch.zeros_like(latents)
        rotating = self.settings.straight_through != "identity"
        codes, codebook_losses, commitment_losses, stage_stats = [], [], [], []
        for index, layer in enumerate(self.layers[:n_q]):
            if self.projection_dim:
                out = layer(self.in_projs[index](residual), flat_valid)
                z_q = self.out_projs[index](straight_through(out.inputs, out.code_vectors, self.settings.straight_through))
                quantized = quantized + z_q
                residual = residual - z_q.detach()
            else:
                out = layer(residual, flat_valid)
                if self.settings.straight_through == "rotation_stage":
                    quantized = quantized + rotation_trick(out.inputs, out.code_vectors)
                else:
                    quantized = quantized + out.code_vectors
                residual = out.inputs - out.code_vectors  # next residual uses the detached code
            if self.settings.straight_through == "rotation_stage" or (self.projection_dim and rotating):
                out.stats["rotation_angle"] = mean_angle(out.inputs, out.code_vectors, flat_valid)
            codes.append(out.codes.view(batch, -1))
            codebook_losses.append(out.codebook_loss)
            commitment_losses.append(out.commitment_loss)
            stage_stats.append(out.stats)

        if not self.projection_dim and self.settings.straight_through != "rotation_stage":
            if rotating:  # one rotation for the stack, logged with stage 0
                stage_stats[0]["rotation_angle"] = mean_angle(latents, quantized, flat_valid)
            quantized = straight_through(latents, quantized, self.settings.straight_through)  # whole stack
        loss = torch.stack(codebook_losses + commitment_losses).sum()
        return RVQOutput(
            quantized=_to_bdt(quantized, batch),
            codes=codes,
            codebook_losses=codebook_losses,
            commitment_losses=commitment_losses,
            loss=loss,
            stats=stage_stats,
            latents=_to_bdt(latents, batch),
        )

    @torch.no_grad()
    def stage_inputs(self, x: torch.Tensor, stage: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The input residuals of stage ``stage`` for ``x: B x D x T`` (valid frames, ``N x D``),
        through the current codebooks of the stages before it; changes no state."""
        residual = self._flatten(x)
        for index, layer in enumerate(self.layers[:stage]):
            r = self._code_space(index, residual)
            embed = layer.lookup_codebook()
            e = embed[nearest_codes(r, embed, layer.cosine)]
            residual = residual - self._to_input_space(index, e) if self.projection_dim else r - e
        if valid is not None:
            residual = residual[valid.reshape(-1).to(residual.device)]
        return self._code_space(stage, residual)

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Sum of the code vectors of ``codes`` (one ``B x T`` per stage, first stages first)
        as ``B x D x T``: the forward value of ``quantized`` for those codes."""
        if len(codes) > self.num_quantizers:
            raise ValueError(f"{len(codes)} code streams for {self.num_quantizers} stages")
        total = sum(self._to_input_space(i, layer.decode(c)) for i, (layer, c) in enumerate(zip(self.layers, codes)))
        return total.transpose(1, 2).contiguous()
