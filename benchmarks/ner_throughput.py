"""NER training throughput and test entity F1: taskhead against a Trainer set up like transformers' run_ner.

Both fine-tune MiniLM (all-MiniLM-L6-v2) on the same first N sentences of CoNLL-2003 train, same epochs,
batch size, learning rate and seed, no warm-up, no weight decay; both are scored on all 3,453 test sentences
with the same function (seqeval, strict IOB2, over words):

  run_ner  Trainer as in transformers' examples/pytorch/token-classification/run_ner.py: words tokenized with
           is_split_into_words, the first sub-token of each word labelled (label_all_tokens off), dynamic
           padding (DataCollatorForTokenClassification), fp32, random order; predictions by argmax of each
           word's first sub-token from Trainer.predict (input order: no length grouping there).
  taskhead taskhead.train() with its defaults (bf16 auto, shuffled length-grouped batches, windows for long
           sentences, Viterbi decoding), warm-up and weight decay set to 0 to match.

Runs are interleaved per seed, after one short untimed warm-up run of each. samples/s is the Trainer's own
train_samples_per_second for both. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "conll2003"
MAX_LENGTH = 128
BATCH = 32


def run_peer(
    seed: int, train: list, test: list, labels: list[str], opts: Any, backbone: str, tmp: Path
) -> dict:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from taskhead.tasks.tagging import tagging_metrics

    index = {tag: i for i, tag in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def encode(sentences: list, labelled: bool) -> list[dict]:
        enc = tokenizer(
            [s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=MAX_LENGTH
        )
        rows = []
        for i, s in enumerate(sentences):
            row = {k: enc[k][i] for k in enc}
            ids, previous, lab = enc.word_ids(i), None, []
            for w in ids:
                lab.append(-100 if w is None or w == previous else index[s.tags[w]])
                previous = w
            row["labels"] = lab
            rows.append(row)
        return rows

    dataset = encode(train, True)
    set_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(
        backbone, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index
    )
    args = TrainingArguments(
        output_dir=str(tmp / f"peer-{seed}"),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        num_train_epochs=opts.epochs,
        learning_rate=opts.lr,
        seed=seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    test_rows = encode(test, True)
    logits = trainer.predict(test_rows).predictions
    predicted = []
    for s, row, lg in zip(test, test_rows, logits, strict=True):
        tags = ["O"] * len(s.tokens)  # words cut off by truncation stay O
        for p, lab in enumerate(row["labels"]):
            if lab != -100:
                w = sum(1 for x in row["labels"][:p] if x != -100)
                tags[w] = labels[int(lg[p].argmax())]
        predicted.append(tags)
    f1 = tagging_metrics([s.tags for s in test], predicted, "iob2")["f1"]
    return {
        "samples_per_second": result.metrics["train_samples_per_second"],
        "train_wall_s": round(wall, 2),
        "f1": f1,
    }


def run_taskhead(seed: int, train_file: Path, opts: Any, tmp: Path) -> dict:
    import taskhead

    config = {
        "task": "token-classification",
        "output_dir": str(tmp / f"taskhead-{seed}"),
        "model": {"backbone": "minilm", "max_length": MAX_LENGTH},
        "data": {"train": str(train_file), "test": str(DATA / "test.txt")},
        "train": {
            "epochs": opts.epochs,
            "batch_size": BATCH,
            "learning_rate": opts.lr,
            "seed": seed,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "save_strategy": "no",
            "eval_strategy": "no",
        },
    }
    started = time.perf_counter()
    run = taskhead.train(config, quiet=True, overwrite=True)
    return {
        "samples_per_second": run.metrics["train"]["train_samples_per_second"],
        "train_wall_s": run.metrics["train"]["wall_seconds"],
        "f1": run.metrics["test"]["f1"],
        "call_wall_s": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 300 sentences, 1 epoch")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if opts.quick:
        opts.seeds, opts.train_size, opts.epochs = opts.seeds[:1], 300, 1
    if not (DATA / "train.txt").is_file() or not (DATA / "test.txt").is_file():
        sys.exit(f"CoNLL-2003 not found: expected {DATA}/train.txt and test.txt (the shared datasets folder)")

    import torch
    from transformers.utils import logging as hf_logging

    from taskhead.data.conll import read_conll
    from taskhead.engine.backbones import resolve_backbone

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    backbone = resolve_backbone("minilm")
    train = read_conll(DATA / "train.txt")[: opts.train_size]
    test = read_conll(DATA / "test.txt")
    labels = sorted({t for s in train for t in s.tags}, key=lambda t: (t != "O", t[2:], t))
    print(
        f"{len(train)} training / {len(test)} test sentences, seeds {opts.seeds}, lr {opts.lr:g}, "
        f"batch {BATCH}, {opts.epochs:g} epochs, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"run_ner": [], "taskhead": []}
    with tempfile.TemporaryDirectory(prefix="taskhead-bench-") as name:
        tmp = Path(name)
        train_file = tmp / "train.jsonl"
        train_file.write_text("".join(json.dumps({"tokens": s.tokens, "tags": s.tags}) + "\n" for s in train))
        if not opts.no_warmup:
            print("warm-up (untimed) ...", flush=True)
            small = tmp / "warmup.jsonl"
            small.write_text(
                "".join(json.dumps({"tokens": s.tokens, "tags": s.tags}) + "\n" for s in train[:128])
            )
            warm = argparse.Namespace(**{**vars(opts), "epochs": 1})
            run_peer(0, train[:128], test[:64], labels, warm, backbone, tmp)
            run_taskhead(0, small, warm, tmp)
        for seed in opts.seeds:
            for kind in ("run_ner", "taskhead"):
                if kind == "taskhead":
                    result = run_taskhead(seed, train_file, opts, tmp)
                else:
                    result = run_peer(seed, train, test, labels, opts, backbone, tmp)
                runs[kind].append({"seed": seed, **result})
                print(
                    f"seed {seed} {kind:>8}: {result['samples_per_second']:7.1f} samples/s, "
                    f"train {result['train_wall_s']:6.1f} s, test entity F1 {result['f1']:.4f}",
                    flush=True,
                )
    sps = {k: statistics.fmean(r["samples_per_second"] for r in v) for k, v in runs.items()}
    f1 = {k: statistics.fmean(r["f1"] for r in v) for k, v in runs.items()}
    ratio, gap = sps["taskhead"] / sps["run_ner"], 100 * (f1["taskhead"] - f1["run_ner"])
    print("\nmeans")
    for kind in runs:
        print(f"  {kind:<9} {sps[kind]:7.1f} samples/s   test entity F1 {f1[kind]:.4f}")
    print(f"  taskhead/run_ner {ratio:.2f}x   F1 taskhead - run_ner: {gap:+.2f} points")
    targets = {"throughput >= 1.5x run_ner": ratio >= 1.5, "test F1 >= run_ner - 0.5 point": gap >= -0.5}
    for what, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    if opts.json:
        summary = {
            "samples_per_second": sps,
            "f1": f1,
            "ratio": ratio,
            "f1_gap_points": gap,
            "targets": targets,
        }
        opts.json.write_text(
            json.dumps(
                {"settings": vars(opts) | {"json": str(opts.json)}, "runs": runs, "summary": summary},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
