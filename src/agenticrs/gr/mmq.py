"""MMQ: shared-specific multi-expert quantisation of several item modalities into semantic IDs.

Paper: Xu et al., "Multimodal Mixture-of-Quantization Tokenization for Semantic ID Generation and
User Behavioral Adaptation", arXiv 2508.15281 (2025); our spec `mmq.md`. The paper's: per-modality
*specific* experts and cross-modal *shared* experts, an orthogonality penalty that keeps the
specific latents apart from the shared one, a quantiser per group (mixture of quantisation)
whose codes are concatenated into the SID, modality decoders reading specific + shared codes;
then behaviour-aware fine-tuning with differentiable soft indexing, keeping a multimodal
reconstruction loss.

Ours (spec §3-4, values ours):
- Modalities are column blocks of the one input matrix (`modality_dims`, e.g. MiniLM text 384 +
  a SASRec item table 64: text and collaborative). There are no images in our data, so no image
  modality; any number of modalities >= 2 works.
- Each modality is scaled to unit mean squared row norm (scales kept with the tokenizer), so
  no modality dominates the reconstruction loss.
- Experts: `num_specific` MLPs (D_m -> hidden -> latent_dim) per modality, `num_shared` MLPs
  over the concatenation; a softmax router over the concatenation mixes each group's experts.
- SID = `shared_levels` residual codes of the shared latent, then `specific_levels` codes of
  each modality's latent (default 2 + 1 + 1 = 4 tokens, the shared codes first: the coarse,
  cross-modal prefix); `levels` must equal that sum.
- Losses: reconstruction Σ_m ||x_m − D_m([ẑ_m; ẑ_sh])||² (per item, batch mean) + Σ groups,
  levels (||sg[r] − e||² + β||r − sg[e]||²) (straight-through, as our RQ-VAE) + `orth_weight` ·
  `orthogonality_penalty` (Σ_m ||N(Z_m)ᵀ N(Z_sh)||_F² / B², rows L2-normalised, continuous
  latents). k-means initialisation of every codebook on the first batch; dead codes re-seeded
  after each epoch (as our RQ-VAE).
- Behaviour-aware fine-tuning (`fit(x, behaviour=pairs)` or `fine_tune`): pairs (a, b) of items
  where b followed a in a user's training sequence; soft indexing p_k = softmax(−||r − C_k||²/τ),
  ĉ = Σ p_k C_k level by level (τ annealed linearly from `tau_start` to `tau_end`), used
  straight-through: the forward value is the hard code, the gradient the soft one's (the spec's
  option; a purely soft forward let the decoders drift from what the hard IDs decode to); loss = in-batch
  softmax of b among the batch's next items given a (cosine of the concatenated soft code vectors
  / `behaviour_temperature`) + `mu` · (reconstruction + VQ) + `usage_weight` · the usage gap
  (ours, against code collapse: Σ over levels of log K − H(p̄), p̄ the batch mean of the soft
  assignments, zero when the batch spreads evenly over the K codes); items are re-indexed by hard
  argmin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import nn

from agenticrs.gr.tokenizers import (
    _CHUNK,
    Tokenizer,
    TokenizerConfig,
    _as_tensor,
    kmeans,
    nearest,
    register,
    squared_distances,
)


class MMQConfig(TokenizerConfig):
    """Spec §3-4 with CPU-sized training."""

    levels: int = Field(4, ge=2)
    modality_dims: tuple[int, ...] | None = Field(None, description="column widths of the modalities in x")
    num_specific: int = Field(2, ge=1, description="experts per modality")
    num_shared: int = Field(2, ge=1)
    shared_levels: int = Field(2, ge=1)
    specific_levels: int = Field(1, ge=1, description="code levels of each modality's latent")
    hidden: int = Field(256, ge=1)
    latent_dim: int = Field(32, ge=1)
    beta: float = Field(0.25, ge=0.0)
    orth_weight: float = Field(0.5, ge=0.0)
    epochs: int = Field(150, ge=0)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    kmeans_iters: int = Field(20, ge=0)
    reset_dead_codes: bool = True
    # behaviour-aware fine-tuning
    behaviour_epochs: int = Field(3, ge=0)
    behaviour_batch_size: int = Field(512, ge=2)
    behaviour_lr: float = Field(3e-4, gt=0.0)
    behaviour_temperature: float = Field(0.1, gt=0.0)
    tau_start: float = Field(1.0, gt=0.0)
    tau_end: float = Field(0.1, gt=0.0)
    mu: float = Field(1.0, ge=0.0, description="weight of reconstruction + VQ during fine-tuning")
    usage_weight: float = Field(0.0, ge=0.0, description="weight of the usage gap (log K - entropy of the batch's "
                                "mean soft assignment, per level) during fine-tuning: keeps codes in use")  # fmt: skip

    @model_validator(mode="after")
    def _check_levels(self) -> MMQConfig:
        if self.modality_dims is not None:
            if len(self.modality_dims) < 2 or min(self.modality_dims) < 1:
                raise ValueError(f"modality_dims needs >= 2 positive widths, got {self.modality_dims}")
            expected = self.shared_levels + len(self.modality_dims) * self.specific_levels
            if self.levels != expected:
                raise ValueError(f"levels must be shared_levels + modalities x specific_levels = {expected}, "
                                 f"got {self.levels}")  # fmt: skip
        return self


def orthogonality_penalty(specific: Sequence[torch.Tensor], shared: torch.Tensor) -> torch.Tensor:
    """Σ_m ||N(Z_m)ᵀ N(Z_sh)||_F² / B² over a batch (B, d) of latents, N L2-normalising rows:
    the squared cross-correlation between the specific and the shared latent dimensions."""
    sh = F.normalize(shared, dim=1)
    b = shared.shape[0]
    return sum(((F.normalize(z, dim=1).T @ sh).square().sum() for z in specific), shared.new_zeros(())) / (b * b)


def usage_gap(probs: torch.Tensor) -> torch.Tensor:
    """log K − H(p̄) for (B, K) soft assignments, p̄ their batch mean: 0 when the batch uses the K
    codes evenly, log K when every item sits on one code."""
    mean = probs.mean(0)
    return math.log(probs.shape[1]) + (mean * torch.log(mean.clamp_min(1e-12))).sum()


class _Quantizer(nn.Module):
    """Residual codebooks (L, K, d): hard (straight-through) or soft (softmax over -dist/τ) codes."""

    def __init__(self, levels: int, size: int, dim: int, beta: float) -> None:
        super().__init__()
        self.codebooks = nn.Parameter(torch.empty(levels, size, dim).uniform_(-1.0 / size, 1.0 / size))
        self.beta = beta

    def forward(self, z: torch.Tensor, tau: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(quantised latent, codes (B, L), VQ loss, usage gap). Without `tau`: the hard codes with
        the straight-through gradient to z (usage gap 0). With `tau` (soft indexing): the forward
        value is still the hard code sum (so decoders and re-indexing see what the IDs mean), the
        gradient is that of the soft codes Σ_k softmax(−||r − C_k||²/τ) C_k, reaching the codebooks
        and the experts; the usage gap is Σ_levels log K − H(mean over the batch of the softmax)."""
        residual, total = z, torch.zeros_like(z)
        codes, vq, gap = [], z.new_zeros(()), z.new_zeros(())
        for book in self.codebooks:
            d = squared_distances(residual, book)
            index = d.argmin(1)
            e = book[index]
            vq = vq + (residual.detach() - e).square().sum(1).mean() + self.beta * (residual - e.detach()).square().sum(1).mean()
            if tau is None:
                total, residual = total + e.detach(), residual - e.detach()
            else:  # the hard code forward, the soft code's gradient (straight-through soft indexing)
                probs = torch.softmax(-d / tau, dim=1)
                soft = probs @ book
                code = e.detach() + soft - soft.detach()
                total, residual = total + code, residual - code
                gap = gap + usage_gap(probs)
            codes.append(index)
        out = z + (total - z).detach() if tau is None else total
        return out, torch.stack(codes, 1), vq, gap


