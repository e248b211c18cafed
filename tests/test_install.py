"""comfy_bootstrap/install.sh against local git repositories standing in for the three upstream ones.

The stand-ins are tiny but shaped like the real thing where install.sh and verify_nodes.py touch
it: ComfyUI has ``main.py`` with ``--cpu --quick-test-for-ci`` and the directory flags,
``comfy/options.py`` + ``comfy/cli_args.py`` (arguments parsed only once enabled),
``folder_paths.py`` with the directory setters, ``server.py`` whose ``PromptServer`` writes into the
user folder, and ``nodes.py`` whose async ``init_extra_nodes()`` imports every pack of
``custom_nodes/`` into ``NODE_CLASS_MAPPINGS`` and logs "Cannot import ..." / "(IMPORT FAILED)"
like ComfyUI. Without ``--cpu`` it refuses to load, as ComfyUI does on a machine with no GPU. The
packs register a route on ``PromptServer.instance`` while imported, as VideoHelperSuite does. Each
repository has two commits, so a test can tell "checked out the pin" from "checked out the tip".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfy_bootstrap import verify_nodes

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SH = ROOT / "comfy_bootstrap" / "install.sh"
WORKFLOW = ROOT / "workflows" / "wan22_i2v_14b_lightx2v.json"
#: Every stored graph and fragment: install.sh checks the classes of all of them by default.
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.json")) + sorted((ROOT / "workflows" / "fragments").glob("*.json"))
ALL_CLASSES = set().union(*(verify_nodes.workflow_class_types(path) for path in WORKFLOW_FILES))
CORE_CLASSES = sorted(ALL_CLASSES - set(verify_nodes.PROVIDERS))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

FAKE_OPTIONS = """\
args_parsing = False


def enable_args_parsing(enable=True):
    global args_parsing
    args_parsing = enable
"""

FAKE_CLI_ARGS = """\
import argparse
import os

import comfy.options



def is_valid_directory(path):
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"The path '{path}' does not exist.")
    return path


parser = argparse.ArgumentParser()
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--quick-test-for-ci", action="store_true")
for flag in ("--input-directory", "--output-directory", "--temp-directory"):
    parser.add_argument(flag)
parser.add_argument("--user-directory", type=is_valid_directory)
db = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "user", "comfyui.db"))
parser.add_argument("--database-url", default=f"sqlite:///{db}")
args = parser.parse_args() if comfy.options.args_parsing else parser.parse_args([])
"""

FAKE_FOLDER_PATHS = """\
import os

base_path = os.path.dirname(os.path.realpath(__file__))
directories = {kind: os.path.join(base_path, kind) for kind in ("input", "output", "temp", "user")}


def set_input_directory(path):
    directories["input"] = path


def set_output_directory(path):
    directories["output"] = path


def set_temp_directory(path):
    directories["temp"] = path


def set_user_directory(path):
    directories["user"] = path


def get_user_directory():
    return directories["user"]
"""

FAKE_SERVER = """\
import os

import folder_paths
import nodes  # noqa: F401  (ComfyUI's server.py imports nodes too)


class Routes:
    def get(self, path):
        return lambda handler: handler


class PromptServer:
    def __init__(self, loop):
        PromptServer.instance = self
        self.loop = loop
        self.routes = Routes()
        # Like ComfyUI's UserManager and database: files appear in the user folder at start.
        os.makedirs(os.path.join(folder_paths.get_user_directory(), "default"), exist_ok=True)
        with open(os.path.join(folder_paths.get_user_directory(), "comfyui.db"), "w") as db:
            db.write("")
"""

FAKE_NODES = """\
import importlib.util
import logging
import os
import sys

from comfy.cli_args import args

if not args.cpu:
    raise RuntimeError("Found no NVIDIA driver on your system (this stand-in only runs with --cpu)")

NODE_CLASS_MAPPINGS = {{name: type(name, (), {{}}) for name in {core!r}}}
IMPORT_TIMES = []


def load_custom_node(path):
    name = os.path.basename(path)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        NODE_CLASS_MAPPINGS.update(getattr(module, "NODE_CLASS_MAPPINGS", {{}}))
        return True
    except Exception as e:
        logging.warning(f"Cannot import {{path}} module for custom nodes: {{e}}")
        return False


async def init_extra_nodes(init_custom_nodes=True, init_api_nodes=True):
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_nodes")
    if not init_custom_nodes:
        return
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if os.path.isdir(path) and not name.startswith("."):
            IMPORT_TIMES.append((path, load_custom_node(path)))
