"""GSVR: the mixture-prior KL against Monte-Carlo, the plug-in's mechanics, refusal and training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from agenticrs.data.simulated import write_simulation
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import IncompatibleDataError, ModelInputs, build_model, make_config
from agenticrs.models.gsvr import GSVR, Latent, gaussian_kl
from agenticrs.sim import sim_preset
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.workflow import train_run


@pytest.fixture(scope="module")
def scenario_data(tmp_path_factory: pytest.TempPathFactory) -> ProcessedDataset:
    """The simulator's `multi_scenario` task on the tiny preset (click, purchase; field 'scenario')."""
    out = tmp_path_factory.mktemp("gsvr_sim")
    write_simulation(sim_preset("tiny", seed=5), out, name="sim-tiny")
    return process_dataset(DatasetSpec.from_yaml(out / "multi_scenario.yaml"), out / "cache")


@pytest.fixture(scope="module")
def scenario_batch(scenario_data: ProcessedDataset) -> dict[str, torch.Tensor]:
    return next(iter(iterate_batches(scenario_data.split("train"), 128)))


def _gsvr(schema, seed: int = 0, **overrides) -> GSVR:
    torch.manual_seed(seed)
    model = build_model("gsvr", schema, config=make_config("gsvr", overrides, smoke=True))
    assert isinstance(model, GSVR)
    return model


