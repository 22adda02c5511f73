"""Shared fixtures: a tiny random-config BERT backbone with its own WordPiece vocabulary, and tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`make test` runs `-n 2`) each worker computes on one thread, and so does every CLI
# subprocess it spawns (run_cli passes os.environ through): two workers on two cores, not two x N threads.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    import torch

    torch.set_num_threads(1)

# The slow tier, longest first (the first three: figures alone on 2 cores from the docstrings; the order of
# the rest is an estimate, as this session's timings were taken on a loaded machine). Under xdist they are
# scheduled before the fast tier, one test per work unit, so that the two longest start at once on different
# workers and the fast tier fills in around them instead of one long test running alone at the end.
SLOW_ORDER = (
    "test_scitldr_warm_started_minilm_learns_to_summarize",  # ~270 s
    "test_squad_split_by_article",  # ~240 s
    "test_conll2003_ner_3000_sentences",  # ~210 s
    "test_goemotions_multilabel",
    "test_multi30k_t5_from_scratch_learns_to_translate",
    "test_ud_ewt_upos_2000_sentences",
    "test_stsb_cosent_beats_the_untuned_model",
    "test_minilm_on_cranfield_far_above_random",
    "test_wikitext_continued_pretraining_lowers_masked_lm_loss",
    "test_sst2_2000_sentences_1_epoch",
    "test_trec_6_classes",
    "test_squad_v1_1_dev_reads_whole_and_scores_the_first_sentence_baseline",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``--dist loadgroup --no-loadscope-reorder``: every test its own work unit, handed out in
    this order): slow tests first, longest first, then the fast tier in file order. Serial runs keep file
    order. (Whole fast modules as units balanced badly: a module of few but slow CLI tests ran alone at the
    end; one test per unit builds a module fixture at most once per worker.)"""
    if not XDIST_WORKER:
        return
    rank = {name: i for i, name in enumerate(SLOW_ORDER)}
    items.sort(
        key=lambda item: rank.get(item.name, len(rank)) if item.get_closest_marker("slow") else len(rank) + 1
    )


SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BIN = Path(sys.executable).parent

WORDS = (  # noqa: SIM905 - a word list reads best as one string
    "good great fine happy love nice excellent superb bad awful poor sad hate terrible boring dull "
    "movie film plot actor story the a an is was it this that very not quite so and but of to in on "
    "with game team score market stock price bank science space research world war election city "
    "match goal win lose rain sun"
).split()

POSITIVE = [
    "good movie",
    "great film",
    "happy story",
    "love this film",
    "nice plot",
    "excellent actor",
    "superb story",
    "very good film",
    "quite nice",
    "a great plot",
]
NEGATIVE = [
    "bad movie",
    "awful film",
    "sad story",
    "hate this film",
    "poor plot",
    "terrible actor",
    "boring story",
    "very bad film",
    "quite dull",
    "a terrible plot",
]


def _build_backbone(directory: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
        *list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'"),
    ]
    tokenizer = BertTokenizer(
        vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))}, do_lower_case=True
    )
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_backbone(tmp_path_factory.mktemp("tiny-bert"))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def sentiment_records(n_repeat: int = 2) -> list[dict]:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    return [dict(r, id=f"r{i}") for i, r in enumerate(rows * n_repeat)]


@pytest.fixture
def sentiment_data(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_records(3)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1)),
    }


