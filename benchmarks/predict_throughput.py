"""Prediction throughput on the SST-2 dev set: transformers' pipeline against taskhead's predictors.

One MiniLM sentiment classifier (fine-tuned here with taskhead on a 2,000-sentence sample of SST-2 train for
one epoch, or an existing run given with --run) predicts the 872 SST-2 dev sentences five ways, in one
process, interleaved per repeat so that drift of the machine hits all alike:

  pipeline    transformers pipeline("text-classification", model=RUN/model, batch_size=32), fp32
  torch fp32  taskhead Predictor: length-sorted batches of 64, dynamic padding, inference_mode
  torch bf16  the same with bf16 autocast (precision="bf16"); only where the CPU runs bf16 natively
  onnx fp32   Predictor(backend="onnx"): ONNX Runtime on `taskhead export --format onnx` output
  onnx int8   Predictor(backend="onnx", onnx_variant="int8"): dynamically quantized weights

Figures: sentences/s (median of the timed passes, each over every dev sentence, texts in to labels out),
the ratio to the pipeline, dev accuracy, and the share of labels equal to torch fp32's.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2"
MAX_LENGTH = 128
PIPELINE_BATCH = 32

Rows = list[tuple[str, int]]


def read_tsv(path: Path) -> Rows:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col_text, col_label = header.index("sentence"), header.index("label")
        return [(r[col_text], int(r[col_label])) for r in reader if r]


def write_tsv(path: Path, rows: Rows) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("sentence\tlabel\n")
        fh.writelines(f"{text}\t{label}\n" for text, label in rows)


def train_run(train_size: int, out: Path, seed: int = 1) -> Path:
    """Fine-tune MiniLM on a fixed sample of SST-2 train (one epoch, taskhead's defaults); the run dir."""
    import taskhead

    sample = random.Random(0).sample(read_tsv(DATA / "train.tsv"), train_size)
    write_tsv(out.parent / "train-sample.tsv", sample)
    config = {
        "task": "classification",
        "output_dir": str(out),
        "model": {"backbone": "minilm", "max_length": MAX_LENGTH},
        "data": {
            "train": str(out.parent / "train-sample.tsv"),
            "eval": str(DATA / "dev.tsv"),
            "format": "tsv",
            "quoting": "none",
            "columns": {"text": "sentence", "label": "label"},
        },
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 5e-5, "seed": seed, "save_strategy": "no"},
    }
    started = time.perf_counter()
    run = taskhead.train(config, quiet=True, overwrite=True)
    print(
        f"fine-tuned {out} on {train_size} sentences in {time.perf_counter() - started:.1f} s "
        f"(dev accuracy {run.metrics['eval']['accuracy']:.4f})",
        flush=True,
    )
    return run.run_dir


def predictors(run: Path, onnx_dir: Path, *, bf16: bool) -> dict[str, Callable[[list[str]], list[str]]]:
    """Each way of predicting: a function from texts to labels (strings)."""
    from transformers import pipeline

    import taskhead

    pipe = pipeline("text-classification", model=str(run / "model"), device="cpu", batch_size=PIPELINE_BATCH)
    ways: dict[str, Callable[[list[str]], list[str]]] = {
        "pipeline": lambda texts: [p["label"] for p in pipe(texts, truncation=True, max_length=MAX_LENGTH)]
    }

    def of(predictor: Any) -> Callable[[list[str]], list[str]]:
        return lambda texts: [p["label"] for p in predictor.predict(texts)]

    ways["torch fp32"] = of(taskhead.load(run, device="cpu", precision="fp32"))
    if bf16:
        ways["torch bf16"] = of(taskhead.load(run, device="cpu", precision="bf16"))
    ways["onnx fp32"] = of(taskhead.load(run, backend="onnx", onnx_dir=onnx_dir))
    ways["onnx int8"] = of(taskhead.load(run, backend="onnx", onnx_variant="int8", onnx_dir=onnx_dir))
    return ways


