"""An LLM proposer over any OpenAI-compatible chat-completions endpoint.

The model is told the task, the Candidate JSON schema and the search space, and is shown the
incumbent, the history of the intent and the lessons so far; it answers with one candidate as a
JSON object. The answer is only ever *parsed as JSON data* (never executed or evaluated), then
validated against the Candidate schema, the space bounds and the data set, and checked for
novelty. Whatever goes wrong (the request, the parse, the validation) comes back as a lesson,
never as an exception, so a misbehaving endpoint costs a round, not the search.

Settings: ``LLMSettings`` (base URL, model, API key, timeout, temperature), given directly or read
from ``AGENTICRS_LLM_BASE_URL``, ``AGENTICRS_LLM_MODEL`` and ``AGENTICRS_LLM_API_KEY`` (falling
back to ``OPENAI_API_KEY``; the environment is the recommended route for the key). The key is a
``SecretStr``: it reaches the ``Authorization`` header and nothing else (not a repr, a dump, an
error message or a lesson).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.proposers.base import (
    HistoryEntry,
    Proposal,
    ProposalContext,
    ProposalOutcome,
)
from agenticrs.agents.proposers.builtin import candidate_problems, seen_reason

ENV_BASE_URL = "AGENTICRS_LLM_BASE_URL"
ENV_MODEL = "AGENTICRS_LLM_MODEL"
ENV_API_KEY = "AGENTICRS_LLM_API_KEY"
ENV_API_KEY_FALLBACK = "OPENAI_API_KEY"
HISTORY_LINES = 30
LESSON_LINES = 20
ANSWER_EXCERPT = 200

SYSTEM_PROMPT = """\
You are the proposer of an architecture search for click-through-rate (CTR) prediction models.
Each round you see the incumbent configuration, the search space, the history of earlier candidates
(with their predicted ensemble Brier gain `improvement` = G_acc + G_div + shift, positive is better,
and the reason they were accepted or rejected) and lessons learnt so far. Propose exactly ONE new
candidate configuration that you expect to improve on the incumbent: a candidate is accepted when it
lowers the predicted error of an ensemble of its learners, through better accuracy (G_acc) and/or
more diversity between learners (G_div, e.g. feature bagging or a different model family).

Rules:
- Answer with a single JSON object that validates against the Candidate JSON schema below; you may
  add one extra key "rationale" (a short string) explaining the change. No other keys.
- Stay inside the search space below (models, embedding sizes, widths and depth, dropout, learning
  rate, feature-bagging rate, input fields; fields in "always_kept" must not be dropped).
- Do not repeat a configuration of the history or the incumbent itself.
- Knobs a model does not have are ignored; `model_params` holds other hyper-parameters of the
  chosen model only (usually leave it empty).

Candidate JSON schema:
{schema}

Search space:
{space}
"""


class LLMSettings(BaseModel):
    """Where and how to reach the chat-completions endpoint."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="OpenAI-compatible API root, e.g. https://api.openai.com/v1")
    model: str
    api_key: SecretStr | None = Field(default=None, exclude=True, description="never printed, stored or reported")
    timeout_s: float = Field(default=60.0, gt=0)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @classmethod
    def resolve(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        environ: dict[str, str] | None = None,
    ) -> LLMSettings:
        """Explicit values first, then the environment; a clear error when base_url/model are missing."""
        env = os.environ if environ is None else environ
        if isinstance(api_key, SecretStr):
            api_key = api_key.get_secret_value()
        base_url = base_url or env.get(ENV_BASE_URL) or None
        model = model or env.get(ENV_MODEL) or None
        api_key = api_key or env.get(ENV_API_KEY) or env.get(ENV_API_KEY_FALLBACK) or None
        missing = [f"{name} (set {var})" for name, var, value in
                   (("base_url", ENV_BASE_URL, base_url), ("model", ENV_MODEL, model)) if not value]
        if missing:
            raise ValueError(
                "the LLM proposer needs " + " and ".join(missing) + f"; the API key is read from {ENV_API_KEY} "
                f"or {ENV_API_KEY_FALLBACK}"
            )
        return cls(base_url=base_url, model=model, api_key=api_key, timeout_s=timeout_s, temperature=temperature)


