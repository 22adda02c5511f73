"""Training arithmetic: gradient accumulation equals the same effective batch, ``train.metric`` is checked
(name and direction) before any model loads, decoder-only generation budgets its sequences, and the console
and run directory report what was actually trained and tuned."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import (
    NEGATIVE,
    POSITIVE,
    _train_tokenizer,
    generation_records,
    ner_records,
    qa_records,
    tiny_config,
    write_jsonl,
)

import taskhead

# ---------------------------------------------------------------- dropout-free tiny backbones


def _bert(directory: Path) -> Path:
    """The conftest tiny BERT without dropout, so that two runs differ only in their batch arithmetic."""
    import torch
    from conftest import _build_backbone
    from transformers import BertConfig, BertModel

    _build_backbone(directory)
    config = BertConfig.from_pretrained(directory)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


def _gpt2(directory: Path, n_positions: int = 64) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(directory, post_eos=False)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=n_positions,
        bos_token_id=2,
        eos_token_id=3,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def _t5(directory: Path) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(directory, post_eos=True)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arith-backbones")
    return {"bert": _bert(root / "bert"), "gpt2": _gpt2(root / "gpt2"), "t5": _t5(root / "t5")}


# ---------------------------------------------------------------- gradient accumulation


def _ga_config(case: str, backbones: dict[str, Path], tmp: Path) -> dict:
    """A config per case whose training set is exactly 4 examples of unequal lengths (one optimizer step)."""
    bert = backbones["bert"]
    if case in ("classification", "multi-label"):
        rows = [{"text": t, "label": "pos"} for t in POSITIVE[6:8]] + [
            {"text": t, "label": "neg"} for t in NEGATIVE[:2]
        ]
        task: dict = {"name": "classification"}
        if case == "multi-label":
            rows = [{"text": r["text"], "labels": [r["label"], "x"][: 1 + i % 2]} for i, r in enumerate(rows)]
            task["multi_label"] = True
        cfg = tiny_config(bert, {"train": write_jsonl(tmp / "train.jsonl", rows)}, tmp / "run", task=task)
        cfg["model"]["head_dropout"] = 0.0
    elif case == "token-classification":
        data = {"train": write_jsonl(tmp / "train.jsonl", ner_records(4))}
        cfg = tiny_config(bert, data, tmp / "run", task="token-classification")
        cfg["model"]["head_dropout"] = 0.0
    elif case == "question-answering":
        # one context, so that every batch pads alike: the start/end softmax of BertForQuestionAnswering
        # also covers padded positions, so a row's loss depends on its batch's padding (reported in issue 14)
        rows = [dict(qa_records(1)[0], id=f"q{i}") for i in range(4)]
        task = {"name": "question-answering", "doc_stride": 8, "max_question_length": 16}
        cfg = tiny_config(bert, {"train": write_jsonl(tmp / "train.jsonl", rows)}, tmp / "run", task=task)
        cfg["model"]["max_length"] = 64
    elif case == "embedding":
        rows = [
            {"text": a, "text_pair": b, "score": s}
            for a, b, s in [(POSITIVE[0], POSITIVE[1], 4.0), (POSITIVE[2], NEGATIVE[2], 0.5)] * 2
        ]
        rows[2]["text"] = "very good film and a great plot"
        data = {"train": write_jsonl(tmp / "train.jsonl", rows)}
        # a per-pair loss; CoSENT and MNRL compare the rows of a batch with each other, so their loss
        # legitimately depends on the micro-batch (see docs/training.md)
        cfg = tiny_config(bert, data, tmp / "run", task={"name": "embedding", "loss": "cosine"})
    elif case.startswith("generation"):
        arch = case.split("-", 1)[1]
        backbone = {"warm-start": bert, "decoder-only": backbones["gpt2"], "encoder-decoder": backbones["t5"]}
        rows = generation_records(4)
        rows[1]["target"] = "neg and very bad"
        rows[2]["source"] = "a great film with a very nice story"
        data = {"train": write_jsonl(tmp / "train.jsonl", rows)}
        cfg = tiny_config(
            backbone[arch], data, tmp / "run", task={"name": "generation", "architecture": arch}
        )
    elif case in ("causal-lm", "masked-lm"):
        text = "good movie\nthe plot was very bad and the actor was awful\ngreat film\nsad story of war\n"
        (tmp / "train.txt").write_text(text, encoding="utf-8")
        data = {"train": tmp / "train.txt"}
        backbone = backbones["gpt2"] if case == "causal-lm" else bert
        cfg = tiny_config(backbone, data, tmp / "run", task="language-modeling")
        cfg["task"] = {"name": "language-modeling", "documents": "line", "block_size": 12}
    else:
        raise ValueError(case)
    cfg["train"].update(
        max_steps=1,
        warmup_ratio=0.0,
        group_by_length=False,
        packing=False,
        eval_strategy="no",
        save_strategy="no",
        device="cpu",
        max_grad_norm=1e-3,  # clipping active: the clipped gradient must match too
    )
    return cfg


GA_CASES = [
    "classification",
    "multi-label",
    "token-classification",
    "question-answering",
    "embedding",
    "generation-warm-start",
    "generation-decoder-only",
    "generation-encoder-decoder",
    "causal-lm",
    "masked-lm",
]


def _mask_every_other_token(self: object, features: list[dict]) -> dict:
    """MaskingCollator.__call__ with a fixed mask (every other real token), so that two runs that batch the
    same rows differently mask the same tokens."""
    import torch

    batch = self.pad([{k: f[k] for k in ("input_ids", "attention_mask") if k in f} for f in features])
    ids = batch["input_ids"]
    chosen = (torch.arange(ids.shape[1]) % 2 == 1) & (batch["attention_mask"] == 1)
    chosen &= ~torch.isin(ids, self.special)
    batch["labels"] = torch.where(chosen, ids, torch.full_like(ids, -100))
    batch["input_ids"] = torch.where(chosen, torch.full_like(ids, self.masker.tokenizer.mask_token_id), ids)
    return batch


def _first_step(cfg: dict, tmp: Path, *, batch_size: int, accumulation: int) -> tuple[float, float, float]:
    cfg = copy.deepcopy(cfg)
    cfg["output_dir"] = str(tmp / f"run-{batch_size}x{accumulation}")
    cfg["train"].update(batch_size=batch_size, gradient_accumulation_steps=accumulation)
    run = taskhead.train(cfg, quiet=True)
    step = next(h for h in run.metrics["history"] if "grad_norm" in h)
    return step["loss"], step["grad_norm"], run.metrics["train"]["train_loss"]


@pytest.mark.parametrize("case", GA_CASES)
def test_gradient_accumulation_equals_the_same_effective_batch(
    case: str, backbones: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case == "masked-lm":
        from taskhead.tasks.language_modeling import MaskingCollator

        monkeypatch.setattr(MaskingCollator, "__call__", _mask_every_other_token)
    cfg = _ga_config(case, backbones, tmp_path)
    whole = _first_step(cfg, tmp_path, batch_size=4, accumulation=1)
    accumulated = _first_step(cfg, tmp_path, batch_size=2, accumulation=2)
    assert accumulated == pytest.approx(whole, rel=1e-4), (case, whole, accumulated)
