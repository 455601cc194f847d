"""Semantic-ID tokenizers: item embeddings (N, d) -> discrete code tuples (N, levels) -> `SemanticIds`.

One interface (`Tokenizer`: fit / encode / decode / stats / save / load), three methods:

- `RQKMeans` — residual k-means: level l clusters the residual left by levels < l. No training
  beyond k-means (the RQ-KMeans baseline of the MMQ/OneRec line of work); deterministic for a seed.
- `RQVAE` — TIGER's tokenizer (Rajput et al., NeurIPS 2023, §3.1): MLP encoder d->512->256->128->32
  (ReLU), L residual codebooks K x 32 (3 x 256), straight-through estimator, loss
  recon + Σ_l(||sg[r_l] - e||² + β||r_l - sg[e]||²) with β = 0.25, k-means initialisation of the
  codebooks on the first batch, batch 1024 (the paper's; squared norms per item, batch mean). Ours:
  Adam lr 1e-3 by default, as in the LC-Rec/LETTER reimplementations (the paper's Adagrad lr 0.4
  [verify] diverged in our CPU check: loss ~1e11 in epoch 0, then collapsed codebooks; it stays
  available as optimizer="adagrad", lr=0.4); dead-code reset (codes unused over an epoch are re-seeded to
  random current residuals); 200 epochs by default (the paper's ~20k epochs is not a CPU budget;
  raise `epochs` on a GPU).
- `ProductQuantizer` — PQ (Jégou et al., TPAMI 2011): the vector is split into L sub-vectors, each
  quantised by its own k-means codebook, so the codes are parallel and order-free (what MDGR's
  "parallel codebook" needs); optional OPQ rotation (Ge et al., CVPR 2013, non-parametric:
  alternate PQ and orthogonal Procrustes).

Tuples are made unique by `semantic_ids`: by default (TIGER) one extra level is ALWAYS appended, the
collision digit 0, 1, 2, ... among items sharing a tuple (in item-id order; all zeros when there is
no collision, so every SID has the same length); `collision="reassign"` (MDGR §3, keeps length L)
moves each colliding item's last code to its nearest free code instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from agenticrs.gr.base import SemanticIds
from agenticrs.runtime.files import atomic_save
from agenticrs.runtime.registry import Registry

T = TypeVar("T", bound="Tokenizer")
_CHUNK = 32768  # rows per distance block: bounds the (rows, K) distance matrix


# ------------------------------------------------------------------------------------ k-means


def squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(N, K) squared Euclidean distances, clamped at 0."""
    d = x.square().sum(1, keepdim=True) - 2.0 * x @ centers.T + centers.square().sum(1)[None, :]
    return d.clamp_min_(0.0)


def nearest(x: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest center (first one on ties) and its squared distance, in row blocks."""
    idx, dist = [], []
    for start in range(0, max(len(x), 1), _CHUNK):
        d = squared_distances(x[start : start + _CHUNK], centers)
        value, index = d.min(dim=1)
        idx.append(index)
        dist.append(value)
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding; returns (centers (k, d), assignment (N,)).

    Deterministic for a seed: a private CPU generator drives the seeding, ties go to the first
    center, empty clusters are re-seeded at the points farthest from their centers. Fewer
    distinct points than k leaves duplicate (unused) centers."""
    n, d = x.shape
    if n == 0:
        raise ValueError("k-means needs at least one point")
    gen = torch.Generator().manual_seed(seed)
    centers = torch.empty((k, d), dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=gen))
    centers[0] = x[first]
    x_norms = x.square().sum(1)

    def to_point(c: torch.Tensor) -> torch.Tensor:  # matrix-vector: k-means++ is k sequential passes
        return (x_norms - 2.0 * (x @ c) + c.square().sum()).clamp_min_(0.0)

    d2 = to_point(centers[0])
    for j in range(1, k):
        weights = d2.double().cpu()
        total = float(weights.sum())
        pick = int(torch.multinomial(weights / total, 1, generator=gen)) if total > 0 else int(
            torch.randint(n, (1,), generator=gen)
        )
        centers[j] = x[pick]
        d2 = torch.minimum(d2, to_point(centers[j]))
    assign, _ = nearest(x, centers)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        centers = sums / counts.clamp_min(1).to(x.dtype)[:, None]
        empty = torch.nonzero(counts == 0).squeeze(1)
        if len(empty):
            dist_to_own = (x - centers[assign]).square().sum(1)
            far = torch.topk(dist_to_own, min(len(empty), n)).indices
            centers[empty[: len(far)]] = x[far]
        new_assign, _ = nearest(x, centers)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centers, assign