def tiny_config(backbone: Path, files: dict[str, Path], out: Path, **sections: dict) -> dict:
    """A classification config for the tiny backbone; ``sections`` update the default sections."""
    config: dict = {
        "task": "classification",
        "output_dir": str(out),
        "model": {"backbone": str(backbone), "max_length": 32},
        "data": {k: str(v) for k, v in files.items()},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "bf16": False,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``taskhead`` command in a subprocess."""
    exe = BIN / "taskhead"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def shared_dataset(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the slow tier reads ../shared/datasets beside the project")
    return path


PEOPLE = [["alice"], ["bob"], ["carol", "smith"], ["dave"]]
PLACES = [["paris"], ["rome"], ["new", "york"], ["oslo"]]
FRAMES = [  # (words before, person slot, middle, place slot, words after)
    (["the"], ["won", "the", "match", "in"], []),
    ([], ["was", "in"], ["with", "the", "team"]),
    (["this", "is"], ["of"], []),
]


def ner_records(n: int = 24) -> list[dict]:
    """Tiny IOB2 NER sentences: a person (PER) and a place (LOC) in a few frames; words outside the tiny
    vocabulary are split into several sub-tokens."""
    records = []
    for i in range(n):
        before, middle, after = FRAMES[i % len(FRAMES)]
        person, place = PEOPLE[i % len(PEOPLE)], PLACES[(i // 2) % len(PLACES)]
        tokens = [*before, *person, *middle, *place, *after]
        tags = (
            ["O"] * len(before)
            + ["B-PER"]
            + ["I-PER"] * (len(person) - 1)
            + ["O"] * len(middle)
            + ["B-LOC"]
            + ["I-LOC"] * (len(place) - 1)
            + ["O"] * len(after)
        )
        records.append({"id": f"s{i}", "tokens": tokens, "tags": tags})
    return records


def write_conll(path: Path, records: list[dict], *, docstart: bool = True) -> Path:
    """CoNLL-2003 style: `token POS tag`, blank lines between sentences."""
    lines = ["-DOCSTART- -X- O", ""] if docstart else []
    for r in records:
        lines += [f"{t} NN {g}" for t, g in zip(r["tokens"], r["tags"], strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


QA_FACTS = [
    ("the team", "who won the match", "the team won the match in the rain"),
    ("the market", "what fell in the city", "the stock price fell and the market fell in the city"),
    ("space", "what is the research on", "this research is on space and it was very good"),
    ("the bank", "who lost", "the bank lost the game but the team was happy"),
]


def qa_records(n: int = 16) -> list[dict]:
    """Tiny extractive QA records in the Hugging Face datasets layout (answers: text + answer_start)."""
    records = []
    for i in range(n):
        answer, question, context = QA_FACTS[i % len(QA_FACTS)]
        start = context.index(answer)
        records.append(
            {
                "id": f"q{i}",
                "question": question,
                "context": context,
                "answers": {"text": [answer], "answer_start": [start]},
            }
        )
    return records


GEN_PAIRS = [
    ("good movie", "pos"),
    ("bad movie", "neg"),
    ("great film", "pos"),
    ("awful plot", "neg"),
    ("happy story", "pos"),
    ("sad story", "neg"),
]


def generation_records(n: int = 12) -> list[dict]:
    return [{"id": f"g{i}", "source": s, "target": t} for i, (s, t) in enumerate(GEN_PAIRS * (n // 6 + 1))][
        :n
    ]


def _train_tokenizer(directory: Path, *, post_eos: bool) -> object:
    """A tiny word-level tokenizer trained on the test words with `tokenizers`, saved with the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok.train_from_iterator(
        [" ".join([*WORDS, "pos", "neg", "question", "context", ":"])],
        trainers.WordLevelTrainer(special_tokens=specials),
    )
    if post_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 3)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(directory)
    return fast


