"""Generation that keeps its settings: decoding settings chosen at prediction time (Python, CLI, server),
a ``model/`` that plain transformers generates from as taskhead does, model cards whose code runs, and
prediction from the generic input names whatever columns the training data used."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NEGATIVE,
    POSITIVE,
    assert_close,
    generation_records,
    qa_records,
    run_cli,
    sentiment_records,
    tiny_config,
    write_jsonl,
)
from fastapi.testclient import TestClient

import taskhead
from taskhead.errors import ConfigError

TEXTS = ["good movie", "sad story", "happy story and a great film"]


def gen_run(backbone: Path, tmp: Path, **task: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    data = {
        "train": write_jsonl(tmp / "train.jsonl", generation_records(12)),
        "eval": write_jsonl(tmp / "eval.jsonl", generation_records(6)),
    }
    config = tiny_config(
        backbone, data, tmp / "run", task={"name": "generation", "max_new_tokens": 4, **task}
    )
    config["train"]["max_steps"] = 2
    return taskhead.train(config, quiet=True).run_dir


@pytest.fixture(scope="module")
def seq2seq_run(tiny_generators: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BART run that decodes with beam search and a minimum length by default."""
    tmp = tmp_path_factory.mktemp("seq2seq")
    return gen_run(tiny_generators["bart"], tmp, num_beams=2, min_new_tokens=2, no_repeat_ngram_size=2)