# ------------------------------------------------------------------------ residual quantisation


def residual_encode(x: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual quantisation: c_l = argmin_k ||r_{l-1} - C_l[k]||, r_l = r_{l-1} - C_l[c_l].

    Returns (codes (N, L) int64, final residual)."""
    residual = x
    codes = []
    for book in codebooks:
        index, _ = nearest(residual, book)
        codes.append(index)
        residual = residual - book[index]
    return torch.stack(codes, dim=1), residual


def residual_decode(codes: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_l C_l[c_l]."""
    out = codebooks[0][codes[:, 0]]
    for level in range(1, len(codebooks)):
        out = out + codebooks[level][codes[:, level]]
    return out


def encode_with_codebooks(x: np.ndarray, codebooks: Sequence[np.ndarray]) -> np.ndarray:
    """NumPy front of `residual_encode`: (N, L) int64 codes of x under the given codebooks."""
    xt = torch.as_tensor(np.asarray(x))
    books = [torch.as_tensor(np.asarray(b), dtype=xt.dtype) for b in codebooks]
    return residual_encode(xt, books)[0].numpy()


def decode_with_codebooks(codes: np.ndarray, codebooks: Sequence[np.ndarray]) -> np.ndarray:
    """NumPy front of `residual_decode`."""
    books = [torch.as_tensor(np.asarray(b)) for b in codebooks]
    return residual_decode(torch.as_tensor(np.asarray(codes, dtype=np.int64)), books).numpy()


# --------------------------------------------------------------------------------------- stats


class TokenizerStats(BaseModel):
    """Quality of a code assignment. Collisions are counted BEFORE any collision digit.

    usage: fraction of each level's K codes used by at least one item; perplexity: exp(entropy)
    of each level's code distribution over items (K when perfectly balanced); collision_rate:
    share of items whose full tuple is shared with another item; mse: mean over elements of
    (x - x̂)²; relative_error: Σ||x - x̂||² / Σ||x||²."""

    model_config = ConfigDict(extra="forbid")

    num_items: int
    vocab_sizes: tuple[int, ...]
    usage: tuple[float, ...]
    perplexity: tuple[float, ...]
    collision_rate: float
    unique_tuples: int
    max_items_per_tuple: int
    mse: float | None = None
    relative_error: float | None = None


def code_stats(
    codes: np.ndarray, vocab_sizes: Sequence[int], x: np.ndarray | None = None, x_hat: np.ndarray | None = None
) -> TokenizerStats:
    """`TokenizerStats` of (N, L) codes, with reconstruction errors when x and x̂ are given."""
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    usage, perplexity = [], []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=vocab_sizes[level])
        usage.append(float((counts > 0).sum() / vocab_sizes[level]))
        p = counts[counts > 0] / max(n, 1)
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    if n:
        _, inverse, tuple_counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        shared = tuple_counts[inverse.reshape(-1)] > 1
        collision, unique, largest = float(shared.mean()), len(tuple_counts), int(tuple_counts.max())
    else:
        collision, unique, largest = 0.0, 0, 0
    mse = rel = None
    if x is not None and x_hat is not None:
        x64 = np.asarray(x, dtype=np.float64)
        err = x64 - np.asarray(x_hat, dtype=np.float64)
        mse = float(np.square(err).mean())
        total = float(np.square(x64).sum())
        rel = float(np.square(err).sum() / total) if total > 0 else 0.0
    return TokenizerStats(
        num_items=n,
        vocab_sizes=tuple(int(v) for v in vocab_sizes),
        usage=tuple(usage),
        perplexity=tuple(perplexity),
        collision_rate=collision,
        unique_tuples=unique,
        max_items_per_tuple=largest,
        mse=mse,
        relative_error=rel,
    )


# ------------------------------------------------------------------------------------ interface


