"""GSVR: scenario-specific variational user and item representations, a plug-in for multi-scenario models.

Paper: Zhang, Jin, Hu, Zhang, "Global-Distribution Aware Scenario-Specific Variational
Representation Learning Framework", arXiv:2508.14493, 2025 (read: the abstract and a third-party
summary; see `shared/specs/gsvr.md`). The paper's: for every user and item in every scenario s,
a *distribution* over a scenario-specific representation z^s, estimated by variational inference
(posterior q(z^s | x) = N(mu, diag sigma^2), reparameterised samples), with a global-knowledge-
aware prior: a mixture over C global prototypes whose weights pi (a multinomial) come from
global, cross-scenario information, so that users with similar interests (items with similar
side information) get similar priors and sparse ones are not drowned in sparse scenarios. The
loss is the negative ELBO: BCE + beta * [KL(q(z_u^s) || p(z_u^s)) + KL(q(z_i^s) || p(z_i^s))].
It plugs into an existing multi-scenario model.

Ours (the source gives no layer forms):
- The base (`base`: `mmoe`, `ple`, or `shared_bottom` = MMoE with one expert) is the zoo's own
  model, built unchanged from `base_params`; GSVR composes with it by wrapping its feature layer
  (`GSVREmbedding`), so the base's code is not copied: the base reads the user and item field
  embeddings with z added, e_u + z_u^s and e_i + z_i^s (the spec's "z added to e" option; it
  keeps the base's input width, hence latent width = `embedding_dim`).
- Posterior encoders: an MLP over [e_u ; e_s] (shared user embedding, scenario embedding, both
  from the base's table) -> (mu, log sigma^2), and one over [e_i ; e_s]. The user's in-scenario
  behaviour sequence is not read (the base reads it).
- Prior: p(z^s) = sum_c pi_c N(mu_c^s, diag sigma_c^{s 2}), per-scenario prototype Gaussians
  (C = `num_prototypes`, 32 by default) and pi = softmax(W_pi g / tau), g the concatenated
  shared embeddings of `user_prior_fields` (default: the user id, whose embedding every scenario
  trains) or `item_prior_fields` (default: the item id; set side-information fields such as
  category and brand to follow the paper's item prior). Separate priors for users and items.
- KL: the mixture KL has no closed form. `kl="monte_carlo"` (default, the spec's first choice)
  is the single-sample estimate log q(z) - log sum_c pi_c N(z; mu_c, sigma_c^2) at the
  reparameterised sample, unbiased; `kl="upper_bound"` is sum_c pi_c KL(q || N_c) in closed form
  (Jensen), deterministic but biased upward. `kl_terms` computes either for tests and analysis.
- beta = 0.1, warmed up linearly from 0 over the first `beta_warmup_epochs` (1) epoch(s) of
  training rows (`prepare` reads the training split's size; without it beta is full at once).
  The KL enters the trainer's loss as `aux_loss` (training mode only).
- Inference (eval mode): z = mu, no sampling, no KL, so predictions are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Batch,
    EmbeddingDim,
    FieldName,
    Heads,
    HiddenUnits,
    IncompatibleDataError,
    LossWeight,
    Model,
    ModelConfig,
    ModelInputs,
    model_class,
    register,
)
from agenticrs.models.layers import MLP, EmbeddedBatch, FeatureEmbedding

LOG_2PI = math.log(2 * math.pi)
# log sigma^2 of the posterior and of the prototypes is kept in this range: exp(-10) ~ 4.5e-5 to
# exp(10) ~ 2.2e4 in variance, far wider than a useful representation needs, and it keeps the
# KL's 1 / sigma^2 terms finite in float32.
LOGVAR_RANGE = 10.0
BASES: dict[str, str] = {"mmoe": "mmoe", "ple": "ple", "shared_bottom": "mmoe"}


class GSVRConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 16  # also the latent width (z is added to the field embedding)
    base: Literal["mmoe", "ple", "shared_bottom"] = "mmoe"
    # the base model's own settings (its typed config validates them; `tasks`, `embedding_dim`
    # and `input_norm` are GSVR's); `shared_bottom` is MMoE with `num_experts` = 1
    base_params: dict[str, Any] = {}
    tasks: list[str] | None = None  # the labels to predict, one head each; default: every label
    scenario_field: FieldName = "scenario"
    user_field: FieldName = "user_id"
    item_field: FieldName = "item_id"
    # the global input of the user / item prior's assignment pi; default: [user_field] / [item_field]
    user_prior_fields: Annotated[list[FieldName], Field(min_length=1, max_length=64)] | None = None
    item_prior_fields: Annotated[list[FieldName], Field(min_length=1, max_length=64)] | None = None
    num_prototypes: Heads = 32
    encoder_units: HiddenUnits = [64]
    temperature: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    beta: LossWeight = 0.1
    beta_warmup_epochs: Annotated[float, Field(ge=0.0, le=1000.0)] = 1.0
    kl: Literal["monte_carlo", "upper_bound"] = "monte_carlo"


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)), summed over the last dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).square() / logvar.exp()).sum(-1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, mean: torch.Tensor, prior_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(mean, e^prior_logvar)) of diagonal Gaussians, summed over the last dim."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - mean).square()) / prior_logvar.exp() - 1).sum(-1)


@dataclass
class Latent:
    """One side's (user or item) posterior, sample and prior for a batch.

    mu, logvar, z: (B, d); prior_means, prior_logvar: (B, C, d), the prototypes of each row's
    scenario; log_pi: (B, C), the log mixture weights from the global embedding; eps: (B, d),
    the standard-normal draw behind z (zeros in eval mode, where z = mu)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    eps: torch.Tensor
    prior_means: torch.Tensor
    prior_logvar: torch.Tensor
    log_pi: torch.Tensor

    def kl_monte_carlo(self) -> torch.Tensor:
        """(B,) single-sample estimate log q(z) - log p(z) at the reparameterised sample z."""
        # log q(z) with (z - mu)^2 / sigma^2 = eps^2 exactly (z = mu + sigma * eps)
        log_q = -0.5 * (LOG_2PI + self.logvar + self.eps.square()).sum(-1)
        log_components = gaussian_log_density(self.z.unsqueeze(1), self.prior_means, self.prior_logvar)  # (B, C)
        return log_q - torch.logsumexp(self.log_pi + log_components, dim=-1)

    def kl_upper_bound(self) -> torch.Tensor:
        """(B,) sum_c pi_c KL(q || N_c), the convexity (Jensen) upper bound of the mixture KL."""
        per = gaussian_kl(self.mu.unsqueeze(1), self.logvar.unsqueeze(1), self.prior_means, self.prior_logvar)
        return (self.log_pi.exp() * per).sum(-1)


