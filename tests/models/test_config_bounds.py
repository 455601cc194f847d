"""Every model's typed config bounds every parameter: a bad value is refused when the config is
validated, with a message naming the field (issue 14, defects 1 and 6), before anything is built.

The field-by-field tests run over every CTR model of the registry and every field of its Config,
so a model added later with an unbounded width, a free-text activation or an unbounded count
fails here."""

from __future__ import annotations

from typing import Any, get_args

import pytest
import torch

from agenticrs.models.base import (
    FIELD_NAME,
    LABEL_NAME,
    MAX_LAYERS,
    MAX_UNITS,
    Activation,
    build_model,
    list_models,
    make_config,
    model_class,
)
from agenticrs.models.layers import MLP, _activation

CTR_MODELS = list_models()


def fields_with_default(kind: type) -> list[tuple[str, str]]:
    """(model, field) for every Config field whose default is of `kind` (bool excluded from int)."""
    found = []
    for name in CTR_MODELS:
        for field, info in model_class(name).Config.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if kind is int and isinstance(default, bool):
                continue
            if kind is list:
                if isinstance(default, list) and default and all(isinstance(v, int) for v in default):
                    found.append((name, field))
            elif kind is str and info.description in (LABEL_NAME, FIELD_NAME):
                continue  # a label or field name: any string, checked against the data set when the model is built
            elif isinstance(default, kind):
                found.append((name, field))
    return found


def refused(model: str, field: str, value: Any) -> str:
    with pytest.raises(ValueError) as caught:
        make_config(model, {field: value})
    message = str(caught.value)
    assert message.startswith(f"invalid config for model '{model}'"), message
    assert field in message, message
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("model", CTR_MODELS)
def test_defaults_and_smoke_configs_stay_valid(model: str) -> None:
    make_config(model)
    make_config(model, smoke=True)


@pytest.mark.parametrize("model", CTR_MODELS)
@pytest.mark.parametrize("value", [0, -3])
def test_embedding_dim_below_one_is_refused_naming_the_field(model: str, value: int) -> None:
    message = refused(model, "embedding_dim", value)
    assert "greater than or equal to 1" in message and f"(got {value})" in message


@pytest.mark.parametrize(("model", "field"), fields_with_default(int))
def test_every_integer_parameter_has_both_bounds(model: str, field: str) -> None:
    refused(model, field, -1)
    refused(model, field, 2**64)


def test_optional_counts_are_bounded_too() -> None:
    for value in (0, 2**64):
        refused("dcnv2", "low_rank", value)
    make_config("dcnv2", {"low_rank": None})
    make_config("mgdin", {"density_max_rows": None})


@pytest.mark.parametrize(("model", "field"), fields_with_default(float))
def test_every_float_parameter_is_finite_and_bounded(model: str, field: str) -> None:
    for value in (float("nan"), float("inf"), -1e30, 1e30):
        refused(model, field, value)


@pytest.mark.parametrize(("model", "field"), fields_with_default(list))
def test_every_width_list_refuses_zero_huge_and_too_many_layers(model: str, field: str) -> None:
    assert "greater than or equal to 1" in refused(model, field, [0])
    assert "less than or equal to" in refused(model, field, [1e9])  # the LLM answer of issue 14
    refused(model, field, [8] * (MAX_LAYERS + 1))


@pytest.mark.parametrize(("model", "field"), fields_with_default(str))
def test_every_choice_is_restricted(model: str, field: str) -> None:
    refused(model, field, "no-such-choice")


def test_label_name_settings_are_bounded_strings() -> None:
    for field in ("click_label", "conversion_label"):
        assert "at least 1 character" in refused("esmm", field, "")
        refused("esmm", field, "x" * 10_000)
        make_config("esmm", {field: "is_buy"})


@pytest.mark.parametrize("model", CTR_MODELS)
def test_dropout_must_be_below_one(model: str) -> None:
    dropouts = [f for f in model_class(model).Config.model_fields if f.endswith("dropout")]
    for field in dropouts:
        assert "less than 1" in refused(model, field, 1.0)
        make_config(model, {field: 0.0})


def test_the_activation_choices_are_exactly_the_ones_the_layers_build() -> None:
    for name in get_args(Activation):
        mlp = MLP(4, [3], activation=name)
        assert mlp(torch.zeros(2, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        _activation("swish", 3)
    assert "activation" in refused("dnn", "activation", "swish")


def test_a_billion_unit_layer_is_refused_before_anything_is_built() -> None:
    # issue 14, defect 1: model_params.mlp2_hidden_units=[1e9] from an LLM answer or --set
    message = refused("finalmlp", "mlp2_hidden_units", [1e9])
    assert "mlp2_hidden_units.0" in message and f"less than or equal to {MAX_UNITS}" in message
    with pytest.raises(ValueError, match="mlp2_hidden_units"):
        build_model("finalmlp", schema=None, config={"mlp2_hidden_units": [1e9]})  # type: ignore[arg-type]


def test_hidden_units_zero_names_the_layer() -> None:
    message = refused("deepfm", "hidden_units", [400, 0])
    assert "hidden_units.1" in message and "(got 0)" in message


def test_finalmlp_heads_must_divide_the_stream_widths() -> None:
    message = refused("finalmlp", "mlp1_hidden_units", [64, 33])
    assert "not divisible by num_heads 10" in message
    make_config("finalmlp", {"mlp1_hidden_units": [64, 30], "mlp2_hidden_units": [40]})


def test_several_problems_are_counted_in_one_line() -> None:
    with pytest.raises(ValueError) as caught:
        make_config("dnn", {"embedding_dim": 0, "dropout": 2.0, "activation": "x"})
    assert "and 2 more problem(s)" in str(caught.value) and "\n" not in str(caught.value)
