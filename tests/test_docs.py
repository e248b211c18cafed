"""The docs stay true to the code: the env var table, the pins, the make targets, the error codes."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import huggingface_hub
import runpod

from tests.test_dockerfile import load_pins
from tests.test_hub import config_env_names, is_config_default, is_valid

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


# ---- every name and value the docs give exists -----------------------------------------------------
ALL_DOCS = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: Names of other projects the docs quote, which nothing here reads: where they come from.
FOREIGN = {
    "PRIORITIZE_FP16": "ComfyUI's comfy/model_management.py",
    "CUBLAS_STATUS_ALLOC_FAILED": "a CUDA error name, matched by worker/health.py's patterns",
    "CUBLAS_STATUS_NOT_INITIALIZED": "a CUDA error name, matched by worker/health.py's patterns",
    "CUBLAS_STATUS_EXECUTION_FAILED": "a CUDA error name, a GPU fault by its exception type (worker/health.py)",
    "CUBLAS_STATUS_INTERNAL_ERROR": "a CUDA error name, a GPU fault by its exception type (worker/health.py)",
    "CUDNN_STATUS_EXECUTION_FAILED": "a cuDNN error name, a GPU fault by its exception type (worker/health.py)",
    "C10_CUDA_CHECK": "the PyTorch macro that raises torch's CUDA errors",
    "NAME": "the placeholder of `--build-arg NAME=value`",
}
#: Values the docs give as examples of what stops the worker.
INVALID_EXAMPLES = {("MAX_WIDTH", "70"), ("MAX_LENGTH", "6")}
#: What a value is checked beside: S3 configured, which OUTPUT_MODE=s3 needs.
BESIDE = {"BUCKET_NAME": "videos", "BUCKET_ACCESS_KEY_ID": "id", "BUCKET_SECRET_ACCESS_KEY": "secret"}
#: Make variables the Makefile hands to the script it runs, not its own.
PASSED_THROUGH = {"PUSH": ROOT / "scripts" / "release.py"}
_VARIABLE = re.compile(r"(?<![\w$])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z][A-Z0-9]{3,}(?==))(?![A-Za-z0-9_<])")


def code_spans(path: Path) -> list[str]:
    """The inline code spans of a Markdown file (fenced blocks left out: they are shell scripts)."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL))


@cache
def readers() -> str:
    """Everything that reads variables: the worker, its scripts, build files, the test double, and
    the two libraries whose variables the docs name (the RunPod SDK, huggingface_hub)."""
    files = [ROOT / "handler.py", ROOT / "Makefile", ROOT / "Dockerfile", ROOT / "docker-compose.yml", ROOT / "tests/test_dockerfile.py"]
    for pattern in ("worker/**/*.py", "comfy_bootstrap/*", "scripts/*", "docs/examples/*", ".runpod/*", "bench/*.py",
                    "tests/integration/*.py", "tests/comfy_double/*.py"):  # fmt: skip
        files += ROOT.glob(pattern)
    for package in (runpod, huggingface_hub):
        files += Path(package.__file__).parent.rglob("*.py")
    return "\n".join(path.read_text(errors="replace") for path in files if path.is_file()) + "\n".join(config_env_names())


def test_every_variable_the_docs_name_is_read_by_something() -> None:
    named = {(m, doc.name) for doc in ALL_DOCS for span in code_spans(doc) for m in _VARIABLE.findall(span)}
    unknown = sorted({(name, doc) for name, doc in named if name not in FOREIGN
                      and not re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", readers())})  # fmt: skip
    assert not unknown, f"the docs name variables nothing reads: {unknown}"
    assert len({name for name, _ in named}) > 100


def test_every_worker_variable_value_the_docs_give_is_valid() -> None:
    settings = set(config_env_names())
    checked = 0
    for doc in ALL_DOCS:
        for name, value in re.findall(r"\b([A-Z][A-Z0-9_]+)=([^\s`<>…$|{]+)(?=[\s`]|$)", "\n".join(code_spans(doc))):
            if name in settings:
                checked += 1
                expected = (name, value) not in INVALID_EXAMPLES
                valid = is_valid(name, value) or (name not in BESIDE and _valid_beside(name, value))
                assert valid == expected, f"{doc.name}: `{name}={value}` is {'in' if expected else ''}valid"
    assert checked >= 20


def _valid_beside(name: str, value: str) -> bool:
    from worker.settings import ConfigError, Settings

    try:
        Settings.from_env({**BESIDE, name: value})
    except ConfigError:
        return False
    return True


def test_make_variables_and_their_defaults_are_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^([A-Z][A-Z0-9_]*) \?= (.*)$", makefile, re.MULTILINE))
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*) [?:]?=", makefile, re.MULTILINE))
    for doc in [*ALL_DOCS, ROOT / "Makefile"]:
        text = doc.read_text()
        for line in re.findall(r"(?:^|`)make [a-z][a-z-]* ([^`\n#]*)", text, re.MULTILINE):
            for name in re.findall(r"\b([A-Z][A-Z0-9_]*)=", line):
                passed = name in PASSED_THROUGH and name in PASSED_THROUGH[name].read_text()
                assert name in defined or name in FOREIGN or passed, f"{doc.name}: `make … {name}=…`, a variable the Makefile lacks"
        for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+?)`? by default", text):
            assert defaults.get(name) == value, f"{doc.name}: says {name}={value} by default; the Makefile: {defaults.get(name)}"


def test_error_codes_the_docs_quote_are_codes_the_worker_has() -> None:
    known = set(job_error_codes()) | set(BOOT_CODES)
    # `code: …`, "error": "code: …", FAILED: code: …; not a field and its value (`refresh_worker: true`)
    pattern = r"(?:`|\"error\": \"|FAILED: )([a-z]+(?:_[a-z]+)+): (?!true|false|null|[\"'\d\[{])"
    quoted = {code for doc in ALL_DOCS for code in re.findall(pattern, doc.read_text())}
    assert quoted and quoted <= known, f"the docs quote error codes the worker does not have: {sorted(quoted - known)}"


def test_make_targets_in_the_readme_exist_too() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", (ROOT / "README.md").read_text(), re.MULTILINE))
    assert named and named <= targets, sorted(named - targets)
