"""bench/gpu.py: it refuses without a GPU or an endpoint; its table and JSON come from a recorded run
(tests/bench_gpu_record.json: synthetic numbers in the shape of a local run on an RTX 4090); and its
local and endpoint loops work end to end against the ComfyUI double (a GPU faked with nvidia-smi)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import runpod

from tests.harness import REPO, load_script, process_env, stop_worker_api, wait_http
from tests.runpod_platform import FakeRunPod

SCRIPT = REPO / "bench" / "gpu.py"
RECORD = Path(__file__).resolve().parent / "bench_gpu_record.json"
RTX_4090 = "NVIDIA GeForce RTX 4090, 8.9, 570.124.06, 24564"

bench = load_script("bench_gpu", SCRIPT)


def nvidia_smi(folder: Path, line: str | None) -> Path:
    """A folder for PATH whose nvidia-smi prints ``line`` (None: no nvidia-smi at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    if line is not None:
        script = folder / "nvidia-smi"
        script.write_text(f"#!/bin/sh\necho '{line}'\n" if line else "#!/bin/sh\n")
        script.chmod(0o755)
    return folder


@pytest.mark.parametrize(("line", "seen"), [(None, "nvidia-smi is not installed"), ("", "nvidia-smi lists no GPU")])
def test_without_a_gpu_or_an_endpoint_it_refuses_in_one_line(tmp_path: Path, line: str | None, seen: str) -> None:
    env = {**os.environ, "PATH": str(nvidia_smi(tmp_path / "bin", line))}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"bench/gpu.py: no NVIDIA GPU here ({seen}): run it on a machine with a GPU and the models, or against a "
        "deployed endpoint with --endpoint ID\n"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]  # nothing written


def test_an_endpoint_needs_the_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert bench.main(["--endpoint", "abc123"]) == 2
    assert capsys.readouterr().err == "bench/gpu.py: --endpoint needs RUNPOD_API_KEY in the environment\n"


# ---------------------------------------------------------------------------- the table and JSON of a recorded run
TABLE = """\
GPU: NVIDIA GeForce RTX 4090 (24564 MiB), driver 570.124.06; torch 2.10.0+cu128; ComfyUI 0.30.0; worker 0.1.0
Run: local (python handler.py --rp_serve_api per configuration and size); 3 i2v jobs per configuration and size, the first cold; 2026-11-26T09:14:03Z

| configuration | size | jobs ok | boot s | cold s | warm s (median) | warm execution s | high_noise s/step | low_noise s/step | VRAM peak GiB | attention | --fast |
|---|---|---|---|---|---|---|---|---|---|---|---|
| default | 832x480x81 | 3/3 | 41.2 | 162.4 | 62.2 | 59.0 | 8.70 | 8.68 | 23.4 | pytorch | none |
| sage | 832x480x81 | 3/3 | 47.9 | 141.5 | 48.5 | 45.4 | 6.45 | 6.45 | 23.3 | sage | none |
| fast | 832x480x81 | 3/3 | 41.5 | 161.9 | 61.8 | 58.8 | 8.65 | 8.65 | 23.4 | pytorch | fp8_matrix_mult |
| 4step | 832x480x81 | 3/3 | 41.0 | 144.0 | 44.7 | 41.6 | 8.65 | 8.65 | 23.3 | pytorch | none |
| compile | 832x480x81 | 3/3 | 41.3 | 431.7 | 55.6 | 52.5 | 7.65 | 7.65 | 23.9 | pytorch | none |
| default | 1280x720x81 | 2/3 | 41.4 | 265.0 | 170.5 | 167.0 | 16.60 | 16.60 | 24.0 | pytorch | none |

- default 1280x720x81: job 2: execution_failed: KSamplerAdvanced (node 14): torch.OutOfMemoryError: CUDA out of memory. \
Tried to allocate 1.98 GiB. GPU 0 has a total capacity of 23.64 GiB of which 1.31 GiB is free.
"""


def test_the_table_of_a_recorded_run() -> None:
    assert bench.markdown(bench.summarize(json.loads(RECORD.read_text()))) == TABLE


