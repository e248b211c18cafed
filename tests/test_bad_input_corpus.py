"""Every malformed request of ``tests/bad_inputs/cases.json`` through ONE worker, as RunPod runs it.

``python handler.py --rp_serve_api`` launches the ComfyUI double as its child; each case is a real
``POST /runsync``. Each answer must be FAILED with one error string that starts with the case's
code and contains its substrings (the field and the allowed values). Afterwards the same worker
process (and the same ComfyUI child) must still be there, ComfyUI must never have been sent a
prompt or an upload, and a good job must complete with a decodable MP4.

The network: the worker runs with the default ``ALLOW_PRIVATE_IMAGE_URLS=false`` and with the test
network guard (``tests/bad_inputs/netguard/sitecustomize.py``) loaded, which

- blocks (and records) any connection that is not to 127.0.0.1, so a worker bug could never send a
  packet to 10.0.0.1 or 169.254.169.254, and the test can prove none was attempted;
- answers no DNS query, except the made-up public host ``images.example.test``, resolved to a
  public address whose port 80 is routed to :class:`ImageSite` on 127.0.0.1.

So the redirect cases run end to end through the real worker with its default settings: the
first hop passes the address check (a public address), the local site answers 302 to
169.254.169.254 / 127.0.0.1 / file:// / a redirect loop, and the worker must refuse the next hop
before connecting. (The other ways, ``fetch_image`` with an injected resolver or a worker with
``ALLOW_PRIVATE_IMAGE_URLS=true``, test less: the first never runs the worker, the second cannot
send a redirect to a private address without letting the worker connect to it.)
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.bad_inputs import PUBLIC_IP, Case, load_cases
from tests.bad_inputs.network import ImageSite, guard_events, guarded_env
from tests.harness import (
    comfy_child_pid,
    decode_mp4,
    files_in,
    free_port,
    png_b64,
    process_env,
    settings_for,
    start_worker_api,
    stop_worker_api,
)

CASES = load_cases()
CORPUS_TASKS = "i2v,flf2v,ti2v-5b,s2v,control,animate"
HTTP_CASES = [case for case in CASES if case.http_status is not None]
#: Every code docs/api.md lists for a job that fails before ComfyUI runs (``workflow_rejected``: a
#: job's own graph outside what custom_rules allows).
INPUT_CODES = {"invalid_input", "invalid_image", "workflow_rejected"}
#: Hosts the corpus itself asks the worker to resolve that must stay unresolved (no DNS here).
UNRESOLVED_HOSTS = {"no-such-host.example.test"}
#: How a clause of an error begins: the field's path (``options.width: ``, ``image, image_url: ``).
_FIELD_CLAUSE = re.compile(r"(; )?[^\s:;]+(\.[^\s:;]+)?(, \w+)?: ")


@dataclass
class CorpusWorker:
    env: dict[str, str]
    api_port: int
    proc: subprocess.Popen
    comfy_pid: int
    site: ImageSite
    guard_log: Path
    log: Path
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)

    @property
    def comfy_url(self) -> str:
        return f"http://127.0.0.1:{self.env['COMFY_PORT']}"

    def post(self, job_input: Any, timeout: float = 120) -> tuple[int, Any]:
        resp = requests.post(f"http://127.0.0.1:{self.api_port}/runsync", json={"input": job_input}, timeout=timeout)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def send(self, case: Case) -> tuple[int, Any]:
        self.answers[case.name] = self.post(case.job_input())
        return self.answers[case.name]

    def comfy_state(self) -> dict[str, Any]:
        return requests.get(f"{self.comfy_url}/__double__/state", timeout=5).json()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusWorker]:
    tmp = tmp_path_factory.mktemp("corpus")
    guard_log = tmp / "netguard.jsonl"
    log = tmp / "worker.log"
    with ImageSite() as site:
        # All tasks but t2v: a job for it shows the answer to a task this deployment does not serve.
        # Custom graphs are on, so the corpus shows what a job's own graph may not do.
        env = {**process_env(tmp, TASKS=CORPUS_TASKS, MAX_S2V_SECONDS="10", ALLOW_CUSTOM_WORKFLOW="true"), **guarded_env(guard_log, site.port)}
        env.pop("ALLOW_PRIVATE_IMAGE_URLS", None)  # the default (false) is what is tested
        api_port = free_port()
        with open(log, "wb") as out:
            proc = start_worker_api(env, api_port, out)
        try:
            # Nothing that would need DNS or a foreign address is sent unless the guard is active
            # in the worker process itself.
            loaded = [e["pid"] for e in guard_events(guard_log) if e["event"] == "loaded"]
            assert proc.pid in loaded, f"the network guard is not loaded in the worker: {loaded}"
            yield CorpusWorker(env, api_port, proc, comfy_child_pid(proc.pid), site, guard_log, log)
        finally:
            stop_worker_api(proc)


def test_the_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        assert case.error_code in INPUT_CODES, case.name
        assert case.error_contains and all(isinstance(s, str) and s for s in case.error_contains), case.name
        joined = " ".join(case.error_contains)
        assert any(_FIELD_CLAUSE.match(s) for s in case.error_contains), f"{case.name}: name the field (<field>: ...)"
        assert "(allowed: " in joined or case.note.startswith("no allowed part"), f"{case.name}: name the allowed values"


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_is_refused_with_one_clear_error(worker: CorpusWorker, case: Case) -> None:
    status, body = worker.send(case)
    assert worker.proc.poll() is None, f"the worker exited after {case.name}"
    if case.http_status is not None:
        # RunPod's local API refuses a non-object input itself (its request model types input as
        # an object); the handler never runs. Its own answer is checked in-process below.
        assert status == case.http_status, body
        assert isinstance(body, dict) and "detail" in body
        return
    assert status == 200, body
    assert body["status"] == "FAILED", body
    assert "output" not in body
    error = body["error"]
    assert isinstance(error, str), f"error must be one string, got {error!r}"
    assert error.startswith(f"{case.error_code}: "), error
    missing = [s for s in case.error_contains if s not in error]
    assert not missing, f"{error!r} lacks {missing}"


@pytest.mark.parametrize("case", [_param(case) for case in HTTP_CASES])
def test_non_object_input_is_refused_by_the_handler_itself(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RunPod's hosted queue only checks that ``input`` exists, so the handler must refuse the rest."""
    import handler
    from worker.pipeline import Runtime

    monkeypatch.setattr(handler, "RUNTIME", Runtime.create(settings_for(tmp_path)))  # ComfyUI not started
    answer = asyncio.run(handler.handler({"id": f"corpus-{case.name}", "input": case.job_input()}))
    assert set(answer) == {"error"}, answer
    assert answer["error"].startswith(f"{case.error_code}: "), answer
    missing = [s for s in case.error_contains if s not in answer["error"]]
    assert not missing, f"{answer['error']!r} lacks {missing}"


