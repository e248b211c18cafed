#!/usr/bin/env python3
"""Make a video with the wan22 worker: submit a job, follow its progress, save the MP4.

    export RUNPOD_API_KEY=...            # never printed
    python scripts/client.py --endpoint <endpoint id> --image cat.png --prompt "a cat walks" -o cat.mp4
    python scripts/client.py --url http://localhost:8000 --image cat.png --prompt "a cat walks"

``--endpoint`` calls a deployed RunPod endpoint through the SDK's ``runpod.Endpoint``: ``/run``,
then ``/status`` every ``--poll`` seconds with a progress bar fed by the worker's progress updates,
``/cancel`` on Ctrl-C or ``--timeout``. The base URL is the SDK's ``runpod.endpoint_url_base``,
which the SDK reads from ``RUNPOD_ENDPOINT_BASE_URL`` (default ``https://api.runpod.ai/v2``).
``--url`` calls the SDK's local API (``python handler.py --rp_serve_api``), which only offers
``/runsync``: no progress, no cancel.

Only the fields given are sent; the worker applies its defaults and validates everything.
Needs ``requests`` and ``tqdm``; ``--endpoint`` also needs ``runpod``. Docs: docs/client.md.

Exit codes: 0 done; 1 the job failed or was cancelled, or its output is unusable; 2 bad arguments
or input files; 3 an HTTP error (401: the API key was refused); 4 timeout (the job is cancelled
first); 130 interrupted (Ctrl-C; the job is cancelled first).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
from tqdm import tqdm

EXIT_OK, EXIT_JOB, EXIT_USAGE, EXIT_API, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
# The worker's vocabulary, copied so that the client runs without the worker's code; tests/test_vocabulary.py
# holds each list to the worker's registries.
TASKS = ("i2v", "flf2v", "t2v", "ti2v-5b", "s2v", "control", "animate")
SPEEDS = ("default", "4step")
#: Largest request body RunPod accepts on /run (bytes).
RUN_LIMIT = 10_000_000
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
#: Seconds for one /status or /cancel call; consecutive failed polls tolerated before giving up.
CALL_TIMEOUT, POLL_FAILURES = 10, 5
MP4_BOX, WEBM_HEADER, PNG_SIGNATURE = b"ftyp", b"\x1a\x45\xdf\xa3", b"\x89PNG\r\n\x1a\n"
STAGES = {
    "queued": "queued on the worker", "loading": "loading models", "high_noise": "sampling, high noise",
    "low_noise": "sampling, low noise", "sampling": "sampling", "decode": "decoding", "interpolate": "interpolating",
    "encode": "encoding",
}  # fmt: skip
OPTIONS = (("width", int), ("height", int), ("length", int), ("steps", int), ("split_step", int), ("cfg", float),
           ("frame_rate", float), ("seed", int), ("shift", float), ("sampler_name", str), ("scheduler", str),
           ("lora_strength", float), ("resize", str), ("resolution", str), ("aspect_ratio", str), ("duration", float),
           ("interpolate", int), ("interpolation_model", str), ("output_frame_rate", float), ("video_format", str),
           ("crf", int), ("fit", str), ("control", str), ("mode", str), ("cache", str))  # fmt: skip
#: The media fields (``<field>`` as base64 from a file, ``<field>_url``) and what they are.
MEDIA = (("image", "start image"), ("end_image", "end image (flf2v)"), ("audio", "sound track the video carries (s2v: the speech)"),
         ("video", "video that drives the job (control; animate: the motion whose pose and face the worker draws, and in replace the scene)"),
         ("pose_video", "pose video (animate; else drawn from --video)"), ("face_video", "face video (animate)"),
         ("mask_video", "mask of the person to replace (animate replace)"))  # fmt: skip
#: The media that are tracks in time: ``<field>_start`` / ``<field>_end`` (seconds) cut them.
TIMED = ("audio", "video", "pose_video", "face_video", "mask_video")
#: Flags that describe the job itself, refused together with --input-json.
JOB_FLAGS = (
    "prompt", "negative_prompt", *(name for field, _ in MEDIA for name in (field, f"{field}_url")),
    *(name for field in TIMED for name in (f"{field}_start", f"{field}_end")), "task", "speed", "keep_audio", "lora",
    *(name for name, _ in OPTIONS),
)  # fmt: skip

ProgressCallback = Callable[[str, Any], None]


class ClientError(Exception):
    exit_code = EXIT_JOB


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class ApiError(ClientError):
    exit_code = EXIT_API


class TransientApiError(ApiError):
    """No answer, or a 5xx/429: worth polling again."""


class JobTimeout(ClientError):
    exit_code = EXIT_TIMEOUT


# ---- arguments → request ---------------------------------------------------------------------
def parse_lora(spec: str) -> dict[str, Any]:
    """``NAME_OR_URL[:STRENGTH[:TARGET]]`` → ``{"name"|"url", "strength"?, "target"?}``.

    Read from the right, because URLs hold colons: a last part that is a number is the strength;
    a word after a number is the target.
    """
    parts = spec.split(":")
    strength = target = None
    if len(parts) >= 3 and _is_number(parts[-2]) and re.fullmatch(r"[A-Za-z_][\w-]*", parts[-1]):
        *parts, strength, target = parts
    elif len(parts) >= 2 and _is_number(parts[-1]):
        *parts, strength = parts
    source = ":".join(parts)
    if not source:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME_OR_URL[:STRENGTH[:TARGET]]")
    lora: dict[str, Any] = {"url" if re.match(r"https?://", source) else "name": source}
    if strength is not None:
        lora["strength"] = float(strength)
    if target is not None:
        lora["target"] = target
    return lora


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="client.py", description="Make a video with the wan22 worker on RunPod (or its local API).",
        epilog="Exit codes: 0 done, 1 job failed/cancelled, 2 bad arguments, 3 HTTP error, 4 timeout, 130 Ctrl-C.",
    )  # fmt: skip
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", metavar="ID", help="RunPod endpoint id (API key from RUNPOD_API_KEY)")
    where.add_argument("--url", help="the SDK's local API, e.g. http://localhost:8000 (handler.py --rp_serve_api)")
    job = parser.add_argument_group("the job (only what you give is sent)")
    job.add_argument("--prompt")
    job.add_argument("--negative-prompt")
    job.add_argument("--task", choices=TASKS)
    job.add_argument("--speed", choices=SPEEDS, help="4step: the Wan 2.2 Lightning LoRAs, 4 steps (i2v, flf2v, t2v, s2v, control)")
    job.add_argument("--keep-audio", action="store_true", default=None, help="put the video's own sound on the result")
    for field, what in MEDIA:
        media = job.add_mutually_exclusive_group()
        media.add_argument(f"--{field.replace('_', '-')}", type=Path, metavar="FILE", help=f"{what}, sent as base64")
        media.add_argument(f"--{field.replace('_', '-')}-url", metavar="URL")
    for field in TIMED:
        job.add_argument(f"--{field}-start", type=float, metavar="SECONDS", help=f"use the {field} from here")
        job.add_argument(f"--{field}-end", type=float, metavar="SECONDS", help=f"use the {field} up to here")
    job.add_argument("--lora", action="append", type=parse_lora, metavar="NAME_OR_URL[:STRENGTH[:TARGET]]",
                     help="extra LoRA; repeat for more")  # fmt: skip
    job.add_argument("--input-json", metavar="FILE", help='send this job input as is ({"input": {...}} or the input; - = stdin)')
    for name, kind in OPTIONS:
        job.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper())
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o", "--output", type=Path, default=Path("out.mp4"), metavar="FILE", help="where to write the MP4 (default out.mp4)"
    )
    out.add_argument("--last-frame", type=Path, metavar="FILE", help="ask for the last frame and write it here (PNG)")
    out.add_argument(
        "--timeout", type=_positive, default=1800.0, metavar="SECONDS", help="overall seconds before the job is cancelled (1800)"
    )
    out.add_argument("--poll", type=_positive, default=2.0, metavar="SECONDS", help="seconds between /status calls (2)")
    return parser.parse_args(argv)


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request body ``{"input": {...}}`` from the arguments: only the fields given.

    ``--input-json`` is sent as is: a file with an ``input`` key is the whole body (``policy``,
    ``webhook`` … included), any other object is the input. ``--last-frame`` adds ``return_last_frame``.
    """
    if args.input_json is not None:
        given = [f"--{flag.replace('_', '-')}" for flag in JOB_FLAGS if getattr(args, flag) is not None]
        if given:
            raise UsageError(f"--input-json sends the file as is; drop {', '.join(given)} or put them in the file")
        body = _read_input_json(args.input_json)
    else:
        job_input: dict[str, Any] = {}
        spans = (name for field in TIMED for name in (f"{field}_start", f"{field}_end"))
        for key in ("prompt", "negative_prompt", "task", "speed", "keep_audio", *(f"{field}_url" for field, _ in MEDIA), *spans):
            if getattr(args, key) is not None:
                job_input[key] = getattr(args, key)
        for key, _ in MEDIA:
            if getattr(args, key) is not None:
                job_input[key] = _read_base64(getattr(args, key), f"--{key.replace('_', '-')}")
        if args.lora:
            job_input["loras"] = args.lora
        options = {name: getattr(args, name) for name, _ in OPTIONS if getattr(args, name) is not None}
        if options:
            job_input["options"] = options
        if not job_input:
            raise UsageError("nothing to send: give --prompt (and --image or --image-url), or --input-json FILE")
        body = {"input": job_input}
    if args.last_frame is not None:
        body["input"]["return_last_frame"] = True
    return body