def test_the_json_of_a_recorded_run() -> None:
    summary = bench.summarize(json.loads(RECORD.read_text()))
    assert summary["machine"] == {"gpu": "NVIDIA GeForce RTX 4090", "gpu_memory_mib": 24564, "driver": "570.124.06",
                                  "torch": "2.10.0+cu128", "comfyui": "0.30.0", "worker": "0.1.0"}  # fmt: skip
    default, sage, *_, big = summary["rows"]
    # the warm jobs 2 and 3: 61.8 and 62.6 s; high noise (27.3 − 10.0) / 2 and (27.6 − 10.1) / 2 (its step 2 was not sent)
    assert default.pop("s_per_step") == pytest.approx({"high_noise": 8.70, "low_noise": 8.675})
    assert default == pytest.approx(
        {"config": "default", "size": "832x480x81", "skipped": None, "jobs": 3, "ok": 3, "boot_s": 41.2, "cold_s": 162.4,
         "warm_median_s": 62.2, "warm_execution_median_s": 59.0, "warm_jobs": 2, "vram_peak_gib": 23.4, "attention": "pytorch",
         "fast": [], "errors": []}
    )  # fmt: skip
    assert sage["attention"] == "sage" and sage["s_per_step"] == pytest.approx({"high_noise": 6.45, "low_noise": 6.45})
    # a failed job: not in the medians, its VRAM peak counted, its error kept
    assert (big["ok"], big["warm_jobs"], big["warm_median_s"], big["vram_peak_gib"]) == (2, 1, 170.5, 23.97)
    assert big["errors"][0].startswith("job 2: execution_failed: KSamplerAdvanced (node 14): torch.OutOfMemoryError")
    assert json.loads(json.dumps(summary)) == summary  # plain JSON


def test_the_saved_json_prints_the_same_table_without_a_gpu(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    record = json.loads(RECORD.read_text())
    saved.write_text(json.dumps({"summary": bench.summarize(record), "record": record}))
    env = {**os.environ, "PATH": str(nvidia_smi(tmp_path / "bin", None))}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--from", str(saved)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == TABLE


def test_an_endpoint_record_says_what_it_could_not_vary() -> None:
    record = {
        "mode": "endpoint", "endpoint": "abc123", "started": "2026-11-26T10:00:00Z", "jobs_per_run": 2, "worker_version": "0.1.0",
        "gpus": None, "notes": ["cold = the first job of a configuration; on an endpoint it is cold only if no worker was warm"],
        "runs": [
            {"config": "default", "width": 832, "height": 480, "length": 81, "system_stats": None, "jobs": [
                {"seconds": 190.2, "status": "COMPLETED", "timings": {"execution": 150.3}, "vram_peak": None,
                 "launch": {"attention": "sage", "fast": [], "gpu": "NVIDIA L40S", "driver": "575.57.08", "torch": "2.10.0+cu128",
                            "comfyui": "0.30.0"},
                 "progress": [{"stage": "high_noise", "step": 0, "steps": 6, "elapsed": 2.0},
                              {"stage": "high_noise", "step": 1, "steps": 6, "elapsed": 9.0},
                              {"stage": "high_noise", "step": 3, "steps": 6, "elapsed": 19.0}]},
                {"seconds": 40.0, "status": "COMPLETED", "timings": {"execution": 38.0}, "vram_peak": None, "launch": None,
                 "progress": [{"stage": "low_noise", "step": 4, "steps": 6, "elapsed": 25.0},
                              {"stage": "low_noise", "step": 6, "steps": 6, "elapsed": 35.0}]},
            ]},
            {"config": "sage", "width": 832, "height": 480, "length": 81, "jobs": [],
             "skipped": "COMFY_ATTENTION=sage is the endpoint's environment, which a job cannot change"},
        ],
    }  # fmt: skip
    table = bench.markdown(bench.summarize(record))
    assert table.splitlines()[0] == "GPU: NVIDIA L40S, driver 575.57.08; torch 2.10.0+cu128; ComfyUI 0.30.0; worker 0.1.0"
    assert "endpoint abc123 (its environment is fixed: only per-job settings vary)" in table
    assert "| default | 832x480x81 | 2/2 | n/a | 190.2 | 40.0 | 38.0 | n/a | 5.00 | n/a | sage | none |" in table
    assert "- sage 832x480x81: not run: COMFY_ATTENTION=sage is the endpoint's environment, which a job cannot change" in table
    assert "sage 832x480x81 |" not in table


def test_seconds_per_step_leave_loading_out() -> None:
    updates = [
        {"stage": "high_noise", "step": 2, "steps": 6, "elapsed": 20.0},
        {"stage": "low_noise", "step": 3, "steps": 6, "elapsed": 30.0},  # the sampler starts: the expert loads
        {"stage": "low_noise", "step": 4, "steps": 6, "elapsed": 52.0},
        {"stage": "low_noise", "step": 6, "steps": 6, "elapsed": 68.0},
        {"stage": "low_noise", "step": 5, "steps": 6, "elapsed": 60.1},  # arrived late
    ]
    assert bench.per_step(updates, "low_noise") == pytest.approx(8.0)
    assert bench.per_step(updates[2:], "low_noise") == pytest.approx(8.0)  # polled: its start was not seen
    assert bench.per_step(updates[:3], "low_noise") is None  # one completed step: nothing to time
    assert bench.per_step(updates, "high_noise") is None
    four_steps = [{"stage": "low_noise", "step": s, "steps": 4, "elapsed": t} for s, t in ((2, 20.0), (3, 31.0), (4, 40.0))]
    assert bench.per_step(four_steps, "low_noise") == pytest.approx(9.0)
    assert bench.sampling_stages([{"stage": "loading"}, {"stage": "sampling"}, {"stage": "decode"}]) == ["sampling"]


def test_what_comfyui_runs_with_is_read_from_its_command_line() -> None:
    assert bench.launch_from_argv(["main.py", "--use-sage-attention", "--fast", "fp8_matrix_mult", "autotune", "--x"]) == {
        "attention": "sage", "fast": ["fp8_matrix_mult", "autotune"]}  # fmt: skip
    assert bench.launch_from_argv(["main.py", "--use-pytorch-cross-attention", "--fast"]) == {
        "attention": "pytorch",
        "fast": ["all"],
    }
    assert bench.launch_from_argv(["main.py"])["attention"] == "xformers or pytorch (no flag)"
    assert bench.device_name({"devices": [{"name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync"}]}) == "NVIDIA H100 80GB HBM3"
    assert bench.device_name({"devices": []}) is None


def test_bad_configurations_and_sizes_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--configs", "default,turbo"])
    assert "unknown configuration turbo; known: default, sage, fast, 4step, compile" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "832x480"])
    assert "'832x480': expected WIDTHxHEIGHTxFRAMES, e.g. 832x480x81" in capsys.readouterr().err


