"""Load on `taskhead serve`: requests/s and latency with micro-batching on and off.

Starts `taskhead serve` on loopback with one SST-2 classifier (fine-tuned here like predict_throughput.py,
or --run RUN_DIR), then a bounded asynchronous client (httpx.AsyncClient, --concurrency requests in
flight) sends --requests requests of one SST-2 dev sentence each. Measured per mode: requests/s over the
whole load, p50 / p99 latency, errors (non-200 answers and transport failures), the server's mean merged
batch (its /health counters) and requests per CPU-second of the server process. The server and the client
share the machine's cores.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import DATA, read_tsv, train_run  # the script's own folder

TASKHEAD = Path(sys.executable).parent / "taskhead"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, port: int, extra: list[str]) -> subprocess.Popen[str]:
    import httpx

    command = [str(TASKHEAD), "serve", f"sst2={run}", "--port", str(port), "--log-level", "warning", *extra]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server stopped: {process.communicate()[1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.terminate()
    sys.exit("the server did not answer /health within 180 s")


async def load(base: str, texts: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    """Send ``requests`` one-text requests with at most ``concurrency`` in flight; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < requests:
            i = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                r = await client.post("/v1/models/sst2/predict", json={"inputs": [texts[i % len(texts)]]})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "requests": requests,
        "wall_s": wall,
        "requests_per_second": requests / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(run: Path, texts: list[str], opts: argparse.Namespace, batching: bool) -> dict[str, Any]:
    import httpx

    port = free_port()
    extra = ["--backend", opts.backend] + ([] if batching else ["--no-micro-batching"])
    process = start_server(run, port, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load(base, texts, min(100, opts.requests), opts.concurrency))  # warm-up, untimed
        before = httpx.get(f"{base}/health").json()["models"]["sst2"]
        cpu_before = cpu_seconds(process.pid)
        result = asyncio.run(load(base, texts, opts.requests, opts.concurrency))
        cpu_after = cpu_seconds(process.pid)
        after = httpx.get(f"{base}/health").json()["models"]["sst2"]
    finally:
        process.terminate()
        process.communicate(timeout=60)
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = (after["inputs"] - before["inputs"]) / batches if batches else 0.0
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        # requests per CPU-second of the server: steadier than requests/s when other jobs share the cores
        result["requests_per_server_cpu_second"] = opts.requests / (cpu_after - cpu_before)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="an existing classification run (default: train one)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="the server's backend")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 200 requests, 300 training sentences"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if opts.quick:
        opts.requests, opts.train_size = 200, 300
    if not (DATA / "dev.tsv").is_file() or (opts.run is None and not (DATA / "train.tsv").is_file()):
        sys.exit(f"SST-2 not found: expected {DATA}/train.tsv and dev.tsv (the shared datasets folder)")
    texts = [t for t, _ in read_tsv(DATA / "dev.tsv")]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="taskhead-serve-bench-") as name:
        run = opts.run or train_run(opts.train_size, Path(name) / "run")
        if opts.backend == "onnx" and not (run / "onnx" / "export.json").is_file():
            from taskhead.workflows.export import export_onnx

            export_onnx(run)
        print(
            f"{opts.requests} requests of 1 sentence, concurrency {opts.concurrency}, backend {opts.backend}"
        )
        for mode, batching in (("micro-batching on", True), ("micro-batching off", False)):
            results[mode] = run_mode(run, texts, opts, batching)
            r = results[mode]
            print(
                f"{mode:<19} {r['requests_per_second']:8.1f} requests/s  p50 {r['p50_ms']:7.1f} ms  "
                f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  mean merged batch {r['mean_batch']:.1f}  "
                f"{r.get('requests_per_server_cpu_second', float('nan')):.1f} requests per server CPU-second",
                flush=True,
            )
    on, off = results["micro-batching on"], results["micro-batching off"]
    print(
        f"micro-batching on / off: {on['requests_per_second'] / off['requests_per_second']:.2f}x requests/s"
    )
    if opts.json:
        settings = {"requests": opts.requests, "concurrency": opts.concurrency, "backend": opts.backend}
        opts.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