def _build_generation_backbone(kind: str, directory: Path) -> Path:
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(directory, post_eos=kind != "gpt2")
    vocab = len(tokenizer)
    torch.manual_seed(0)
    if kind == "t5":
        config = T5Config(
            vocab_size=vocab,
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
        model = T5ForConditionalGeneration(config)
    elif kind == "bart":
        config = BartConfig(
            vocab_size=vocab,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=3,
            forced_eos_token_id=None,
        )
        model = BartForConditionalGeneration(config)
    else:
        config = GPT2Config(
            vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=2, eos_token_id=3
        )
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-generators")
    return {kind: _build_generation_backbone(kind, root / kind) for kind in ("t5", "bart", "gpt2")}


def tiny_run_config(task: str, backbone: Path, tmp: Path) -> dict:
    """A config for a finished tiny run of ``task`` (classification, token-classification,
    question-answering, embedding or generation) on the tiny data above; output in ``tmp / "run"``."""
    if task == "classification":
        data = {
            "train": write_jsonl(tmp / "train.jsonl", sentiment_records(3)),
            "eval": write_jsonl(tmp / "eval.jsonl", sentiment_records(1)),
        }
        return tiny_config(backbone, data, tmp / "run")
    if task == "token-classification":
        data = {
            "train": write_conll(tmp / "train.conll", ner_records(24)),
            "eval": write_jsonl(tmp / "eval.jsonl", ner_records(6)),
        }
        return tiny_config(backbone, data, tmp / "run", task="token-classification")
    if task == "question-answering":
        data = {
            "train": write_jsonl(tmp / "train.jsonl", qa_records(16)),
            "eval": write_jsonl(tmp / "eval.jsonl", qa_records(4)),
        }
        config = tiny_config(backbone, data, tmp / "run")
        config["model"]["max_length"] = 64
        config["task"] = {"name": "question-answering", "doc_stride": 8, "max_question_length": 16}
        return config
    if task == "embedding":
        pairs = [(a, b, 4.0) for a, b in zip(POSITIVE[::2], POSITIVE[1::2], strict=True)]
        pairs += [(a, b, 0.5) for a, b in zip(POSITIVE, NEGATIVE, strict=True)]
        rows = [{"text": a, "text_pair": b, "score": score} for a, b, score in pairs]
        data = {"train": write_jsonl(tmp / "train.jsonl", rows)}  # scored pairs (0-5): CoSENT
        data["eval"] = data["train"]
        return tiny_config(backbone, data, tmp / "run", task="embedding")
    if task == "generation":
        data = {
            "train": write_jsonl(tmp / "train.jsonl", generation_records(12)),
            "eval": write_jsonl(tmp / "eval.jsonl", generation_records(6)),
        }
        config = tiny_config(backbone, data, tmp / "run", task={"name": "generation", "max_new_tokens": 5})
        config["train"]["max_steps"] = 2
        return config
    raise ValueError(f"no tiny run config for task {task!r}")


class TinyRuns:
    """``runs[task] -> run directory``: a finished tiny run per task, trained on first use."""

    def __init__(self, backbone: Path, factory: pytest.TempPathFactory) -> None:
        self.backbone, self.factory = backbone, factory
        self.runs: dict[str, Path] = {}

    def __getitem__(self, task: str) -> Path:
        if task not in self.runs:
            import taskhead

            config = tiny_run_config(task, self.backbone, self.factory.mktemp(f"run-{task}"))
            self.runs[task] = taskhead.train(config, quiet=True).run_dir
        return self.runs[task]


@pytest.fixture(scope="session")
def tiny_runs(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """Finished tiny runs of each task, trained once per session (serving and export tests)."""
    return TinyRuns(tiny_backbone, tmp_path_factory)


def _build_sentence_model(backbone: Path, directory: Path) -> Path:
    """A sentence-transformers model (mean pooling + normalize) over the tiny BERT, saved with .save()."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    body = Transformer(str(backbone), max_seq_length=64)
    model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean"), Normalize()])
    model.save(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_sentence_model(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_sentence_model(tiny_backbone, tmp_path_factory.mktemp("tiny-st") / "model")


def assert_close(got: object, expected: object, tol: float) -> None:
    """Equal structure, labels and texts; numbers within ``tol``."""
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            assert_close(got[key], expected[key], tol)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, tol)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=tol)
    else:
        assert got == expected


@pytest.fixture(scope="session")
def shape() -> Any:
    """``tools/shape.py`` loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    tool = Path(__file__).resolve().parent.parent / "tools" / "shape.py"
    spec = importlib.util.spec_from_file_location("shape_tool", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shape_tool"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
