"""Extractive QA training speed, EM/F1 and prediction speed: taskhead against a run_qa-style Trainer.

Only SQuAD v1.1 dev is available here, so it is split by article: the first 12 articles train, the last 8
evaluate (no article on both sides). Both fine-tune MiniLM with max_length 384, doc_stride 128, the same
epochs, batch size, learning rate and seed, no warm-up, no weight decay:

  run_qa   Trainer as in transformers' examples/pytorch/question-answering/run_qa.py: windows padded to
           max_length (its default pad_to_max_length), fp32, random order; evaluation by Trainer.predict and
           run_qa's post-processing (n_best 20, max_answer_length 30, best start+end score over windows).
  taskhead taskhead.train() with its defaults (dynamic padding, length-grouped batches, bf16 auto), the same
           n_best / max_answer_length; warm-up and weight decay 0 to match.

EM/F1 of both come from taskhead.tasks.squad_metrics.squad_scores (the official v1.1 procedure). Prediction
throughput: questions per second over the eval part, from raw records to answers, for both.
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

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "squad" / "dev-v1.1.json"
MAX_LENGTH, STRIDE, BATCH, N_BEST, MAX_ANSWER = 384, 128, 16, 20, 30


def peer_features(tokenizer: Any, records: list, train: bool) -> tuple[list[dict], list[int], list[list]]:
    enc = tokenizer(
        [r.question.lstrip() for r in records],
        [r.context for r in records],
        truncation="only_second",
        max_length=MAX_LENGTH,
        stride=STRIDE,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    rows, owners, offsets = [], [], []
    for j, i in enumerate(enc["overflow_to_sample_mapping"]):
        seq = enc.sequence_ids(j)
        offs = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][j], seq, strict=True)]
        row = {k: enc[k][j] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        if train:
            text, start = records[i].answers[0]
            end = start + len(text)
            ctx = [p for p, o in enumerate(offs) if o is not None]
            if offs[ctx[0]][0] <= start and offs[ctx[-1]][1] >= end:
                row["start_positions"] = next(p for p in ctx if offs[p][1] > start)
                row["end_positions"] = next(p for p in reversed(ctx) if offs[p][0] < end)
            else:
                row["start_positions"] = row["end_positions"] = 0
        rows.append(row)
        owners.append(i)
        offsets.append(offs)
    return rows, owners, offsets


def peer_postprocess(records: list, owners: list[int], offsets: list[list], start: Any, end: Any) -> dict:
    best: dict[int, tuple[float, str]] = {}
    for j, i in enumerate(owners):
        offs = offsets[j]
        for s in np.argsort(start[j])[-1 : -N_BEST - 1 : -1]:
            for e in np.argsort(end[j])[-1 : -N_BEST - 1 : -1]:
                if offs[s] is None or offs[e] is None or e < s or e - s + 1 > MAX_ANSWER:
                    continue
                score = float(start[j][s] + end[j][e])
                if i not in best or score > best[i][0]:
                    best[i] = (score, records[i].context[offs[s][0] : offs[e][1]])
    return {records[i].id: best.get(i, (0.0, ""))[1] for i in range(len(records))}


def run_peer(seed: int, train: list, evals: list, opts: Any, backbone: str, tmp: Path) -> dict:
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from taskhead.tasks.squad_metrics import squad_gold, squad_scores

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    rows, _, _ = peer_features(tokenizer, train, True)
    set_seed(seed)
    model = AutoModelForQuestionAnswering.from_pretrained(backbone)
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
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator)
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    started = time.perf_counter()
    eval_rows, owners, offsets = peer_features(tokenizer, evals, False)
    start, end = trainer.predict(eval_rows).predictions
    answers = peer_postprocess(evals, owners, offsets, start, end)
    predict_s = time.perf_counter() - started
    scores = squad_scores(answers, squad_gold(evals))
    return {
        "samples_per_second": result.metrics["train_samples_per_second"],
        "train_wall_s": round(wall, 2),
        "exact_match": scores["exact_match"],
        "f1": scores["f1"],
        "predict_questions_per_s": len(evals) / predict_s,
    }


def run_taskhead(seed: int, train_file: Path, eval_file: Path, evals: list, opts: Any, tmp: Path) -> dict:
    import taskhead
    from taskhead.tasks.squad_metrics import squad_gold, squad_scores

    config = {
        "task": {
            "name": "question-answering",
            "doc_stride": STRIDE,
            "n_best": N_BEST,
            "max_answer_length": MAX_ANSWER,
        },
        "output_dir": str(tmp / f"taskhead-{seed}"),
        "model": {"backbone": "minilm", "max_length": MAX_LENGTH},
        "data": {"train": str(train_file)},
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
    run = taskhead.train(config, quiet=True, overwrite=True)
    predictor = taskhead.load(run.run_dir, batch_size=64, precision=opts.predict_precision)
    started = time.perf_counter()
    examples = predictor.read(eval_file, labelled=False)
    answers = {p["id"]: p["answer"] for p in predictor.predict_examples(examples)}
    predict_s = time.perf_counter() - started
    scores = squad_scores(answers, squad_gold(evals))
    return {
        "samples_per_second": run.metrics["train"]["train_samples_per_second"],
        "train_wall_s": run.metrics["train"]["wall_seconds"],
        "exact_match": scores["exact_match"],
        "f1": scores["f1"],
        "predict_questions_per_s": len(evals) / predict_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--eval-size", type=int, default=1000, help="questions of the eval articles scored")
    parser.add_argument("--predict-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 seed, 2 articles, 100 eval questions"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if not DATA.is_file():
        sys.exit(f"SQuAD v1.1 dev not found: expected {DATA} (the shared datasets folder)")
    from transformers.utils import logging as hf_logging

    from taskhead.data.squad import read_squad
    from taskhead.engine.backbones import resolve_backbone

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    backbone = str(resolve_backbone("minilm"))
    source = json.loads(DATA.read_text(encoding="utf-8"))
    train_articles = source["data"][: 2 if opts.quick else 12]
    eval_articles = source["data"][40:]
    if opts.quick:
        opts.seeds, opts.eval_size = opts.seeds[:1], 100
    runs: dict[str, list[dict]] = {"run_qa": [], "taskhead": []}
    with tempfile.TemporaryDirectory(prefix="taskhead-bench-") as name:
        tmp = Path(name)
        train_file, eval_file = tmp / "train.json", tmp / "eval.json"
        train_file.write_text(json.dumps({"version": "1.1", "data": train_articles}))
        eval_file.write_text(json.dumps({"version": "1.1", "data": eval_articles}))
        train, evals = read_squad(train_file), read_squad(eval_file)[: opts.eval_size]
        keep = {r.id for r in evals}
        for article in eval_articles:  # the eval file holds exactly the scored questions
            for paragraph in article["paragraphs"]:
                paragraph["qas"] = [q for q in paragraph["qas"] if q["id"] in keep]
        eval_file.write_text(json.dumps({"version": "1.1", "data": eval_articles}))
        print(
            f"{len(train)} training questions (articles 1-{len(train_articles)}), {len(evals)} eval "
            f"questions (articles 41-48), seeds {opts.seeds}, lr {opts.lr:g}, batch {BATCH}, "
            f"{opts.epochs:g} epoch(s), max_length {MAX_LENGTH}, doc_stride {STRIDE}",
            flush=True,
        )
        for seed in opts.seeds:
            for kind in ("run_qa", "taskhead"):
                if kind == "run_qa":
                    result = run_peer(seed, train, evals, opts, backbone, tmp)
                else:
                    result = run_taskhead(seed, train_file, eval_file, evals, opts, tmp)
                runs[kind].append({"seed": seed, **result})
                print(
                    f"seed {seed} {kind:>8}: {result['samples_per_second']:6.1f} train samples/s, "
                    f"EM {result['exact_match']:.2f} F1 {result['f1']:.2f}, "
                    f"predict {result['predict_questions_per_s']:.1f} questions/s",
                    flush=True,
                )
    mean = {k: {m: statistics.fmean(r[m] for r in v) for m in v[0] if m != "seed"} for k, v in runs.items()}
    ratio = mean["taskhead"]["samples_per_second"] / mean["run_qa"]["samples_per_second"]
    gaps = {m: mean["taskhead"][m] - mean["run_qa"][m] for m in ("exact_match", "f1")}
    print("\nmeans")
    for kind, m in mean.items():
        print(
            f"  {kind:<9} {m['samples_per_second']:6.1f} samples/s  EM {m['exact_match']:.2f}  "
            f"F1 {m['f1']:.2f}  predict {m['predict_questions_per_s']:.1f} questions/s"
        )
    print(
        f"  taskhead/run_qa training {ratio:.2f}x; EM {gaps['exact_match']:+.2f}, F1 {gaps['f1']:+.2f} points"
    )
    targets = {f"{m} >= run_qa - 0.5 point": gaps[m] >= -0.5 for m in gaps}
    for what, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    if opts.json:
        out = {"settings": {k: str(v) for k, v in vars(opts).items()}, "runs": runs, "means": mean}
        opts.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
