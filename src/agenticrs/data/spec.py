"""Typed dataset specs: what the columns of a data set mean and how to encode them.

A spec is plain data (pydantic), loadable from YAML, so that a data set is described once and
every layer (encoder, cache, models, agents) reads the same description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agenticrs.data.errors import DataError

FieldKind = Literal["categorical", "numeric", "sequence", "text", "label", "timestamp"]
NumericTransform = Literal["none", "log1p", "standardize", "quantile"]
FileFormat = Literal["csv", "parquet"]
_SPEC_SHAPE = "expected a mapping with name, files and fields"
_MAX_SPEC_BYTES = 16 << 20  # a spec is a few KiB; a bigger file is not one (and is not read into memory)


class FieldSpec(BaseModel):
    """One column of the data and how it becomes model input.

    Numeric values (numeric fields, numeric sequences) must be finite: a cell holding `inf`,
    `-inf` or a number beyond the float64 range (`1e400`) stops processing with a DataError naming
    the file, row and field, as does a value too large for a float32 model input once transformed
    (e.g. `1e39` with transform `none`). A missing cell (empty, or one of the reader's
    `null_values` such as `NaN`) is a missing value, not an error.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: FieldKind
    column: str | None = Field(default=None, description="source column; defaults to `name`")
    # categorical
    min_count: int = Field(default=1, ge=1, description="rarer values map to the OOV index")
    hash_buckets: int | None = Field(default=None, ge=1, description="hash into N buckets instead of a vocab")
    # numeric
    transform: NumericTransform = "none"
    quantile_buckets: int = Field(default=10, ge=2)
    # sequence
    max_len: int = Field(default=50, ge=1, description="keep the most recent max_len elements")
    share_vocab_with: str | None = Field(
        default=None, description="categorical field whose vocab and embedding table this sequence uses"
    )
    target: str | None = Field(
        default=None,
        description="candidate field this sequence is compared with (target attention); "
        "defaults to share_vocab_with",
    )
    parallel_to: str | None = Field(
        default=None,
        description="main sequence this one runs alongside, element by element (hist_cate_id -> hist_item_id)",
    )
    element: Literal["categorical", "numeric"] = Field(
        default="categorical", description="numeric for timestamp sequences"
    )
    list_delimiter: str | None = Field(default=None, description="in-cell delimiter; defaults to the reader's")
    embedding_dim: int | None = None
    # label
    optional: bool = Field(
        default=False,
        description="label: a missing value stays missing (NaN; e.g. a conversion label that exists only for "
        "clicked rows) and is left out of that label's loss and metrics; otherwise a missing label is an error",
    )

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def paired_target(self) -> str | None:
        return self.target or self.share_vocab_with


class ReaderOptions(BaseModel):
    """How the raw files are laid out."""

    model_config = ConfigDict(extra="forbid")

    format: FileFormat = "csv"
    delimiter: str = ","
    header: bool = True
    column_names: list[str] | None = Field(default=None, description="names when the file has no header")
    list_delimiter: str = "|"
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "NaN", "nan", "NULL", "null", "\\N"])
    block_size: int = Field(default=4 << 20, ge=1, lt=1 << 31, description="bytes per streamed chunk (Arrow: an int32)")


