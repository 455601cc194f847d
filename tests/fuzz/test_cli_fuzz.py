"""Property-based fuzzing of the CLI: bad data, bad specs and bad `--set` overrides.

Hypothesis generates dataset specs and CSV / Parquet files with malformed cells (infinite and huge
numbers, markup, quotes, delimiters, invalid UTF-8), other encodings, compression under the wrong
name, ragged rows, missing columns, empty files and odd reader options, and `--set` overrides with
wrong types and extreme values. Each case runs `agenticrs train` (tiny step budget) and checks the
invariant of the CLI:

* it succeeds and leaves one complete run directory (weights, strict-JSON summary, no checkpoint),
* or it exits with code 2 and only `error: ...` lines on stderr (no traceback, no "Exception
  ignored"), and no run directory that looks complete (none holds a `summary.json`).

Exit code 1 is the CLI's answer to an unexpected exception (a bug), so it fails the property. The
default examples keep the suite within about a minute; the `slow` variants run many more.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agenticrs.cli.main import app

runner = CliRunner()

QUICK = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# always last on the command line (the last override wins): a fuzz case never trains for long
SAFETY = ["train.max_steps=2", "train.num_threads=1", "train.time_budget_s=30", "train.eval_batch_size=64"]


# ----------------------------------------------------------------------------- the invariant
def _strict_json(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def check_invariant(result, root: Path, case: object) -> None:
    """Success with one complete run, or exit 2 with `error:` lines only and no complete-looking run."""
    context = f"\ncase: {case!r}\nexit code: {result.exit_code}\noutput:\n{result.output[-3000:]}"
    assert result.exit_code in (0, 2), "the CLI crashed (exit 1 is an unexpected exception)" + context
    for bad in ("Traceback (most recent call last)", "Exception ignored"):
        assert bad not in result.output, context
    runs = sorted({p.parent for p in root.rglob("config.yaml")} - {root})
    runs = [r for r in runs if (r / "encoder.json").exists() or (r / "metrics.jsonl").exists() or (r / "summary.json").exists()]
    if result.exit_code == 0:
        assert len(runs) == 1, f"expected one run directory, found {runs}" + context
        run = runs[0]
        for name in ("weights.pt", "summary.json", "config.yaml", "encoder.json", "schema.json", "dataset.yaml"):
            assert (run / name).is_file(), f"finished run lacks {name}" + context
        assert not (run / "checkpoint.pt").exists(), context
    else:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines, "exit 2 without a message" + context
        assert all(line.startswith("error: ") for line in lines), "stderr holds more than error lines" + context
        for run in runs:
            assert not (run / "summary.json").exists(), f"a failed command left a complete-looking run {run}" + context
    for run in runs:
        for path in run.glob("*.json"):
            _strict_json(path.read_text())
        if (run / "metrics.jsonl").exists():
            for line in (run / "metrics.jsonl").read_text().splitlines():
                _strict_json(line)


def train(root: Path, spec: str, model: str, overrides: list[str]) -> object:
    args = ["train", "-d", spec, "-m", model, "-q", "--runs-dir", str(root / "runs"), "--cache-dir", str(root / "cache")]
    for item in [*overrides, *SAFETY]:
        args += ["--set", item]
    env = {"AGENTICRS_CRASH_DIR": str(root / "crash"), "AGENTICRS_NUM_THREADS": "1", "COLUMNS": "200"}
    return runner.invoke(app, args, env=env)


# ----------------------------------------------------------------------------- generated data
NUMBERS = ["0", "1", "-2.5", "3e5", "0.001", " 7 ", "1e-400", "-0", "12345678901234567890", "", "NA"]
BAD_NUMBERS = ["inf", "-inf", "1e400", "-1E400", "Infinity", "1e39", "-3e300", "1e200", "abc", "1_0", "0x10", "1,5",
               "--1", "1e", "true", "[/]"]  # fmt: skip
LABELS = ["0", "1"]
BAD_LABELS = ["2", "-1", "", "NA", "true", "false", " 1 ", "1.0", "0.5", "inf", "nan", "yes"]
TOKENS = ["u1", "u2", "u3", "item"]
ODD_TOKENS = ["NA", "", "[/]", "[red]:x:[/red]", "a,b", 'say "hi"', "é", "日本", "\t", "x" * 300, "null", "1|2", "a\nb"]
# what can be wrong with a case; a case holds none, one or two of them (everything else is valid)
FAULTS = [
    "bad labels", "bad numbers", "bad sequence numbers", "min_count 0", "hash_buckets 0", "quantile_buckets 1",
    "max_len 0", "unknown column", "unknown kind", "duplicate field", "wrong delimiter", "block_size", "group_key",
    "gzip named csv", "parquet named csv", "empty file", "missing file", "no rows", "invalid UTF-8", "utf-16",
    "ragged row", "missing column", "unknown spec key", "single class",
]  # fmt: skip


@dataclass
class DataCase:
    faults: list[str]
    rows: list[list[str]]
    header: list[str]
    spec: dict
    container: str  # csv | csv.gz | gz-named-csv | parquet | parquet-named-csv | empty | missing
    encoding: str
    newline: str
    invalid_byte_row: int | None
    ragged_row: int | None
    model: str


def _pick(draw, good: list[str], bad: list[str], faulty: bool) -> str:
    return draw(st.sampled_from(bad)) if faulty and draw(st.integers(0, 3)) == 0 else draw(st.sampled_from(good))


@st.composite
def data_cases(draw) -> DataCase:
    count = draw(st.sampled_from([0, 1, 1, 1, 2]))
    faults = draw(st.lists(st.sampled_from(FAULTS), min_size=count, max_size=count, unique=True))
    fault = faults.__contains__
    n = 0 if fault("no rows") else draw(st.integers(1, 30))
    with_seq = draw(st.booleans()) or fault("bad sequence numbers") or fault("max_len 0")
    numeric_seq = with_seq and (fault("bad sequence numbers") or draw(st.booleans()))
    odd = draw(st.booleans())  # markup, quotes, delimiters, unicode and missing values as categories
    header = ["click", "user", "price"] + (["hist"] if with_seq else [])
    rows = []
    for _ in range(n):
        label = _pick(draw, LABELS, BAD_LABELS, fault("bad labels"))
        if fault("single class"):
            label = "0"
        row = [label, _pick(draw, TOKENS, ODD_TOKENS, odd), _pick(draw, NUMBERS, BAD_NUMBERS, fault("bad numbers"))]
        if with_seq:
            good, bad = (NUMBERS[:-2], BAD_NUMBERS) if numeric_seq else (TOKENS, ODD_TOKENS)
            size = draw(st.integers(0, 4))
            row.append("|".join(_pick(draw, good, bad, fault("bad sequence numbers") or (odd and not numeric_seq))
                                for _ in range(size)))  # fmt: skip
        rows.append(row)
    if rows and draw(st.integers(0, 9)) == 0:  # thousands of rows: several blocks, a fault far from the top
        rows = (rows * (3000 // len(rows) + 1))[:3000]
    fields = [
        {"name": "click", "kind": "label", **({"optional": True} if draw(st.integers(0, 4)) == 0 else {})},
        {"name": "user", "kind": "categorical", "min_count": 0 if fault("min_count 0") else draw(st.sampled_from([1, 2])),
         **({"hash_buckets": 0 if fault("hash_buckets 0") else draw(st.sampled_from([1, 4]))}
            if fault("hash_buckets 0") or draw(st.integers(0, 3)) == 0 else {})},
        {"name": "price", "kind": "numeric", "transform": draw(st.sampled_from(["none", "log1p", "standardize", "quantile"])),
         **({"quantile_buckets": 1 if fault("quantile_buckets 1") else draw(st.sampled_from([2, 10]))}
            if fault("quantile_buckets 1") or draw(st.integers(0, 3)) == 0 else {})},
    ]  # fmt: skip
    if with_seq:
        seq = {"name": "hist", "kind": "sequence", "max_len": 0 if fault("max_len 0") else draw(st.sampled_from([1, 3]))}
        if numeric_seq:
            seq["element"] = "numeric"
        elif draw(st.booleans()):
            seq["share_vocab_with"] = "user"
        fields.append(seq)
    if fault("unknown column"):
        fields.append({"name": "ghost", "kind": "categorical"})
    if fault("unknown kind"):
        fields.append({"name": "weird", "kind": "float", "column": "price"})
    if fault("duplicate field"):
        fields.append({"name": "user", "kind": "categorical"})
    reader: dict = {}
    if fault("wrong delimiter"):
        reader["delimiter"] = ";"
        delimiter = ","
    else:
        delimiter = draw(st.sampled_from([",", ",", ";", "\t"]))
        if delimiter != ",":
            reader["delimiter"] = delimiter
    reader["_write_delimiter"] = delimiter
    if draw(st.integers(0, 4)) == 0:
        reader["header"] = False
        reader["column_names"] = header
    if fault("block_size"):
        reader["block_size"] = draw(st.sampled_from([1, 0, -5, 10**12]))
    elif draw(st.integers(0, 3)) == 0:
        reader["block_size"] = draw(st.sampled_from([256, 4096]))
    if draw(st.integers(0, 5)) == 0:
        reader["null_values"] = draw(st.sampled_from([[], ["?"], ["", "NA", "nan", "NaN"]]))
    spec = {"name": "fuzz", "files": {"train": "data.FILE"}, "fields": fields, "reader": reader}
    if draw(st.booleans()):
        spec["files"]["valid"] = "data.FILE"
    if fault("group_key"):
        spec["group_key"] = "nope"
    elif draw(st.integers(0, 3)) == 0:
        spec["group_key"] = "user"
    if fault("unknown spec key"):
        spec["colums"] = ["typo"]
    if fault("gzip named csv"):
        container = "gz-named-csv"
    elif fault("parquet named csv"):
        container = "parquet-named-csv"
    elif fault("empty file"):
        container = "empty"
    elif fault("missing file"):
        container = "missing"
    else:
        container = draw(st.sampled_from(["csv", "csv", "csv.gz", "parquet"]))
    if fault("utf-16"):
        encoding = "utf-16"
    else:
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1"] if not odd else ["utf-8", "utf-8-sig"]))
    return DataCase(
        faults=faults,
        rows=rows,
        header=header[:2] + header[3:] if fault("missing column") else header,
        spec=spec,
        container=container,
        encoding=encoding,
        newline=draw(st.sampled_from(["\n", "\n", "\r\n"])),
        invalid_byte_row=draw(st.integers(0, len(rows) - 1)) if rows and fault("invalid UTF-8") else None,
        ragged_row=draw(st.integers(0, len(rows) - 1)) if rows and fault("ragged row") else None,
        model=draw(st.sampled_from(["lr", "fm"])),
    )


def _csv_text(case: DataCase, delimiter: str) -> str:
    def quote(cell: str) -> str:
        needs = any(c in cell for c in (delimiter, '"', "\n", "\r"))
        return '"' + cell.replace('"', '""') + '"' if needs else cell

    header_on = case.spec.get("reader", {}).get("header", True)
    lines = [delimiter.join(case.header)] if header_on else []
    for i, row in enumerate(case.rows):
        cells = [quote(c) for c in row]
        if case.ragged_row == i:
            cells = cells + ["extra"] if len(cells) % 2 else cells[:-1]
        lines.append(delimiter.join(cells))
    return case.newline.join(lines) + (case.newline if lines else "")


def _parquet_table(case: DataCase) -> pa.Table:
    columns = {}
    for j, name in enumerate(case.header[: len(case.rows[0]) if case.rows else len(case.header)]):
        values = [row[j] if j < len(row) else None for row in case.rows]
        try:
            columns[name] = pa.array([float(v) for v in values], pa.float64()) if name in ("price", "click") else None
        except (TypeError, ValueError):
            columns[name] = None
        if columns[name] is None:
            if name == "hist":
                columns[name] = pa.array([v.split("|") if v else [] for v in values], pa.list_(pa.string()))
            else:
                columns[name] = pa.array(values, pa.string())
    if not columns:
        columns = {name: pa.array([], pa.string()) for name in case.header}
    return pa.table(columns)


def write_case(case: DataCase, root: Path) -> str:
    """The case's data file(s) and spec under `root`; returns the spec path."""
    spec = json.loads(json.dumps(case.spec))
    delimiter = spec["reader"].pop("_write_delimiter")
    suffix = {"csv": "csv", "csv.gz": "csv.gz", "gz-named-csv": "csv", "parquet": "parquet",
              "parquet-named-csv": "csv", "empty": "csv", "missing": "csv"}[case.container]  # fmt: skip
    path = root / f"data.{suffix}"
    spec["files"] = {split: path.name for split in spec["files"]}
    if case.container in ("parquet", "parquet-named-csv"):
        if case.container == "parquet":
            spec.setdefault("reader", {})["format"] = "parquet"
        pq.write_table(_parquet_table(case), path)
    elif case.container == "empty":
        path.write_bytes(b"")
    elif case.container != "missing":
        text = _csv_text(case, delimiter)
        data = text.encode(case.encoding, errors="replace")
        if case.invalid_byte_row is not None:
            lines = data.split(b"\n")
            target = min(case.invalid_byte_row + 1, len(lines) - 1)
            lines[target] = lines[target][:1] + b"\xff\xfe" + lines[target][1:]
            data = b"\n".join(lines)
        path.write_bytes(gzip.compress(data) if case.container in ("csv.gz", "gz-named-csv") else data)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return str(spec_path)