def _read_base64(path: Path, flag: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not data:
        raise UsageError(f"{flag} {path}: the file is empty")
    return base64.b64encode(data).decode("ascii")


def _read_input_json(name: str) -> dict[str, Any]:
    """The request body from a JSON file: ``{"input": {...}, ...}`` as is, a bare input wrapped."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise UsageError(f"--input-json {name}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--input-json {name}: not valid JSON ({exc})") from None
    body = data if isinstance(data, dict) and "input" in data else {"input": data}
    if not isinstance(body["input"], dict) or not body["input"]:
        raise UsageError(f'--input-json {name}: expected a non-empty job input object, bare or as {{"input": {{...}}}}')
    return body


# ---- progress ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """A worker's progress update, read leniently: any field may be missing or of the wrong type."""

    stage: str | None = None
    step: int | None = None
    steps: int | None = None
    percent: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    #: Segment k of n, of a video made in segments (s2v).
    segment: int | None = None
    segments: int | None = None

    @classmethod
    def parse(cls, update: Any) -> Progress:
        if not isinstance(update, dict):
            return cls(stage=_printable(update) if update not in (None, "", {}) else None)
        step, steps = _number(update.get("step")), _number(update.get("steps"))
        segment, segments = _number(update.get("segment")), _number(update.get("segments"))
        percent = _number(update.get("percent"))
        return cls(
            stage=_printable(update["stage"]) if update.get("stage") not in (None, "") else None,
            step=None if step is None else int(step),
            steps=None if steps is None or steps <= 0 else int(steps),
            percent=None if percent is None else min(max(percent, 0.0), 100.0),
            elapsed=_number(update.get("elapsed")),
            eta=_number(update.get("eta")),
            segment=None if segment is None else int(segment),
            segments=None if segments is None or segments <= 0 else int(segments),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _printable(value: Any, limit: int = 40) -> str:
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_progress(update: Any, *, status: str = "IN_PROGRESS", elapsed: float | None = None) -> str:
    """One line for a job's state: stage, segment, step/steps, percent, elapsed and ETA when known."""
    progress = Progress.parse(update) if status == "IN_PROGRESS" else Progress()
    parts = [describe_state(progress, status)]
    shown = progress.elapsed if progress.elapsed is not None else elapsed
    if shown is not None:
        parts.append(f"{format_duration(shown)} elapsed")
    if progress.eta is not None:
        parts.append(f"ETA {format_duration(progress.eta)}")
    return ", ".join(parts)


def describe_state(progress: Progress, status: str) -> str:
    """Where the job is, without the times: stage, segment, step/steps, percent."""
    if status == "IN_QUEUE":
        parts = ["in queue"]
    elif progress.stage is not None:
        parts = [STAGES.get(progress.stage, progress.stage)]
    else:
        parts = ["running" if status == "IN_PROGRESS" else status.lower()]
    if progress.segment is not None:
        parts.append(f"segment {progress.segment}/{progress.segments}" if progress.segments else f"segment {progress.segment}")
    if progress.step is not None:
        parts.append(f"step {progress.step}/{progress.steps}" if progress.steps else f"step {progress.step}")
    if progress.percent is not None:
        parts.append(f"{progress.percent:.0f}%")
    return ", ".join(parts)


class Display:
    """A tqdm bar on a terminal; elsewhere (logs, CI) one line each time the state changes (stage,
    segment, step or percent: not the clock alone)."""

    def __init__(self, stream: IO[str], on_progress: ProgressCallback | None = None):
        self.stream, self.on_progress = stream, on_progress
        self.tty = stream.isatty()
        self._bar: tqdm | None = None
        self._last_state: str | None = None

    def show(self, status: str, update: Any, elapsed: float) -> None:
        if self.on_progress is not None:
            self.on_progress(status, update)
        text = format_progress(update, status=status, elapsed=elapsed)
        progress = Progress.parse(update) if status == "IN_PROGRESS" else Progress()
        if self.tty:
            self._draw(text, 100.0 if status == "COMPLETED" else progress.percent)
            return
        state = describe_state(progress, status)
        if state != self._last_state:
            self._last_state = state
            print(text, file=self.stream, flush=True)

    def _draw(self, text: str, percent: float | None) -> None:
        if self._bar is None:
            self._bar = tqdm(total=100, file=self.stream, bar_format="{percentage:3.0f}%|{bar:24}| {desc}")
        # tqdm prints nothing on a terminal that reports no size; shutil falls back to 80x24 there
        self._bar.ncols, self._bar.nrows = shutil.get_terminal_size()
        if percent is not None:
            self._bar.n = percent
        self._bar.set_description_str(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---- the two APIs ----------------------------------------------------------------------------------
class EndpointApi:
    """A deployed endpoint through ``runpod.Endpoint`` (/run, /status, /cancel)."""

    def __init__(self, endpoint_id: str, api_key: str):
        try:
            import runpod  # the SDK takes a second to import; the local mode does without it
        except ImportError:
            raise UsageError("--endpoint needs RunPod's SDK: pip install runpod") from None

        # the SDK's transport logs each connection retry as a warning; this client reports the outcome
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        self.endpoint = runpod.Endpoint(endpoint_id, api_key=api_key)
        self.base = f"{runpod.endpoint_url_base}/{endpoint_id}"
        self.secret = api_key
        self._jobs: dict[str, Any] = {}

    def submit(self, payload: dict[str, Any]) -> str:
        job = self._call("submitting the job (/run)", lambda: self.endpoint.run(payload))
        self._jobs[job.job_id] = job
        return job.job_id

    def status(self, job_id: str) -> dict[str, Any]:
        path = f"{self.endpoint.endpoint_id}/status/{job_id}"
        state = self._call("polling the job (/status)", lambda: self.endpoint.rp_client.get(path, timeout=CALL_TIMEOUT))
        if not isinstance(state, dict) or not isinstance(state.get("status"), str):
            raise ApiError(f"polling the job (/status): unexpected answer {redact(str(state), self.secret)[:200]}")
        return state

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("cancelling the job (/cancel)", lambda: self._jobs[job_id].cancel(timeout=CALL_TIMEOUT))

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except requests.HTTPError as exc:
            raise http_error(what, exc.response, self.secret) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientApiError(f"{what}: no answer from {self.base} ({type(exc).__name__})") from None
        except (requests.JSONDecodeError, KeyError):  # not JSON, or a /run answer without "id"
            raise ApiError(f"{what}: the answer from {self.base} is not the JSON RunPod sends") from None
        except requests.RequestException as exc:
            raise ApiError(f"{what}: {type(exc).__name__}") from None
        except RuntimeError as exc:  # the SDK turns HTTP 401 into RuntimeError(UNAUTHORIZED_MSG)
            if "401" in str(exc):
                raise ApiError(f"{what}: the API key was refused (HTTP 401 Unauthorized): check RUNPOD_API_KEY") from None
            raise


def http_error(what: str, response: requests.Response | None, secret: str | None = None) -> ApiError:
    if response is None:
        return ApiError(f"{what}: HTTP error without a response")
    code = response.status_code
    if code == 401:
        return ApiError(f"{what}: the API key was refused (HTTP 401 Unauthorized): check RUNPOD_API_KEY")
    body = redact(response.text, secret)[:300].strip()
    hint = ""
    if code == 404:
        hint = " (check the endpoint id; a /run job's status is kept for 30 min after it ends)"
    elif code == 413:
        hint = " (the request is too large: send images by URL)"
    kind = TransientApiError if code >= 500 or code == 429 else ApiError
    return kind(f"{what}: HTTP {code} {response.reason}{hint}" + (f": {body}" if body else ""))


def redact(text: str, secret: str | None = None) -> str:
    """Never print the API key or a base64 blob that came back in an answer."""
    if secret:
        text = text.replace(secret, "<api key>")
    return re.sub(r"[A-Za-z0-9+/=_-]{200,}", lambda m: f"<{len(m.group())} characters>", text)


def local_runsync(url: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``POST <url>/runsync`` on the SDK's local API: the job runs within the request."""
    base = url.rstrip("/").removesuffix("/runsync")
    what = f"the local API ({base}/runsync)"
    try:
        response = requests.post(f"{base}/runsync", json=payload, timeout=(10, timeout))
    except requests.Timeout:
        raise JobTimeout(
            f"no answer within {timeout:.0f} s; the local API cannot cancel, the job runs on in the worker"
        ) from None
    except requests.ConnectionError:
        raise ApiError(f"{what}: no answer; is `python handler.py --rp_serve_api` running there?") from None
    if not response.ok:
        raise http_error(what, response)
    try:
        state = response.json()
    except ValueError:
        raise ApiError(f"{what}: the answer is not JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("status"), str):
        raise ApiError(f"{what}: unexpected answer {redact(str(state))[:200]}")
    return state


# ---- a job from submission to files --------------------------------------------------------------
def follow(api: EndpointApi, job_id: str, display: Display, started: float, deadline: float, poll: float) -> dict[str, Any]:
    """Poll /status until the job ends; tolerate a few failed polls in a row."""
    failures = 0
    while True:
        try:
            state = api.status(job_id)
        except TransientApiError as exc:
            failures += 1
            if failures >= POLL_FAILURES:
                raise
            print(f"warning: {exc}; retrying", file=sys.stderr)
        else:
            failures = 0
            display.show(state["status"], state.get("output"), time.monotonic() - started)
            if state["status"] in FINAL:
                return state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeout(f"the job did not finish within the --timeout of {deadline - started:.0f} s")
        time.sleep(min(poll, remaining))


def job_error(state: dict[str, Any]) -> str:
    """The job's own error string (the SDK wraps a handler exception as JSON: keep its message)."""
    status = state["status"]
    if status == "CANCELLED":
        return "the job was cancelled"
    if status == "TIMED_OUT":
        return "the job timed out on RunPod (the endpoint's execution timeout)"
    error = state.get("error")
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "error_message" in parsed:
            return f"{parsed.get('error_type', 'error')}: {parsed['error_message']}"
        return error
    return json.dumps(error) if error is not None else "the job failed without an error message"


def save_outputs(state: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Write the MP4 (and the last frame if asked); return what was written, for the summary."""
    output = state.get("output")
    if not isinstance(output, dict):
        raise ClientError("the job completed without an output (RunPod drops results over its 10 MB /run limit: use S3 output)")
    written = [_save(output, "video", "video_url", args.output, "an MP4 or WebM video",
                     lambda head: head[4:8] == MP4_BOX or head[:4] == WEBM_HEADER)]  # fmt: skip
    if args.last_frame is not None:
        if "last_frame" not in output and "last_frame_url" not in output:
            raise ClientError(f"wrote {args.output}, but the worker returned no last frame (does it support return_last_frame?)")
        written.append(
            _save(output, "last_frame", "last_frame_url", args.last_frame, "a PNG", lambda head: head.startswith(PNG_SIGNATURE))
        )
    return written


def _save(output: dict[str, Any], key: str, url_key: str, path: Path, kind: str, valid: Callable[[bytes], bool]) -> str:
    part = path.with_name(path.name + ".part")
    try:
        if isinstance(output.get(url_key), str):
            _download(output[url_key], part, f"output.{url_key}")
        elif isinstance(output.get(key), str):
            try:
                part.write_bytes(base64.b64decode(output[key], validate=True))
            except (binascii.Error, ValueError):
                raise ClientError(f"output.{key} is not valid base64") from None
        else:
            raise ClientError(f"the output has neither {key} nor {url_key} (keys: {', '.join(sorted(output))})")
        with part.open("rb") as f:
            if not valid(f.read(16)):
                raise ClientError(f"output.{key}: the data is not {kind}; nothing written to {path}")
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return f"{path} ({format_size(path.stat().st_size)})"


def _download(url: str, dest: Path, what: str) -> None:
    shown = url.split("?", 1)[0]  # a presigned URL's query carries its signature
    try:
        with requests.get(url, stream=True, timeout=(10, 60)) as response:
            if not response.ok:
                raise ClientError(f"{what}: downloading {shown} failed: HTTP {response.status_code} {response.reason}")
            with dest.open("wb") as f:
                for chunk in response.iter_content(1 << 20):
                    f.write(chunk)
    except requests.RequestException as exc:
        raise ClientError(f"{what}: downloading {shown} failed: {type(exc).__name__}") from None


def format_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} B"


def summary(written: list[str], state: dict[str, Any], wall: float) -> str:
    """One line: the files, the video's shape, and where the time went."""
    output = state.get("output") or {}
    shape = []
    if all(isinstance(output.get(k), int) for k in ("width", "height")):
        shape.append(f"{output['width']}x{output['height']}")
    frames = output.get("frames", output.get("length"))  # ``frames``: the video's, when interpolated
    if isinstance(frames, int):
        shape.append(f"{frames} frames")
    if isinstance(output.get("frame_rate"), (int, float)):
        shape.append(f"{output['frame_rate']:g} fps")
    if isinstance(output.get("seed"), int):
        shape.append(f"seed {output['seed']}")
    cache = output.get("cache") if isinstance(output.get("cache"), dict) else {}
    if isinstance(cache.get("skipped_steps"), int) and isinstance(cache.get("steps"), int):
        shape.append(f"{cache['skipped_steps']} of {cache['steps']} steps skipped by the cache")
    times = [f"{format_duration(wall)} in all"]
    if isinstance(state.get("delayTime"), (int, float)):
        times.append(f"queued {format_duration(state['delayTime'] / 1000)}")
    if isinstance(state.get("executionTime"), (int, float)):
        times.append(f"ran {format_duration(state['executionTime'] / 1000)}")
    timings = output.get("timings") if isinstance(output.get("timings"), dict) else {}
    if _number(timings.get("boot_wait")) and timings["boot_wait"] >= 1:  # a job that came while the worker booted
        times.append(f"waited {format_duration(timings['boot_wait'])} for ComfyUI to start")
    if isinstance(timings.get("execution"), (int, float)):
        loading = _number(timings.get("loading"))
        of_it = f" (loading models {format_duration(loading)})" if loading is not None and loading >= 1 else ""
        times.append(f"ComfyUI {format_duration(timings['execution'])}{of_it}")
    return f"wrote {' and '.join(written)}" + (f": {', '.join(shape)}" if shape else "") + f"; {', '.join(times)}"


def _check_destinations(args: argparse.Namespace) -> None:
    """Refuse before any GPU time is spent on a job whose files cannot be written."""
    paths = [args.output] + ([args.last_frame] if args.last_frame is not None else [])
    if args.last_frame is not None and args.last_frame.resolve() == args.output.resolve():
        raise UsageError("--output and --last-frame name the same file")
    for path in paths:
        if path.is_dir() or not path.resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: {'it is a folder' if path.is_dir() else 'its folder does not exist'}")


def run_endpoint(args: argparse.Namespace, payload: dict[str, Any], display: Display) -> int:
    api_key = os.environ.get("RUNPOD_API_KEY")
    if not api_key:
        raise UsageError("set RUNPOD_API_KEY to your RunPod API key (console → Settings → API Keys)")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.endpoint):
        raise UsageError(f"--endpoint {args.endpoint!r} is not an endpoint id (letters, digits, - and _)")
    size = len(json.dumps(payload).encode("utf-8"))
    if size > RUN_LIMIT:
        raise UsageError(f"the request is {format_size(size)}, over RunPod's {format_size(RUN_LIMIT)} limit for /run: "
                         "send the images with --image-url / --end-image-url")  # fmt: skip
    api = EndpointApi(args.endpoint, api_key)
    started = time.monotonic()
    deadline = started + args.timeout
    job_id = api.submit(payload)
    print(f"job {job_id} submitted to endpoint {args.endpoint}", file=sys.stderr)
    try:
        state = follow(api, job_id, display, started, deadline, args.poll)
    except KeyboardInterrupt:
        display.close()
        _cancel(api, job_id, "interrupted")
        return EXIT_INTERRUPTED
    except JobTimeout as exc:
        display.close()
        _cancel(api, job_id, "timeout")
        raise JobTimeout(f"{exc}; the job was cancelled") from None
    finally:
        display.close()
    return _finish(state, args, started)


def _cancel(api: EndpointApi, job_id: str, why: str) -> None:
    print(f"{why}: cancelling job {job_id}", file=sys.stderr)
    try:
        answer = api.cancel(job_id)
    except ApiError as exc:
        print(f"the job may still run: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("not waiting for the cancel to be confirmed", file=sys.stderr)
    else:
        print(
            f"job {job_id}: {answer.get('status', 'cancel sent') if isinstance(answer, dict) else 'cancel sent'}", file=sys.stderr
        )


def run_local(args: argparse.Namespace, payload: dict[str, Any], display: Display) -> int:
    print("the local API reports no progress and cannot cancel: showing the elapsed time", file=sys.stderr)
    started = time.monotonic()
    answer: dict[str, Any] = {}

    def call() -> None:
        try:
            answer["state"] = local_runsync(args.url, payload, args.timeout)
        except ClientError as exc:
            answer["error"] = exc

    thread = threading.Thread(target=call, name="runsync", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            display.show("IN_PROGRESS", None, time.monotonic() - started)
            thread.join(0.5)
    except KeyboardInterrupt:
        display.close()
        print("interrupted: the local API cannot cancel, the job runs on in the worker", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        display.close()
    if "error" in answer:
        raise answer["error"]
    return _finish(answer["state"], args, started)


def _finish(state: dict[str, Any], args: argparse.Namespace, started: float) -> int:
    if state["status"] != "COMPLETED":
        raise ClientError(f"job {state.get('id', '')} {state['status']}: {job_error(state)}")
    written = save_outputs(state, args)
    print(summary(written, state, time.monotonic() - started), flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None, on_progress: ProgressCallback | None = None) -> int:
    """Run the client; ``on_progress(status, update)`` sees every state polled (for tests and embedding)."""
    args = parse_args(argv)
    display = Display(sys.stderr, on_progress)
    secret = os.environ.get("RUNPOD_API_KEY")
    try:
        payload = build_request(args)
        _check_destinations(args)
        if args.endpoint is not None:
            return run_endpoint(args, payload, display)
        return run_local(args, payload, display)
    except ClientError as exc:
        display.close()
        print(f"error: {redact(str(exc), secret)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        display.close()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