"""

FAKE_MAIN = """\
import asyncio
import os
import sys

import comfy.options

comfy.options.enable_args_parsing()
from comfy.cli_args import args  # noqa: E402

import folder_paths  # noqa: E402
import nodes  # noqa: E402
import server  # noqa: E402

for kind in ("input", "output", "temp", "user"):
    if getattr(args, kind + "_directory"):
        getattr(folder_paths, "set_" + kind + "_directory")(getattr(args, kind + "_directory"))

if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    server.PromptServer(loop)
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=True))
    # setup_database(): the sqlite file of --database-url (default: <ComfyUI>/user/comfyui.db)
    db = args.database_url.removeprefix("sqlite:///")
    if db != ":memory:":
        os.makedirs(os.path.dirname(db), exist_ok=True)
        open(db, "w").close()
    print("Import times for custom nodes:")
    for path, ok in nodes.IMPORT_TIMES:
        print("   0.0 seconds{}: {}".format("" if ok else " (IMPORT FAILED)", path))
    if args.quick_test_for_ci:
        sys.exit(0)
    sys.exit("this stand-in does not serve")
"""


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    return path


def pack(mapping: dict[str, str] | None, *, raise_on_import: str | None = None) -> dict[str, str]:
    # Like VideoHelperSuite: register an HTTP route on the running PromptServer while being imported.
    body = "import server\n\n\n@server.PromptServer.instance.routes.get('/vhs/viewvideo')\ndef view(request): ...\n\n\n"
    body += f"raise ImportError({raise_on_import!r})\n" if raise_on_import else ""
    body += f"NODE_CLASS_MAPPINGS = {{name: object for name in {sorted(mapping or {})!r}}}\n"
    return {"__init__.py": body, "requirements.txt": "opencv-python\nimageio-ffmpeg\n"}


@dataclass
class Upstream:
    """The three stand-in repositories and the commits a test can pin."""

    comfyui: Path
    vhs: Path
    essentials: Path
    comfyui_pin: str
    comfyui_tip: str
    vhs_pin: str
    vhs_broken: str  # tip: the pack raises at import
    essentials_pin: str
    essentials_without_resize: str  # tip: ImageResize+ removed

    def env(self, comfy_dir: Path, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            **GIT_ENV,
            "COMFY_DIR": str(comfy_dir),
            "PYTHON": sys.executable,
            "SKIP_PIP": "1",
            "COMFYUI_REPO": str(self.comfyui),
            "COMFYUI_REF": self.comfyui_pin,
            "VHS_REPO": str(self.vhs),
            "VHS_REF": self.vhs_pin,
            "ESSENTIALS_REPO": str(self.essentials),
            "ESSENTIALS_REF": self.essentials_pin,
        }
        env.update(overrides)
        return env


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    base = tmp_path_factory.mktemp("upstream")
    comfy = new_repo(base / "ComfyUI")
    comfy_files = {
        "main.py": FAKE_MAIN,
        "nodes.py": FAKE_NODES.format(core=CORE_CLASSES),
        "comfy/__init__.py": "",
        "comfy/options.py": FAKE_OPTIONS,
        "comfy/cli_args.py": FAKE_CLI_ARGS,
        "folder_paths.py": FAKE_FOLDER_PATHS,
        "server.py": FAKE_SERVER,
        "custom_nodes/example_node.py.example": "",
        # As in ComfyUI, minus its input/output/temp/user entries: writes there would show up.
        ".gitignore": "__pycache__/\n/custom_nodes/*\n!/custom_nodes/example_node.py.example\n",
        "requirements.txt": "comfyui-frontend-package==1.47.11\ntorch\n",
    }
    comfy_pin = commit_files(comfy, comfy_files, "v0.30.0 stand-in")
    comfy_tip = commit_files(comfy, {"CHANGED_AFTER_PIN": "tip\n"}, "after the pin")

    vhs = new_repo(base / "ComfyUI-VideoHelperSuite")
    vhs_pin = commit_files(vhs, pack({"VHS_VideoCombine": "", "VHS_LoadVideo": ""}), "vhs")
    vhs_broken = commit_files(vhs, pack({"VHS_VideoCombine": ""}, raise_on_import="No module named 'cv2'"), "broken")

    ess = new_repo(base / "ComfyUI_essentials")
    ess_pin = commit_files(ess, pack({"ImageResize+": "", "ImageCrop+": ""}), "essentials")
    ess_without = commit_files(ess, pack({"ImageCrop+": ""}), "drop ImageResize+")
    return Upstream(comfy, vhs, ess, comfy_pin, comfy_tip, vhs_pin, vhs_broken, ess_pin, ess_without)


def run_install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL_SH), *args], env=env, capture_output=True, text=True, timeout=120)


def head(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo)


def test_the_pack_classes_of_the_graphs_name_their_pack(tmp_path: Path) -> None:
    assert {"VHS_VideoCombine", "ImageResize+"} == set(verify_nodes.PROVIDERS) == ALL_CLASSES - set(CORE_CLASSES)
    assert {"FrameInterpolationModelLoader", "FrameInterpolate", "EasyCache"} <= set(CORE_CLASSES)  # ComfyUI's own
    (tmp_path / "nodes.py").write_text("")
    assert verify_nodes.main(["--comfy-dir", str(tmp_path)]) == 2  # nothing to check is an error, not a pass


def test_installs_every_repo_at_its_pin_and_verifies(upstream: Upstream, tmp_path: Path) -> None:
    comfy_dir = tmp_path / "comfyui"
    result = run_install(upstream.env(comfy_dir))

    assert result.returncode == 0, result.stdout + result.stderr
    assert head(comfy_dir) == upstream.comfyui_pin != upstream.comfyui_tip
    assert not (comfy_dir / "CHANGED_AFTER_PIN").exists()
    assert head(comfy_dir / "custom_nodes" / "ComfyUI-VideoHelperSuite") == upstream.vhs_pin
    assert head(comfy_dir / "custom_nodes" / "ComfyUI_essentials") == upstream.essentials_pin
    assert sorted(p.name for p in (comfy_dir / "custom_nodes").iterdir() if p.is_dir()) == ["ComfyUI-VideoHelperSuite", "ComfyUI_essentials"]
    assert "--quick-test-for-ci" in result.stdout
    assert f"verify_nodes: all {len(ALL_CLASSES)} node classes are registered" in result.stdout
    assert "SKIP_PIP=1" in result.stdout
    assert git("status", "--porcelain", "--untracked-files=all", cwd=comfy_dir) == "", "nothing written into ComfyUI"


def test_second_run_changes_nothing_and_needs_no_network(upstream: Upstream, tmp_path: Path) -> None:
    comfy_dir = tmp_path / "comfyui"
    assert run_install(upstream.env(comfy_dir)).returncode == 0
    before = {p: head(p) for p in (comfy_dir, *sorted((comfy_dir / "custom_nodes").glob("ComfyUI*")))}

    # The pins are full commit ids already present: the sources are not contacted again.
    offline = upstream.env(
        comfy_dir,
        COMFYUI_REPO=str(tmp_path / "gone"),
        VHS_REPO=str(tmp_path / "gone"),
        ESSENTIALS_REPO=str(tmp_path / "gone"),
    )
    second = run_install(offline)

    assert second.returncode == 0, second.stdout + second.stderr
    assert {p: head(p) for p in before} == before
    assert git("status", "--porcelain", cwd=comfy_dir / "custom_nodes" / "ComfyUI_essentials") == ""


def test_unknown_pin_fails_with_a_clear_message(upstream: Upstream, tmp_path: Path) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    result = run_install(upstream.env(tmp_path / "comfyui", COMFYUI_REF=missing))

    assert result.returncode != 0
    assert f"pin COMFYUI_REF={missing} not found in {upstream.comfyui}" in result.stderr


def test_unreachable_repository_fails_with_a_clear_message(upstream: Upstream, tmp_path: Path) -> None:
    result = run_install(upstream.env(tmp_path / "comfyui", VHS_REPO=str(tmp_path / "no-such-repo")))

    assert result.returncode != 0
    assert f"cannot fetch {tmp_path / 'no-such-repo'}" in result.stderr
    assert "VHS_REPO" in result.stderr


def test_pack_missing_a_node_class_fails_the_check(upstream: Upstream, tmp_path: Path) -> None:
    result = run_install(upstream.env(tmp_path / "comfyui", ESSENTIALS_REF=upstream.essentials_without_resize))

    assert result.returncode != 0
    assert "ImageResize+: provided by ComfyUI_essentials" in result.stderr
    assert "VHS_VideoCombine" not in result.stderr.split("NOT registered")[1].split("What ComfyUI")[0]
    assert "the workflow cannot run on this install" in result.stderr


def test_pack_that_fails_to_import_is_reported_with_its_error(upstream: Upstream, tmp_path: Path) -> None:
    result = run_install(upstream.env(tmp_path / "comfyui", VHS_REF=upstream.vhs_broken))

    assert result.returncode != 0
    assert "(IMPORT FAILED)" in result.stdout  # ComfyUI's own boot log, passed on
    assert "VHS_VideoCombine: provided by ComfyUI-VideoHelperSuite" in result.stderr
    assert "No module named 'cv2'" in result.stderr


def test_workflows_variable_selects_what_must_register(upstream: Upstream, tmp_path: Path) -> None:
    workflow = tmp_path / "needs_more.json"
    graph = json.loads(WORKFLOW.read_text())
    graph["99"] = {"class_type": "SomePackNode", "inputs": {}}
    workflow.write_text(json.dumps(graph))

    result = run_install(upstream.env(tmp_path / "comfyui", WORKFLOWS=str(workflow)))

    assert result.returncode != 0
    assert "SomePackNode: provided by ComfyUI itself" in result.stderr


def test_existing_non_git_folder_is_not_overwritten(upstream: Upstream, tmp_path: Path) -> None:
    comfy_dir = tmp_path / "comfyui"
    comfy_dir.mkdir()
    (comfy_dir / "precious.txt").write_text("keep me")

    result = run_install(upstream.env(comfy_dir))

    assert result.returncode != 0
    assert "exists and is not a git checkout" in result.stderr
    assert (comfy_dir / "precious.txt").read_text() == "keep me"


def test_without_skip_pip_it_refuses_to_run_without_torch(upstream: Upstream, tmp_path: Path) -> None:
    if shutil.which("python3") is None:  # pragma: no cover
        pytest.skip("no python3")
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("torch is installed here; the refusal is for machines without it")
    env = upstream.env(tmp_path / "comfyui", SKIP_PIP="0")

    result = run_install(env)

    assert result.returncode != 0
    assert "torch is not installed" in result.stderr
    assert "torch==2.10.0" in result.stderr and "download.pytorch.org/whl/cu128" in result.stderr


# -- no frame interpolation pack -----------------------------------------------------------------------


def test_frame_interpolation_is_comfyuis_own_and_nothing_pins_the_pack_or_its_checkpoint() -> None:
    """ComfyUI's FrameInterpolate replaced ComfyUI-Frame-Interpolation's RIFE VFI: its models are
    volume files like the others (scripts/models.py), not part of the image."""
    pins = (ROOT / "comfy_bootstrap" / "pins.env").read_text()
    for text in (pins, INSTALL_SH.read_text(), (ROOT / "Dockerfile").read_text()):
        assert "FRAME_INTERPOLATION" not in text and "RIFE_CKPT" not in text and "Frame-Interpolation" not in text
    assert {"FrameInterpolationModelLoader", "FrameInterpolate"} <= verify_nodes.workflow_class_types(
        ROOT / "workflows" / "fragments" / "interpolate.json"
    )


# -- what is pip-installed ----------------------------------------------------------------------------

FAKE_PIP_PYTHON = """\
#!/usr/bin/env bash
# Stands in for the image's Python: records every pip call (and the requirement files it gets),
# claims torch is installed, and runs everything else with the real interpreter.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    printf 'pip %s\\n' "${*:3}" >>"$PIP_LOG"
    prev=""
    for arg in "$@"; do
        if [ "$prev" = "-r" ]; then sed 's/^/    /' "$arg" >>"$PIP_LOG"; fi
        prev=$arg
    done
    [ "$3" = "show" ] && exit 1  # no GUI OpenCV build is installed
    exit 0