class TokenizerConfig(BaseModel):
    """Shared hyper-parameters: L levels of K codes each."""

    model_config = ConfigDict(extra="forbid")

    levels: int = Field(3, ge=1)
    codebook_size: int = Field(256, ge=1)
    seed: int = 0


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")


def register(cls: type[T]) -> type[T]:
    """Class decorator: makes a tokenizer available by its `name` (to `make_tokenizer` and `Tokenizer.load`)."""
    TOKENIZERS.register(cls.name, cls)
    return cls


class Tokenizer(ABC):
    """fit on (N, d) item embeddings, encode to (N, levels) int64 codes, decode back to (N, d)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TokenizerConfig]] = TokenizerConfig

    def __init__(self, config: TokenizerConfig | None = None, **overrides: Any) -> None:
        if config is not None and overrides:
            config = config.model_copy(update=overrides)
        self.config = config if config is not None else self.Config(**overrides)
        self.fitted = False
        # called after each training epoch of a tokenizer that trains in epochs (RQ-VAE): (done, of, loss)
        self.on_epoch: Callable[[int, int, float], None] | None = None

    @property
    def fit_epochs(self) -> int | None:
        """How many epochs `fit` trains (RQ-VAE), for a progress bar; None when it does not train in epochs."""
        return None

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (self.config.codebook_size,) * self.config.levels

    @abstractmethod
    def fit(self: T, x: np.ndarray) -> T: ...

    @abstractmethod
    def encode(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(N, K) squared distance of each item's last-level input to every last-level code,
        the other levels fixed at `codes` (used to re-assign colliding items)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None: ...

    def stats(self, x: np.ndarray) -> TokenizerStats:
        codes = self.encode(x)
        return code_stats(codes, self.vocab_sizes, x, self.decode(codes))

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted")

    def save(self, path: str | Path) -> Path:
        """Config + weights in one torch file (tensors and plain types only: loads with weights_only)."""
        self._check_fitted()
        payload = {"kind": self.name, "config": self.config.model_dump(mode="json"), "state": self._state()}
        path = Path(path)
        atomic_save(path, lambda handle: torch.save(payload, handle))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Any saved tokenizer (dispatch on its kind); on a subclass, the kind must match."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        kind = payload["kind"]
        if kind not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer kind '{kind}' in {path}; known: {', '.join(TOKENIZERS.names())}")
        target = TOKENIZERS[kind]
        if cls is not Tokenizer and target is not cls:
            raise ValueError(f"{path} holds a '{kind}' tokenizer, not '{cls.name}'")
        tokenizer = target(target.Config.model_validate(payload["config"]))
        tokenizer._load_state(payload["state"])
        tokenizer.fitted = True
        return tokenizer


def make_tokenizer(kind: str, **overrides: Any) -> Tokenizer:
    """A tokenizer by kind ('rq_kmeans', 'rq_vae', 'pq', 'mmq') with config overrides."""
    if kind not in TOKENIZERS:  # a ValueError, like a bad override: both are bad settings
        raise ValueError(f"unknown tokenizer '{kind}'; known: {', '.join(TOKENIZERS.names())}")
    return TOKENIZERS[kind](**overrides)


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.load(path)


def _as_tensor(x: np.ndarray | torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """float32 tensor on `device` (NumPy float64 inputs are cast: codes are computed in float32)."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().to(device)
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


# ------------------------------------------------------------------------------------ RQ-KMeans


class RQKMeansConfig(TokenizerConfig):
    iters: int = Field(50, ge=0, description="Lloyd iterations per level (stops early at convergence)")


