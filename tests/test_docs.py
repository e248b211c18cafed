"""The docs stay true to the code: the env var table, the pins, the make targets, the error codes."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_dockerfile import load_pins
from tests.test_hub import config_env_names, is_config_default

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def env_table(path: Path = DOCS / "deployment.md", heading: str = "## Environment variables") -> dict[str, str]:
    """Rows of a doc's variables table: variable -> default cell."""
    section = path.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_every_variable_config_reads_is_in_the_deployment_table() -> None:
    table = env_table()
    missing = [name for name in config_env_names() if name not in table]
    assert not missing, f"docs/deployment.md's table lacks {missing}"
    unknown = sorted(set(table) - set(config_env_names()))
    assert not unknown, f"docs/deployment.md documents variables config.py does not read: {unknown}"


def test_readme_configuration_table_matches_config() -> None:
    table = env_table(ROOT / "README.md", "## Configuration")
    assert sorted(table) == sorted(config_env_names())
    for name, cell in table.items():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal:
            assert is_config_default(name, literal.group(1)), f"README {name}: documented default {cell}"


def test_literal_defaults_in_the_table_are_config_defaults() -> None:
    checked = 0
    for name, cell in env_table().items():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal:  # prose cells ("unset", "the worker's own Python ...") describe computed defaults
            assert is_config_default(name, literal.group(1)), f"{name}: documented default {cell}"
            checked += 1
    assert checked >= 30


def test_deployment_doc_names_the_pins() -> None:
    text = (DOCS / "deployment.md").read_text()
    pins = load_pins()
    for key in ("COMFYUI_REF", "VHS_REF", "ESSENTIALS_REF", "TORCH_VERSION", "TORCHVISION_VERSION",
                "TORCHAUDIO_VERSION", "XFORMERS_VERSION", "PYTHON_VERSION", "TORCH_INDEX_URL", "BASE_IMAGE"):
        assert pins[key] in text, f"docs/deployment.md does not show {key}={pins[key]}"
    for fact in ("driver ≥ 570", "600 s", "`JOB_TIMEOUT`", "models/unet", "models/clip", "models/loras/wan",
                 "~40 GB", "90–180 s", "COMFY_ATTENTION", "models_missing"):
        assert fact in text.replace("`JOB_TIMEOUT` (default 540 s)", "`JOB_TIMEOUT`"), fact


def test_make_targets_in_the_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    for doc in DOCS.glob("*.md"):
        # `make x` in code spans, and command lines starting with make in code blocks
        for target in re.findall(r"(?:`|^)make ([a-z][a-z-]*)", doc.read_text(), re.MULTILINE):
            assert target in targets, f"{doc.name} mentions `make {target}`, which the Makefile lacks"


def job_error_codes() -> list[str]:
    """Every code a job's error can start with: the error classes' (not the boot-only ones) and the handler's own."""
    import handler
    from comfy_bootstrap import errors as comfy_errors
    from worker import errors as worker_errors

    codes = []
    for module in (comfy_errors, worker_errors):
        for item in vars(module).values():
            if isinstance(item, type) and issubclass(item, Exception) and item.__module__ == module.__name__:
                if item not in (comfy_errors.ComfyError, worker_errors.WorkerError) and not item.boot_only:
                    codes.append(item.code)
    return sorted(set(codes) | {handler.NOT_READY, handler.INTERNAL_ERROR})


BOOT_CODES = ["comfyui_boot_failed", "workflow_invalid"]


def _codes_in(text: str) -> set[str]:
    known = set(job_error_codes()) | set(BOOT_CODES)
    return {code for code in re.findall(r"`([a-z_]+)`", text) if code in known}


def test_the_boot_only_codes_are_the_error_classes_that_say_so() -> None:
    from comfy_bootstrap.errors import ComfyBootError
    from worker.errors import WorkflowError

    assert sorted([ComfyBootError.code, WorkflowError.code]) == BOOT_CODES
    assert ComfyBootError.boot_only and WorkflowError.boot_only


def test_readme_lists_exactly_the_codes_a_job_can_answer_with() -> None:
    sentence = (ROOT / "README.md").read_text().split("Codes:", 1)[1].split("(", 1)[0]
    assert _codes_in(sentence) == set(job_error_codes())


def test_api_docs_list_exactly_the_codes_a_job_can_answer_with() -> None:
    section = (DOCS / "api.md").read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    assert {re.match(r"\| `([a-z_]+)`", line).group(1) for line in table} == set(job_error_codes())


def test_troubleshooting_has_an_entry_per_error_code() -> None:
    section = (DOCS / "troubleshooting.md").read_text().split("## Errors the worker returns", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    assert {re.match(r"\| `([a-z_]+)`", line).group(1) for line in table} == set(job_error_codes()) | set(BOOT_CODES)