def measure(ways: dict[str, Callable[[list[str]], list[str]]], dev: Rows, repeats: int) -> dict[str, dict]:
    texts = [t for t, _ in dev]
    gold = [str(label) for _, label in dev]
    for way in ways.values():  # untimed warm-up: lazy initialisation falls on no one
        way(texts[:64])
    times: dict[str, list[float]] = {name: [] for name in ways}
    labels: dict[str, list[str]] = {}
    for r in range(repeats):
        for name, way in ways.items():
            started = time.perf_counter()
            labels[name] = way(texts)
            times[name].append(time.perf_counter() - started)
            print(f"repeat {r + 1} {name:>10}: {len(texts) / times[name][-1]:8.1f} sentences/s", flush=True)
    reference = labels["torch fp32"]
    results = {}
    for name in ways:
        got = labels[name]
        results[name] = {
            "sentences_per_second": len(texts) / statistics.median(times[name]),
            "seconds": times[name],
            "accuracy": sum(g == p for g, p in zip(gold, got, strict=True)) / len(gold),
            "agree_with_fp32": sum(a == b for a, b in zip(reference, got, strict=True)) / len(got),
        }
    return results


def report(results: dict[str, dict], bf16_note: str) -> dict[str, Any]:
    base = results["pipeline"]["sentences_per_second"]
    print(f"\n{'way':<11} {'sentences/s':>12} {'x pipeline':>11} {'accuracy':>9} {'agree fp32':>11}")
    for name, r in results.items():
        r["ratio"] = r["sentences_per_second"] / base
        print(
            f"{name:<11} {r['sentences_per_second']:12.1f} {r['ratio']:10.2f}x {r['accuracy']:9.4f} "
            f"{100 * r['agree_with_fp32']:10.2f}%"
        )
    print(f"(torch bf16: {bf16_note})")
    fp32 = results["torch fp32"]
    torch_best = max(
        (results[n] for n in ("torch fp32", "torch bf16") if n in results), key=lambda r: r["ratio"]
    )
    targets = {
        "torch >= 3x pipeline": torch_best["ratio"] >= 3.0,
        "onnx int8 >= 5x pipeline": results["onnx int8"]["ratio"] >= 5.0,
        "onnx int8 accuracy within 0.5 point of fp32": results["onnx int8"]["accuracy"]
        >= fp32["accuracy"] - 0.005,
    }
    if "torch bf16" in results:
        targets["bf16 changes <= 0.5 % of labels"] = results["torch bf16"]["agree_with_fp32"] >= 0.995
    for name, ok in targets.items():
        print(f"  {name}: {'PASS' if ok else 'FAIL'}")
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="an existing SST-2 classification run (default: train one)")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the dev set per way")
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 training, 200 dev sentences")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (ONNX Runtime uses the same)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if not (DATA / "dev.tsv").is_file() or (opts.run is None and not (DATA / "train.tsv").is_file()):
        sys.exit(f"SST-2 not found: expected {DATA}/train.tsv and dev.tsv (the shared datasets folder)")
    dev = read_tsv(DATA / "dev.tsv")
    if opts.quick:
        opts.train_size, opts.repeats, dev = 300, 1, dev[:200]

    import torch
    from transformers.utils import logging as hf_logging

    from taskhead.engine.devices import cpu_has_native_bf16
    from taskhead.workflows.export import export_onnx

    if opts.threads:
        torch.set_num_threads(opts.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bf16 = cpu_has_native_bf16()
    bf16_note = "run (the CPU has AVX-512 BF16 or AMX)" if bf16 else "skipped: no native bf16 on this CPU"
    with tempfile.TemporaryDirectory(prefix="taskhead-predict-bench-") as name:
        tmp = Path(name)
        run = opts.run or train_run(opts.train_size, tmp / "run")
        export = export_onnx(run, out=tmp / "onnx", quantize="int8")
        diffs = {k: f"{v['max_abs_diff']:.1e}" for k, v in export["variants"].items()}
        print(f"exported to ONNX (max |onnx - torch| on the check batches: {diffs})", flush=True)
        print(f"{len(dev)} dev sentences, torch threads {torch.get_num_threads()}, {opts.repeats} repeat(s)")
        results = measure(predictors(run, tmp / "onnx", bf16=bf16), dev, opts.repeats)
    targets = report(results, bf16_note)
    if opts.json:
        settings = {
            "dev": len(dev),
            "repeats": opts.repeats,
            "threads": torch.get_num_threads(),
            "quick": opts.quick,
        }
        opts.json.write_text(
            json.dumps({"settings": settings, "results": results, "targets": targets}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
