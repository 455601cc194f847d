"""Shared layers: FastDropout behaves as dropout; sequence masks and masked means."""

from __future__ import annotations

import pytest
import torch

from agenticrs.models.layers import FastDropout, masked_mean, sequence_mask


def test_fast_dropout_keeps_the_right_share_and_rescales():
    torch.manual_seed(0)
    layer = FastDropout(0.2).train()
    x = torch.ones(1000, 500)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased in expectation


def test_fast_dropout_is_identity_in_eval_and_seeded_in_training():
    layer = FastDropout(0.5)
    x = torch.randn(64, 33)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, layer(x))


def test_fast_dropout_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(10, 7, requires_grad=True)
    y = FastDropout(0.3).train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.7
    assert torch.allclose(x.grad, expected)


def test_fast_dropout_rejects_bad_probability():
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_sequence_mask_and_masked_mean():
    lengths = torch.tensor([0, 2, 3])
    mask = sequence_mask(lengths, 3)
    assert mask.tolist() == [[False, False, False], [True, True, False], [True, True, True]]
    values = torch.arange(9, dtype=torch.float32).view(3, 3, 1)
    mean = masked_mean(values, mask)
    assert mean.squeeze(-1).tolist() == [0.0, 3.5, 7.0]