class DatasetSpec(BaseModel):
    """A data set: its files per split, their layout, and the meaning of each column."""

    model_config = ConfigDict(extra="forbid")

    name: str
    files: dict[str, list[str]] = Field(description="split name -> files; 'train' is required")
    reader: ReaderOptions = Field(default_factory=ReaderOptions)
    fields: list[FieldSpec]
    group_key: str | None = Field(default=None, description="column grouping impressions for GAUC (a user)")
    request_key: str | None = Field(
        default=None,
        description="column identifying the request an impression belongs to (its candidates are contiguous rows)",
    )
    request_fields: list[str] = Field(
        default_factory=list,
        description="fields constant within a request (user and context): request-centric models compute them once",
    )
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _files_as_lists(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            data = dict(data)
            data["files"] = {k: [v] if isinstance(v, (str, Path)) else list(v) for k, v in data["files"].items()}
            data["files"] = {k: [str(p) for p in v] for k, v in data["files"].items()}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> DatasetSpec:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names {dupes}")
        if "train" not in self.files:
            raise ValueError(f"files must name a 'train' split; got splits {sorted(self.files)}")
        if not self.labels:
            raise ValueError("at least one field of kind 'label' is required")
        by_name = {f.name: f for f in self.fields}
        unknown = [n for n in self.request_fields if n not in by_name]
        if unknown:
            raise ValueError(f"request_fields name unknown field(s) {unknown}")
        if self.request_fields and self.request_key is None:
            raise ValueError("request_fields need a request_key naming the request column")
        for f in self.fields:
            if f.kind != "sequence":
                continue
            for ref in (f.share_vocab_with, f.target):
                if ref is None:
                    continue
                if ref not in by_name:
                    raise ValueError(f"sequence field '{f.name}' refers to unknown field '{ref}'")
                if by_name[ref].kind != "categorical":
                    raise ValueError(
                        f"sequence field '{f.name}' refers to '{ref}' of kind '{by_name[ref].kind}' "
                        "(expected a categorical field)"
                    )
            if f.parallel_to is not None and (
                f.parallel_to not in by_name or by_name[f.parallel_to].kind != "sequence"
            ):
                raise ValueError(f"sequence field '{f.name}' is parallel to '{f.parallel_to}', which is not a sequence field")
            if f.element == "numeric" and f.share_vocab_with:
                raise ValueError(f"numeric sequence '{f.name}' cannot share a vocab")
        return self

    # --- views -------------------------------------------------------------------------
    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def of_kind(self, *kinds: str) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind in kinds]

    @property
    def labels(self) -> list[FieldSpec]:
        return self.of_kind("label")

    @property
    def source_columns(self) -> list[str]:
        cols = [f.source for f in self.fields]
        for key in (self.group_key, self.request_key):
            if key:
                cols.append(self.key_column(key))
        return list(dict.fromkeys(cols))

    def key_column(self, key: str) -> str:
        """Source column of a group/request key (a field name or a raw column)."""
        named = next((f for f in self.fields if f.name == key), None)
        return named.source if named else key

    def resolve_paths(self, base: Path) -> DatasetSpec:
        """Relative file paths are taken relative to `base` (the YAML file's folder)."""
        files = {
            split: [str(p if Path(p).is_absolute() else (base / p)) for p in paths]
            for split, paths in self.files.items()
        }
        return self.model_copy(update={"files": files})

    # --- YAML ----------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetSpec:
        """A spec from its YAML file (relative data paths resolved against the file's folder).

        Errors never quote the file: a path that is not a dataset spec (`../../etc/passwd`, a data
        file, a binary) is reported as such, with the YAML line and column at most.
        """
        path = Path(path)
        not_a_spec = f"not a valid dataset spec YAML ({_SPEC_SHAPE})"
        try:
            if path.is_dir():
                raise DataError("is a folder, not a dataset spec YAML file", file=str(path))
            with path.open("rb") as handle:  # bounded: a device or a huge file is never read whole
                data = handle.read(_MAX_SPEC_BYTES + 1)
            if len(data) > _MAX_SPEC_BYTES:
                raise DataError(f"{not_a_spec}: the file is larger than {_MAX_SPEC_BYTES >> 20} MiB", file=str(path))
            raw = yaml.safe_load(data.decode("utf-8"))
        except FileNotFoundError:
            raise DataError("dataset spec not found", file=str(path)) from None
        except UnicodeDecodeError:
            raise DataError(f"{not_a_spec}: the file is not UTF-8 text", file=str(path)) from None
        except OSError as exc:
            raise DataError(f"cannot read the dataset spec: {exc.strerror or type(exc).__name__}", file=str(path)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "unparseable"
            raise DataError(f"not valid YAML{where}: {problem}", file=str(path)) from None
        if not isinstance(raw, dict) or not ({"name", "files", "fields"} & set(map(str, raw))):
            # echo nothing of a file that is not a spec (its keys or lines may be anyone's data)
            raise DataError(not_a_spec, file=str(path))
        return cls.from_dict(raw, source=str(path)).resolve_paths(path.parent)

    @classmethod
    def from_dict(cls, raw: object, source: str = "<dict>") -> DatasetSpec:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = first.get("loc", ())
            field_name = None
            if len(loc) >= 2 and loc[0] == "fields" and isinstance(raw, dict):
                try:
                    field_name = raw["fields"][loc[1]].get("name")
                except (IndexError, KeyError, TypeError, AttributeError):
                    field_name = None
            where = ".".join(str(p) for p in loc)
            raise DataError(
                f"invalid dataset spec at '{where}': {first['msg']}"
                + (f" ({len(exc.errors())} problems in all)" if len(exc.errors()) > 1 else ""),
                file=source,
                field=field_name,
            ) from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text