# ---------------------------------------------------------------------------------------------
# answer parsing (JSON data only)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The candidate object of an answer: the whole text, a ```json block, or the first {...}."""
    stripped = text.strip()
    try:
        value = json.loads(stripped)
        if isinstance(value, dict):
            return value
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            value = json.loads(block.strip())
            if isinstance(value, dict):
                return value
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _validation_summary(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "candidate"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)[:60]})"
        parts.append(f"{loc}: {err['msg']}{shown}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}g}"


def history_line(entry: HistoryEntry) -> str:
    try:
        summary = entry.candidate.describe()
    except (KeyError, ValueError):  # a model no longer registered: show the raw name
        summary = entry.candidate.model
    reason = f" | {entry.reason}" if entry.reason else ""
    return (
        f"- {summary} | {entry.status} | improvement {_fmt(entry.improvement)} | "
        f"G_acc {_fmt(entry.gain_accuracy)} | G_div {_fmt(entry.gain_diversity)}{reason}"
    )


class LLMProposer:
    """Asks a chat-completions endpoint for one candidate; everything it says is data."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        name: str = "llm",
        settings: LLMSettings | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or LLMSettings.resolve(base_url, model, api_key, timeout_s, temperature)

    # -- the prompt --------------------------------------------------------------------------------
    def messages(self, context: ProposalContext) -> list[dict[str, str]]:
        system = SYSTEM_PROMPT.format(
            schema=json.dumps(Candidate.model_json_schema(), indent=1),
            space=json.dumps(context.space.describe(context.schema), indent=1),
        )
        incumbent = json.dumps(context.incumbent.canonical().model_dump(mode="json"), sort_keys=True)
        history = [history_line(e) for e in context.history[-HISTORY_LINES:]]
        lessons = [f"- {lesson}" for lesson in context.lessons[-LESSON_LINES:]]
        user = "\n".join(
            [
                f"Round {context.round}. Incumbent ({context.incumbent.describe()}):",
                "```json",
                incumbent,
                "```",
                "",
                f"History (most recent {len(history)} of {len(context.history)}, oldest first):",
                *(history or ["- (none yet)"]),
                "",
                f"Lessons (most recent {len(lessons)} of {len(context.lessons)}):",
                *(lessons or ["- (none yet)"]),
                "",
                (
                    "Propose exactly one new candidate as a single JSON object (the Candidate schema, "
                    'plus an optional "rationale" string).'
                ),
            ]
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def request_seed(self, context: ProposalContext) -> int:
        return int(np.random.SeedSequence([context.seed, context.round]).generate_state(1)[0] & 0x7FFFFFFF)

    def complete(self, context: ProposalContext) -> str:
        """POST the chat-completions request; the answer text. Raises httpx errors or ValueError."""
        s = self.settings
        body = {
            "model": s.model,
            "messages": self.messages(context),
            "temperature": s.temperature,
            "seed": self.request_seed(context),
        }
        headers = {"Content-Type": "application/json"}
        if s.api_key is not None and s.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {s.api_key.get_secret_value()}"
        url = s.base_url.rstrip("/") + "/chat/completions"
        response = httpx.post(url, json=body, headers=headers, timeout=s.timeout_s)
        response.raise_for_status()
        data = response.json()
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError("the response has no choices[0].message.content") from None
        if not isinstance(content, str):
            raise ValueError("choices[0].message.content is not text")  # noqa: TRY004 - one error kind for callers
        return content

    # -- the proposal ------------------------------------------------------------------------------
    def propose(self, context: ProposalContext) -> ProposalOutcome:
        url = self.settings.base_url.rstrip("/") + "/chat/completions"
        try:
            content = self.complete(context)
        except httpx.TimeoutException:
            return self._fail(f"LLM request to {url} timed out after {self.settings.timeout_s:g} s")
        except httpx.HTTPStatusError as exc:
            detail = exc.response.text[:ANSWER_EXCERPT].strip()
            return self._fail(self.redact(f"LLM request to {url} failed: HTTP {exc.response.status_code} {detail}".rstrip()))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return self._fail(self.redact(f"LLM request to {url} failed: {type(exc).__name__}: {exc}"))
        except ValueError as exc:  # not JSON, or not the chat-completions shape
            return self._fail(self.redact(f"LLM response from {url} unusable: {exc}"))
        return self.parse_answer(content, context)

    def redact(self, text: str) -> str:
        """`text` without the API key (an error that quotes a header must not carry it into a lesson)."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else ""
        return text.replace(key, "**********") if key else text

    def parse_answer(self, content: str, context: ProposalContext) -> ProposalOutcome:
        raw = extract_json_object(content)
        if raw is None:
            excerpt = " ".join(content.split())[:ANSWER_EXCERPT]
            return self._discard(f"no JSON object in the answer ('{excerpt}')")
        if set(raw) <= {"candidate", "rationale"} and isinstance(raw.get("candidate"), dict):
            raw = {**raw["candidate"], **({"rationale": raw["rationale"]} if "rationale" in raw else {})}
        rationale = raw.pop("rationale", None)
        if not isinstance(rationale, str) or not rationale.strip():
            rationale = "llm proposal"
        try:
            candidate = Candidate.model_validate(raw)
            candidate.model_knobs()  # model_params are checked by the model's own Config
        except ValidationError as exc:
            return self._discard(f"does not fit the Candidate schema: {_validation_summary(exc)}")
        except (KeyError, ValueError) as exc:
            return self._discard(f"does not fit the Candidate schema: {exc}")
        problems = candidate_problems(candidate, context.space, context.schema)
        if problems:
            return self._discard("; ".join(problems))
        config_hash = candidate.config_hash()
        if config_hash in context.seen_hashes:
            return self._discard(
                f"{candidate.describe()} (hash {config_hash}) is not new: {seen_reason(context, config_hash)}"
            )
        return ProposalOutcome(Proposal(candidate.canonical(), "llm", rationale.strip()))

    @staticmethod
    def _discard(what: str) -> ProposalOutcome:
        return ProposalOutcome(None, [f"LLM answer discarded: {what}"])

    @staticmethod
    def _fail(what: str) -> ProposalOutcome:
        return ProposalOutcome(None, [what])


__all__ = ["LLMProposer", "LLMSettings", "extract_json_object"]
