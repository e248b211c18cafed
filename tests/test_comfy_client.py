"""comfy_bootstrap/client.py's refusal message (ComfyUI's /prompt 400 body, recorded, spelled out and
bounded) and its liveness check.

ComfyUI's validation details echo the job's values (a prompt text, a file name): the message that
goes into the answer and the log keeps each node error and the whole short.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import requests

from comfy_bootstrap.client import MAX_NODE_ERROR_CHARS, MAX_PROMPT_ERROR_CHARS, ComfyClient, format_prompt_error
from tests.harness import free_port
from tests.recorded import load

PROMPT = {"10": {"class_type": "LoraLoaderModelOnly", "_meta": {"title": "lora_high_noise"}}}


def test_a_recorded_refusal_is_spelled_out_as_before() -> None:
    body = load("prompt_error_missing_lora.json")["response"]["body"]
    assert format_prompt_error(body, PROMPT) == (
        "Prompt outputs failed validation: node 10 lora_high_noise (LoraLoaderModelOnly): Value not in list: "
        "lora_name: 'missing_lora.safetensors' not in ['Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors']"
    )


def test_a_huge_value_and_many_node_errors_are_cut_and_counted() -> None:
    body = copy.deepcopy(load("prompt_error_missing_lora.json")["response"]["body"])
    error = body["node_errors"]["10"]["errors"][0]
    huge = "a cat walking on the beach at sunset " * 3000  # a job's text, 111 kB
    error["details"] = f"lora_name: '{huge}' not in ['Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors']"
    body["node_errors"] = {str(n): copy.deepcopy(body["node_errors"]["10"]) for n in range(40)}
    body["error"]["details"] = huge
    message = format_prompt_error(body, PROMPT)
    assert len(message) <= MAX_PROMPT_ERROR_CHARS == 2000 and MAX_NODE_ERROR_CHARS == 300
    parts = message.split("; ")
    assert parts[0].startswith("Prompt outputs failed validation: node 0 ? (LoraLoaderModelOnly): Value not in list: lora_name: 'a cat")
    assert all(len(part) <= MAX_NODE_ERROR_CHARS + len("Prompt outputs failed validation: ") for part in parts)
    shown = len(parts) - 1
    assert parts[-1] == f"and {40 - shown} more node errors" and shown >= 5


def test_a_huge_head_without_node_errors_is_cut() -> None:
    body = {"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing", "details": "x" * 50_000}}
    message = format_prompt_error(body, {})
    assert message.startswith("Cannot execute because a node is missing (xxx") and len(message) <= MAX_NODE_ERROR_CHARS
    assert format_prompt_error("<html>" + "y" * 10_000, {}).startswith("ComfyUI rejected the workflow: <html>yyy")
    assert len(format_prompt_error("<html>" + "y" * 10_000, {})) <= MAX_NODE_ERROR_CHARS + 40


def test_the_liveness_check_tries_a_new_connection_once_when_a_kept_alive_one_fails(monkeypatch) -> None:
    client = ComfyClient("http://127.0.0.1:1")
    answers: list[object] = [requests.ConnectionError("Connection aborted: RemoteDisconnected"), SimpleNamespace(status_code=200)]

    def get(url: str, timeout: float) -> object:
        assert url.endswith("/prompt")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(client._http, "get", get)
    assert client.liveness_error(1.0) is None and answers == []
    assert ComfyClient(f"http://127.0.0.1:{free_port()}").liveness_error(1.0) == "connection failed (connection refused)"
