"""Generation: T5, BART, GPT-2 and a warm-started BERT encoder-decoder; decoding modes; prompt masking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import generation_records, run_cli, tiny_config, write_jsonl

import taskhead
from taskhead.config import ModelConfig
from taskhead.tasks.generation import GenerationOptions, GenerationTask


def gen_config(backbone: Path, tmp: Path, **task: object) -> dict:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", generation_records(12)),
        "eval": write_jsonl(tmp / "eval.jsonl", generation_records(6)),
    }
    config = tiny_config(
        backbone, data, tmp / "run", task={"name": "generation", "max_new_tokens": 4, **task}
    )
    config["train"]["max_steps"] = 3
    return config


@pytest.mark.parametrize("kind", ["t5", "bart", "gpt2"])
def test_each_architecture_trains_and_generates(
    kind: str, tiny_generators: dict[str, Path], tmp_path: Path
) -> None:
    run = taskhead.train(gen_config(tiny_generators[kind], tmp_path), quiet=True)
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    expected = "decoder-only" if kind == "gpt2" else "encoder-decoder"
    assert meta["task_state"]["architecture"] == expected
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "loss", "perplexity"):
        assert key in run.metrics["eval"], key
    predictor = taskhead.load(run.run_dir)
    first = predictor.predict(["good movie", {"id": "x", "source": "bad movie"}])
    assert [set(p) for p in first] == [{"generated"}, {"id", "generated"}]
    assert predictor.predict(["good movie", {"id": "x", "source": "bad movie"}]) == first
    scored = predictor.evaluate(tmp_path / "eval.jsonl")
    assert scored["perplexity"] == pytest.approx(math.exp(scored["loss"]))
    assert scored["rougeL"] == pytest.approx(run.metrics["eval"]["rougeL"])


def test_warm_start_from_an_encoder(tiny_backbone: Path, tmp_path: Path) -> None:
    run = taskhead.train(gen_config(tiny_backbone, tmp_path, tie_encoder_decoder=True), quiet=True)
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["task_state"]["architecture"] == "warm-start"
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(run.run_dir / "model")
    assert type(model).__name__ == "EncoderDecoderModel"
    assert model.config.decoder_start_token_id is not None


def test_decoder_only_loss_is_masked_on_the_prompt(tiny_generators: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_generators["gpt2"])
    options = GenerationOptions(prompt_template="{source} :", max_new_tokens=8)  # 8 + prompt fit in 32
    task = GenerationTask(options, architecture="decoder-only")
    ex = {"_where": "m", "source": "good movie", "targets": ["pos"]}
    (item,) = task.encode([ex], tokenizer, ModelConfig(max_length=32)).inputs
    prompt = tokenizer("good movie :")["input_ids"]
    assert item["input_ids"] == [*prompt, tokenizer.convert_tokens_to_ids("pos"), tokenizer.eos_token_id]
    assert item["labels"] == [-100] * len(prompt) + item["input_ids"][len(prompt) :]
    task = GenerationTask(
        GenerationOptions(train_on_prompt=True, max_new_tokens=8), architecture="decoder-only"
    )
    (item,) = task.encode([ex], tokenizer, ModelConfig(max_length=32)).inputs
    assert item["labels"] == item["input_ids"]


def test_long_targets_are_cut_and_counted(tiny_generators: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_generators["t5"])
    task = GenerationTask(GenerationOptions(max_target_length=3), architecture="encoder-decoder")
    examples = [
        {"_where": "m", "source": "good", "targets": ["the good movie was very good"]},
        {"_where": "m", "source": "bad", "targets": ["bad"]},
    ]
    features = task.encode(examples, tokenizer, ModelConfig(max_length=32))
    assert features.lost == 1
    assert (
        features.inputs[0]["labels"][-1] == tokenizer.eos_token_id and len(features.inputs[0]["labels"]) == 3
    )


@pytest.mark.parametrize(
    "decoding",
    [
        {},
        {"num_beams": 3, "length_penalty": 0.8, "no_repeat_ngram_size": 2, "early_stopping": True},
        {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "seed": 3},
        {"min_new_tokens": 3, "max_new_tokens": 3},
    ],
)
def test_decoding_modes(decoding: dict, tiny_generators: dict[str, Path], tmp_path: Path) -> None:
    config = gen_config(tiny_generators["t5"], tmp_path)
    config["task"].update(decoding)
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir)
    first = predictor.predict(["good movie", "sad story", "happy story"])
    assert predictor.predict(["good movie", "sad story", "happy story"]) == first  # sampling seeded
    tokens = [len(predictor.tokenizer(p["generated"], add_special_tokens=False)["input_ids"]) for p in first]
    assert max(tokens) <= config["task"]["max_new_tokens"]
    if "min_new_tokens" in decoding:
        assert min(tokens) == 3


def test_cli_round_trip(tiny_generators: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(gen_config(tiny_generators["bart"], tmp_path)))
    result = run_cli("train", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", str(tmp_path / "run"), str(tmp_path / "eval.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "rougeL" in result.stdout and "bleu" in result.stdout
    result = run_cli("predict", str(tmp_path / "run"), "-", stdin="good movie\nbad movie\n")
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(set(o), o["line"]) for o in outputs] == [({"line", "generated"}, 1), ({"line", "generated"}, 2)]


def test_batch_order_is_random_for_generation_unless_set(
    tiny_generators: dict[str, Path], tmp_path: Path
) -> None:
    from taskhead.config import RunConfig
    from taskhead.tasks import task_class
    from taskhead.workflows.train_setup import group_by_length

    config = gen_config(tiny_generators["t5"], tmp_path)
    assert group_by_length(RunConfig.model_validate(config), task_class("generation")) is False
    config["train"]["group_by_length"] = True
    assert group_by_length(RunConfig.model_validate(config), task_class("generation")) is True
    classify = tiny_config(tiny_generators["t5"], {"train": tmp_path / "x.csv"}, tmp_path / "c")
    assert group_by_length(RunConfig.model_validate(classify), task_class("classification")) is True