def test_the_worker_survived_nothing_reached_comfyui_or_the_network_then_a_good_job_completes(worker: CorpusWorker) -> None:
    for case in CASES:  # when run alone (-k), send the corpus first
        if case.name not in worker.answers:
            worker.send(case)

    # The same worker process, the same ComfyUI child, still answering.
    assert worker.proc.poll() is None
    assert comfy_child_pid(worker.proc.pid) == worker.comfy_pid, "ComfyUI was restarted by a bad input"
    state = worker.comfy_state()
    assert state["prompts"] == [], "a bad input reached ComfyUI as a prompt"
    assert state["uploads"] == [], "a bad input's image was uploaded to ComfyUI"
    work = Path(worker.env["WORKER_DIR"])
    assert files_in(work / "input") == [] and files_in(work / "output") == []

    # No connection anywhere but 127.0.0.1 and the routed made-up public host; the private
    # addresses of the corpus (and ComfyUI's default port, its SSRF target) were never connected to.
    events = guard_events(worker.guard_log)
    connects = [e for e in events if e["event"] == "connect"]
    assert [e for e in connects if e["action"] not in ("local", "routed")] == []
    assert {(e["host"], e["port"]) for e in connects if e["action"] == "routed"} <= {(PUBLIC_IP, 80)}
    assert [e for e in connects if e["port"] == 8188] == []
    assert {e["host"] for e in events if e["event"] == "dns"} <= UNRESOLVED_HOSTS
    # ...and the redirect cases really went through the local site before being refused.
    hit_paths = {hit.split("?", 1)[0] for hit in worker.site.hits}
    assert {"/redirect/metadata", "/redirect/loopback", "/redirect/file", "/loop/0", "/loop/5"} <= hit_paths

    # A good job on the same worker.
    status, body = worker.post({"prompt": "a red ball", "image": png_b64(), "options": {"width": 64, "height": 64, "length": 5}})
    assert status == 200 and body["status"] == "COMPLETED", body
    video = decode_mp4(base64.b64decode(body["output"]["video"]))
    assert (video["width"], video["height"], video["frames"]) == (64, 64, 5)
    assert len(worker.comfy_state()["prompts"]) == 1
    assert files_in(work / "input") == [] and files_in(work / "output") == []
