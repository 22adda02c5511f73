"""Summarization training speed and ROUGE: taskhead against a Seq2SeqTrainer set up like run_summarization.

Both fine-tune the same model — MiniLM (all-MiniLM-L6-v2) warm-started as an encoder-decoder
(``EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, minilm)``, decoding starts from [CLS], ends
at [SEP]) — on the same first N SciTLDR training papers (abstract -> first TLDR), same epochs, batch size,
learning rate and seed, no warm-up, no weight decay; both are scored on the same test papers with the same
function (ROUGE-1/2/L/Lsum, rouge-score with stemming, every reference TLDR), generating greedily with the
same explicit max_new_tokens:

  run_summarization  Seq2SeqTrainer as in transformers' examples/pytorch/summarization/run_summarization.py:
                     sources padded to max_source_length and targets to max_target_length
                     (``padding="max_length"``, pad tokens of the labels set to -100, the leading [CLS]
                     of the targets dropped as taskhead does), fp32, random order,
                     ``predict_with_generate``; the test set predicted with ``Seq2SeqTrainer.predict``.
  taskhead           ``taskhead.train()`` with its defaults (bf16 auto, random batch order (the generation
                     task's default), dynamic padding), warm-up and weight decay set to 0 to match.

Runs are interleaved per seed, after one short untimed warm-up run of each. samples/s is the Trainer's own
train_samples_per_second for both. A second part trains a small T5 from scratch on Multi30k en-de (its own
Unigram tokenizer) for a fixed time budget and reports test BLEU. See benchmarks/README.md.
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SOURCE_LENGTH, TARGET_LENGTH, NEW_TOKENS = 256, 48, 32
BATCH = 16


def read_scitldr(name: str, limit: int) -> list[Any]:
    from taskhead.data.seq2seq import read_pairs

    return read_pairs(DATA / "scitldr" / f"{name}.jsonl")[:limit]


def run_peer(seed: int, train: list, test: list, opts: Any, backbone: str, tmp: Path) -> dict:
    from transformers import (
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        EncoderDecoderModel,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        set_seed,
    )

    from taskhead.tasks.generation_metrics import rouge

    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def encode(pairs: list) -> list[dict]:  # run_summarization's preprocess_function, padding="max_length"
        enc = tokenizer(
            [p.source for p in pairs], max_length=SOURCE_LENGTH, padding="max_length", truncation=True
        )
        labels = tokenizer(
            text_target=[p.targets[0] for p in pairs],
            max_length=TARGET_LENGTH,
            padding="max_length",
            truncation=True,
        )["input_ids"]
        # the decoder starts from [CLS] (decoder_start_token_id), so the targets start after it, as in
        # taskhead; kept, the leading [CLS] teaches the decoder to repeat it and end (empty summaries)
        labels = [[t if t != tokenizer.pad_token_id else -100 for t in row[1:]] + [-100] for row in labels]
        return [{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in range(len(pairs))]

    set_seed(seed)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(backbone, backbone)
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp / f"peer-{seed}"),
        num_train_epochs=opts.epochs,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=32,
        learning_rate=opts.lr,
        warmup_steps=0,
        weight_decay=0.0,
        seed=seed,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=50,
        disable_tqdm=True,
        predict_with_generate=True,
        use_cpu=True,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=encode(train),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    started = time.perf_counter()
    out = trainer.predict(encode(test), max_new_tokens=NEW_TOKENS, num_beams=1, do_sample=False)
    predict_s = time.perf_counter() - started
    ids = [[t for t in row if t >= 0] for row in out.predictions.tolist()]
    hyps = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    scores = rouge(hyps, [list(p.targets) for p in test])
    return {
        "samples_per_second": result.metrics["train_samples_per_second"],
        "train_wall_s": wall,
        "predict_s": predict_s,
        **scores,
    }


def run_taskhead(seed: int, train_file: Path, test_file: Path, opts: Any, tmp: Path) -> dict:
    import taskhead

    config = {
        "task": {"name": "generation", "max_new_tokens": NEW_TOKENS, "max_target_length": TARGET_LENGTH},
        "output_dir": str(tmp / f"taskhead-{seed}"),
        "model": {"backbone": "minilm", "max_length": SOURCE_LENGTH},
        "data": {"train": str(train_file), "test": str(test_file)},
        "train": {
            "epochs": opts.epochs,
            "batch_size": BATCH,
            "eval_batch_size": 32,
            "learning_rate": opts.lr,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "seed": seed,
            "save_strategy": "no",
            "eval_strategy": "no",
        },
    }
    started = time.perf_counter()
    run = taskhead.train(config, quiet=True, overwrite=True)
    whole = time.perf_counter() - started
    t = run.metrics["train"]
    test = run.metrics["test"]
    return {
        "samples_per_second": t["train_samples_per_second"],
        "train_wall_s": t["train_runtime"],
        "whole_train_call_s": whole,
        **{k: test[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
    }


def multi30k_budget(minutes: float, tmp: Path) -> dict:
    """A small T5 from scratch (own Unigram tokenizer) on Multi30k en-de for a fixed time; test BLEU."""
    import taskhead

    folder = DATA / "multi30k"
    test_src, test_tgt = tmp / "test.en", tmp / "test.de"
    test_src.write_text((folder / "test_2016_flickr.en").read_text(encoding="utf-8"), encoding="utf-8")
    test_tgt.write_text((folder / "test_2016_flickr.de").read_text(encoding="utf-8"), encoding="utf-8")
    config = {
        "task": {
            "name": "generation",
            "parallel": ["en", "de"],
            "max_new_tokens": 48,
            "max_target_length": 64,
        },
        "output_dir": str(tmp / "multi30k"),
        "model": {
            "backbone": "scratch",
            "max_length": 64,
            "scratch": {"architecture": "t5", "tokenizer": "unigram", "vocab_size": 8000},
        },
        "data": {"train": str(folder / "train.en"), "test": str(test_src)},
        "train": {
            "epochs": 2,  # the schedule (warm-up, linear decay) spans 2 epochs; the budget usually ends first
            "max_minutes": minutes,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.05,
            "save_strategy": "no",
            "eval_strategy": "no",
        },
    }
    run = taskhead.train(config, quiet=True, overwrite=True)
    return {
        "minutes": minutes,
        "steps": run.metrics["history"][-1].get("step"),
        "epochs": run.metrics["train"].get("epoch"),
        **{k: run.metrics["test"][k] for k in ("bleu", "chrf", "rouge1")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--multi30k-minutes", type=float, default=10, help="0: skip the Multi30k part")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64 papers, 16 test, 1 minute")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if opts.quick:
        opts.seeds, opts.train_size, opts.test_size = opts.seeds[:1], 64, 16
        opts.multi30k_minutes = min(opts.multi30k_minutes, 1)
    if not (DATA / "scitldr" / "train.jsonl").is_file():
        sys.exit(f"SciTLDR not found: expected {DATA}/scitldr/train.jsonl (the shared datasets folder)")

    import torch
    from transformers.utils import logging as hf_logging

    from taskhead.engine.backbones import resolve_backbone

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    backbone = resolve_backbone("minilm")
    train, test = read_scitldr("train", opts.train_size), read_scitldr("test", opts.test_size)
    print(
        f"SciTLDR: {len(train)} training / {len(test)} test papers, seeds {opts.seeds}, lr {opts.lr:g}, "
        f"batch {BATCH}, {opts.epochs:g} epochs, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"run_summarization": [], "taskhead": []}
    with tempfile.TemporaryDirectory(prefix="taskhead-bench-") as name:
        tmp = Path(name)

        def write(pairs: list, path: Path) -> Path:
            rows = [{"source": p.source, "target": list(p.targets)} for p in pairs]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            return path

        train_file, test_file = write(train, tmp / "train.jsonl"), write(test, tmp / "test.jsonl")
        if not opts.no_warmup:
            print("warm-up (untimed) ...", flush=True)
            warm = argparse.Namespace(**{**vars(opts), "epochs": 1})
            run_peer(0, train[:32], test[:4], warm, backbone, tmp)
            run_taskhead(0, write(train[:32], tmp / "w.jsonl"), write(test[:4], tmp / "wt.jsonl"), warm, tmp)
        for seed in opts.seeds:
            for kind in runs:
                if kind == "taskhead":
                    result = run_taskhead(seed, train_file, test_file, opts, tmp)
                else:
                    result = run_peer(seed, train, test, opts, backbone, tmp)
                runs[kind].append({"seed": seed, **result})
                print(
                    f"seed {seed} {kind:>17}: {result['samples_per_second']:6.1f} samples/s, "
                    f"train {result['train_wall_s']:6.1f} s, test ROUGE-1 {result['rouge1']:.2f} "
                    f"ROUGE-2 {result['rouge2']:.2f} ROUGE-L {result['rougeL']:.2f}",
                    flush=True,
                )
        scratch = multi30k_budget(opts.multi30k_minutes, tmp) if opts.multi30k_minutes > 0 else None
    sps = {k: statistics.fmean(r["samples_per_second"] for r in v) for k, v in runs.items()}
    r1 = {k: statistics.fmean(r["rouge1"] for r in v) for k, v in runs.items()}
    rl = {k: statistics.fmean(r["rougeL"] for r in v) for k, v in runs.items()}
    ratio = sps["taskhead"] / sps["run_summarization"]
    print("\nmeans")
    for kind in runs:
        print(f"  {kind:<18} {sps[kind]:6.1f} samples/s   ROUGE-1 {r1[kind]:.2f}   ROUGE-L {rl[kind]:.2f}")
    print(f"  taskhead/run_summarization {ratio:.2f}x")
    targets = {
        "throughput > run_summarization": ratio > 1.0,
        "ROUGE-1 at least run_summarization's": r1["taskhead"] >= r1["run_summarization"],
        "ROUGE-L at least run_summarization's": rl["taskhead"] >= rl["run_summarization"],
    }
    for what, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    if scratch is not None:
        print(
            f"\nMulti30k en-de, T5 from scratch, {scratch['minutes']:g} min of training "
            f"({scratch['steps']} steps, {scratch['epochs']:.2f} epochs): test BLEU {scratch['bleu']:.2f}, "
            f"chrF {scratch['chrf']:.2f}"
        )
    if opts.json:
        summary = {"samples_per_second": sps, "rouge1": r1, "rougeL": rl, "ratio": ratio, "targets": targets}
        opts.json.write_text(
            json.dumps(
                {
                    "settings": vars(opts) | {"json": str(opts.json)},
                    "runs": runs,
                    "summary": summary,
                    "multi30k": scratch,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
