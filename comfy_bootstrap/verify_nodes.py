"""Check that ComfyUI registers every node class the workflows use; exit non-zero naming the missing.

Run by ``install.sh`` after ComfyUI and the node packs are installed, with the Python that will run
ComfyUI (standard library only; the working directory does not matter):

    python comfy_bootstrap/verify_nodes.py --comfy-dir /comfyui --workflow workflows/<graph>.json [--workflow ...]

Why not just ``python main.py --cpu --quick-test-for-ci``: ComfyUI logs a custom node pack that
fails to import and carries on (exit code 0), and its log lists packs, not node classes. This check
instead does what ``main.py`` does at boot — create the ``server.PromptServer`` (node packs such as
VideoHelperSuite register their HTTP routes on ``PromptServer.instance`` when imported), then run
``nodes.init_extra_nodes()``, which loads ``comfy_extras`` and every pack in ``custom_nodes/`` — and
compares ``nodes.NODE_CLASS_MAPPINGS`` (the registry ``/prompt`` validates against) with the
workflow's ``class_type`` values. ``--cpu`` is passed to ComfyUI's argument parser, so no GPU is
needed, and ComfyUI's input/output/temp/user folders point into a throwaway folder, so the
checkout is left as it was.

Exit codes: 0 every class is registered; 1 some are missing (listed, with the pack that provides
them and the import errors ComfyUI logged); 2 bad arguments or ComfyUI itself cannot be imported.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

#: Where a class that is not part of ComfyUI itself comes from (the pin to check in pins.env).
PROVIDERS: dict[str, str] = {
    "VHS_VideoCombine": "ComfyUI-VideoHelperSuite (VHS_REPO / VHS_REF)",
    "ImageResize+": "ComfyUI_essentials (ESSENTIALS_REPO / ESSENTIALS_REF)",
}


class _Collect(logging.Handler):
    """Keeps ComfyUI's warnings and errors (e.g. a pack's import traceback) to show on failure."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def workflow_class_types(path: Path) -> set[str]:
    """The ``class_type`` of every node of an API-format workflow (``{id: {"class_type": ...}}``)."""
    graph = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(graph, dict):
        raise ValueError(f"{path}: not an API-format workflow (expected a JSON object of nodes)")
    types = {node["class_type"] for node in graph.values() if isinstance(node, dict) and "class_type" in node}
    if not types:
        raise ValueError(f"{path}: no node has a class_type (is it an API-format workflow?)")
    return types


def registered_classes(comfy_dir: Path, scratch: Path, log: _Collect) -> set[str]:
    """Load ComfyUI's nodes and custom node packs the way main.py does; return the registered names."""
    os.chdir(comfy_dir)
    # This script's folder (comfy_bootstrap/ holds config.py, execution.py, ...) must not shadow
    # ComfyUI's top-level modules.
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(comfy_dir)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    # ComfyUI parses sys.argv once args parsing is enabled: run it on the CPU, whatever the host has.
    sys.argv = [str(comfy_dir / "main.py"), "--cpu"]
    logging.getLogger().addHandler(log)
    import comfy.options  # type: ignore[import-not-found]

    comfy.options.enable_args_parsing()
    import folder_paths  # type: ignore[import-not-found]

    # main.py's --input/--output/--temp/--user-directory, so nothing is written into the checkout.
    for kind in ("input", "output", "temp", "user"):
        setter = getattr(folder_paths, f"set_{kind}_directory", None)
        if setter is not None:
            (scratch / kind).mkdir(parents=True, exist_ok=True)
            setter(str(scratch / kind))
    import nodes  # type: ignore[import-not-found]
    import server  # type: ignore[import-not-found]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server.PromptServer(loop)  # sets PromptServer.instance, which packs use while being imported
    accepted = inspect.signature(nodes.init_extra_nodes).parameters
    kwargs = {"init_custom_nodes": True, "init_api_nodes": False}
    result = nodes.init_extra_nodes(**{k: v for k, v in kwargs.items() if k in accepted})
    if inspect.isawaitable(result):
        loop.run_until_complete(result)
    return set(nodes.NODE_CLASS_MAPPINGS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-dir", type=Path, default=Path(os.environ.get("COMFY_DIR", "/comfyui")))
    parser.add_argument("--workflow", type=Path, action="append", default=[], help="API-format workflow JSON")
    parser.add_argument("--require", action="append", default=[], help="a node class name (repeatable)")
    args = parser.parse_args(argv)

    comfy_dir = args.comfy_dir.resolve()
    if not (comfy_dir / "nodes.py").is_file():
        print(f"verify_nodes: {comfy_dir} is not a ComfyUI checkout (no nodes.py)", file=sys.stderr)
        return 2
    try:
        required = set(args.require)
        for path in args.workflow:
            required |= workflow_class_types(path)
    except (OSError, ValueError) as exc:
        print(f"verify_nodes: {exc}", file=sys.stderr)
        return 2
    if not required:
        print("verify_nodes: nothing to check: give --workflow files or --require classes", file=sys.stderr)
        return 2

    log = _Collect()
    try:
        with tempfile.TemporaryDirectory(prefix="verify-nodes-") as scratch:
            registered = registered_classes(comfy_dir, Path(scratch), log)
    except Exception as exc:  # ComfyUI itself did not import: say so, with what it logged
        print(f"verify_nodes: ComfyUI in {comfy_dir} could not load its nodes: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        for line in log.lines:
            print(line, file=sys.stderr)
        return 2

    missing = sorted(required - registered)
    if not missing:
        print(f"verify_nodes: all {len(required)} node classes are registered: {', '.join(sorted(required))}")
        return 0
    print(f"verify_nodes: {len(missing)} node class(es) the workflow needs are NOT registered by ComfyUI "
          f"in {comfy_dir}:", file=sys.stderr)
    for name in missing:
        print(f"  - {name}: provided by {PROVIDERS.get(name, 'ComfyUI itself (COMFYUI_REF)')}", file=sys.stderr)
    if log.lines:
        print("What ComfyUI logged while loading nodes (look for 'Cannot import'):", file=sys.stderr)
        for line in log.lines:
            print(f"  {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
