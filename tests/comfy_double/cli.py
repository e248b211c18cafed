"""The double as ComfyUI's child process: ``python main.py --listen ... --port ...``.

The parser accepts ComfyUI v0.30.0's flags (its own implementation, same names, same argument
shapes and the same mutually exclusive groups), so a worker command line that ComfyUI would accept
starts the double, and a typo or a forbidden combination exits with status 2 like argparse does.
Flags that only tune GPU behaviour are accepted and ignored. Logging follows ComfyUI v0.30.0:
``[LEVEL]``-tagged lines on stderr, or on stdout (below ERROR) with ``--log-stdout``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import recordings
from .faults import Fault, FaultSpecError, parse_env

if TYPE_CHECKING:  # heavy imports (aiohttp, PyAV, numpy) wait until the command line is valid
    from .folders import Folders
    from .server import DoubleApp

logger = logging.getLogger("comfy_double")

#: ComfyUI's directory: the folder holding main.py (its cwd when the worker starts it).
COMFY_DIR = Path(__file__).resolve().parent
#: Boot faults (JSON, as ``COMFY_DOUBLE_FAULTS``) read from the ``--user-directory`` at start.
BOOT_FAULTS_FILE = "comfy_double_faults.json"

_STORE_TRUE = [
    "--auto-launch",
    "--disable-auto-launch",
    "--cpu-vae",
    "--force-channels-last",
    "--disable-ipex-optimize",
    "--supports-fp8-compute",
    "--disable-xformers",
    "--enable-manager",
    "--disable-async-offload",
    "--disable-dynamic-vram",
    "--enable-dynamic-vram",
    "--fast-disk",
    "--force-non-blocking",
    "--disable-smart-memory",
    "--deterministic",
    "--mmap-torch-files",
    "--disable-mmap",
    "--dont-print-server",
    "--quick-test-for-ci",
    "--windows-standalone-build",
    "--disable-metadata",
    "--disable-all-custom-nodes",
    "--disable-api-nodes",
    "--multi-user",
    "--log-stdout",
    "--enable-compress-response-body",
    "--disable-pinned-memory",
]

_EXCLUSIVE_GROUPS = [
    ["--cuda-malloc", "--disable-cuda-malloc"],
    ["--force-fp32", "--force-fp16"],
    ["--fp32-unet", "--fp64-unet", "--bf16-unet", "--fp16-unet", "--fp8_e4m3fn-unet", "--fp8_e5m2-unet", "--fp8_e8m0fnu-unet"],
    ["--fp16-vae", "--fp32-vae", "--bf16-vae"],
    ["--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc", "--fp16-text-enc", "--fp32-text-enc", "--bf16-text-enc"],
    [
        "--use-split-cross-attention",
        "--use-quad-cross-attention",
        "--use-pytorch-cross-attention",
        "--use-sage-attention",
        "--use-flash-attention",
        "--use-ck-attention",
    ],
    ["--force-upcast-attention", "--dont-upcast-attention"],
    ["--disable-manager-ui", "--enable-manager-legacy-ui"],
    ["--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"],
]


def build_parser() -> argparse.ArgumentParser:
    """ComfyUI's command line (``comfy/cli_args.py``), rebuilt."""
    parser = argparse.ArgumentParser(prog="main.py")
    add = parser.add_argument
    add("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
    add("--port", type=int, default=8188)
    add("--tls-keyfile", type=str)
    add("--tls-certfile", type=str)
    add("--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*")
    add("--max-upload-size", type=float, default=100)
    add("--base-directory", type=str, default=None)
    add("--extra-model-paths-config", type=str, default=None, metavar="PATH", nargs="+", action="append")
    add("--output-directory", type=str, default=None)
    add("--temp-directory", type=str, default=None)
    add("--input-directory", type=str, default=None)
    add("--user-directory", type=str, default=None)
    add("--cuda-device", type=str, default=None, metavar="DEVICE_ID")
    add("--default-device", type=int, default=None, metavar="DEFAULT_DEVICE_ID")
    add("--directml", type=int, nargs="?", metavar="DIRECTML_DEVICE", const=-1)
    add("--oneapi-device-selector", type=str, default=None, metavar="SELECTOR_STRING")
    add("--preview-method", type=str, default="none", choices=["none", "auto", "latent2rgb", "taesd"])
    add("--preview-size", type=int, default=512)
    add("--reserve-vram", type=float, default=None)
    add("--async-offload", nargs="?", const=2, type=int, default=None, metavar="NUM_STREAMS")
    add("--default-hashing-function", type=str, choices=["md5", "sha1", "sha256", "sha512"], default="sha256")
    add("--fast", nargs="*", type=str, choices=["fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune"])
    add("--whitelist-custom-nodes", type=str, nargs="+", default=[])
    add("--verbose", default="INFO", const="DEBUG", nargs="?", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    add("--front-end-version", type=str, default="comfyanonymous/ComfyUI@latest")
    add("--front-end-root", type=str, default=None)
    add("--comfy-api-base", type=str, default="https://api.comfy.org")
    add("--database-url", type=str, default=None)
    for flag in _STORE_TRUE:
        add(flag, action="store_true")
    for group_flags in _EXCLUSIVE_GROUPS:
        group = parser.add_mutually_exclusive_group()
        for flag in group_flags:
            group.add_argument(flag, action="store_true")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true")
    cache.add_argument("--cache-lru", type=int, default=0)
    cache.add_argument("--cache-none", action="store_true")
    cache.add_argument("--cache-ram", nargs="*", type=float, default=None, metavar="GB")
    return parser


class LevelTagFormatter(logging.Formatter):
    """ComfyUI v0.30.0's console format: a coloured ``[LEVEL]`` tag (bold from WARNING up), then the
    message, itself coloured when the record has a ``color`` (``Prompt executed in``, green), e.g.
    ``\x1b[1m\x1b[33m[WARNING]\x1b[0m lora key not loaded: ...`` (``lora_mismatch_server_log.json``)."""

    LEVEL_COLORS = {"DEBUG": "36", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "35"}
    NAMED_COLORS = {"green": "32", "red": "31", "yellow": "33"}

    def format(self, record: logging.LogRecord) -> str:
        color = self.LEVEL_COLORS.get(record.levelname)
        bold = "\x1b[1m" if record.levelno >= logging.WARNING else ""
        tag = f"{bold}\x1b[{color}m[{record.levelname}]\x1b[0m " if color else f"{bold}[{record.levelname}]\x1b[0m "
        message = super().format(record)
        line_color = self.NAMED_COLORS.get(getattr(record, "color", ""))
        return f"{tag}\x1b[{line_color}m{message}\x1b[0m" if line_color else tag + message


def setup_logging(level: str, use_stdout: bool) -> None:
    """ComfyUI's ``app/logger.setup_logger``: level-tagged messages; stderr, or stdout below ERROR."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = LevelTagFormatter("%(message)s")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(formatter)
    if use_stdout:
        err.addFilter(lambda record: record.levelno >= logging.ERROR)
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(formatter)
        out.addFilter(lambda record: record.levelno < logging.ERROR)
        root.addHandler(out)
    root.addHandler(err)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def build_folders(args: argparse.Namespace) -> Folders:
    """Directories as ComfyUI resolves them (absolute), model paths from every YAML given."""
    from .folders import Folders, load_extra_model_paths

    base = Path(os.path.abspath(args.base_directory)) if args.base_directory else COMFY_DIR
    folders = Folders.create(
        base,
        input_dir=Path(args.input_directory) if args.input_directory else None,
        output_dir=Path(args.output_directory) if args.output_directory else None,
        temp_dir=Path(args.temp_directory) / "temp" if args.temp_directory else None,  # main.py: <--temp-directory>/temp
        user_dir=Path(args.user_directory) if args.user_directory else None,
    )
    default_yaml = COMFY_DIR / "extra_model_paths.yaml"
    if default_yaml.is_file():
        load_extra_model_paths(folders, default_yaml)
    for group in args.extra_model_paths_config or []:
        for path in group:
            load_extra_model_paths(folders, Path(path))
    return folders


def _boot_faults(args: argparse.Namespace) -> list[Fault]:
    """From ``COMFY_DOUBLE_FAULTS``, and from :data:`BOOT_FAULTS_FILE` in the user directory: the
    worker gives its ComfyUI a scrubbed environment, so a test arms it through a file."""
    specs = [os.environ.get("COMFY_DOUBLE_FAULTS")]
    if args.user_directory and (Path(args.user_directory) / BOOT_FAULTS_FILE).is_file():
        specs.append((Path(args.user_directory) / BOOT_FAULTS_FILE).read_text())
    try:
        return [fault for spec in specs for fault in parse_env(spec)]
    except FaultSpecError as ex:
        logger.error("comfy_double: %s", ex)
        raise SystemExit(1) from ex


async def _serve(app: DoubleApp, args: argparse.Namespace) -> None:
    from aiohttp import web

    runner = web.AppRunner(app.web_app, access_log=None)
    await runner.setup()
    if not args.dont_print_server:
        logger.info("Starting server\n")
    for address in args.listen.split(","):
        site = web.TCPSite(runner, address, args.port)
        await site.start()
        shown = f"[{address}]" if ":" in address else address
        if not args.dont_print_server:
            logger.info("To see the GUI go to: http://%s:%s", shown, args.port)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_stdout)
    faults = _boot_faults(args)
    for fault in faults:
        if fault.mode == "boot_exit":
            logger.error("comfy_double: boot_exit fault: exiting with status %s before listening", fault.exit_code)
            return fault.exit_code
        if fault.mode == "boot_delay":
            logger.info("comfy_double: boot_delay fault: waiting %.1f s before listening", fault.seconds)
            time.sleep(fault.seconds or 0.0)

    from .executor import hard_exit
    from .server import DoubleApp

    logger.info("comfy_double: the ComfyUI test double (protocol of ComfyUI %s), not ComfyUI", recordings.COMFYUI_VERSION)
    logger.info("Python version: %s", sys.version)
    logger.info("ComfyUI version: %s", recordings.COMFYUI_VERSION)
    folders = build_folders(args)
    app = DoubleApp(folders, argv=list(sys.argv), on_crash=hard_exit, disable_metadata=args.disable_metadata)
    app.add_faults([f for f in faults if f.mode not in ("boot_exit", "boot_delay")])
    if args.quick_test_for_ci:  # everything is loaded; exit before touching any folder
        return 0
    shutil.rmtree(folders.temp_dir, ignore_errors=True)  # ComfyUI's cleanup_temp() at start
    folders.ensure_io_dirs()
    app.executor.start()
    try:
        asyncio.run(_serve(app, args))
    except KeyboardInterrupt:
        logger.info("\nStopped server")
    return 0
