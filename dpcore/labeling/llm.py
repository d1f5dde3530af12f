"""An LLM teacher: a JSON prompt over the label set, strict validation, one bounded repair, abstention.

For each report the model is asked for one JSON object whose keys are exactly the label names and
whose values are ``positive`` / ``negative`` / ``uncertain`` / ``absent``. A reply that is not
exactly that (not JSON, truncated, empty, wrong keys, wrong values) gets at most ``max_repairs``
repair prompts that quote the error; if it still fails the teacher *abstains* (``None``), and the
reason is counted in :attr:`LLMTeacher.stats` -- a failure is never silently turned into 0.

Any object with ``model_id``, ``is_loopback`` and ``complete(messages, *, max_tokens)`` is a
backend (see :mod:`dpcore.labeling.backends`).

>>> class Echo:
...     model_id, is_loopback = "echo", True
...     def complete(self, messages, *, max_tokens):
...         return '{"Cardiomegaly": "positive"}'
>>> from dpcore.labels import CHEXPERT
>>> parse_reply('{"Edema": "uncertain"}', label_set=CHEXPERT)
Traceback (most recent call last):
...
dpcore.labeling.llm.ReplyError: missing keys: No Finding, Enlarged Cardiomediastinum, ...
>>> t = LLMTeacher(backend=Echo())
>>> t.label_texts(["Cardiomegaly."]), t.stats["abstained"]
([None], 1)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from dpcore.labeling.base import LabelVector
from dpcore.labels import LabelSet, get_label_set

log = logging.getLogger(__name__)

PROMPT_VERSION = "json-v1"
VALUES: dict[str, int | None] = {"positive": 1, "negative": 0, "uncertain": -1, "absent": None}

SYSTEM_PROMPT = (
    "You label radiology reports. Read the findings and answer with ONE JSON object and nothing "
    "else. Use exactly these keys: {keys}. Each value must be one of "
    '"positive", "negative", "uncertain", "absent": positive = the finding is present, '
    "negative = the report says it is absent, uncertain = the report hedges (possible, cannot be "
    "excluded, may represent), absent = the report does not mention it."
)
USER_PROMPT = "Findings:\n{text}\n\nJSON:"
REPAIR_PROMPT = (
    "Your answer was invalid: {error}. Answer again with ONE JSON object with exactly the keys "
    "{keys} and values positive/negative/uncertain/absent, nothing else."
)


class ReplyError(ValueError):
    """A model reply that does not follow the schema; the message says what is wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@runtime_checkable
class ChatBackend(Protocol):
    """Something that completes a chat; ``is_loopback`` says whether text stays on this machine."""

    model_id: str
    is_loopback: bool

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        """The assistant's reply text to ``messages``."""
        ...


class CredentialedDataError(PermissionError):
    """Refusal to send text of a credentialed data source to a non-loopback endpoint."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)


def parse_reply(reply: str, *, label_set: LabelSet) -> LabelVector:
    """The label vector in ``reply``, or :class:`ReplyError` (kinds: empty, not_json, truncated,
    not_object, missing_keys, unexpected_keys, bad_values).

    Code fences and text around the one JSON object are tolerated; the object itself is strict.

    >>> from dpcore.labels import CTRATE
    >>> body = {lab: "absent" for lab in CTRATE.labels} | {"Emphysema": "Positive"}
    >>> parse_reply("```json\\n" + json.dumps(body) + "\\n```", label_set=CTRATE)[7]
    1
    >>> parse_reply('{"Emphysema": "pos', label_set=CTRATE)
    Traceback (most recent call last):
    ...
    dpcore.labeling.llm.ReplyError: truncated JSON (no closing brace)
    """
    text = _FENCE.sub("", reply or "").strip()
    if not text:
        raise ReplyError("empty", "empty reply")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if whole is not None and not isinstance(whole, dict):
        raise ReplyError("not_object", "the JSON is not an object")
    start = text.find("{")
    if start < 0:
        raise ReplyError("not_json", "no JSON object in the reply")
    end = text.rfind("}")
    if end < start:
        raise ReplyError("truncated", "truncated JSON (no closing brace)")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ReplyError("not_json", f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ReplyError("not_object", "the JSON is not an object")
    expected = list(label_set.labels)
    missing = [k for k in expected if k not in obj]
    unexpected = [k for k in obj if k not in expected]
    if unexpected:
        raise ReplyError("unexpected_keys", f"unexpected keys: {', '.join(map(str, unexpected))}")
    if missing:
        raise ReplyError("missing_keys", f"missing keys: {', '.join(missing)}")
    bad = [k for k in expected if not isinstance(obj[k], str) or obj[k].strip().lower() not in VALUES]
    if bad:
        shown = ", ".join(f"{k}={obj[k]!r}" for k in bad[:5])
        raise ReplyError("bad_values", f"values must be positive/negative/uncertain/absent, got {shown}")
    return [VALUES[obj[k].strip().lower()] for k in expected]


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1 or localhost); names are not resolved.

    >>> is_loopback_url("http://127.0.0.1:8000/v1"), is_loopback_url("https://api.example.com/v1")
    (True, False)
    """

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it could resolve anywhere