def run_data_case(case: DataCase) -> None:
    with tempfile.TemporaryDirectory(prefix="agenticrs-fuzz-") as folder:
        root = Path(folder)
        spec = write_case(case, root)
        result = train(root, spec, case.model, ["train.epochs=1", "train.batch_size=8"])
        check_invariant(result, root, case)


@QUICK
@given(case=data_cases())
def test_bad_data_and_specs_give_a_run_or_one_clean_error(case: DataCase):
    run_data_case(case)


@pytest.mark.slow
@LONG
@given(case=data_cases())
def test_bad_data_and_specs_long(case: DataCase):
    run_data_case(case)


# ----------------------------------------------------------------------------- --set overrides
HOSTILE = ["-1", "0", "0.5", "1e-30", "1e30", "1e400", "-1e400", "nan", "inf", "-inf", "abc", "", "[]", "[0]", "[-5]",
           "[1e9]", "[16385]", "{a: 1}", "true", "null", "99999999999999999999", "[/]", "'3'", "{", "[1,", "cuda",
           "../escape", "a/b"]  # fmt: skip
# settings and values they accept (extremes included), so that hostile values meet valid neighbours
KEYS: dict[str, list[str]] = {
    "train.learning_rate": ["1e-3", "0.1", "10", "1e10"],
    "train.batch_size": ["1", "3", "100000"],
    "train.epochs": ["1", "3"],
    "train.patience": ["1", "5"],
    "train.optimizer": ["adam", "adamw", "adagrad", "sgd"],
    "train.lr_schedule": ["plateau", "cosine", "constant"],
    "train.warmup_steps": ["0", "1", "1000000"],
    "train.grad_clip": ["1e-9", "1", "1e30"],
    "train.min_delta": ["0", "1e30"],
    "train.monitor": ["auc", "logloss", "gauc", "calibration", "brier", "ndcg@10", "train_loss", "click/auc"],
    "train.metrics": ["[auc]", "[logloss]", "[auc, gauc, brier, calibration]", "[]"],
    "train.embedding_l2": ["0", "1e-6", "1e30"],
    "train.weight_l2": ["0", "1e30"],
    "train.lr_decay_factor": ["0.1", "1"],
    "train.min_lr": ["0", "1e30"],
    "train.seed": ["0", "-5", "4294967296"],
    "train.label": ["click", "price", "nope"],
    "train.labels": ["[click]", "[click, click]", "[nope]"],
    "train.task_weights": ["{click: 2}", "{nope: 1}", "{click: -1}"],
    "train.eval_every_steps": ["1", "1000"],
    "train.max_steps_per_epoch": ["1", "1000"],
    "train.checkpoint_every_steps": ["1"],
    "train.log_every": ["1", "1000000"],
    # an invalid regular expression (`match: '['`) is a known crash: see KNOWN_CRASHES
    "train.param_groups": ["[{match: embedding, optimizer: sgd}]", "[{match: '^emb', learning_rate: 1}]", "[{}]"],
    "train.device": ["cpu", "auto"],
    "model_params.embedding_dim": ["1", "4", "4096"],
    "model_params.hidden_units": ["[]", "[8]", "[1, 1]", "[4096]"],
    "model_params.dropout": ["0", "0.99"],
    "model_params.activation": ["relu", "dice", "prelu"],
    "model_params.batch_norm": ["true", "false"],
    "model_params.input_norm": ["none", "batch", "layer"],
    "model_params.input_fields": ["[user]", "[]", "[nope]", "[price]"],
    "model_params.num_cross_layers": ["1", "64"],
    "model_params.low_rank": ["1", "null"],
    "model_params.structure": ["stacked", "parallel"],
    "smoke": ["true", "false"],
    "name": ["run", "x" * 200],
    "model": ["lr", "din", "sasrec"],
    "dataset": ["synthetic-nope"],
    "train.nope": ["1"],
    "model_params.nope": ["1"],
}  # fmt: skip
RAW = ["noequals", "=1", "train.=3", "train..epochs=1", ".=2", "train.epochs", "a.b.c.d=1", "train.epochs.x=1"]
MODELS = ["lr", "fm", "deepfm", "dcnv2", "dnn"]