class MixturePrior(nn.Module):
    """p(z | s, g) = sum_c softmax(W g / tau)_c N(mean_{s,c}, diag exp(logvar_{s,c}))."""

    # the prototype means live in the embedding space (the trainer's embedding L2 covers them)
    embedding_like: ClassVar[tuple[str, ...]] = ("means",)

    def __init__(self, num_scenarios: int, prototypes: int, dim: int, global_dim: int, temperature: float) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(num_scenarios, prototypes, dim) * 0.1)
        self.logvar = nn.Parameter(torch.zeros(num_scenarios, prototypes, dim))
        self.assign = nn.Linear(global_dim, prototypes)
        self.temperature = temperature

    def forward(self, scenario: torch.Tensor, global_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """scenario (B,) ids, global_embedding (B, g) -> prototype means, log-variances (B, C, d), log pi (B, C)."""
        log_pi = (self.assign(global_embedding) / self.temperature).log_softmax(-1)
        logvar = self.logvar[scenario].clamp(-LOGVAR_RANGE, LOGVAR_RANGE)
        return self.means[scenario], logvar, log_pi


class VariationalSide(nn.Module):
    """Posterior encoder and prior of one side (users or items)."""

    def __init__(self, dim: int, units: list[int], num_scenarios: int, prototypes: int, global_dim: int,
                 temperature: float) -> None:  # fmt: skip
        super().__init__()
        self.encoder = MLP(2 * dim, units, output_dim=2 * dim)
        self.prior = MixturePrior(num_scenarios, prototypes, dim, global_dim, temperature)

    def forward(self, own: torch.Tensor, scenario_embedding: torch.Tensor, scenario: torch.Tensor,
                global_embedding: torch.Tensor) -> Latent:  # fmt: skip
        mu, logvar = self.encoder(torch.cat([own, scenario_embedding], dim=-1)).chunk(2, dim=-1)
        logvar = logvar.clamp(-LOGVAR_RANGE, LOGVAR_RANGE)
        eps = torch.randn_like(mu) if self.training else torch.zeros_like(mu)
        z = mu + (0.5 * logvar).exp() * eps if self.training else mu
        means, prior_logvar, log_pi = self.prior(scenario, global_embedding)
        return Latent(mu, logvar, z, eps, means, prior_logvar, log_pi)


class GSVREmbedding(nn.Module):
    """The base model's feature layer with GSVR's scenario-specific latents added to the user and
    item field embeddings. The base calls it as its `embedding`; the last call's latents are kept
    in `latents` for the KL (read and cleared by `GSVR.forward`)."""

    def __init__(self, inner: FeatureEmbedding, schema: FeatureSchema, config: GSVRConfig) -> None:
        super().__init__()
        self.inner = inner
        index = schema.categorical_index
        self.scenario, self.user, self.item = (index(config.scenario_field), index(config.user_field),
                                               index(config.item_field))  # fmt: skip
        user_prior = config.user_prior_fields or [config.user_field]
        item_prior = config.item_prior_fields or [config.item_field]
        self.register_buffer("user_prior", torch.tensor([index(n) for n in user_prior]), persistent=False)
        self.register_buffer("item_prior", torch.tensor([index(n) for n in item_prior]), persistent=False)
        self.register_buffer("targets", torch.tensor([self.user, self.item]), persistent=False)
        scenarios = next(f.vocab_size for f in schema.categorical if f.name == config.scenario_field)
        dim = inner.dim
        side = lambda prior: VariationalSide(dim, config.encoder_units, scenarios, config.num_prototypes,  # noqa: E731
                                             len(prior) * dim, config.temperature)  # fmt: skip
        self.users = side(user_prior)
        self.items = side(item_prior)
        self.latents: tuple[Latent, Latent] | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def output_dim(self) -> int:
        return self.inner.output_dim

    def encode(self, batch: Batch) -> tuple[EmbeddedBatch, Latent, Latent]:
        embedded = self.inner(batch)
        shared = embedded.categorical  # (B, F_cat, d), the scenario-shared embeddings
        scenario = batch["categorical"][:, self.scenario].long()
        e_s = shared[:, self.scenario]
        users = self.users(shared[:, self.user], e_s, scenario, shared[:, self.user_prior].flatten(1))
        items = self.items(shared[:, self.item], e_s, scenario, shared[:, self.item_prior].flatten(1))
        return embedded, users, items

    def forward(self, batch: Batch) -> EmbeddedBatch:
        embedded, users, items = self.encode(batch)
        self.latents = (users, items)
        # categorical fields come first in `fields`, so field index = categorical index
        fields = embedded.fields.index_add(1, self.targets, torch.stack([users.z, items.z], dim=1))
        return EmbeddedBatch(fields=fields, sequences=embedded.sequences, masks=embedded.masks,
                             categorical=embedded.categorical)  # fmt: skip


@register("gsvr")
class GSVR(Model):
    paper = (
        "Zhang et al., Global-Distribution Aware Scenario-Specific Variational Representation Learning "
        "Framework, arXiv:2508.14493, 2025"
    )
    Config = GSVRConfig
    inputs = ModelInputs(min_categorical=3, multi_task=True, named_fields=("scenario", "user_id", "item_id"))
    smoke_overrides = {"embedding_dim": 4, "num_prototypes": 3, "encoder_units": [8],
                       "base_params": {"expert_units": [16], "tower_units": [8], "dropout": 0.0}}  # fmt: skip

    def __init__(self, schema: FeatureSchema, config: GSVRConfig) -> None:
        super().__init__(schema, config)
        problems = self.inputs_for(config).problems(schema)
        if problems:
            raise IncompatibleDataError(
                "model 'gsvr' cannot train on this data set: "
                + "; ".join(problems)
                + " (GSVR reads the settings scenario_field, user_field, item_field and the prior fields)"
            )
        base_cls = model_class(BASES[config.base])
        params = {**config.base_params, "embedding_dim": config.embedding_dim, "input_norm": config.input_norm,
                  "tasks": config.tasks}  # fmt: skip
        if config.base == "shared_bottom":
            if params.get("num_experts", 1) != 1:
                raise ValueError("gsvr: base 'shared_bottom' is MMoE with one expert; drop base_params.num_experts")
            params["num_experts"] = 1
        try:
            base_config = base_cls.Config(**params)
        except ValueError as exc:
            raise ValueError(f"gsvr: invalid base_params for base '{config.base}': {exc}") from None
        self.base = base_cls(schema, base_config)
        self.output_labels = self.base.output_labels
        self.base.embedding = GSVREmbedding(self.base.embedding, schema, config)
        # beta warm-up: training rows seen, and the rows of one epoch (set by `prepare`; 0: no warm-up)
        self.register_buffer("rows_seen", torch.zeros((), dtype=torch.float64))
        self.register_buffer("epoch_rows", torch.zeros((), dtype=torch.float64))

    @classmethod
    def inputs_for(cls, config: ModelConfig) -> ModelInputs:
        assert isinstance(config, GSVRConfig)
        named = (config.scenario_field, config.user_field, config.item_field,
                 *(config.user_prior_fields or ()), *(config.item_prior_fields or ()))  # fmt: skip
        return ModelInputs(min_categorical=cls.inputs.min_categorical, multi_task=True,
                           named_fields=tuple(dict.fromkeys(named)))  # fmt: skip

    @property
    def gsvr_embedding(self) -> GSVREmbedding:
        embedding = self.base.embedding
        assert isinstance(embedding, GSVREmbedding)
        return embedding

    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        self.epoch_rows.fill_(float(train.rows))

    def current_beta(self) -> float:
        """beta, scaled by the fraction of the warm-up done (rows seen / warm-up rows)."""
        config = self.config
        assert isinstance(config, GSVRConfig)
        warmup = config.beta_warmup_epochs * float(self.epoch_rows)
        if warmup <= 0:
            return config.beta
        return config.beta * min(1.0, float(self.rows_seen) / warmup)

    def kl_terms(self, users: Latent, items: Latent, kind: str | None = None) -> torch.Tensor:
        """(B,) KL of the user plus the item latent, by `kind` (default: the config's `kl`)."""
        kind = kind or self.config.kl  # type: ignore[attr-defined]
        if kind == "monte_carlo":
            return users.kl_monte_carlo() + items.kl_monte_carlo()
        return users.kl_upper_bound() + items.kl_upper_bound()

    def latents(self, batch: Batch) -> tuple[Latent, Latent]:
        """The user and item latents of a batch (posterior, sample, prior), as `forward` draws them."""
        _, users, items = self.gsvr_embedding.encode(batch)
        return users, items

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.base(batch)
        embedding = self.gsvr_embedding
        latents, embedding.latents = embedding.latents, None
        if self.training and latents is not None:
            beta = self.current_beta()
            with torch.no_grad():
                self.rows_seen += batch["categorical"].shape[0]
            out = {**out, "aux_loss": beta * self.kl_terms(*latents).mean()}
        return out