@register
class RQKMeans(Tokenizer):
    """Residual k-means (no training): level l's codebook is k-means of the level l-1 residuals."""

    name = "rq_kmeans"
    Config = RQKMeansConfig
    config: RQKMeansConfig

    def __init__(self, config: RQKMeansConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.codebooks: list[torch.Tensor] = []

    @classmethod
    def from_codebooks(cls, codebooks: Sequence[np.ndarray], seed: int = 0) -> RQKMeans:
        """A fitted tokenizer with given (K, d) codebooks (all of one size K)."""
        sizes = {len(b) for b in codebooks}
        if len(sizes) != 1:
            raise ValueError("all codebooks must have the same size")
        tokenizer = cls(levels=len(codebooks), codebook_size=sizes.pop(), seed=seed)
        tokenizer.codebooks = [torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in codebooks]
        tokenizer.fitted = True
        return tokenizer

    def fit(self, x: np.ndarray) -> RQKMeans:
        residual = _as_tensor(x)
        self.codebooks = []
        for level in range(self.config.levels):
            centers, assign = kmeans(residual, self.config.codebook_size, self.config.iters, self.config.seed + level)
            self.codebooks.append(centers)
            residual = residual - centers[assign]
        self.fitted = True
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return residual_encode(_as_tensor(x), self.codebooks)[0].numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return residual_decode(torch.as_tensor(np.asarray(codes, dtype=np.int64)), self.codebooks).numpy()

    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        prefix = torch.as_tensor(np.asarray(codes, dtype=np.int64))[:, :-1]
        residual = _as_tensor(x)
        if prefix.shape[1]:
            residual = residual - residual_decode(prefix, self.codebooks[:-1])
        return squared_distances(residual, self.codebooks[-1]).numpy()

    def _state(self) -> dict[str, Any]:
        return {"codebooks": torch.stack(self.codebooks)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.codebooks = list(state["codebooks"].float().unbind(0))


# --------------------------------------------------------------------------------------- RQ-VAE


class RQVAEConfig(TokenizerConfig):
    """TIGER's RQ-VAE (paper values) with CPU-sized training (epochs: ours)."""

    hidden: tuple[int, ...] = (512, 256, 128)
    latent_dim: int = Field(32, ge=1)
    beta: float = Field(0.25, ge=0.0, description="commitment weight")
    epochs: int = Field(200, ge=0, description="paper: ~20k; 200 is a CPU default")
    batch_size: int = Field(1024, ge=1)
    optimizer: Literal["adam", "adagrad"] = Field("adam", description="paper: adagrad (lr 0.4); ours: adam")
    lr: float = Field(1e-3, gt=0.0, description="paper: 0.4 with adagrad; ours: 1e-3 with adam")
    weight_decay: float = Field(0.0, ge=0.0)
    kmeans_init: bool = True
    kmeans_iters: int = Field(20, ge=0)
    reset_dead_codes: bool = True
    reset_sample: int = Field(4096, ge=1, description="items encoded to draw fresh residuals for dead codes")
    device: str = "cpu"


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _sq_norm(diff: torch.Tensor) -> torch.Tensor:
    """Batch mean of the squared L2 norm (the paper's ||·||², per item)."""
    return diff.square().sum(1).mean()


@dataclass
class RQVAEOutput:
    x_hat: torch.Tensor
    codes: torch.Tensor  # (B, L)
    recon: torch.Tensor
    vq: torch.Tensor


class RQVAENet(nn.Module):
    """Encoder MLP -> L residual codebooks (straight-through) -> decoder MLP (the encoder mirrored)."""

    def __init__(self, in_dim: int, config: RQVAEConfig) -> None:
        super().__init__()
        dims = [in_dim, *config.hidden, config.latent_dim]
        self.encoder = _mlp(dims)
        self.decoder = _mlp(dims[::-1])
        k, d = config.codebook_size, config.latent_dim
        self.codebooks = nn.Parameter(torch.empty(config.levels, k, d).uniform_(-1.0 / k, 1.0 / k))
        self.beta = config.beta

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ẑ with straight-through gradient, codes (B, L), Σ_l codebook + β·commitment loss).

        r_l = r_{l-1} - sg[e_l], so every level's commitment term reaches the encoder and each
        codebook learns only from its codebook term (the paper's loss); ẑ = z + sg[Σ e - z]."""
        residual, z_sum = z, torch.zeros_like(z)
        codes, vq = [], z.new_zeros(())
        for book in self.codebooks:
            with torch.no_grad():
                index, _ = nearest(residual, book)
            e = book[index]
            vq = vq + _sq_norm(residual.detach() - e) + self.beta * _sq_norm(residual - e.detach())
            z_sum = z_sum + e.detach()
            residual = residual - e.detach()
            codes.append(index)
        return z + (z_sum - z).detach(), torch.stack(codes, dim=1), vq

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        z_q, codes, vq = self.quantize(self.encoder(x))
        x_hat = self.decoder(z_q)
        return RQVAEOutput(x_hat, codes, _sq_norm(x_hat - x), vq)


class RQVAEEpoch(BaseModel):
    epoch: int
    loss: float
    recon: float
    vq: float
    usage: tuple[float, ...]  # per level, over the epoch (before the reset)
    dead_reset: int


@register
class RQVAE(Tokenizer):
    """TIGER's RQ-VAE tokenizer; `history` holds one `RQVAEEpoch` per trained epoch."""

    name = "rq_vae"
    Config = RQVAEConfig
    config: RQVAEConfig

    def __init__(self, config: RQVAEConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.net: RQVAENet | None = None
        self.in_dim = 0
        self.history: list[RQVAEEpoch] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._gen = torch.Generator().manual_seed(self.config.seed)

    def _build(self, in_dim: int) -> RQVAENet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            net = RQVAENet(in_dim, self.config)
        self.in_dim = in_dim
        return net.to(self.config.device)

    @property
    def fit_epochs(self) -> int | None:
        return self.config.epochs

    def fit(self, x: np.ndarray) -> RQVAE:
        """Build, k-means-initialise the codebooks on the first batch (paper), train `epochs`."""
        xt = _as_tensor(x, self.config.device)
        self._gen = torch.Generator().manual_seed(self.config.seed)
        self.net, self._optimizer, self.history = self._build(xt.shape[1]), None, []
        if self.config.kmeans_init:
            first = torch.randperm(len(xt), generator=self._gen)[: self.config.batch_size]
            with torch.no_grad():
                residual = self.net.encoder(xt[first.to(xt.device)])
                for level in range(self.config.levels):
                    seed = self.config.seed + level
                    centers, assign = kmeans(residual, self.config.codebook_size, self.config.kmeans_iters, seed)
                    self.net.codebooks.data[level] = centers
                    residual = residual - centers[assign]
        self.fitted = True
        return self.train(x, self.config.epochs)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        assert self.net is not None
        params, c = self.net.parameters(), self.config
        if c.optimizer == "adagrad":
            return torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)

    def train(self, x: np.ndarray, epochs: int) -> RQVAE:
        """Train `epochs` more epochs (continues the optimiser state), resetting dead codes after each."""
        self._check_fitted()
        assert self.net is not None
        xt = _as_tensor(x, self.config.device)
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        c, n = self.config, len(xt)
        for done in range(1, epochs + 1):
            self.net.train()
            counts = torch.zeros((c.levels, c.codebook_size), dtype=torch.long, device=xt.device)
            totals = np.zeros(3)
            perm = torch.randperm(n, generator=self._gen).to(xt.device)
            for start in range(0, n, c.batch_size):
                batch = xt[perm[start : start + c.batch_size]]
                out = self.net(batch)
                loss = out.recon + out.vq
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()
                counts.scatter_add_(1, out.codes.T, torch.ones_like(out.codes.T))
                totals += len(batch) * np.array([loss.item(), out.recon.item(), out.vq.item()])
            usage = tuple(float(u) for u in (counts > 0).float().mean(1).cpu())
            reset = self.reset_dead_codes(xt, counts) if c.reset_dead_codes else 0
            loss, recon, vq = (totals / max(n, 1)).tolist()
            self.history.append(
                RQVAEEpoch(epoch=len(self.history), loss=loss, recon=recon, vq=vq, usage=usage, dead_reset=reset)
            )
            if self.on_epoch is not None:
                self.on_epoch(done, epochs, loss)
        self.net.eval()
        return self

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor, counts: torch.Tensor) -> int:
        """Re-seed codes with zero `counts` to random current residuals of their level; returns how many.

        Residuals come from a random sample of items encoded with the current weights, level by
        level (a reset at level l changes the residuals that level l+1 sees)."""
        assert self.net is not None
        sample = torch.randperm(len(x), generator=self._gen)[: self.config.reset_sample].to(x.device)
        residual = self.net.encoder(x[sample])
        reset = 0
        for level in range(self.config.levels):
            dead = torch.nonzero(counts[level] == 0).squeeze(1)
            if len(dead):
                if len(dead) <= len(residual):  # distinct residuals when there are enough
                    rows = torch.randperm(len(residual), generator=self._gen)[: len(dead)]
                else:
                    rows = torch.randint(len(residual), (len(dead),), generator=self._gen)
                rows = rows.to(x.device)
                self.net.codebooks.data[level, dead] = residual[rows]
                reset += len(dead)
            index, _ = nearest(residual, self.net.codebooks[level])
            residual = residual - self.net.codebooks[level][index]
        return reset

    @torch.no_grad()
    def latent(self, x: np.ndarray) -> torch.Tensor:
        self._check_fitted()
        assert self.net is not None
        self.net.eval()
        xt = _as_tensor(x, self.config.device)
        return torch.cat([self.net.encoder(xt[s : s + _CHUNK]) for s in range(0, max(len(xt), 1), _CHUNK)])

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        assert self.net is not None
        return residual_encode(self.latent(x), list(self.net.codebooks.detach()))[0].cpu().numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        assert self.net is not None
        self.net.eval()
        index = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=self.config.device)
        return self.net.decoder(residual_decode(index, list(self.net.codebooks.detach()))).cpu().numpy()

    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        assert self.net is not None
        books = list(self.net.codebooks.detach())
        residual = self.latent(x)
        prefix = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=residual.device)[:, :-1]
        if prefix.shape[1]:
            residual = residual - residual_decode(prefix, books[:-1])
        return squared_distances(residual, books[-1]).cpu().numpy()

    def _state(self) -> dict[str, Any]:
        assert self.net is not None
        return {"in_dim": self.in_dim, "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net = self._build(int(state["in_dim"]))
        self.net.load_state_dict(state["net"])
        self.net.eval()


# -------------------------------------------------------------------------------- product quant.


class ProductQuantizerConfig(TokenizerConfig):
    """MDGR's parallel codebook defaults: L = 4 sub-vectors, K = 256."""

    levels: int = Field(4, ge=1)
    iters: int = Field(50, ge=0, description="Lloyd iterations per sub-space")
    opq_iters: int = Field(0, ge=0, description="> 0: learn an OPQ rotation with this many PQ/Procrustes rounds")


@register
class ProductQuantizer(Tokenizer):
    """PQ: independent k-means per contiguous sub-vector (np.array_split sizes when d % L != 0)."""

    name = "pq"
    Config = ProductQuantizerConfig
    config: ProductQuantizerConfig

    def __init__(self, config: ProductQuantizerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.codebooks: list[torch.Tensor] = []
        self.bounds: list[int] = []
        self.rotation: torch.Tensor | None = None

    def _split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, self.bounds[i] : self.bounds[i + 1]] for i in range(self.config.levels)]

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.rotation is None else x @ self.rotation

    def _fit_pq(self, y: torch.Tensor) -> None:
        c = self.config
        self.codebooks = [
            kmeans(part.contiguous(), c.codebook_size, c.iters, c.seed + level)[0]
            for level, part in enumerate(self._split(y))
        ]

    def fit(self, x: np.ndarray) -> ProductQuantizer:
        xt = _as_tensor(x)
        d = xt.shape[1]
        if d < self.config.levels:
            raise ValueError(f"cannot split {d} dimensions into {self.config.levels} sub-vectors")
        sizes = [len(part) for part in np.array_split(np.arange(d), self.config.levels)]
        self.bounds = [0, *np.cumsum(sizes).tolist()]
        self.rotation = None
        if self.config.opq_iters:
            self.rotation = torch.eye(d)
            for _ in range(self.config.opq_iters):
                y = xt @ self.rotation
                self._fit_pq(y)
                y_hat = self._decode_rotated(self._encode_rotated(y))
                u, _, vt = torch.linalg.svd(xt.T.double() @ y_hat.double())
                self.rotation = (u @ vt).float()  # argmin_R ||x R - ŷ|| over orthogonal R (Procrustes)
        self._fit_pq(self._rotate(xt))
        self.fitted = True
        return self

    def _encode_rotated(self, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([nearest(part, book)[0] for part, book in zip(self._split(y), self.codebooks)], dim=1)

    def _decode_rotated(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.cat([book[codes[:, i]] for i, book in enumerate(self.codebooks)], dim=1)

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self._encode_rotated(self._rotate(_as_tensor(x))).numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        y_hat = self._decode_rotated(torch.as_tensor(np.asarray(codes, dtype=np.int64)))
        return (y_hat if self.rotation is None else y_hat @ self.rotation.T).numpy()

    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        last = self._split(self._rotate(_as_tensor(x)))[-1]
        return squared_distances(last.contiguous(), self.codebooks[-1]).numpy()

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"bounds": list(self.bounds), "codebooks": [b.clone() for b in self.codebooks]}
        if self.rotation is not None:
            state["rotation"] = self.rotation.clone()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.bounds = [int(b) for b in state["bounds"]]
        self.codebooks = [b.float() for b in state["codebooks"]]
        self.rotation = state.get("rotation")


# ---------------------------------------------------------------------------------- collisions


def _collision_digit(codes: np.ndarray) -> np.ndarray:
    """(N,) rank of each row among the rows with the same tuple, in row (item-id) order."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = (np.arange(n), *codes.T[::-1])  # np.lexsort: last key is primary -> column 0 first, row last
    order = np.lexsort(keys)
    ordered = codes[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    digit = np.empty(n, dtype=np.int64)
    digit[order] = np.arange(n) - group_start
    return digit


def add_collision_digit(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append a level 0, 1, 2, ... among rows sharing a tuple (the lowest row keeps 0).

    Returns (codes (N, L + 1), vocabulary of the new level = the largest group size, >= 1).
    Vectorised: lexsort, then the position within each run of equal tuples."""
    codes = np.asarray(codes, dtype=np.int64)
    digit = _collision_digit(codes)
    return np.column_stack([codes, digit]), int(digit.max(initial=0)) + 1


def reassign_collisions(codes: np.ndarray, last_distances: np.ndarray) -> np.ndarray:
    """MDGR §3: keep length L; each colliding item but the lowest id moves its LAST code to the
    nearest code whose full tuple is still free (items visited in id order). Raises if a prefix
    has more items than codes."""
    codes = np.array(codes, dtype=np.int64, copy=True)
    digit = _collision_digit(codes)
    used = {row.tobytes() for row in codes[digit == 0]}
    for item in np.flatnonzero(digit > 0):
        row = codes[item].copy()
        for candidate in np.argsort(last_distances[item], kind="stable"):
            row[-1] = candidate
            if row.tobytes() not in used:
                break
        else:
            raise ValueError(f"no free last-level code for item row {item}: use the collision digit instead")
        codes[item] = row
        used.add(row.tobytes())
    return codes


def semantic_ids(
    tokenizer: Tokenizer, embeddings: np.ndarray, collision: Literal["digit", "reassign"] = "digit"
) -> SemanticIds:
    """`SemanticIds` of items 1..num_items from (num_items + 1, d) embeddings (row 0 ignored).

    collision="digit" (TIGER): always one extra level, so every SID has levels + 1 tokens;
    "reassign" (MDGR): same length, colliding items take their nearest free last code."""
    x = np.asarray(embeddings, dtype=np.float32)[1:]
    codes = tokenizer.encode(x)
    if collision == "digit":
        codes, last_vocab = add_collision_digit(codes)
        vocab = (*tokenizer.vocab_sizes, last_vocab)
    elif collision == "reassign":
        codes = reassign_collisions(codes, tokenizer.last_level_distances(x, codes))
        vocab = tokenizer.vocab_sizes
    else:
        raise ValueError(f"unknown collision handling '{collision}' (digit, reassign)")
    full = np.zeros((len(codes) + 1, codes.shape[1]), dtype=np.int64)
    full[1:] = codes
    return SemanticIds(codes=full, vocab_sizes=tuple(int(v) for v in vocab))


def save_semantic_ids(path: str | Path, sids: SemanticIds) -> Path:
    """npz with `codes` and `vocab_sizes`, written atomically."""
    path = Path(path)
    codes, vocab = sids.codes.astype(np.int64), np.asarray(sids.vocab_sizes, dtype=np.int64)
    atomic_save(path, lambda handle: np.savez(handle, codes=codes, vocab_sizes=vocab))
    return path


def load_semantic_ids(path: str | Path) -> SemanticIds:
    with np.load(Path(path)) as data:
        return SemanticIds(codes=data["codes"].astype(np.int64), vocab_sizes=tuple(int(v) for v in data["vocab_sizes"]))


# MMQ lives in its own module; importing it registers "mmq" beside the tokenizers above
from agenticrs.gr import mmq as _mmq  # noqa: E402,F401