# ---------------------------------------------------------------------------- end to end against the double
def test_a_local_run_starts_a_worker_per_configuration_and_records_its_progress(tmp_path: Path) -> None:
    env = process_env(tmp_path, PATH=f"{nvidia_smi(tmp_path / 'bin', RTX_4090)}{os.pathsep}{os.environ['PATH']}")
    for name in ("COMFY_PORT", "WORKER_DIR", "JOB_TIMEOUT", "PROGRESS_INTERVAL"):  # bench/gpu.py sets its own
        env.pop(name)
    out = tmp_path / "run.json"
    argv = [sys.executable, str(SCRIPT), "--configs", "default,sage", "--sizes", "64x64x5", "--jobs", "2", "--output", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    assert done.stdout == bench.markdown(saved["summary"])
    assert "GPU: NVIDIA GeForce RTX 4090 (24564 MiB), driver 570.124.06; torch 2.11.0+cu130; ComfyUI 0.30.0" in done.stdout
    rows = saved["summary"]["rows"]
    assert [(r["config"], r["ok"], r["jobs"]) for r in rows] == [("default", 2, 2), ("sage", 2, 2)]
    assert [r["attention"] for r in rows] == ["pytorch", "pytorch"]  # no SageAttention here: the worker fell back
    for run in saved["record"]["runs"]:
        assert run["boot_s"] > 0 and run["system_stats"]["system"]["comfyui_version"] == "0.30.0"
        for job in run["jobs"]:
            stages = [update["stage"] for update in job["progress"]]
            assert {"loading", "high_noise", "low_noise", "decode"} <= set(stages), stages
            assert job["vram_peak"] is None or job["vram_peak"] > 0
    assert (tmp_path / "run.log").read_text().count("ComfyUI started (pid") == 2


def test_an_endpoint_run_polls_status_and_skips_what_a_job_cannot_change(tmp_path: Path, monkeypatch, capsys) -> None:
    with FakeRunPod(hold=1.0) as platform:
        env = {**process_env(tmp_path), **platform.worker_env()}
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "handler.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{env['COMFY_PORT']}/system_stats", timeout=60)
            monkeypatch.setenv("RUNPOD_API_KEY", platform.api_key)
            monkeypatch.setattr(runpod, "endpoint_url_base", platform.base_url)  # read from the environment at import
            monkeypatch.setattr(bench, "STATUS_POLL", 0.05)
            out = tmp_path / "endpoint.json"
            argv = ["--endpoint", platform.endpoint_id, "--configs", "default,compile", "--sizes", "64x64x5", "--jobs", "2",
                    "--output", str(out)]  # fmt: skip
            assert bench.main(argv) == 0
        finally:
            stop_worker_api(worker)
    table = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [job["status"] for job in saved["record"]["runs"][0]["jobs"]] == ["COMPLETED", "COMPLETED"]
    assert all(job["timings"]["execution"] >= 0 for job in saved["record"]["runs"][0]["jobs"])
    assert f"Run: endpoint {platform.endpoint_id} (its environment is fixed: only per-job settings vary)" in table
    assert "- compile 64x64x5: not run: TORCH_COMPILE=true is the endpoint's environment, which a job cannot change" in table
    assert "| default | 64x64x5 | 2/2 | n/a |" in table