@st.composite
def override_cases(draw) -> tuple[str, list[str]]:
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=3, unique=True))
    hostile = draw(st.sampled_from([0, 0, 1, 1, 2]))
    overrides = []
    for i, key in enumerate(keys):
        value = draw(st.sampled_from(HOSTILE)) if i < hostile else draw(st.sampled_from(KEYS[key]))
        overrides.append(f"{key}={value}")
    if draw(st.integers(0, 7)) == 0:
        overrides.append(draw(st.sampled_from(RAW)))
    return draw(st.sampled_from(MODELS)), draw(st.permutations(overrides))


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("fuzz-data")
    lines = ["click,user,item,price"] + [f"{i % 2 if i % 5 else 1},u{i % 4},i{i % 6},{i * 0.5}" for i in range(40)]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    (folder / "valid.csv").write_text("\n".join(lines[:21]) + "\n")
    spec = {"name": "tiny", "files": {"train": "train.csv", "valid": "valid.csv"},
            "fields": [{"name": "click", "kind": "label"}, {"name": "user", "kind": "categorical"},
                       {"name": "item", "kind": "categorical"}, {"name": "price", "kind": "numeric", "transform": "log1p"}]}  # fmt: skip
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return str(folder / "spec.yaml")


def run_override_case(spec: str, model: str, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="agenticrs-fuzz-") as folder:
        root = Path(folder)
        result = train(root, spec, model, overrides)
        check_invariant(result, root, (model, overrides))


