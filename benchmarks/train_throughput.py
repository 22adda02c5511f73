"""Training throughput and dev accuracy: taskhead's defaults against two plain Hugging Face Trainer set-ups.

All three fine-tune MiniLM (all-MiniLM-L6-v2) on the same SST-2 training sample for one epoch, batch 32, same
learning rate, no warm-up, no weight decay, and are scored on all 872 dev sentences in input order:

  (a) Trainer as in transformers' run_glue example: every example padded to 128 tokens, fp32, random order.
  (b) Trainer at its best on a CPU: dynamic padding, train_sampling_strategy="group_by_length", bf16.
  (c) taskhead.train() with its defaults (bf16 auto, random batches computed on packed rows for this
      BERT-family model, see taskhead.engine.packing), or a variant given with --set KEY=VALUE.

Runs are interleaved (for each seed: a, b, taskhead) so that machine drift hits all three alike. Each run
is a fresh Python process that first makes one short untimed warm-up run of the same set-up, so that no
timed run pays first-call costs or inherits another run's allocator state.
samples/s is the Trainer's own train_samples_per_second for all three. See benchmarks/README.md.
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
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2"
MAX_LENGTH = 128
BATCH = 32
PEERS = {"a": "Trainer, pad to 128, fp32 (run_glue)", "b": "Trainer, dynamic pad + group_by_length + bf16"}

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


def dev_accuracy(model: Any, tokenizer: Any, dev: Rows, *, bf16: bool) -> float:
    """Accuracy over the dev set, batched in input order (no sampler can reorder the predictions)."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(dev), 64):
            chunk = dev[start : start + 64]
            batch = tokenizer(
                [t for t, _ in chunk],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            predicted = model(**batch).logits.argmax(-1).tolist()
            correct += sum(p == y for p, (_, y) in zip(predicted, chunk, strict=True))
    return correct / len(dev)


def run_peer(kind: str, seed: int, train: Rows, dev: Rows, lr: float, backbone: str, tmp: Path) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    padded = kind == "a"
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    enc = tokenizer(
        [t for t, _ in train],
        padding="max_length" if padded else False,
        max_length=MAX_LENGTH,
        truncation=True,
    )
    dataset = [{**{k: enc[k][i] for k in enc}, "labels": y} for i, (_, y) in enumerate(train)]
    set_seed(seed)  # before the model, so that the new classification head is the same for every run
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    best = {} if padded else {"train_sampling_strategy": "group_by_length", "bf16": True}
    args = TrainingArguments(
        output_dir=str(tmp / f"{kind}-{seed}"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=lr,
        seed=seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,  # display only
        **best,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator if padded else DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    accuracy = dev_accuracy(trainer.model, tokenizer, dev, bf16=not padded)
    return {
        "samples_per_second": result.metrics["train_samples_per_second"],
        "train_wall_s": round(wall, 2),
        "accuracy": accuracy,
    }


def run_taskhead(
    seed: int, train_tsv: Path, dev_tsv: Path, lr: float, tmp: Path, overrides: list[str] | None = None
) -> dict:
    import taskhead

    config = {
        "task": "classification",
        "output_dir": str(tmp / f"taskhead-{seed}"),
        "model": {"backbone": "minilm", "max_length": MAX_LENGTH},
        "data": {
            "train": str(train_tsv),
            "eval": str(dev_tsv),
            "format": "tsv",
            "quoting": "none",
            "columns": {"text": "sentence", "label": "label"},
        },
        "train": {
            "epochs": 1,
            "batch_size": BATCH,
            "learning_rate": lr,
            "seed": seed,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "save_strategy": "no",
            "eval_strategy": "no",
        },
    }
    started = time.perf_counter()
    run = taskhead.train(config, overrides or None, quiet=True, overwrite=True)
    total = time.perf_counter() - started
    meta = json.loads((run.run_dir / "taskhead.json").read_text(encoding="utf-8"))
    return {
        "samples_per_second": run.metrics["train"]["train_samples_per_second"],
        "train_wall_s": run.metrics["train"]["wall_seconds"],
        "accuracy": run.metrics["eval"]["accuracy"],
        "call_wall_s": round(total, 2),  # the whole taskhead.train(): reading, tokenizing, scoring, saving
        "precision": meta.get("precision"),
        "batching": run.metrics["train"].get("batching"),
    }


def one_run(kind: str, seed: int, train: Rows, dev: Rows, opts: Any, backbone: str, tmp: Path) -> dict:
    """One timed run in this process, after an untimed warm-up run of the same set-up (unless
    --no-warmup) so that the timed run pays no first-call costs (lazy imports, kernel set-up)."""
    write_tsv(tmp / "train.tsv", train)
    write_tsv(tmp / "warmup.tsv", train[:256])
    if kind == "taskhead":
        if not opts.no_warmup:
            run_taskhead(0, tmp / "warmup.tsv", DATA / "dev.tsv", opts.lr, tmp, opts.set)
        return run_taskhead(seed, tmp / "train.tsv", DATA / "dev.tsv", opts.lr, tmp, opts.set)
    if not opts.no_warmup:
        run_peer(kind, 0, train[:64] if kind == "a" else train[:256], dev[:64], opts.lr, backbone, tmp)
    return run_peer(kind, seed, train, dev, opts.lr, backbone, tmp)


def child_run(kind: str, seed: int, opts: Any) -> dict:
    """``one_run`` in a fresh Python process: no run inherits another's allocator state, caches or
    threads (taskhead tunes glibc's malloc while it trains on a CPU; the peers must not profit or lose)."""
    import subprocess

    command = [sys.executable, __file__, "--one", kind, str(seed), "--lr", str(opts.lr)]
    command += ["--train-size", str(opts.train_size)]
    command += ["--threads", str(opts.threads)] if opts.threads else []
    command += ["--no-warmup"] if opts.no_warmup else []
    for override in opts.set:
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in runs)


def report(runs: dict[str, list[dict]]) -> dict:
    """Print the per-run table, the means, the ratios and the PASS/FAIL lines; return the summary."""
    print(f"\n{'run':<9} {'seed':>4} {'samples/s':>10} {'train s':>8} {'dev acc':>8} {'whole call s':>13}")
    for kind, items in runs.items():
        for r in items:
            call = f"{r['call_wall_s']:13.1f}" if "call_wall_s" in r else ""
            print(
                f"{kind:<9} {r['seed']:>4} {r['samples_per_second']:>10.1f} {r['train_wall_s']:>8.1f} "
                f"{r['accuracy']:>8.4f} {call}"
            )
    runs = {k: v for k, v in runs.items() if v}
    sps = {k: mean(v, "samples_per_second") for k, v in runs.items()}
    acc = {k: mean(v, "accuracy") for k, v in runs.items()}
    print("\nmeans")
    for kind, label in (*PEERS.items(), ("taskhead", "taskhead defaults")):
        if kind in runs:
            print(f"  {kind:<9} {sps[kind]:7.1f} samples/s   dev accuracy {acc[kind]:.4f}   {label}")
    if not {"a", "b", "taskhead"} <= set(runs):
        return {"samples_per_second": sps, "accuracy": acc}  # --runs without all three: no ratios
    ratio_a, ratio_b = sps["taskhead"] / sps["a"], sps["taskhead"] / sps["b"]
    gap = 100 * (acc["taskhead"] - acc["a"])
    print(f"  taskhead/(a) {ratio_a:.2f}x   taskhead/(b) {ratio_b:.2f}x")
    print(f"  dev accuracy taskhead - (a): {gap:+.2f} points")
    targets = {
        "throughput >= 10x (a)": ratio_a >= 10,
        "throughput >= 1.0x (b)": ratio_b >= 1.0,
        "dev accuracy >= (a) - 0.5 point": gap >= -0.5,
    }
    for what, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    ratios = {"ratio_a": ratio_a, "ratio_b": ratio_b, "accuracy_gap_points": gap}
    return {"samples_per_second": sps, "accuracy": acc, **ratios, "targets": targets}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 300 training sentences")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for all runs (default: torch's)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=["a", "b", "taskhead"],
        default=["a", "b", "taskhead"],
        help="which runs to make (ratios and targets need all three)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a taskhead config override (a variant instead of the defaults), e.g. train.packing=false",
    )
    parser.add_argument("--one", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.quick:
        opts.seeds, opts.train_size = opts.seeds[:1], 300
    if not (DATA / "train.tsv").is_file() or not (DATA / "dev.tsv").is_file():
        sys.exit(f"SST-2 not found: expected {DATA}/train.tsv and dev.tsv (the shared datasets folder)")

    import torch
    from transformers.utils import logging as hf_logging

    from taskhead.engine.backbones import resolve_backbone

    if opts.threads:
        torch.set_num_threads(opts.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    backbone = resolve_backbone("minilm")
    train = random.Random(0).sample(read_tsv(DATA / "train.tsv"), opts.train_size)
    dev = read_tsv(DATA / "dev.tsv")
    print(
        f"{len(train)} training / {len(dev)} dev sentences, seeds {opts.seeds}, lr {opts.lr:g}, "
        f"batch {BATCH}, 1 epoch, torch threads {torch.get_num_threads()}, backbone {backbone}",
        flush=True,
    )

    if opts.one:  # a child process: one (warm-up +) timed run, its figures as JSON on the last line
        kind, seed = opts.one[0], int(opts.one[1])
        with tempfile.TemporaryDirectory(prefix="taskhead-bench-") as name:
            result = one_run(kind, seed, train, dev, opts, backbone, Path(name))
        print(json.dumps(result))
        return 0

    runs: dict[str, list[dict]] = {"a": [], "b": [], "taskhead": []}
    for seed in opts.seeds:
        for kind in opts.runs:
            result = child_run(kind, seed, opts)
            runs[kind].append({"seed": seed, **result})
            print(
                f"seed {seed} {kind:>8}: {result['samples_per_second']:7.1f} samples/s, "
                f"train {result['train_wall_s']:6.1f} s, dev accuracy {result['accuracy']:.4f}",
                flush=True,
            )

    summary = report(runs)
    if opts.json:
        settings = {"seeds": opts.seeds, "lr": opts.lr, "train_size": len(train), "batch_size": BATCH}
        settings["threads"] = torch.get_num_threads()
        settings["taskhead_overrides"] = opts.set
        opts.json.write_text(json.dumps({"settings": settings, "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
