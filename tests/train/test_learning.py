"""Learning tests: the models learn what the synthetic ground truth says they should learn.

With margins that hold across seeds (data seed = training seed):

* FM beats LR: the clicks depend on interactions between fields (user x item, target x history),
  which FM's pairwise factorised terms can express and LR's first-order weights cannot;
* DIN beats DeepFM when relevance to the history drives clicks: on the ``relevance`` preset, the
  click logit rises with the target's similarity to its single most similar history item (a sharp
  item-level kernel over histories of up to 30 items). DIN's target attention can pick that item
  out; DeepFM sees the history only as one mean-pooled field.

Every model runs with its default (paper) hyper-parameters; only the training schedule is short.
Each seed's data set (the ``relevance`` preset as it is: 100k impressions) is generated and
processed once (a module-scoped fixture parametrised by seed) and serves both comparisons.
Training uses one torch thread, so that a busy or shared machine (or pytest-xdist) cannot
oversubscribe the cores; the thread count is restored afterwards.

Measured test AUC with exactly these settings (2-core development machine; oracle AUC
0.944-0.951):

    seed  LR      FM      FM-LR  | DeepFM  DIN     DIN-DeepFM
    0     0.6759  0.8114  0.135  | 0.8376  0.8782  0.041
    1     0.6882  0.8144  0.126  | 0.8392  0.8785  0.039
    2     0.6790  0.8043  0.125  | 0.8243  0.8877  0.063
    3     0.6882  0.8042  0.116  | 0.8360  0.8780  0.042
    4     0.6870  0.8162  0.129  | 0.8392  0.8841  0.045
    5     0.6876  0.8082  0.121  | 0.8380  0.8694  0.031
    6     0.6937  0.8078  0.114  | 0.8312  0.8871  0.056
    7     0.6866  0.8211  0.134  | 0.8421  0.8828  0.041
    8     0.6820  0.8109  0.129  | 0.8300  0.8853  0.055
    9     0.6874  0.8089  0.122  | 0.8349  0.8781  0.043

The asserted margins (0.06 and 0.02) are at most two thirds of the smallest measured ones
(0.114 and 0.031).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from agenticrs.data.synthetic import META_NAME, generate_synthetic, preset
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import build_model
from agenticrs.runtime import seed_everything
from agenticrs.train.config import TrainConfig
from agenticrs.train.trainer import Trainer

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)

# short schedules; the best epoch on validation AUC is restored before the test split is scored
LINEAR_TRAIN = {"epochs": 4, "batch_size": 1024, "learning_rate": 0.01}  # LR and FM (cheap)
DEEP_TRAIN = {"epochs": 2, "batch_size": 256, "learning_rate": 0.003}  # DeepFM and DIN

# asserted test-AUC margins (see the table above)
FM_OVER_LR = 0.06
DIN_OVER_DEEPFM = 0.02
FLOOR = 0.6  # every model must beat chance (0.5) by at least 0.1, and stay below the oracle


@dataclass(frozen=True)
class Relevance:
    seed: int
    data: ProcessedDataset
    oracle_auc: float  # AUC of the true click probability on the test split (meta.json)


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def learning_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("learning")


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def relevance(request: pytest.FixtureRequest, learning_root: Path) -> Relevance:
    seed = request.param
    out = learning_root / f"relevance-{seed}"
    spec = generate_synthetic(preset("relevance", seed=seed), out)
    data = process_dataset(spec, learning_root / "cache")
    for split in data.splits.values():
        split.load_in_memory()
    meta = json.loads((out / META_NAME).read_text())
    return Relevance(seed, data, float(meta["splits"]["test"]["oracle_auc"]))


def _test_auc(name: str, case: Relevance, schedule: dict) -> float:
    seed_everything(case.seed)  # the initial weights too: the Trainer seeds only once it is fitting
    model = build_model(name, case.data.schema, {})
    config = TrainConfig(seed=case.seed, num_threads=1, metrics=["auc", "logloss"], **schedule)
    result = Trainer(config).fit(model, case.data)
    assert result.test is not None
    return float(result.test["auc"])


def _check_range(aucs: dict[str, float], case: Relevance) -> None:
    for name, auc in aucs.items():
        bounds = f"({FLOOR}, oracle {case.oracle_auc:.4f})"
        assert FLOOR < auc < case.oracle_auc, f"seed {case.seed}, {name}: test AUC {auc:.4f} outside {bounds}"


def test_fm_beats_lr(relevance: Relevance) -> None:
    aucs = {name: _test_auc(name, relevance, LINEAR_TRAIN) for name in ("lr", "fm")}
    _check_range(aucs, relevance)
    assert aucs["fm"] >= aucs["lr"] + FM_OVER_LR, f"seed {relevance.seed}: {aucs}"


def test_din_beats_deepfm_when_relevance_to_history_drives_clicks(relevance: Relevance) -> None:
    aucs = {name: _test_auc(name, relevance, DEEP_TRAIN) for name in ("deepfm", "din")}
    _check_range(aucs, relevance)
    assert aucs["din"] >= aucs["deepfm"] + DIN_OVER_DEEPFM, f"seed {relevance.seed}: {aucs}"
