"""From a paper's abstract to a method card (and optionally a model module), through any
OpenAI-compatible chat-completions endpoint.

Why this shape: the LLM's answer is a *proposal*. The card is parsed as JSON data and validated
like any card (unknown models, data sets or settings refused with the field named); the module is
text written to a file that this process never imports: it is vetted in the sandbox (audit hook,
rlimits, scratch directory) against the zoo's model contract before a reproduction may train it,
and a reproduction trains it in the sandbox too. Every failure (an unreachable endpoint, an
answer without a card, an invalid card, a module that fails its contract or is blocked) is a
lesson in the knowledge layer, with the module's SHA-256 when there is one, so the next attempt
reads what went wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from agenticrs.agents.knowledge.store import KnowledgeStore
from agenticrs.agents.paper.card import CardError, MethodCard, parse_card
from agenticrs.agents.paper.sandbox import SandboxLimits, SandboxResult, run_sandboxed
from agenticrs.agents.proposers.llm import LLMSettings, extract_json_object

_PYTHON = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL)
CONTRACT_DATASET = "synthetic-tiny"  # small, with a behaviour history: every CTR model's inputs

SYSTEM_PROMPT = """\
You turn the abstract of a recommender-systems paper into a METHOD CARD for agenticrs: what the method
claims and how to check it against baselines on our data sets. Answer with one JSON object (in a ```json
block) that validates against the MethodCard JSON schema below. Use only these registered CTR models for
baselines (and for the method, if it is one of them): {models}. Use only these data sets: {datasets}.
{code_rules}
MethodCard JSON schema:
{schema}
"""

CODE_RULES = """\
The method is new, so also write its model as ONE Python module in a ```python block: a subclass of
agenticrs.models.base.Model registered with @register("<the card's model.name>"), a config class deriving
from agenticrs.models.base.ModelConfig, field embeddings from agenticrs.models.layers.FeatureEmbedding
(`FeatureEmbedding(schema, dim=config.embedding_dim)(batch).fields` is (B, F, d)), and forward(batch)
returning {"logit": tensor of shape (B,)}. The module only builds a torch model: no files, no network,
no processes. It must pass the model contract: gradients reach every parameter, save/load round-trips,
a row's eval prediction does not depend on the other rows. Set the card's model.code to "<name>.py".
"""


@dataclass
class DraftResult:
    """What came of one abstract: a validated card (or not), the module and its sandbox verdict."""

    status: str  # ready | invalid | blocked | failed | unreachable
    reason: str = ""
    card: MethodCard | None = None
    card_path: Path | None = None
    code_path: Path | None = None
    code_sha256: str | None = None
    sandbox: SandboxResult | None = None
    seconds: float = 0.0
    lessons: list[str] = field(default_factory=list)


def _chat(settings: LLMSettings, messages: list[dict[str, str]]) -> str:
    headers = {"Content-Type": "application/json"}
    if settings.api_key is not None and settings.api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    body = {"model": settings.model, "messages": messages, "temperature": settings.temperature}
    response = httpx.post(settings.base_url.rstrip("/") + "/chat/completions", json=body, headers=headers,
                          timeout=settings.timeout_s)  # fmt: skip
    response.raise_for_status()
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError("the response has no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ValueError("choices[0].message.content is not text")  # noqa: TRY004
    return content


def messages_for(abstract: str, with_code: bool) -> list[dict[str, str]]:
    from agenticrs.data.registry import DATASETS
    from agenticrs.models.base import list_models

    system = SYSTEM_PROMPT.format(models=", ".join(list_models()), datasets=", ".join(DATASETS.names()),
                                  code_rules=CODE_RULES if with_code else "",
                                  schema=json.dumps(MethodCard.model_json_schema()))  # fmt: skip
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Abstract:\n{abstract.strip()}\n"}]


def vet_module(
    module: Path, model: str, scratch: Path, cache_dir: Path | None = None, limits: SandboxLimits | None = None,
    dataset: str = CONTRACT_DATASET,
) -> SandboxResult:  # fmt: skip
    """The model contract of a generated module, in the sandbox (nothing trains)."""
    config = {"dataset": dataset, "model": model, "train": {"seed": 0, "batch_size": 256}}
    return run_sandboxed(module, model, config, scratch, mode="contract", cache_dir=cache_dir, limits=limits)


def draft_method(
    abstract: str,
    settings: LLMSettings,
    out_dir: str | Path,
    store: KnowledgeStore,
    with_code: bool = True,
    cache_dir: str | Path | None = None,
    limits: SandboxLimits | None = None,
) -> DraftResult:
    """Ask the endpoint for a card (and a module), validate, vet the module; record the outcome."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DraftResult(status="invalid")

    def fail(status: str, reason: str, scope: str = "draft") -> DraftResult:
        result.status, result.reason = status, reason
        text = f"LLM draft ({settings.model}): {reason}"
        if result.code_sha256:
            text += f" [module sha256 {result.code_sha256[:12]}]"
        result.lessons.append(text)
        with store.transaction() as tx:
            tx.add_lesson(scope, text)
        result.seconds = time.perf_counter() - started
        return result

    try:
        answer = _chat(settings, messages_for(abstract, with_code))
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return fail("unreachable", f"no answer from {settings.base_url}: {type(exc).__name__}: {exc}"[:500])
    raw = extract_json_object(answer)
    if raw is None:
        return fail("invalid", "the answer holds no JSON method card")
    code = next(iter(_PYTHON.findall(answer)), None) if with_code else None
    model_section = raw.get("model") if isinstance(raw.get("model"), dict) else None
    if code is not None and model_section is not None and isinstance(model_section.get("name"), str):
        name = re.sub(r"[^a-z0-9_]", "_", model_section["name"].lower())[:60] or "generated"
        result.code_path = out_dir / f"{name}.py"
        result.code_path.write_text(code)  # written as text, never imported here
        result.code_sha256 = hashlib.sha256(code.encode()).hexdigest()
        model_section["code"] = result.code_path.name
    try:
        card = parse_card(raw, "LLM draft", out_dir)
    except CardError as exc:
        return fail("invalid", f"the drafted card is invalid: {exc}")
    result.card = card
    result.card_path = out_dir / f"{card.name}.yaml"
    card_data = card.model_dump(mode="json")
    if card.model.code is not None:
        card_data["model"]["code"] = Path(card.model.code).name  # relative to the card's folder
    result.card_path.write_text(yaml.safe_dump(card_data, sort_keys=False))
    if card.model.code is not None:
        assert result.code_path is not None
        scratch = out_dir / "sandbox" / f"{card.model.name}-contract"
        result.sandbox = vet_module(result.code_path, card.model.name, scratch, Path(cache_dir) if cache_dir else None, limits)
        with store.transaction() as tx:
            tx.add_artifact("generated_code", str(result.code_path.resolve()), sha256=result.code_sha256,
                            size_bytes=len(code or ""),
                            details={"model": card.model.name, "status": result.sandbox.status,
                                     "violations": result.sandbox.violations, "contract": result.sandbox.contract})  # fmt: skip
        if result.sandbox.status == "blocked":
            return fail("blocked", result.sandbox.summary(), scope="sandbox")
        if not result.sandbox.ok:
            return fail("failed", result.sandbox.summary(), scope="sandbox")
    result.status, result.reason = "ready", "card valid" + (", module passed the contract" if card.model.code else "")
    result.seconds = time.perf_counter() - started
    return result


def scripted_answer(card: dict[str, Any], code: str | None = None) -> str:
    """An answer as an endpoint would give it (used by tests and the benchmark's fake endpoint)."""
    text = "Here is the method card:\n```json\n" + json.dumps(card, indent=2) + "\n```\n"
    return text + (f"\nAnd the model:\n```python\n{code}```\n" if code else "")