class _Experts(nn.Module):
    """A softmax-routed mixture of MLP experts."""

    def __init__(self, in_dim: int, route_dim: int, count: int, hidden: int, out: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out)) for _ in range(count)
        )
        self.router = nn.Linear(route_dim, count)

    def forward(self, x: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        gate = torch.softmax(self.router(route), dim=-1)  # (B, E)
        return torch.einsum("be,bed->bd", gate, torch.stack([e(x) for e in self.experts], dim=1))


class MMQNet(nn.Module):
    """Specific experts per modality + shared experts -> group quantisers -> modality decoders."""

    def __init__(self, dims: Sequence[int], config: MMQConfig) -> None:
        super().__init__()
        total, c = sum(dims), config
        self.dims = list(dims)
        self.specific = nn.ModuleList(_Experts(d, total, c.num_specific, c.hidden, c.latent_dim) for d in dims)
        self.shared = _Experts(total, total, c.num_shared, c.hidden, c.latent_dim)
        self.quantizers = nn.ModuleList(
            [_Quantizer(c.shared_levels, c.codebook_size, c.latent_dim, c.beta)]
            + [_Quantizer(c.specific_levels, c.codebook_size, c.latent_dim, c.beta) for _ in dims]
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * c.latent_dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, d)) for d in dims
        )

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, self.dims, dim=1))

    def latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[z_sh, z_1, ..., z_M] continuous latents (B, latent_dim)."""
        return [self.shared(x, x)] + [e(part, x) for e, part in zip(self.specific, self.split(x), strict=True)]

    def forward(self, x: torch.Tensor, tau: float | None = None) -> dict[str, torch.Tensor]:
        latents = self.latents(x)
        quantised, codes, vq, gap = [], [], x.new_zeros(()), x.new_zeros(())
        for q, z in zip(self.quantizers, latents, strict=True):
            zq, c, v, g = q(z, tau)
            quantised.append(zq)
            codes.append(c)
            vq, gap = vq + v, gap + g
        x_hat = self.decode_latents(quantised)
        recon = sum(((a - b).square().sum(1).mean() for a, b in zip(self.split(x), x_hat, strict=True)), x.new_zeros(()))
        return {"codes": torch.cat(codes, 1), "quantised": torch.cat(quantised, 1), "x_hat": torch.cat(x_hat, 1),
                "recon": recon, "vq": vq, "orth": orthogonality_penalty(latents[1:], latents[0]),
                "usage_gap": gap}  # fmt: skip

    def decode_latents(self, quantised: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [dec(torch.cat([zq, quantised[0]], 1)) for dec, zq in zip(self.decoders, quantised[1:], strict=True)]


class MMQEpoch(BaseModel):
    stage: str  # "tokenizer" | "behaviour"
    epoch: int
    loss: float
    recon: float
    vq: float
    orth: float
    behaviour: float | None = None
    usage: tuple[float, ...]
    dead_reset: int = 0


@register
class MMQ(Tokenizer):
    """Shared-specific mixture-of-quantisation tokenizer; `history` holds one `MMQEpoch` per epoch."""

    name = "mmq"
    Config = MMQConfig
    config: MMQConfig

    def __init__(self, config: MMQConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.net: MMQNet | None = None
        self.scales: torch.Tensor | None = None  # per modality
        self.history: list[MMQEpoch] = []
        self._gen = torch.Generator().manual_seed(self.config.seed)

    @property
    def fit_epochs(self) -> int | None:
        return self.config.epochs + self.config.behaviour_epochs

    @property
    def group_levels(self) -> list[int]:
        dims = self.config.modality_dims or ()
        return [self.config.shared_levels] + [self.config.specific_levels] * len(dims)

    def _dims(self, x: torch.Tensor) -> list[int]:
        dims = self.config.modality_dims
        if dims is None:
            raise ValueError("mmq needs modality_dims (the column widths of the modalities in x, e.g. [384, 64])")
        if sum(dims) != x.shape[1]:
            raise ValueError(f"modality_dims {list(dims)} sum to {sum(dims)}, x has {x.shape[1]} columns")
        return list(dims)

    def _scaled(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        assert self.scales is not None
        xt = _as_tensor(x)
        parts = torch.split(xt, self._dims(xt), dim=1)
        return torch.cat([p / s for p, s in zip(parts, self.scales, strict=True)], 1)

    def _unscale(self, x: torch.Tensor) -> torch.Tensor:
        assert self.scales is not None and self.config.modality_dims is not None
        parts = torch.split(x, list(self.config.modality_dims), dim=1)
        return torch.cat([p * s for p, s in zip(parts, self.scales, strict=True)], 1)

    def fit(self, x: np.ndarray, behaviour: np.ndarray | None = None) -> MMQ:
        """Train the tokenizer on (N, Σ D_m) item rows; then, with `behaviour` ((P, 2) row indices
        of consecutive items in users' training sequences), the behaviour-aware fine-tuning."""
        xt = _as_tensor(x)
        dims = self._dims(xt)
        parts = torch.split(xt, dims, dim=1)
        self.scales = torch.stack([p.square().sum(1).mean().sqrt().clamp_min(1e-8) for p in parts])
        xs = self._scaled(xt)
        self._gen = torch.Generator().manual_seed(self.config.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.net = MMQNet(dims, self.config)
        self.history = []
        first = torch.randperm(len(xs), generator=self._gen)[: self.config.batch_size]
        with torch.no_grad():  # k-means initialisation of every group's codebooks on the first batch
            for g, (q, z) in enumerate(zip(self.net.quantizers, self.net.latents(xs[first]), strict=True)):
                residual = z
                for level in range(q.codebooks.shape[0]):
                    centers, assign = kmeans(residual, self.config.codebook_size, self.config.kmeans_iters,
                                             self.config.seed + 17 * g + level)  # fmt: skip
                    q.codebooks.data[level] = centers
                    residual = residual - centers[assign]
        self.fitted = True
        self._train_tokenizer(xs)
        if behaviour is not None and self.config.behaviour_epochs:
            self.fine_tune(x, behaviour)
        self.net.eval()
        return self

    def _train_tokenizer(self, xs: torch.Tensor) -> None:
        assert self.net is not None
        c, n = self.config, len(xs)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        for epoch in range(c.epochs):
            self.net.train()
            counts = torch.zeros(c.levels, c.codebook_size, dtype=torch.long)
            totals = np.zeros(4)
            for idx in torch.randperm(n, generator=self._gen).split(c.batch_size):
                out = self.net(xs[idx])
                loss = out["recon"] + out["vq"] + c.orth_weight * out["orth"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                counts.scatter_add_(1, out["codes"].T, torch.ones_like(out["codes"].T))
                totals += len(idx) * np.array([loss.item(), out["recon"].item(), out["vq"].item(), out["orth"].item()])
            usage = tuple(float(u) for u in (counts > 0).float().mean(1))
            reset = self._reset_dead_codes(xs, counts) if c.reset_dead_codes else 0
            loss, recon, vq, orth = (totals / n).tolist()
            self.history.append(MMQEpoch(stage="tokenizer", epoch=epoch, loss=loss, recon=recon, vq=vq, orth=orth,
                                         usage=usage, dead_reset=reset))  # fmt: skip
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, self.fit_epochs or 1, loss)

    @torch.no_grad()
    def _reset_dead_codes(self, xs: torch.Tensor, counts: torch.Tensor) -> int:
        """Codes unused over the epoch take random current residuals of their level (as RQ-VAE)."""
        assert self.net is not None
        sample = xs[torch.randperm(len(xs), generator=self._gen)[:4096]]
        reset, row = 0, 0
        for q, z in zip(self.net.quantizers, self.net.latents(sample), strict=True):
            residual = z
            for level in range(q.codebooks.shape[0]):
                dead = torch.nonzero(counts[row] == 0).squeeze(1)
                if len(dead):
                    pick = torch.randint(len(residual), (len(dead),), generator=self._gen)
                    q.codebooks.data[level, dead] = residual[pick]
                    reset += len(dead)
                index, _ = nearest(residual, q.codebooks[level])
                residual = residual - q.codebooks[level][index]
                row += 1
        return reset

    def fine_tune(self, x: np.ndarray, behaviour: np.ndarray, epochs: int | None = None) -> MMQ:
        """Behaviour-aware fine-tuning with soft indexing (τ annealed), then hard re-indexing."""
        self._check_fitted()
        assert self.net is not None
        c = self.config
        pairs = torch.as_tensor(np.asarray(behaviour, dtype=np.int64))
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
            raise ValueError(f"behaviour must be (P, 2) item-row pairs, got shape {tuple(pairs.shape)}")
        xs = self._scaled(x)
        if int(pairs.min()) < 0 or int(pairs.max()) >= len(xs):
            raise ValueError(f"behaviour pairs index rows outside 0..{len(xs) - 1}")
        epochs = c.behaviour_epochs if epochs is None else epochs
        opt = torch.optim.Adam(self.net.parameters(), lr=c.behaviour_lr)
        for epoch in range(epochs):
            tau = c.tau_start + (c.tau_end - c.tau_start) * (epoch / max(epochs - 1, 1))
            self.net.train()
            counts = torch.zeros(c.levels, c.codebook_size, dtype=torch.long)
            totals, seen = np.zeros(5), 0
            for idx in torch.randperm(len(pairs), generator=self._gen).split(c.behaviour_batch_size):
                a, b = pairs[idx, 0], pairs[idx, 1]
                items, inverse = torch.unique(torch.cat([a, b]), return_inverse=True)
                out = self.net(xs[items], tau=tau)
                v = F.normalize(out["quantised"], dim=1)
                va, vb = v[inverse[: len(a)]], v[inverse[len(a) :]]
                logits = va @ vb.T / c.behaviour_temperature
                # a pair repeated in the batch has several right answers: mask the other copies of b
                same = (b.unsqueeze(0) == b.unsqueeze(1)) & ~torch.eye(len(b), dtype=torch.bool)
                behav = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(a)))
                loss = behav + c.mu * (out["recon"] + out["vq"]) + c.usage_weight * out["usage_gap"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                counts.scatter_add_(1, out["codes"].T, torch.ones_like(out["codes"].T))
                parts = [loss.item(), out["recon"].item(), out["vq"].item(), out["orth"].item(), behav.item()]
                totals += len(idx) * np.array(parts)
                seen += len(idx)
            loss, recon, vq, orth, behav_mean = (totals / max(seen, 1)).tolist()
            self.history.append(MMQEpoch(stage="behaviour", epoch=epoch, loss=loss, recon=recon, vq=vq, orth=orth,
                                         behaviour=behav_mean,
                                         usage=tuple(float(u) for u in (counts > 0).float().mean(1))))  # fmt: skip
            if self.on_epoch is not None:
                self.on_epoch(c.epochs + epoch + 1, self.fit_epochs or 1, loss)
        self.net.eval()
        return self

    # ------------------------------------------------------------------------------ encode/decode
    @torch.no_grad()
    def _forward_eval(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.net is not None
        self.net.eval()
        xs = self._scaled(x)
        outs = [self.net(xs[s : s + _CHUNK]) for s in range(0, max(len(xs), 1), _CHUNK)]
        return {k: torch.cat([o[k] for o in outs]) if outs[0][k].dim() else outs[0][k] for k in outs[0]}

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self._forward_eval(x)["codes"].numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes -> the modality decoders' reconstruction, in the input's scale."""
        self._check_fitted()
        assert self.net is not None
        index = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        quantised, col = [], 0
        for q, levels in zip(self.net.quantizers, self.group_levels, strict=True):
            books = q.codebooks.detach()
            quantised.append(sum(books[lv][index[:, col + lv]] for lv in range(levels)))
            col += levels
        return self._unscale(torch.cat(self.net.decode_latents(quantised), 1)).numpy()

    @torch.no_grad()
    def orthogonality(self, x: np.ndarray) -> float:
        """The orthogonality penalty of the fitted experts over all of x (one batch)."""
        self._check_fitted()
        assert self.net is not None
        self.net.eval()
        latents = self.net.latents(self._scaled(x))
        return float(orthogonality_penalty(latents[1:], latents[0]))

    @torch.no_grad()
    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Distances of the last modality's last-level residual to its last codebook."""
        self._check_fitted()
        assert self.net is not None
        z = self.net.latents(self._scaled(x))[-1]
        q = self.net.quantizers[-1]
        levels = self.group_levels[-1]
        index = torch.as_tensor(np.asarray(codes, dtype=np.int64))[:, -levels:]
        for lv in range(levels - 1):
            z = z - q.codebooks[lv][index[:, lv]]
        return squared_distances(z, q.codebooks[levels - 1]).numpy()

    def _state(self) -> dict[str, Any]:
        assert self.net is not None and self.scales is not None
        return {"scales": self.scales.clone(), "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def _load_state(self, state: dict[str, Any]) -> None:
        assert self.config.modality_dims is not None
        self.scales = state["scales"].float()
        self.net = MMQNet(list(self.config.modality_dims), self.config)
        self.net.load_state_dict(state["net"])
        self.net.eval()


def behaviour_pairs(offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(P, 2) zero-based item rows (item id − 1) of every consecutive pair in CSR sequences."""
    offsets, items = np.asarray(offsets, dtype=np.int64), np.asarray(items, dtype=np.int64)
    same_user = np.ones(len(items), dtype=bool)
    same_user[offsets[1:-1]] = False  # the first item of each user (but the first) starts a new sequence
    keep = same_user[1:]
    return np.stack([items[:-1][keep], items[1:][keep]], axis=1) - 1