def n_tokens(predictor: Any, text: str) -> int:
    return len(predictor.tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------- settings at prediction time


def test_settings_default_to_the_runs_own_and_change_decoding(seq2seq_run: Path) -> None:
    predictor = taskhead.load(seq2seq_run, precision="fp32")
    default = predictor.predict(TEXTS)
    assert predictor.predict(TEXTS, num_beams=2, min_new_tokens=2, no_repeat_ngram_size=2) == default
    longer = predictor.predict(TEXTS, min_new_tokens=6, max_new_tokens=6)
    assert [n_tokens(predictor, p["generated"]) for p in longer] == [6, 6, 6]
    assert predictor.predict(TEXTS) == default  # the call's settings did not stick
    assert predictor.task.options.max_new_tokens == 4


def test_unknown_or_bad_settings_are_located_errors(seq2seq_run: Path, tiny_runs: Any) -> None:
    predictor = taskhead.load(seq2seq_run)
    with pytest.raises(ConfigError, match=r"--set num_beam: not a decoding setting.*did you mean num_beams"):
        predictor.predict(TEXTS, num_beam=4)
    with pytest.raises(ConfigError, match=r"--set num_beams: .*greater than or equal to 1.*got 0"):
        predictor.predict(TEXTS, num_beams=0)
    with pytest.raises(ConfigError, match=r"--set min_new_tokens: .*10 exceeds max_new_tokens=3"):
        predictor.predict(TEXTS, min_new_tokens=10, max_new_tokens=3)  # transformers would drop the minimum
    with pytest.raises(ConfigError, match=r"--set top_p: .*got 'high'"):
        predictor.predict(TEXTS, top_p="high")
    with pytest.raises(ConfigError, match=r"--set temperature: applies only with do_sample=true"):
        predictor.predict(TEXTS, temperature=0.5)  # transformers would ignore it without sampling
    with pytest.raises(ConfigError, match=r"--set length_penalty: applies only with num_beams > 1"):
        predictor.predict(TEXTS, num_beams=1, length_penalty=2.0)
    assert predictor.predict(TEXTS, do_sample=True, temperature=0.5, seed=1) == predictor.predict(
        TEXTS, do_sample=True, temperature=0.5, seed=1
    )
    classifier = taskhead.load(tiny_runs["classification"])
    with pytest.raises(ConfigError, match="classification runs have no decoding settings"):
        classifier.predict(["good movie"], num_beams=4)


def test_seeded_sample_does_not_depend_on_batch_mates(seq2seq_run: Path) -> None:
    # a seeded sample is drawn for each input alone: the same input gives the same sample whatever else
    # shares its batch (the server merges requests) and whatever the batch size
    sampling = {"do_sample": True, "temperature": 5.0, "seed": 3}
    alone = taskhead.load(seq2seq_run, precision="fp32").predict([TEXTS[2]], **sampling)[0]
    for batch_size in (1, 64):
        predictor = taskhead.load(seq2seq_run, precision="fp32", batch_size=batch_size)
        merged = predictor.predict([TEXTS[0], TEXTS[1], TEXTS[2], "another story"], **sampling)
        assert merged[2] == alone


def test_cli_set(seq2seq_run: Path, tiny_runs: Any, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    predictor = taskhead.load(seq2seq_run, precision="fp32")
    expected = predictor.predict(TEXTS, min_new_tokens=5, max_new_tokens=5, num_beams=1)
    result = run_cli(
        "predict", str(seq2seq_run), str(source), "--precision", "fp32",
        "--set", "min_new_tokens=5", "--set", "max_new_tokens=5", "--set", "num_beams=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [{"line": n} for n in range(1, len(TEXTS) + 1)]  # CLI outputs say which input line they answer
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {**at, **pred} for at, pred in zip(lines, expected, strict=True)
    ]
    result = run_cli("predict", str(seq2seq_run), str(source), "--set", "num_beam=4")
    assert result.returncode == 2
    assert "error: --set num_beam: not a decoding setting" in result.stderr
    assert "did you mean num_beams?" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("predict", str(seq2seq_run), str(source), "--set", "num_beams=0")
    assert result.returncode == 2 and "--set num_beams: Input should be greater" in result.stderr
    result = run_cli("predict", str(tiny_runs["classification"]), str(source), "--set", "num_beams=4")
    assert result.returncode == 2
    assert "classification runs have no decoding settings" in result.stderr


class Recording:
    """A Predictor that records how many inputs each merged batch (``predict_examples`` call) held."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_examples(self, examples: list[dict[str, Any]], **settings: Any) -> list[dict[str, Any]]:
        self.calls.append(len(examples))
        return self.inner.predict_examples(examples, **settings)


def test_server_settings_per_request(seq2seq_run: Path) -> None:
    import asyncio

    import httpx

    from taskhead.serving import ServeSettings, create_app

    predictor = taskhead.load(seq2seq_run, precision="fp32")
    default = predictor.predict(TEXTS)
    longer = predictor.predict(TEXTS, min_new_tokens=6, max_new_tokens=6)
    recording = Recording(predictor)
    app = create_app({"g": recording}, settings=ServeSettings(batch_wait_ms=300))
    bodies = [{"inputs": TEXTS}, {"inputs": TEXTS, "settings": {"min_new_tokens": 6, "max_new_tokens": 6}}]

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            posts = [client.post("/v1/models/g/predict", json=b) for b in bodies * 2]
            return list(await asyncio.gather(*posts))

    answers = asyncio.run(post_all())
    assert [a.status_code for a in answers] == [200] * 4
    assert max(recording.calls) > len(TEXTS)  # requests with different settings were merged into a batch
    got = [a.json()["predictions"] for a in answers]
    assert got == [default, longer, default, longer]  # one request's settings never reach another
    with TestClient(app) as client:
        bad = client.post("/v1/models/g/predict", json={"inputs": TEXTS, "settings": {"beams": 2}})
        assert bad.status_code == 422 and "settings beams: not a decoding setting" in bad.json()["detail"]


# ---------------------------------------------------------------------- plain transformers


@pytest.mark.parametrize("settings", [{}, {"num_beams": 3, "max_new_tokens": 6}])
def test_plain_transformers_generates_as_taskhead(seq2seq_run: Path, settings: dict) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    config = json.loads((seq2seq_run / "model" / "generation_config.json").read_text(encoding="utf-8"))
    assert config["num_beams"] == 2 and config["min_new_tokens"] == 2 and config["no_repeat_ngram_size"] == 2
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        assert config[key] is not None, key
    predictor = taskhead.load(seq2seq_run, precision="fp32", batch_size=1)
    expected = [p["generated"] for p in predictor.predict(TEXTS, **settings)]
    tokenizer = AutoTokenizer.from_pretrained(seq2seq_run / "model")
    model = AutoModelForSeq2SeqLM.from_pretrained(seq2seq_run / "model")
    got = []
    for text in TEXTS:
        out = model.generate(**tokenizer([text], return_tensors="pt"), **settings)
        got.append(tokenizer.decode(out[0], skip_special_tokens=True).strip())
    assert got == expected


def test_plain_transformers_warm_start_and_decoder_only(
    tiny_backbone: Path, tiny_generators: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    warm = gen_run(tiny_backbone, tmp_path / "warm", min_new_tokens=3)
    predictor = taskhead.load(warm, precision="fp32", batch_size=1)
    tokenizer = AutoTokenizer.from_pretrained(warm / "model")
    model = AutoModelForSeq2SeqLM.from_pretrained(warm / "model")
    for text, pred in zip(TEXTS, predictor.predict(TEXTS), strict=True):
        out = model.generate(**tokenizer([text], return_tensors="pt"))
        assert tokenizer.decode(out[0], skip_special_tokens=True).strip() == pred["generated"]

    causal = gen_run(
        tiny_generators["gpt2"], tmp_path / "gpt2", min_new_tokens=2, prompt_template="{source} :"
    )
    predictor = taskhead.load(causal, precision="fp32", batch_size=1)
    tokenizer = AutoTokenizer.from_pretrained(causal / "model")
    model = AutoModelForCausalLM.from_pretrained(causal / "model")
    for text, pred in zip(TEXTS, predictor.predict(TEXTS), strict=True):
        inputs = tokenizer(f"{text} :", return_tensors="pt")
        out = model.generate(**inputs)
        new = out[0, inputs["input_ids"].shape[1] :]
        assert tokenizer.decode(new, skip_special_tokens=True).strip() == pred["generated"]


# ---------------------------------------------------------------------- model cards


def card_snippets(run_dir: Path) -> list[str]:
    card = (run_dir / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


@pytest.mark.parametrize(
    "task", ["classification", "token-classification", "question-answering", "embedding", "generation"]
)
def test_model_card_snippets_run(task: str, tiny_runs: Any, capsys: pytest.CaptureFixture) -> None:
    snippets = card_snippets(tiny_runs[task])
    assert snippets, "the card shows how to use the run"
    assert "RUN_DIR" not in "".join(snippets)
    for code in snippets:
        exec(compile(code, f"{task} model card", "exec"), {})  # the card's own code
    assert capsys.readouterr().out
    card = (tiny_runs[task] / "README.md").read_text(encoding="utf-8")
    for call in re.findall(r"`(pipeline\([^`]*\))`", card):  # inline pipeline snippets load and run too
        from transformers import pipeline

        assert eval(call, {"pipeline": pipeline})("good movie")


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_language_model_card_snippets_run(
    objective: str, tiny_backbone: Path, tiny_generators: dict[str, Path], tmp_path: Path
) -> None:
    text = tmp_path / "train.txt"
    text.write_text("\n".join(POSITIVE + NEGATIVE) + "\n", encoding="utf-8")
    backbone = tiny_backbone if objective == "masked" else tiny_generators["gpt2"]
    config = tiny_config(backbone, {"train": text}, tmp_path / "run", task="language-modeling")
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    snippets = card_snippets(run.run_dir)
    assert len(snippets) == 2
    for code in snippets:
        exec(compile(code, "language-modeling model card", "exec"), {})


def test_generation_card_snippet_for_decoder_only(tiny_generators: dict[str, Path], tmp_path: Path) -> None:
    run = gen_run(tiny_generators["gpt2"], tmp_path)
    for code in card_snippets(run):
        exec(compile(code, "generation model card", "exec"), {})


# ---------------------------------------------------------------------- generic input names


def test_translation_from_parallel_files_predicts_plain_text(tiny_backbone: Path, tmp_path: Path) -> None:
    pairs = generation_records(12)
    (tmp_path / "train.en").write_text("".join(r["source"] + "\n" for r in pairs), encoding="utf-8")
    (tmp_path / "train.de").write_text("".join(r["target"] + "\n" for r in pairs), encoding="utf-8")
    config = tiny_config(
        tiny_backbone,
        {"train": tmp_path / "train.en"},
        tmp_path / "run",
        task={"name": "generation", "parallel": ["en", "de"], "max_new_tokens": 3},
    )
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir, precision="fp32")
    expected = predictor.predict(TEXTS)
    plain = tmp_path / "input.txt"
    plain.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert predictor.predict_examples(predictor.read_inputs(plain)) == expected
    rows = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in TEXTS])
    assert predictor.predict_examples(predictor.read_inputs(rows)) == expected
    own = write_jsonl(tmp_path / "own.jsonl", [{"en": t} for t in TEXTS])  # the source language's name
    assert predictor.predict_examples(predictor.read_inputs(own)) == expected
    result = run_cli("predict", str(run.run_dir), "-", "--precision", "fp32", stdin="\n".join(TEXTS))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"line": n, **pred} for n, pred in enumerate(expected, 1)
    ]


def test_abstractive_qa_predicts_from_question_and_context(tiny_backbone: Path, tmp_path: Path) -> None:
    records = qa_records(8)
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": r["context"],
                        "qas": [
                            {
                                "id": r["id"],
                                "question": r["question"],
                                "answers": [
                                    {
                                        "text": r["answers"]["text"][0],
                                        "answer_start": r["answers"]["answer_start"][0],
                                    }
                                ],
                            }
                        ],
                    }
                    for r in records
                ],
            }
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(squad), encoding="utf-8")
    config = tiny_config(
        tiny_backbone,
        {"train": tmp_path / "train.json"},
        tmp_path / "run",
        task={"name": "generation", "max_new_tokens": 3},
    )
    config["model"]["max_length"] = 64
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir, precision="fp32")
    question, context = "who won the match", "the team won the match"
    expected = predictor.predict([f"question: {question} context: {context}"])  # task.qa_template
    assert predictor.predict([(question, context)]) == expected
    assert predictor.predict([{"question": question, "context": context}]) == expected
    rows = write_jsonl(tmp_path / "in.jsonl", [{"question": question, "context": context}])
    assert predictor.predict_examples(predictor.read_inputs(rows)) == expected


def test_embedding_from_headerless_tsv_embeds_single_sentences(tiny_backbone: Path, tmp_path: Path) -> None:
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"{a}\t{b}\n" for a, b in zip(POSITIVE, NEGATIVE, strict=True)), encoding="utf-8")
    config = tiny_config(tiny_backbone, {"train": tsv}, tmp_path / "run", task="embedding")
    config["data"].update(header=False, columns={"anchor": 0, "positive": 1})
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir, precision="fp32")
    expected = predictor.predict(TEXTS)
    plain = tmp_path / "sentences.txt"
    plain.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    got = predictor.predict_examples(predictor.read_inputs(plain))
    assert [p["embedding"] for p in got] == [p["embedding"] for p in expected]
    rows = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    assert [p["embedding"] for p in predictor.predict_examples(predictor.read_inputs(rows))] == [
        p["embedding"] for p in expected
    ]
    # a header naming generic columns is a header, not an input, though the run's data had none
    with_header = tmp_path / "with-header.csv"
    with_header.write_text("text,note\n" + "".join(f"{t},other\n" for t in TEXTS), encoding="utf-8")
    got = predictor.predict_examples(predictor.read_inputs(with_header))
    assert [p["embedding"] for p in got] == [p["embedding"] for p in expected]
    ids = tmp_path / "ids.tsv"
    ids.write_text("id\ttext\n" + "".join(f"n{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    result = run_cli("predict", str(run.run_dir), str(ids), "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["line"], o["id"]) for o in outputs] == [(2, "n0"), (3, "n1"), (4, "n2")]
    assert_close([o["embedding"] for o in outputs], [p["embedding"] for p in expected], 1e-6)
    one_column = tmp_path / "sentences.tsv"  # one headerless column: one text per row
    one_column.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    got = predictor.predict_examples(predictor.read_inputs(one_column))
    assert [p["embedding"] for p in got] == [p["embedding"] for p in expected]


def test_pair_classifier_takes_generic_and_training_names(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [
        {"sentence1": r["text"], "sentence2": "good film", "label": r["label"]} for r in sentiment_records(1)
    ]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows)}
    config = tiny_config(tiny_backbone, data, tmp_path / "run")
    config["data"]["columns"] = {"text": "sentence1", "text_pair": "sentence2"}
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir, precision="fp32")
    expected = predictor.predict([("bad movie", "great film")])
    assert predictor.predict([{"sentence1": "bad movie", "sentence2": "great film"}]) == expected
    assert predictor.predict([{"text": "bad movie", "text_pair": "great film"}]) == expected
    generic = write_jsonl(tmp_path / "generic.jsonl", [{"text": "bad movie", "text_pair": "great film"}])
    assert predictor.predict_examples(predictor.read_inputs(generic)) == expected
    csv = tmp_path / "generic.csv"
    csv.write_text("text,text_pair\nbad movie,great film\n", encoding="utf-8")
    result = run_cli("predict", str(run.run_dir), str(csv), "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"line": 2, **expected[0]}]
    for code in card_snippets(run.run_dir):  # the card of a pair classifier predicts for a pair
        exec(compile(code, "pair classifier model card", "exec"), {})


def test_unreadable_input_keeps_the_task_readers_error(tiny_runs: Any, tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "in.jsonl", [{"question": "what"}])
    result = run_cli("predict", str(tiny_runs["question-answering"]), str(rows))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(rows) in result.stderr and "context" in result.stderr