@QUICK
@given(case=override_cases())
def test_bad_overrides_give_a_run_or_one_clean_error(tiny_spec: str, case: tuple[str, list[str]]):
    run_override_case(tiny_spec, *case)


@pytest.mark.slow
@LONG
@given(case=override_cases())
def test_bad_overrides_long(tiny_spec: str, case: tuple[str, list[str]]):
    run_override_case(tiny_spec, *case)


# reproducers the fuzzer found outside the data and training layers, fixed where they live
KNOWN_CRASHES = [
    pytest.param("lr", ["train.param_groups=[{match: '[', learning_rate: 1}]"], id="param-group-invalid-regex"),
    pytest.param("lr", ["train.seed=99999999999999999999"], id="seed-too-large"),
    pytest.param("lr", ["train.seed=-5"], id="seed-negative"),
]


@pytest.mark.parametrize(("model", "overrides"), KNOWN_CRASHES)
def test_known_crashes(tiny_spec: str, model: str, overrides: list[str]):
    run_override_case(tiny_spec, model, overrides)


def test_the_invariant_catches_a_crash(tmp_path: Path):
    """The checker itself: an unexpected exception (exit 1) and a stray traceback fail it."""

    class Result:
        def __init__(self, code: int, output: str, stderr: str = "") -> None:
            self.exit_code, self.output, self.stderr = code, output, stderr

    with pytest.raises(AssertionError, match="crashed"):
        check_invariant(Result(1, "error: unexpected TypeError"), tmp_path, "case")
    with pytest.raises(AssertionError):
        check_invariant(Result(2, "Traceback (most recent call last):\n", "error: x"), tmp_path, "case")
    with pytest.raises(AssertionError, match="more than error lines"):
        check_invariant(Result(2, "", "Exception in thread\nerror: x"), tmp_path, "case")
    check_invariant(Result(2, "error: bad input", "error: bad input"), tmp_path, "case")
    assert os.listdir(tmp_path) == []
