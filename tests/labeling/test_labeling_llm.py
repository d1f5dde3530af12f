"""LLM teacher: schema validation, bounded repair, abstention, HTTP backend, endpoint protection."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest

from dpcore.labeling import CredentialedDataError, LabelCache, LLMTeacher, label_dataset_with_stats
from dpcore.labeling.backends import OpenAIBackend
from dpcore.labeling.llm import ReplyError, parse_reply
from dpcore.labels import CHEXPERT

GOOD = {lab: "absent" for lab in CHEXPERT.labels} | {"Cardiomegaly": "positive", "Edema": "uncertain"}
GOOD_JSON = json.dumps(GOOD)


class ScriptedBackend:
    """Replies from a script, in order; records the prompts it saw."""

    model_id = "scripted"

    def __init__(self, replies: list[str], *, is_loopback: bool = True) -> None:
        self.replies = list(replies)
        self.is_loopback = is_loopback
        self.seen: list[list[dict[str, str]]] = []

    def complete(self, messages, *, max_tokens):
        self.seen.append(messages)
        return self.replies.pop(0)


MALFORMED = {
    "not_json": "Cardiomegaly: positive",
    "truncated": GOOD_JSON[:40],
    "empty": "",
    "missing_keys": json.dumps({"Cardiomegaly": "positive"}),
    "unexpected_keys": json.dumps(GOOD | {"Pneumomediastinum": "absent"}),
    "bad_values": json.dumps(GOOD | {"Edema": "maybe"}),
    "not_object": json.dumps(list(GOOD)),
}


def test_parse_good_reply_with_fence_and_chatter() -> None:
    vec = parse_reply("Sure!\n```json\n" + GOOD_JSON + "\n```", label_set=CHEXPERT)
    assert vec[CHEXPERT.index("Cardiomegaly")] == 1
    assert vec[CHEXPERT.index("Edema")] == -1
    assert vec[CHEXPERT.index("Fracture")] is None


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_each_malformed_reply_is_named(kind: str) -> None:
    with pytest.raises(ReplyError) as err:
        parse_reply(MALFORMED[kind], label_set=CHEXPERT)
    assert err.value.kind == kind


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_then_repaired(kind: str) -> None:
    backend = ScriptedBackend([MALFORMED[kind], GOOD_JSON])
    teacher = LLMTeacher(backend=backend)
    out = teacher.label_texts(["Cardiomegaly. Possible edema."])
    assert out[0][CHEXPERT.index("Cardiomegaly")] == 1
    assert teacher.stats[kind] == 1 and teacher.stats["repaired"] == 1
    repair = backend.seen[1][-1]["content"]
    assert "invalid" in repair  # the repair prompt quotes the error
    assert backend.seen[1][-2] == {"role": "assistant", "content": MALFORMED[kind]}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_twice_abstains_never_zero(kind: str) -> None:
    backend = ScriptedBackend([MALFORMED[kind], MALFORMED[kind]])
    teacher = LLMTeacher(backend=backend, max_repairs=1)
    assert teacher.label_texts(["x"]) == [None]
    assert teacher.stats["abstained"] == 1 and teacher.stats[kind] == 2
    assert not backend.replies  # bounded: exactly 1 + max_repairs calls


def test_backend_failure_is_an_abstention() -> None:
    class Broken:
        model_id, is_loopback = "broken", True

        def complete(self, messages, *, max_tokens):
            raise ConnectionError("down")

    teacher = LLMTeacher(backend=Broken())
    assert teacher.label_texts(["a", "b"]) == [None, None]
    assert teacher.stats["backend_error"] == 2 and teacher.stats["abstained"] == 2


def test_version_names_prompt_and_model() -> None:
    teacher = LLMTeacher(backend=ScriptedBackend([]), label_set="ctrate")
    assert teacher.version.endswith(":scripted") and teacher.name == "llm-ctrate"
    assert all(f'"{lab}"' in teacher.messages("x")[0]["content"] for lab in teacher.label_set.labels)


# --- a tiny OpenAI-compatible server on 127.0.0.1 ------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.server.requests.append((self.path, body))
        reply = self.server.replies.pop(0) if self.server.replies else GOOD_JSON
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.replies = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_http_backend_against_loopback_server(server) -> None:
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="tiny", timeout=5)
    assert backend.is_loopback
    server.replies = ["not json at all", GOOD_JSON]
    teacher = LLMTeacher(backend=backend, credentialed=True)  # loopback: credentialed text is fine
    out = teacher.label_texts(["Cardiomegaly."])
    assert out[0][CHEXPERT.index("Cardiomegaly")] == 1
    assert len(server.requests) == 2
    path, body = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny" and body["temperature"] == 0
    assert body["messages"][1]["content"].startswith("Findings:\nCardiomegaly.")


def test_http_backend_through_label_dataset_and_cache(server, tmp_path) -> None:
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="tiny", timeout=5)
    ds = datasets.Dataset.from_dict({"findings": ["a", "b", "a"]})
    cache = LabelCache(tmp_path / "c.sqlite")
    res = label_dataset_with_stats(ds, teacher=LLMTeacher(backend=backend), cache=cache, credentialed=False)
    assert res.n_labeled == 3 and len(server.requests) == 2
    again = label_dataset_with_stats(ds, teacher=LLMTeacher(backend=backend), cache=cache, credentialed=False)
    assert again.n_from_cache == 3 and len(server.requests) == 2


# --- protection of credentialed sources -----------------------------------------------------------
def test_remote_endpoint_refuses_credentialed_source() -> None:
    remote = ScriptedBackend([GOOD_JSON], is_loopback=False)
    ds = datasets.Dataset.from_dict({"findings": ["Cardiomegaly."]})
    with pytest.raises(CredentialedDataError, match="credentialed data source.*non-loopback"):
        label_dataset_with_stats(ds, teacher=LLMTeacher(backend=remote), credentialed=True)
    assert remote.seen == []  # nothing was sent


def test_remote_endpoint_refuses_unknown_source_and_direct_calls() -> None:
    remote = ScriptedBackend([GOOD_JSON], is_loopback=False)
    with pytest.raises(CredentialedDataError, match="unknown licence"):
        LLMTeacher(backend=remote).label_texts(["Cardiomegaly."])
    assert remote.seen == []


def test_remote_endpoint_allowed_for_public_data_or_explicit_opt_in() -> None:
    ds = datasets.Dataset.from_dict({"findings": ["Cardiomegaly."]})
    public = label_dataset_with_stats(
        ds, teacher=LLMTeacher(backend=ScriptedBackend([GOOD_JSON], is_loopback=False)), credentialed=False
    )
    assert public.n_labeled == 1
    opted = LLMTeacher(
        backend=ScriptedBackend([GOOD_JSON], is_loopback=False), allow_credentialed_remote=True
    )
    assert label_dataset_with_stats(ds, teacher=opted, credentialed=True).n_labeled == 1


def test_remote_url_is_not_loopback() -> None:
    assert not OpenAIBackend(base_url="https://llm.example.org/v1", model="m").is_loopback
    assert OpenAIBackend(base_url="http://localhost:11434/v1", model="m").is_loopback


def test_credentialed_flag_read_from_dataset_meta() -> None:
    data = pytest.importorskip("dpcore.data")
    ds = data.generate_reports(kind="cxr", n=4, seed=0)
    meta = data.dataset_meta(ds)
    assert meta.credentialed is False
    from dpcore.data.schema import with_meta

    cred = with_meta(ds, credentialed=True, source="mimic-cxr")
    remote = ScriptedBackend([GOOD_JSON] * 4, is_loopback=False)
    with pytest.raises(CredentialedDataError):
        label_dataset_with_stats(cred, teacher=LLMTeacher(backend=remote))
    out = label_dataset_with_stats(ds, teacher=LLMTeacher(backend=remote))
    assert out.n_labeled == 4
    assert data.dataset_meta(out.dataset).source == meta.source  # metadata survives labeling
