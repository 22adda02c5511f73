"""The language-modeling task (masked and causal LM on raw text) and scratch models with own tokenizers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import generation_records, run_cli, sentiment_records, write_jsonl

import taskhead
from taskhead.errors import ConfigError, DataError

DOCS = [
    "the good movie was great and the actor was nice",
    "a bad film with an awful plot and a boring story",
    "the team won the match in the rain",
    "the market fell and the stock price was poor",
    "science and space research in the city",
    "the election in the world was a war",
]

TRAIN = {"epochs": 3, "batch_size": 4, "learning_rate": 2e-3, "save_strategy": "no", "bf16": False}


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    train = tmp_path / "train.txt"
    train.write_text("\n".join(DOCS * 4) + "\n", encoding="utf-8")
    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return {"train": train, "eval": dev}


def lm_config(backbone: str, corpus: dict[str, Path], out: Path, **model: object) -> dict:
    return {
        "task": "language-modeling",
        "output_dir": str(out),
        "model": {"backbone": backbone, "max_length": 16, **model},
        "data": {k: str(v) for k, v in corpus.items()},
        "train": dict(TRAIN, logging_steps=1),
    }


SCRATCH_GPT2 = {
    "architecture": "gpt2",
    "tokenizer": "bpe",
    "vocab_size": 300,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
}


def train_losses(run: taskhead.Run) -> list[float]:
    return [h["loss"] for h in run.metrics["history"] if "loss" in h]


def test_masked_lm_trains_scores_and_fills(tiny_backbone: Path, corpus: dict, tmp_path: Path) -> None:
    run = taskhead.train(lm_config(str(tiny_backbone), corpus, tmp_path / "mlm"), quiet=True)
    ev = run.metrics["eval"]
    assert set(ev) >= {"loss", "perplexity", "accuracy", "tokens"}
    assert ev["perplexity"] == pytest.approx(math.exp(ev["loss"]), rel=1e-6)
    predictor = taskhead.load(run.run_dir, precision="fp32")  # as the run evaluated (train.bf16: false)
    assert predictor.task.objective == "mlm"
    # evaluation masks with a fixed seed: the same file scores the same every time
    again = predictor.evaluate(corpus["eval"])
    assert again["loss"] == pytest.approx(ev["loss"], rel=1e-5)
    (pred,) = predictor.predict(["the good [MASK] was [MASK]"])
    assert len(pred["fills"]) == 2 and len(pred["fills"][0]) == 5
    scores = [c["score"] for c in pred["fills"][0]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    with pytest.raises(DataError, match=r"input 1: text: expected at least one \[MASK\]"):
        predictor.predict(["no mask here"])


def test_blocks_concatenate_documents_with_separators(tiny_backbone: Path) -> None:
    from transformers import AutoTokenizer

    from taskhead.config import ModelConfig
    from taskhead.tasks.language_modeling import LanguageModelingOptions, LanguageModelingTask

    tok = AutoTokenizer.from_pretrained(tiny_backbone)
    task = LanguageModelingTask(LanguageModelingOptions(block_size=8), objective="mlm")
    examples = [{"_where": f"f:{i}", "text": d, "_group": True} for i, d in enumerate(DOCS[:3], 1)]
    features = task.encode(examples, tok, ModelConfig(backbone=str(tiny_backbone)))
    content = [tok(d, add_special_tokens=False)["input_ids"] + [tok.sep_token_id] for d in DOCS[:3]]
    stream = [t for doc in content for t in doc]
    blocks = [f["input_ids"] for f in features.inputs]
    assert all(len(b) == 8 for b in blocks[:-1]) and 2 < len(blocks[-1]) <= 8
    assert all(b[0] == tok.cls_token_id and b[-1] == tok.sep_token_id for b in blocks)
    assert [t for b in blocks for t in b[1:-1]] == stream  # nothing lost, nothing repeated
    assert features.example_index[0] == 0 and features.example_index[-1] == 2
    assert features.example_index == sorted(features.example_index)


def test_scratch_causal_lm_learns_and_scores_texts(corpus: dict, tmp_path: Path) -> None:
    config = lm_config("scratch", corpus, tmp_path / "clm", max_length=32, scratch=SCRATCH_GPT2)
    config["train"].update(epochs=6, learning_rate=5e-3)
    run = taskhead.train(config, quiet=True)
    losses = train_losses(run)
    assert losses[-1] < losses[0] - 0.5, losses
    assert (run.run_dir / "scratch" / "tokenizer.json").is_file()
    predictor = taskhead.load(run.run_dir)
    assert predictor.task.objective == "clm"
    seen, unseen = predictor.predict([DOCS[2], "research rain market election actor"])
    assert seen["perplexity"] < unseen["perplexity"]  # a text from the training data is likelier
    assert seen["tokens"] > 0 and seen["loss"] == pytest.approx(seen["nll"] / seen["tokens"])
    # the saved model is a plain transformers causal LM
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(run.run_dir / "model").config.model_type == "gpt2"


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_scratch_tokenizers_round_trip(kind: str) -> None:
    from taskhead.config import ScratchConfig
    from taskhead.workflows.scratch import train_tokenizer

    role = {"wordpiece": "encoder", "bpe": "causal", "unigram": "seq2seq"}[kind]
    tok = train_tokenizer(DOCS * 3, ScratchConfig(tokenizer=kind, vocab_size=200, min_frequency=1), role)
    ids = tok("the team won the match", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids).strip() == "the team won the match"
    wrapped = tok("the match")["input_ids"]
    if role == "encoder":
        assert wrapped[0] == tok.cls_token_id and wrapped[-1] == tok.sep_token_id
    elif role == "seq2seq":
        assert wrapped[-1] == tok.eos_token_id


def test_pretrain_then_fine_tune_chain(tiny_backbone: Path, corpus: dict, tmp_path: Path) -> None:
    """A masked-LM run's directory is a backbone for classification (its encoder weights carry over)."""
    import torch
    from safetensors.torch import load_file

    lm = taskhead.train(lm_config(str(tiny_backbone), corpus, tmp_path / "lm"), quiet=True)
    data = {
        "train": write_jsonl(tmp_path / "c-train.jsonl", sentiment_records(2)),
        "eval": write_jsonl(tmp_path / "c-eval.jsonl", sentiment_records(1)),
    }
    config = {
        "task": "classification",
        "output_dir": str(tmp_path / "cls"),
        "model": {"backbone": str(lm.run_dir), "max_length": 16},
        "data": {k: str(v) for k, v in data.items()},
        "train": dict(TRAIN, epochs=1, learning_rate=1e-9),  # the encoder stays (almost) the pretrained one
    }
    cls = taskhead.train(config, quiet=True)
    assert cls.metrics["eval"]["accuracy"] >= 0
    lm_weights = load_file(str(lm.run_dir / "model" / "model.safetensors"))
    cls_weights = load_file(str(cls.run_dir / "model" / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(lm_weights[key], cls_weights[key], atol=1e-6)
    untouched = load_file(str(tiny_backbone / "model.safetensors"))
    assert not torch.allclose(untouched[key.removeprefix("bert.")], cls_weights[key], atol=1e-4)


def test_scratch_seq2seq_and_warm_start_generation(tmp_path: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", generation_records(24)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", generation_records(6)),
    }
    for arch, tokenizer in (("t5", "unigram"), ("bert", "wordpiece")):
        scratch = {"architecture": arch, "tokenizer": tokenizer, "vocab_size": 120, "min_frequency": 1}
        scratch.update(hidden_size=32, num_layers=1, num_heads=2)
        config = {
            "task": {"name": "generation", "max_new_tokens": 8},
            "output_dir": str(tmp_path / arch),
            "model": {"backbone": "scratch", "max_length": 32, "scratch": scratch},
            "data": {k: str(v) for k, v in data.items()},
            "train": dict(TRAIN, epochs=2),
        }
        run = taskhead.train(config, quiet=True)
        expected = "encoder-decoder" if arch == "t5" else "warm-start"
        assert json.loads((run.run_dir / "taskhead.json").read_text())["task_state"]["architecture"] == (
            expected
        )
        (pred,) = taskhead.load(run.run_dir).predict(["good movie"])
        assert isinstance(pred["generated"], str)


def test_resume_reuses_the_scratch_tokenizer(corpus: dict, tmp_path: Path) -> None:
    from taskhead.config import ModelConfig, ScratchConfig
    from taskhead.workflows import scratch

    examples = [{"_where": "x:1", "text": d} for d in DOCS]
    options = ScratchConfig(**SCRATCH_GPT2)
    model = ModelConfig(backbone="scratch")
    target = tmp_path / "scratch"
    scratch.build(options, model, examples, target, seed=1)
    stamp = (target / "tokenizer.json").stat().st_mtime_ns
    scratch.build(options, model, examples, target, seed=1)
    assert (target / "tokenizer.json").stat().st_mtime_ns == stamp  # same settings and data: reused
    scratch.build(options, model, examples[:3], target, seed=1)
    assert (target / "tokenizer.json").stat().st_mtime_ns != stamp  # other data: rebuilt


def test_configuration_errors(
    tiny_backbone: Path, tiny_generators: dict, corpus: dict, tmp_path: Path
) -> None:
    bad = lm_config(str(tiny_generators["t5"]), corpus, tmp_path / "t5")
    with pytest.raises(ConfigError, match="encoder-decoder model; fine-tune it with task: generation"):
        taskhead.train(bad, quiet=True)
    gpt2 = lm_config(str(tiny_generators["gpt2"]), corpus, tmp_path / "g")
    gpt2["task"] = {"name": "language-modeling", "objective": "mlm"}
    with pytest.raises(ConfigError, match="no masked-LM head for 'gpt2'"):
        taskhead.train(gpt2, quiet=True)
    unknown = lm_config("scratch", corpus, tmp_path / "u", scratch={"architecture": "nonsense"})
    with pytest.raises(ConfigError, match="unknown model type 'nonsense'"):
        taskhead.train(unknown, quiet=True)


def test_paragraph_documents_and_table_errors(tmp_path: Path) -> None:
    from taskhead.config import DataConfig
    from taskhead.tasks.language_modeling import LanguageModelingOptions, LanguageModelingTask

    text = tmp_path / "wiki.txt"
    text.write_text("= title =\n\nfirst line\nsecond line\n\n\nlast para\n", encoding="utf-8")
    task = LanguageModelingTask(LanguageModelingOptions(documents="paragraph"))
    docs = task.read(text, DataConfig())
    assert [(d["_where"], d["text"]) for d in docs] == [
        (f"{text}:1", "= title ="),
        (f"{text}:3", "first line\nsecond line"),
        (f"{text}:7", "last para"),
    ]
    table = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine"}, {"text": "  "}, {"body": "x"}])
    with pytest.raises(DataError) as err:
        LanguageModelingTask(LanguageModelingOptions()).read(table, DataConfig())
    assert f"{table}:2: text: empty or not text" in str(err.value)
    assert f"{table}:3: text: missing" in str(err.value)


def test_cli_round_trip(tiny_backbone: Path, corpus: dict, tmp_path: Path) -> None:
    import yaml

    config = lm_config(str(tiny_backbone), corpus, tmp_path / "run")
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = run_cli("train", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    masked = tmp_path / "masked.txt"
    masked.write_text("the [MASK] won the match\n", encoding="utf-8")
    done = run_cli("predict", str(tmp_path / "run"), str(masked))
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["fills"]) == 1
    done = run_cli("evaluate", str(tmp_path / "run"), str(corpus["eval"]))
    assert done.returncode == 0 and "perplexity" in done.stdout
    plain = tmp_path / "plain.txt"
    plain.write_text("no mask at all\n", encoding="utf-8")
    done = run_cli("predict", str(tmp_path / "run"), str(plain))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {plain}:1: text: expected at least one [MASK] to fill " + (
        "(a masked language model predicts masked words)"
    )
