"""Training arithmetic: gradient accumulation equals the same effective batch, ``train.metric`` is checked
(name and direction) before any model loads, decoder-only generation budgets its sequences, and the console
and run directory report what was actually trained and tuned."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import (
    NEGATIVE,
    POSITIVE,
    _train_tokenizer,
    generation_records,
    ner_records,
    qa_records,
    run_cli,
    sentiment_records,
    tiny_config,
    write_jsonl,
)

import taskhead
from taskhead.errors import ConfigError

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
            backbone[arch],
            data,
            tmp / "run",
            task={"name": "generation", "architecture": arch, "max_new_tokens": 8},
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


# ---------------------------------------------------------------- train.metric: name and direction


def _sentiment(tmp: Path, backbone: Path | str, **train: object) -> dict:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", sentiment_records(1)),
        "eval": write_jsonl(tmp / "eval.jsonl", sentiment_records(1)),
    }
    cfg = tiny_config(Path(backbone), data, tmp / "run")
    cfg["train"].update(train)
    return cfg


@pytest.mark.parametrize(
    ("metric", "hint"),
    [
        ("perplexity", ""),
        ("acuracy", "; did you mean accuracy?"),
        ("eval_macro_f1", "; did you mean macro_f1?"),
    ],
)
def test_unknown_metric_is_refused_before_any_model_loads(tmp_path: Path, metric: str, hint: str) -> None:
    # the backbone does not exist: the error can only be the metric's, raised before any model is loaded
    cfg = _sentiment(tmp_path, tmp_path / "no-such-backbone", metric=metric)
    expected = (
        f"train.metric: '{metric}' is not a metric the classification task reports during evaluation with "
        f"these options and data; expected one of: loss, accuracy, macro_f1, micro_f1, weighted_f1{hint}"
    )
    with pytest.raises(ConfigError) as info:
        taskhead.train(cfg, quiet=True)
    assert str(info.value) == expected
    with pytest.raises(ConfigError) as info:
        taskhead.validate(cfg)
    assert str(info.value) == expected


def test_cli_validate_and_train_refuse_an_unknown_metric(tmp_path: Path, tiny_backbone: Path) -> None:
    cfg = _sentiment(tmp_path, tiny_backbone)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    for command in ("validate", "train"):
        result = run_cli(command, str(path), "train.metric=hamming_loss")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "train.metric: 'hamming_loss' is not a metric the classification task reports" in result.stderr
        assert not (tmp_path / "run" / "model").exists()
    multi = _sentiment(tmp_path, tiny_backbone)
    rows = [{"text": r["text"], "labels": [r["label"]]} for r in sentiment_records(1)]
    multi["data"] = {"train": str(write_jsonl(tmp_path / "multi.jsonl", rows))}
    multi["task"] = {"name": "classification", "multi_label": True}
    path.write_text(json.dumps(multi), encoding="utf-8")
    assert run_cli("validate", str(path), "train.metric=hamming_loss").returncode == 0


def _task_for(name: str, **options: object) -> object:
    from taskhead.config import RunConfig
    from taskhead.tasks import build_task

    return build_task(RunConfig(task={"name": name, **options}).task)


def test_metrics_follow_the_task_options_and_data() -> None:
    from taskhead.tasks.base import LOWER_IS_BETTER

    multi = _task_for("classification", multi_label=True).eval_metrics([])
    assert multi["hamming_loss"] is False and multi["micro_f1"] is True
    assert "accuracy" not in multi and "accuracy" in _task_for("classification").eval_metrics([])
    qa = _task_for("question-answering")
    v1 = [{"answers": [("x", 0)]}]
    v2 = [*v1, {"answers": [], "is_impossible": True}]
    assert set(qa.eval_metrics(v1)) == {"exact_match", "f1"}
    assert {"has_answer_f1", "no_answer_exact_match"} <= set(qa.eval_metrics(v2))
    gen = _task_for("generation")
    assert "f1" not in gen.eval_metrics([]) and "bleu" in gen.eval_metrics([])
    gen.qa = True
    assert {"exact_match", "f1"} <= set(gen.eval_metrics([]))
    assert set(_task_for("language-modeling", objective="clm").eval_metrics([])) == {"perplexity"}
    assert "accuracy" in _task_for("language-modeling", objective="mlm").eval_metrics([])
    assert {"loss", "perplexity", "hamming_loss"} == LOWER_IS_BETTER


@pytest.mark.parametrize(
    "task", ["classification", "token-classification", "question-answering", "embedding", "generation"]
)
def test_every_default_metric_is_a_reported_one(task: str, tiny_backbone: Path, tmp_path: Path) -> None:
    from conftest import tiny_run_config

    from taskhead.config import selection_metric

    report = taskhead.validate(tiny_run_config(task, tiny_backbone, tmp_path))
    metric, greater = selection_metric(report.config, report.task, report.splits["eval"])
    assert metric == report.task.default_metric and greater is True


def test_lower_is_better_metric_keeps_the_lowest_checkpoint(
    backbones: dict[str, Path], tmp_path: Path
) -> None:
    text = "good movie\nthe plot was very bad and the actor was awful\ngreat film\nsad story of war\n" * 3
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    data = {"train": tmp_path / "train.txt", "eval": tmp_path / "train.txt"}
    cfg = tiny_config(backbones["gpt2"], data, tmp_path / "run", task="language-modeling")
    cfg["train"].update(
        epochs=3,
        metric="perplexity",
        save_strategy="epoch",
        learning_rate=3e-3,
        device="cpu",
        warmup_ratio=0.0,
    )
    run = taskhead.train(cfg, quiet=True)
    evals = [h for h in run.metrics["history"] if "eval_perplexity" in h]
    assert len(evals) == 3
    best = min(evals, key=lambda h: h["eval_perplexity"])
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert best["step"] != evals[0]["step"]  # training lowered it: the worst (first) one is not kept


# ---------------------------------------------------------------- decoder-only budgets

LONG = " ".join(["the very good film"] * 8)  # 32 words: longer than the model's 16 positions


def test_decoder_only_encoding_fits_the_positions(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from taskhead.config import ModelConfig

    backbone = _gpt2(tmp_path / "gpt2-16", n_positions=16)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    task = _task_for("generation", architecture="decoder-only", max_new_tokens=4, max_target_length=64)
    model = ModelConfig(backbone=str(backbone), max_length=64)  # more than the 16 positions
    examples = [
        {"_where": "a", "source": LONG, "targets": ["pos"]},  # long prompt
        {"_where": "b", "source": "good movie", "targets": [LONG]},  # long target
        {"_where": "c", "source": "bad movie", "targets": ["neg"]},  # fits
    ]
    features = task.encode(examples, tokenizer, model)
    assert max(features.lengths()) == 16
    assert (features.truncated, features.lost) == (2, 1)  # the long target leaves one prompt token
    first, second, third = features.inputs
    assert first["input_ids"][-2:] == [tokenizer.convert_tokens_to_ids("pos"), tokenizer.eos_token_id]
    assert second["labels"][0] == -100 and second["labels"][-1] == tokenizer.eos_token_id  # 1 prompt token
    assert len(third["input_ids"]) < 16 and task.prompt_room == 12
    unlabelled = task.encode([{"_where": "d", "source": LONG}], tokenizer, model)
    assert unlabelled.truncated == 1 and len(unlabelled.inputs[0]["input_ids"]) <= 16
    with pytest.raises(
        ConfigError, match=r"task.max_new_tokens: 16 leaves no room for a prompt in 16 tokens"
    ):
        _task_for("generation", architecture="decoder-only", max_new_tokens=16).encode(
            examples, tokenizer, model
        )


def test_decoder_only_trains_and_predicts_on_long_prompts_and_targets(tmp_path: Path) -> None:
    backbone = _gpt2(tmp_path / "gpt2-16", n_positions=16)
    rows = [
        {"source": LONG, "target": "pos"},
        {"source": "good movie", "target": LONG},
        {"source": "bad movie", "target": "neg"},
        {"source": "sad story", "target": "neg"},
    ]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "eval": tmp_path / "train.jsonl"}
    task = {"name": "generation", "architecture": "decoder-only", "max_new_tokens": 6}
    cfg = tiny_config(backbone, data, tmp_path / "run", task=task)
    cfg["model"]["max_length"] = 16
    cfg["train"].update(max_steps=2, batch_size=2, device="cpu", eval_strategy="no")
    run = taskhead.train(cfg, quiet=True)  # used to fail with an index error in the position embeddings
    assert "rougeL" in run.metrics["eval"]
    predictor = run.load(device="cpu")
    (pred,) = predictor.predict([LONG])
    assert len(predictor.tokenizer(pred["generated"], add_special_tokens=False)["input_ids"]) <= 6


# ---------------------------------------------------------------- what the console and run directory report


def test_max_steps_reports_the_epochs_actually_trained(
    tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # 20 rows in batches of 8: 3 steps per epoch, so 1 step is a third of an epoch
    cfg = _sentiment(tmp_path, tiny_backbone, max_steps=1, epochs=3, eval_strategy="no")
    run = taskhead.train(cfg, quiet=True)
    assert run.metrics["train"]["steps"] == 1
    assert run.metrics["train"]["epochs_trained"] == pytest.approx(1 / 3, abs=1e-4)
    err = capsys.readouterr().err
    assert "at most 1 optimizer steps (train.max_steps; train.epochs is not used)" in err
    assert "trained 1 optimizer steps = 0.3333 epoch(s) (train.max_steps=1)" in err
    assert " 3 epoch" not in err
    assert "model/: the weights after the last step (1); no best-checkpoint pick: no evaluation" in err
    card = (run.run_dir / "README.md").read_text()
    assert "- trained 1 optimizer steps = 0.3333 epochs (planned: max_steps 1)" in card
    assert "epochs 3" not in card
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["model_weights"]["chosen"] == "last" and meta["trained"]["steps"] == 1


def test_best_checkpoint_is_printed_and_recorded(
    tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = _sentiment(tmp_path, tiny_backbone, epochs=2, save_strategy="epoch", metric="loss")
    run = taskhead.train(cfg, quiet=True)
    evals = [h for h in run.metrics["history"] if "eval_loss" in h]
    best = min(evals, key=lambda h: h["eval_loss"])
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["model_weights"] == {
        "chosen": "best",
        "metric": "eval_loss",
        "value": best["eval_loss"],
        "greater_is_better": False,
        "step": best["step"],
        "checkpoint": f"checkpoint-{best['step']}",
    }
    value, step = f"{best['eval_loss']:.4f}", best["step"]
    line = f"model/: the best checkpoint by eval_loss (lower is better): {value} at step {step}"
    assert line in capsys.readouterr().err
    assert (
        line.replace("): ", "), ").replace("model/: the", "- model/: the")
        in (run.run_dir / "README.md").read_text()
    )


def test_thresholds_tuned_on_eval_are_reported_and_scored_on_test(
    tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [{"text": r["text"], "labels": [r["label"]]} for r in sentiment_records(1)]
    rows += [{"text": "good and bad movie", "labels": ["pos", "neg"]}, {"text": "the plot", "labels": []}]
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows * 2),
        "eval": write_jsonl(tmp_path / "eval.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[::-1][:15]),
    }
    task = {"name": "classification", "multi_label": True, "tune_thresholds": True}
    cfg = tiny_config(tiny_backbone, data, tmp_path / "run", task=task)
    cfg["train"].update(epochs=2, eval_strategy="no")
    run = taskhead.train(cfg, quiet=True)
    tuned = run.metrics["tuned_on_eval"]
    assert (
        set(tuned["thresholds"]) == {"neg", "pos"}
        and "eval metrics are measured on the data" in tuned["note"]
    )
    assert "micro_f1" in run.metrics["eval_before_tuning"]
    err = capsys.readouterr().err
    assert "eval metrics (" in err and "the split the thresholds were tuned on" in err
    assert "thresholds tuned on the eval split: the eval metrics above are on that same split" in err
    assert "the test metrics use the tuned values on held-out data" in err
    # the test metrics are those of the saved model with its tuned thresholds
    predictor = run.load(device="cpu")
    assert predictor.task.thresholds == list(tuned["thresholds"].values())
    again = predictor.evaluate(data["test"])
    assert again["micro_f1"] == pytest.approx(run.metrics["test"]["micro_f1"])
    card = (run.run_dir / "README.md").read_text()
    assert "- eval (on the split the tuned values below were tuned on):" in card
    assert "- tuned on the eval split: thresholds" in card and "the test metrics use them" in card
