"""The zoo's model contract, as checks a generated model must pass before it may train.

Why in the package (not only in the test suite): an LLM-drafted model module is checked at run
time, inside the sandbox, by the same properties `tests/models/test_model_zoo.py` pins for every
built-in model: the output is a finite (B,) logit; gradients reach every trainable parameter;
saving and loading the state dict gives identical predictions; an eval-mode prediction of a row
does not depend on the other rows of its batch. Each check returns the problems it found (an
empty list: passed), so the report says what failed, not just that something did.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
import torch.nn.functional as F

from agenticrs.data.cache import SplitArrays
from agenticrs.features.batching import iterate_batches
from agenticrs.models.base import Model

Batch = dict[str, torch.Tensor]


def _loss(out: dict[str, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(out["logit"], label)
    return loss + out["aux_loss"] if "aux_loss" in out else loss


def check_output(model: Model, batch: Batch) -> list[str]:
    rows = len(batch["label"])
    out = model(batch)
    if not isinstance(out, dict) or "logit" not in out:
        return [f"forward must return a dict with 'logit', got {type(out).__name__}"]
    logit = out["logit"]
    if not isinstance(logit, torch.Tensor) or logit.shape != (rows,):
        return [f"'logit' must have shape ({rows},), got {getattr(logit, 'shape', type(logit).__name__)}"]
    if not torch.isfinite(logit).all():
        return ["'logit' has non-finite values"]
    return []


def check_gradients(model: Model, batch: Batch) -> list[str]:
    model.train()
    model.zero_grad(set_to_none=True)
    _loss(model(batch), batch["label"]).backward()
    problems = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems.append(f"no gradient reaches {name}")
        elif not torch.isfinite(p.grad).all():
            problems.append(f"non-finite gradient on {name}")
    if not any(p.requires_grad for p in model.parameters()):
        problems.append("the model has no trainable parameters")
    return problems


def check_save_load(build: Callable[[int], Model], batch: Batch) -> list[str]:
    model = build(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    _loss(model(batch), batch["label"]).backward()
    optimizer.step()
    buffer = io.BytesIO()  # in memory: the check writes no file
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(2)
    try:
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
    except (RuntimeError, KeyError) as exc:
        return [f"load_state_dict failed: {' '.join(str(exc).split())[:300]}"]
    model.eval()
    fresh.eval()
    with torch.no_grad():
        if not torch.equal(model(batch)["logit"], fresh(batch)["logit"]):
            return ["a saved and reloaded model predicts differently (state not in the state dict)"]
    return []


def check_batch_independence(model: Model, split: SplitArrays, rows: int = 64) -> list[str]:
    model.train()
    with torch.no_grad():  # move batch-norm style running statistics off their initial values
        for batch in iterate_batches(split, 256):
            model(batch)
    model.eval()
    batches = iterate_batches(split, rows)
    first, other = next(batches), next(batches)
    mixed = {k: torch.cat([v[:1], other[k][1:]]) for k, v in first.items()}
    with torch.no_grad():
        base = model(first)["logit"]
        if not torch.allclose(model(mixed)["logit"][0], base[0], rtol=0, atol=1e-6):
            return ["an eval-mode prediction depends on the other rows of its batch"]
        alone = model({k: v[:5] for k, v in first.items()})["logit"]
        if not torch.allclose(alone, base[:5], rtol=1e-5, atol=1e-6):
            return ["an eval-mode prediction changes with the batch size"]
    return []


def run_contract(build: Callable[[int], Model], split: SplitArrays) -> dict[str, list[str]]:
    """Every check, by name -> its problems ([] = passed). A check that raises reports the exception."""
    batch = next(iterate_batches(split, 64))
    checks: dict[str, Callable[[], list[str]]] = {
        "output": lambda: check_output(build(0).eval(), batch),
        "gradients": lambda: check_gradients(build(0), batch),
        "save_load": lambda: check_save_load(build, batch),
        "batch_independence": lambda: check_batch_independence(build(0), split),
    }
    results = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as exc:  # the generated code's own failure is a finding, not a crash of the check
            results[name] = [f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"]
    return results
