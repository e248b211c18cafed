#!/usr/bin/env node
// Make a video on a deployed endpoint with fetch (Node.js 18 or later): submit (/run), poll
// (/status), save the video; Ctrl-C cancels the job (/cancel).
//
//   RUNPOD_API_KEY=... node docs/examples/client.mjs <endpoint id> cat.png "a cat walks along the beach" out.mp4

import { readFile, rename, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

const [endpointId, imagePath, prompt, outPath] = process.argv.slice(2);
const base = process.env.RUNPOD_ENDPOINT_BASE_URL ?? "https://api.runpod.ai/v2";
const url = `${base}/${endpointId}`;
const headers = { Authorization: `Bearer ${process.env.RUNPOD_API_KEY}`, "Content-Type": "application/json" };
const pollMs = Number(process.env.POLL_SECONDS ?? "3") * 1000;

async function call(path, options = {}) {
  const response = await fetch(`${url}${path}`, { headers, ...options });
  if (!response.ok) {  // 401: a wrong API key; 400/413: a bad or too large body
    throw new Error(`${options.method ?? "GET"} ${path}: HTTP ${response.status} ${await response.text()}`);
  }
  return response.json();
}

async function main() {
  const image = (await readFile(imagePath)).toString("base64");
  const job = { input: { prompt, image, options: { width: 832, height: 480, length: 81 } } };
  const { id } = await call("/run", { method: "POST", body: JSON.stringify(job) });
  console.error(`job ${id}`);
  process.on("SIGINT", async () => {
    await call(`/cancel/${id}`, { method: "POST" });
    console.error(`job ${id} cancelled`);
    process.exit(130);
  });

  let status;
  let shown;
  for (;;) {
    status = await call(`/status/${id}`);
    if (!["IN_QUEUE", "IN_PROGRESS"].includes(status.status)) break;
    const update = JSON.stringify(status.output ?? "waiting for a worker");  // the latest progress update
    if (update !== shown) console.error(update);  // printed only when it changed
    shown = update;
    await sleep(pollMs);
  }
  if (status.status !== "COMPLETED") {  // FAILED, CANCELLED or TIMED_OUT; error is "<code>: <message>"
    console.error(`job ${status.status}: ${status.error}`);
    return 1;
  }
  const output = status.output;
  let video;
  if (output.video_url) {  // S3 output mode: a presigned link
    const response = await fetch(output.video_url);
    if (!response.ok) throw new Error(`the video link answered HTTP ${response.status}`);
    video = Buffer.from(await response.arrayBuffer());
  } else {
    video = Buffer.from(output.video, "base64");
  }
  await writeFile(`${outPath}.part`, video);  // the file appears complete or not at all
  await rename(`${outPath}.part`, outPath);
  // Not output.seed: JSON.parse rounds integers above 2^53, and a random seed usually is one.
  console.log(`wrote ${outPath} (${video.length} bytes)`);
  return 0;
}

main().then((code) => process.exit(code), (error) => {
  console.error(error.message);
  process.exit(1);
});