def check_endpoint(*, is_loopback: bool, credentialed: bool | None, allow_credentialed: bool) -> None:
    """Refuse (with the reason) to send credentialed text off this machine without an opt-in.

    ``credentialed=None`` (source unknown) is treated as credentialed.

    >>> check_endpoint(is_loopback=False, credentialed=False, allow_credentialed=False)
    >>> check_endpoint(is_loopback=False, credentialed=True, allow_credentialed=False)
    Traceback (most recent call last):
    ...
    dpcore.labeling.llm.CredentialedDataError: refusing to send report text ...
    """
    if is_loopback or allow_credentialed or credentialed is False:
        return
    what = "a credentialed data source" if credentialed else "a data source of unknown licence"
    raise CredentialedDataError(
        f"refusing to send report text of {what} (e.g. MIMIC-CXR, CT-RATE) to a non-loopback endpoint: "
        "their data use agreements forbid sharing the text. Use a model on this machine "
        "(127.0.0.1 / localhost / a local transformers model), declare credentialed=False for "
        "public data, or opt in explicitly with allow_credentialed_remote=True."
    )


class LLMTeacher:
    """A teacher backed by a chat model (local transformers or an OpenAI-compatible endpoint).

    ``version`` is the prompt version plus the backend's model id (the cache key). ``stats``
    counts ``ok``, ``repaired``, ``abstained`` and each reply error kind.
    """

    def __init__(
        self,
        *,
        backend: ChatBackend,
        label_set: str = "chexpert",
        max_repairs: int = 1,
        max_tokens: int = 400,
        credentialed: bool | None = None,
        allow_credentialed_remote: bool = False,
    ) -> None:
        if max_repairs < 0:
            raise ValueError("max_repairs must be >= 0")
        self.backend = backend
        self.label_set: LabelSet = get_label_set(label_set)
        self.name = f"llm-{self.label_set.name}"
        self.version = f"{PROMPT_VERSION}:{backend.model_id}"
        self.max_repairs = max_repairs
        self.max_tokens = max_tokens
        self.credentialed = credentialed
        self.allow_credentialed_remote = allow_credentialed_remote
        self.stats: Counter[str] = Counter()
        keys = ", ".join(json.dumps(k) for k in self.label_set.labels)
        self._keys = keys
        self._system = SYSTEM_PROMPT.format(keys=keys)

    def __repr__(self) -> str:
        return f"LLMTeacher(label_set={self.label_set.name!r}, version={self.version!r})"

    def check_source(self, *, credentialed: bool) -> None:
        """Declare the data source; raises :class:`CredentialedDataError` if it may not be sent."""
        check_endpoint(
            is_loopback=self.backend.is_loopback,
            credentialed=credentialed,
            allow_credentialed=self.allow_credentialed_remote,
        )
        self.credentialed = credentialed

    def messages(self, text: str) -> list[dict[str, str]]:
        """The first prompt for one report."""
        return [
            {"role": "system", "content": self._system},
            {"role": "user", "content": USER_PROMPT.format(text=text)},
        ]

    def label_texts(self, texts: Sequence[str]) -> list[LabelVector | None]:
        """One vector per text, ``None`` where the model failed the schema after the repairs."""
        check_endpoint(
            is_loopback=self.backend.is_loopback,
            credentialed=self.credentialed,
            allow_credentialed=self.allow_credentialed_remote,
        )
        return [self._label_one(t) for t in texts]

    def _label_one(self, text: str) -> LabelVector | None:
        msgs = self.messages(text)
        for attempt in range(self.max_repairs + 1):
            try:
                reply = self.backend.complete(msgs, max_tokens=self.max_tokens)
            except Exception as exc:  # a transport failure is an abstention, never a label
                self.stats["backend_error"] += 1
                log.warning("LLM backend failed: %s", exc)
                break
            try:
                vector = parse_reply(reply, label_set=self.label_set)
            except ReplyError as err:
                self.stats[err.kind] += 1
                msgs = [
                    *msgs,
                    {"role": "assistant", "content": reply or ""},
                    {"role": "user", "content": REPAIR_PROMPT.format(error=err, keys=self._keys)},
                ]
                continue
            self.stats["repaired" if attempt else "ok"] += 1
            return vector
        self.stats["abstained"] += 1
        return None