fi
if [ "$#" -eq 1 ] && [ "$1" = "-" ]; then  # install.sh's constraints probe
    cat >/dev/null
    echo "torch==2.10.0"
    exit 0
fi
exec REAL_PYTHON "$@"
"""


def test_the_packs_requirements_are_pip_installed_with_one_headless_opencv(upstream: Upstream, tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(FAKE_PIP_PYTHON.replace("REAL_PYTHON", sys.executable))
    python.chmod(0o755)
    pip_log = tmp_path / "pip.log"
    env = upstream.env(tmp_path / "comfyui", SKIP_PIP="0", PYTHON=str(python), PIP_LOG=str(pip_log))

    result = run_install(env)

    assert result.returncode == 0, result.stdout + result.stderr
    log = pip_log.read_text()
    installs = [ln for ln in log.splitlines() if not ln.startswith("pip show")]
    installed = [ln.strip() for ln in installs if ln.startswith("    ")]
    assert "pip show -q opencv-contrib-python" in log  # checked for, so a dependency's copy would go
    assert {"comfyui-frontend-package==1.47.11", "imageio-ffmpeg"} <= set(installed)
    assert installed.count("opencv-python-headless") == 2  # VHS's and essentials' opencv-python, swapped
    assert "opencv-python" not in installed


# ---- `make comfyui`: install.sh local ---------------------------------------------------------------
def local_env(upstream: Upstream, dest: Path, **overrides: str) -> dict[str, str]:
    env = upstream.env(dest / "ComfyUI", PYTHON3=sys.executable, **overrides)
    del env["COMFY_DIR"], env["PYTHON"]  # `local` chooses them inside the folder
    return env


def test_local_names_every_source_it_cannot_reach_and_creates_nothing(upstream: Upstream, tmp_path: Path) -> None:
    from tests.harness import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    dest = tmp_path / ".comfy"
    env = local_env(upstream, dest, SKIP_PIP="0", COMFYUI_REPO=str(tmp_path / "no-comfyui"),
                    TORCH_INDEX_URL=f"{dead}/whl/cu128", PIP_INDEX_URL=f"{dead}/simple")  # fmt: skip
    result = run_install(env, "local", str(dest))
    assert result.returncode == 1 and not dest.exists()
    lines = result.stderr.splitlines()
    assert lines[0].startswith("install.sh: ERROR: make comfyui needs GitHub (or the *_REPO mirrors), the PyTorch index")
    assert lines[1:4] == [
        f"  git repository (COMFYUI_REPO={tmp_path / 'no-comfyui'}): git ls-remote cannot read it",
        f"  PyTorch wheels (TORCH_INDEX_URL={dead}/whl/cu128/torch/): cannot reach it: <urlopen error [Errno 111] Connection refused>",
        f"  Python packages (PIP_INDEX_URL={dead}/simple/pip/): cannot reach it: <urlopen error [Errno 111] Connection refused>",
    ]
    assert "Nothing was created." in lines[-1] and "ResolutionImpossible" not in result.stdout + result.stderr


def test_local_failing_midway_removes_the_half_built_folder(upstream: Upstream, tmp_path: Path) -> None:
    dest = tmp_path / ".comfy"
    missing = "0123456789abcdef0123456789abcdef01234567"
    result = run_install(local_env(upstream, dest, ESSENTIALS_REF=missing), "local", str(dest))
    assert result.returncode == 1
    assert f"pin ESSENTIALS_REF={missing} not found" in result.stderr  # ComfyUI and VHS were checked out first
    assert f"failed: removed the half-built {dest} (nothing is installed)" in result.stdout
    assert not dest.exists()


def test_local_marks_a_finished_install_that_make_serve_then_uses(upstream: Upstream, tmp_path: Path) -> None:
    dest = tmp_path / ".comfy"
    result = run_install(local_env(upstream, dest), "local", str(dest))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dest / ".complete").is_file() and (dest / "venv" / "bin" / "python").exists()
    assert head(dest / "ComfyUI") == upstream.comfyui_pin
    offline = local_env(upstream, dest, COMFYUI_REPO=str(tmp_path / "gone"))
    again = run_install(offline, "local", str(dest))  # done already: nothing is contacted or changed
    assert again.returncode == 0 and "is already installed" in again.stdout

    plain = {k: v for k, v in os.environ.items() if k not in ("COMFY_DIR", "VOLUME_PATH")}
    command = ["make", "-s", "-n", "serve", f"LOCAL_COMFY={dest}"]
    serve = subprocess.run(command, cwd=ROOT, env=plain, capture_output=True, text=True, timeout=30)
    assert f"COMFY_DIR={dest}/ComfyUI COMFY_PYTHON={dest}/venv/bin/python" in serve.stdout
    (dest / ".complete").unlink()  # a half-built folder (an older make comfyui) is not used
    serve = subprocess.run(command, cwd=ROOT, env=plain, capture_output=True, text=True, timeout=30)
    assert "COMFY_DIR=" not in serve.stdout and f"VOLUME_PATH={ROOT}/volume" in serve.stdout
