#!/usr/bin/env python3
"""Make a video on a deployed endpoint with requests: submit (/run), poll (/status), save the video;
Ctrl-C cancels the job (/cancel).

    pip install requests
    RUNPOD_API_KEY=... python docs/examples/client.py <endpoint id> cat.png "a cat walks along the beach" out.mp4
"""

import base64
import os
import sys
import time

import requests

BASE = os.environ.get("RUNPOD_ENDPOINT_BASE_URL", "https://api.runpod.ai/v2")
POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "3"))


def main(endpoint_id: str, image_path: str, prompt: str, out_path: str) -> int:
    url = f"{BASE}/{endpoint_id}"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['RUNPOD_API_KEY']}"
    with open(image_path, "rb") as f:
        image = base64.b64encode(f.read()).decode()
    job = {"input": {"prompt": prompt, "image": image, "options": {"width": 832, "height": 480, "length": 81}}}

    submitted = session.post(f"{url}/run", json=job, timeout=60)
    submitted.raise_for_status()  # 401: a wrong API key; 400/413: a bad or too large body
    job_id = submitted.json()["id"]
    print(f"job {job_id}", file=sys.stderr)
    shown = None
    try:
        while True:
            answer = session.get(f"{url}/status/{job_id}", timeout=30)
            answer.raise_for_status()
            status = answer.json()
            if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                break
            update = status.get("output") or "waiting for a worker"  # the latest progress update
            if update != shown:  # print it only when it changed
                print(update, file=sys.stderr)
                shown = update
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        session.post(f"{url}/cancel/{job_id}", timeout=30).raise_for_status()
        print(f"job {job_id} cancelled", file=sys.stderr)
        return 130

    if status["status"] != "COMPLETED":  # FAILED, CANCELLED or TIMED_OUT; error is "<code>: <message>"
        print(f"job {status['status']}: {status.get('error')}", file=sys.stderr)
        return 1
    output = status["output"]
    if "video_url" in output:  # S3 output mode: a presigned link
        video = requests.get(output["video_url"], timeout=300)
        video.raise_for_status()
        data = video.content
    else:
        data = base64.b64decode(output["video"])
    with open(out_path + ".part", "wb") as f:  # the file appears complete or not at all
        f.write(data)
    os.replace(out_path + ".part", out_path)
    print(f"wrote {out_path} ({len(data)} bytes), seed {output['seed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