def _small_case(components: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A posterior (B, d) and a mixture prior (B, C, d) with weights (B, C), varied scales."""
    g = torch.Generator().manual_seed(seed)
    batch, dim = 3, 2
    mu = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    logvar = torch.randn(batch, dim, generator=g, dtype=torch.float64) * 0.5
    means = torch.randn(batch, components, dim, generator=g, dtype=torch.float64) * 1.5
    prior_logvar = torch.randn(batch, components, dim, generator=g, dtype=torch.float64) * 0.5
    log_pi = torch.randn(batch, components, generator=g, dtype=torch.float64).log_softmax(-1)
    return mu, logvar, means, prior_logvar, log_pi


def _latent_samples(mu, logvar, means, prior_logvar, log_pi, samples: int, seed: int) -> Latent:
    """`samples` reparameterised draws per row, flattened to (samples * B) rows of one Latent."""
    eps = torch.randn(samples, *mu.shape, generator=torch.Generator().manual_seed(seed), dtype=mu.dtype)
    rep = lambda t: t.expand(samples, *t.shape).reshape(-1, *t.shape[1:])  # noqa: E731
    z = mu + (0.5 * logvar).exp() * eps
    return Latent(rep(mu), rep(logvar), z.reshape(-1, mu.shape[1]), eps.reshape(-1, mu.shape[1]),
                  rep(means), rep(prior_logvar), rep(log_pi))  # fmt: skip


def test_single_component_kl_equals_the_closed_form():
    """C = 1: the mixture is one Gaussian, whose KL is known exactly; the mean of the one-sample
    estimator over many draws matches it, and the upper bound is exact."""
    mu, logvar, means, prior_logvar, log_pi = _small_case(components=1)
    exact = D.kl_divergence(D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1),
                            D.Independent(D.Normal(means[:, 0], (0.5 * prior_logvar[:, 0]).exp()), 1))  # fmt: skip
    assert torch.allclose(gaussian_kl(mu, logvar, means[:, 0], prior_logvar[:, 0]), exact, atol=1e-10)
    samples = 200_000
    latent = _latent_samples(mu, logvar, means, prior_logvar, log_pi, samples, seed=1)
    assert torch.allclose(latent.kl_upper_bound(), exact.repeat(samples), atol=1e-10)
    estimate = latent.kl_monte_carlo().view(samples, -1)
    stderr = estimate.std(0) / math.sqrt(samples)
    assert ((estimate.mean(0) - exact).abs() < 5 * stderr + 1e-6).all(), (estimate.mean(0), exact)


def test_mixture_kl_matches_an_independent_monte_carlo_estimate():
    """C = 4: the estimator's mean over many draws matches E_q[log q(z) - log p(z)] computed with
    torch.distributions' mixture on other draws, and lies below the Jensen upper bound."""
    mu, logvar, means, prior_logvar, log_pi = _small_case(components=4, seed=3)
    samples = 200_000
    ours = _latent_samples(mu, logvar, means, prior_logvar, log_pi, samples, seed=7).kl_monte_carlo().view(samples, -1)
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    prior = D.MixtureSameFamily(D.Categorical(logits=log_pi),
                                D.Independent(D.Normal(means, (0.5 * prior_logvar).exp()), 1))  # fmt: skip
    torch.manual_seed(11)
    z = q.sample((samples,))
    reference = q.log_prob(z) - prior.log_prob(z)  # (samples, B)
    stderr = torch.sqrt(ours.var(0) / samples + reference.var(0) / samples)
    assert ((ours.mean(0) - reference.mean(0)).abs() < 5 * stderr).all(), (ours.mean(0), reference.mean(0))
    bound = _latent_samples(mu, logvar, means, prior_logvar, log_pi, 1, seed=0).kl_upper_bound()
    assert (reference.mean(0) <= bound + 5 * stderr).all()


def test_shapes_gradients_and_bases(scenario_data, scenario_batch):
    labels = scenario_batch["labels"] if "labels" in scenario_batch else None
    for base in ("mmoe", "ple", "shared_bottom"):
        model = _gsvr(scenario_data.schema, base=base).train()
        out = model(scenario_batch)
        assert out["logit"].shape == (128, 2) and torch.isfinite(out["logit"]).all()
        assert out["aux_loss"].dim() == 0 and torch.isfinite(out["aux_loss"])
        target = labels if labels is not None else torch.stack([scenario_batch["label"]] * 2, 1)
        (F.binary_cross_entropy_with_logits(out["logit"], target) + out["aux_loss"]).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{base}: no finite gradient on {name}"
    assert len(_gsvr(scenario_data.schema, base="shared_bottom").base.experts) == 1
    users, items = model.latents(scenario_batch)
    assert users.z.shape == items.z.shape == (128, 4) and users.log_pi.shape == (128, 3)


def test_the_kl_alone_trains_the_prior(scenario_data, scenario_batch):
    """The KL (aux_loss) is the only path to the prior's prototypes and assignment: the prediction
    loss leaves them without gradient, the KL gives them one."""
    model = _gsvr(scenario_data.schema).train()
    prior = model.gsvr_embedding.users.prior
    model(scenario_batch)["logit"].sum().backward()
    assert all(p.grad is None for p in prior.parameters())
    model.zero_grad(set_to_none=True)
    model(scenario_batch)["aux_loss"].backward()
    for p in (prior.means, prior.logvar, prior.assign.weight, model.gsvr_embedding.items.prior.means):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_eval_uses_the_posterior_mean(scenario_data, scenario_batch):
    model = _gsvr(scenario_data.schema).train()
    assert not torch.equal(model(scenario_batch)["logit"], model(scenario_batch)["logit"])  # sampled z
    model.eval()
    with torch.no_grad():
        first, second = model(scenario_batch), model(scenario_batch)
        users, _ = model.latents(scenario_batch)
    assert torch.equal(first["logit"], second["logit"]) and "aux_loss" not in first
    assert torch.equal(users.z, users.mu)


def test_beta_warms_up_over_the_first_epoch(scenario_data, scenario_batch):
    model = _gsvr(scenario_data.schema, beta=0.1, beta_warmup_epochs=1.0).train()
    assert model.current_beta() == pytest.approx(0.1)  # not prepared: no warm-up
    model.epoch_rows.fill_(512.0)
    assert model.current_beta() == 0.0
    model(scenario_batch)
    assert model.current_beta() == pytest.approx(0.1 * 128 / 512)
    for _ in range(5):
        model(scenario_batch)
    assert model.current_beta() == pytest.approx(0.1)


def test_upper_bound_kl_setting(scenario_data, scenario_batch):
    model = _gsvr(scenario_data.schema, kl="upper_bound").train()
    users, items = model.latents(scenario_batch)
    assert (model.kl_terms(users, items) >= 0).all()


def test_refuses_data_without_a_scenario_field(flat_data):
    with pytest.raises(IncompatibleDataError, match="gsvr.*'scenario'"):
        build_model("gsvr", flat_data.schema)


def test_named_fields_are_checked_and_united(scenario_data):
    inputs = ModelInputs(named_fields=("scenario", "user_id")).union(ModelInputs(named_fields=("item_id", "scenario")))
    assert inputs.named_fields == ("scenario", "user_id", "item_id")
    assert inputs.problems(scenario_data.schema) == []
    assert "'shop'" in ModelInputs(named_fields=("shop",)).problems(scenario_data.schema)[0]


def test_refuses_unknown_named_fields(scenario_data):
    with pytest.raises(IncompatibleDataError, match="'shop'"):
        build_model("gsvr", scenario_data.schema, config={"item_prior_fields": ["shop"]})
    with pytest.raises(ValueError, match="base_params"):
        build_model("gsvr", scenario_data.schema, config={"base": "ple", "base_params": {"num_experts": 3}})


def test_save_load_gives_identical_predictions(scenario_data, scenario_batch, tmp_path: Path):
    model = _gsvr(scenario_data.schema, seed=1)
    torch.save(model.state_dict(), tmp_path / "gsvr.pt")
    fresh = _gsvr(scenario_data.schema, seed=2)
    fresh.load_state_dict(torch.load(tmp_path / "gsvr.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(model.eval()(scenario_batch)["logit"], fresh.eval()(scenario_batch)["logit"])


def test_trains_on_the_multi_scenario_task_with_the_engine(scenario_data, tmp_path: Path):
    train = TrainConfig(max_steps=6, batch_size=512, eval_every_steps=3, num_threads=1, seed=1,
                        conversion_labels=["click", "purchase"])  # fmt: skip
    config = RunConfig(dataset="sim-tiny-multi_scenario", model="gsvr", smoke=True, train=train)
    trained = train_run(config, tmp_path / "runs", tmp_path / "cache", data=scenario_data)
    model = trained.model
    assert isinstance(model, GSVR)
    assert float(model.epoch_rows) == scenario_data.split("train").rows  # prepared by the trainer
    assert 0 < model.current_beta() < model.config.beta  # still warming up after 6 x 512 rows
    assert math.isfinite(trained.result.test["ctr_auc"])
