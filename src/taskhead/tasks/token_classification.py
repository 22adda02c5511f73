"""Token classification: one tag per word, for named entities, part-of-speech tags and chunks.

Words are split into sub-tokens by the backbone's tokenizer. The first sub-token of each word carries the
word's tag (the other sub-tokens are ignored by the loss, or labelled with the continuation tag when
``label_all_subtokens`` is set) and predictions are read from first sub-tokens only, so every prediction
and every metric is per word. A sentence longer than ``max_length`` is never truncated: it is cut into
overlapping windows of whole words, and each word is predicted from the window where it has the most
context on both sides.

With the default settings the saved model is the standard ``AutoModelForTokenClassification`` of the
backbone, which plain transformers loads.
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from taskhead.data.validation import Problems
from taskhead.data.words import WORD_PATTERNS, pretokenize  # noqa: F401  (public names of this module)
from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch

    from taskhead.config import DataConfig, ModelConfig

CONLL_SUFFIXES = {".conll": "conll", ".iob": "conll", ".bio": "conll", ".bioes": "conll", ".conllu": "conllu"}


class TokenClassificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["token-classification"] = "token-classification"
    scheme: Literal["auto", "iob1", "iob2", "bioes", "plain"] = Field(
        "auto", description="Tag scheme of the data; `auto` detects it from the training tags."
    )
    convert_to: Literal["iob1", "iob2", "bioes"] | None = Field(
        None, description="Convert the tags of every split to this scheme before training."
    )
    invalid_tags: Literal["repair", "fail", "keep"] = Field(
        "repair",
        description="Tags the scheme does not allow (an I-X after O in IOB2): repair them, fail, or keep "
        "them; they are counted and reported in every case.",
    )
    label_all_subtokens: bool = Field(
        False, description="Label every sub-token (B- becomes I- after the first) instead of the first only."
    )
    stride: int = Field(32, ge=0, description="Sub-tokens shared by neighbouring windows of a long sentence.")
    pretokenizer: Literal["whitespace", "punctuation"] = Field(
        "punctuation", description="How raw text is split into words for prediction."
    )
    decoding: Literal["viterbi", "argmax"] = Field(
        "viterbi", description="`viterbi`: the best tag sequence the scheme allows; `argmax`: per word."
    )


def _encode_words(tokenizer: Any, words: list[list[str]]) -> tuple[Any, list[list[int | None]]]:
    """The sentences encoded word by word, and each sub-token's word id. Words the tokenizer drops entirely
    (control characters) become its unknown token (changing ``words`` in place), so that every word keeps
    at least one sub-token to carry its label and prediction."""
    enc = tokenizer(words, is_split_into_words=True, truncation=False, verbose=False)
    word_ids = [enc.word_ids(i) for i in range(len(words))]
    empty = [i for i, ids in enumerate(word_ids) if len({w for w in ids if w is not None}) < len(words[i])]
    if empty:
        unk = tokenizer.unk_token or "_"
        for i in empty:
            seen = {w for w in word_ids[i] if w is not None}
            words[i] = [w if j in seen else unk for j, w in enumerate(words[i])]
        again = tokenizer(
            [words[i] for i in empty], is_split_into_words=True, truncation=False, verbose=False
        )
        for k, i in enumerate(empty):
            for key in enc:
                enc[key][i] = again[key][k]
            word_ids[i] = again.word_ids(k)
    return enc, word_ids


def word_windows(counts: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Cut words with ``counts`` sub-tokens into windows ``[start, end)`` of at most ``budget`` sub-tokens,
    neighbours sharing up to ``stride`` sub-tokens of whole words. A single word over the budget gets a
    window of its own (its first sub-token, which carries its prediction, always fits)."""
    n, windows, start = len(counts), [], 0
    while True:
        end, used = start, 0
        while end < n and (end == start or used + counts[end] <= budget):
            used += counts[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            return windows
        nxt, kept = end, 0
        while nxt - 1 > start and kept + counts[nxt - 1] <= stride:
            nxt -= 1
            kept += counts[nxt]
        start = nxt


def owned_ranges(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each window, the words it predicts: each word goes to the window where it has the most context
    (the larger of its distances to the window's two edges is minimised; ties go to the earlier window)."""
    best: dict[int, tuple[int, int]] = {}
    for k, (s, e) in enumerate(windows):
        for w in range(s, e):
            context = min(w - s, e - 1 - w)
            if w not in best or context > best[w][0]:
                best[w] = (context, k)
    ranges = []
    for k in range(len(windows)):
        mine = [w for w, (_, owner) in best.items() if owner == k]
        ranges.append((min(mine), max(mine) + 1) if mine else (0, 0))
    return ranges


def _label_sort_key(tag: str) -> tuple[int, str, int]:
    """O first, then by entity type, B/I/E/S within a type; plain tags alphabetically."""
    if tag == "O":
        return (0, "", 0)
    prefix, sep, kind = tag.partition("-")
    if sep and kind and prefix in ("B", "I", "E", "S"):
        return (1, kind, "BIES".index(prefix))
    return (1, tag, 0)


class TokenClassificationTask(TaskBase):
    name: ClassVar[str] = "token-classification"
    Options: ClassVar[type[BaseModel]] = TokenClassificationOptions
    # input is words: byte-level BPE tokenizers get add_prefix_space
    traits: ClassVar[TaskTraits] = TaskTraits(pretokenized=True)

    def __init__(
        self,
        options: TokenClassificationOptions,
        *,
        labels: list[str] | None = None,
        scheme: str | None = None,
        source_scheme: str | None = None,
        **_: Any,
    ) -> None:
        self.options = options
        self.labels: list[str] = list(labels or [])
        self.scheme = scheme  # the scheme the model predicts in
        self.source_scheme = source_scheme  # the scheme of the data files
        self.standard_head = True

    @property
    def default_metric(self) -> str:
        return "accuracy" if self.scheme == "plain" else "f1"

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        if self.scheme == "plain":  # tags without entity spans: word accuracy only
            return directions("accuracy")
        return directions("accuracy", "precision", "recall", "f1", "macro_f1")

    # ------------------------------------------------------------------ reading

    def input_format(self, path: str | Path, data: DataConfig, *, labelled: bool = False) -> str:
        """The format a file (or ``-``, standard input) is read in, by the same rule for both.

        ``data.format`` when set; else the extension (``.conll``/``.iob``/... CoNLL, ``.conllu``, ``.jsonl``,
        ``.csv``, ...). A labelled ``.txt`` file (training data) is CoNLL. An unlabelled ``.txt`` file and
        standard input are JSON Lines when the first line is a JSON object, CoNLL / CoNLL-U when they
        clearly are (``conll.sniff_conll``, with this model's tags), else raw text: one input per line.
        """
        from taskhead.data.conll import sniff_conll
        from taskhead.data.readers import detect_format, read_text_source, sniff_format

        if data.format != "auto":
            return data.format
        suffix = Path(str(path)).suffix.lower()
        if suffix in CONLL_SUFFIXES:
            return CONLL_SUFFIXES[suffix]
        if str(path) != "-" and suffix != ".txt":
            return detect_format(path, data.format)
        if labelled and suffix == ".txt":
            return "conll"
        text = read_text_source(path, data.encoding)  # stdin is read once and kept for the reader
        if sniff_format(text) == "jsonl":
            return "jsonl"
        return sniff_conll(text, set(self.labels) or None) or "text"

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        from taskhead.data.conll import read_conll, read_conllu

        fmt = self.input_format(path, data, labelled=labelled)
        cols = data.columns
        if fmt == "conll":
            for setting, value in (("tokens", cols.tokens), ("tags", cols.tags)):
                if value is not None and not isinstance(value, int):
                    raise ConfigError(
                        f"data.columns.{setting}: CoNLL column files need a column index (0 = first, "
                        f"-1 = last), found {value!r}"
                    )
            sentences = read_conll(
                path,
                token_column=cols.tokens if isinstance(cols.tokens, int) else 0,
                tag_column=cols.tags if isinstance(cols.tags, int) else -1,
                labelled=labelled,
                encoding=data.encoding,
                comment_prefix=data.comment_prefix,
                max_errors=data.max_errors,
            )
        elif fmt == "conllu":
            field = {None: "upos", 3: "upos", 4: "xpos"}.get(cols.tags, str(cols.tags).lower())  # type: ignore[arg-type]
            if field not in ("upos", "xpos"):
                raise ConfigError(
                    f"data.columns.tags: CoNLL-U tags are `upos` or `xpos`, found {cols.tags!r}"
                )
            sentences = read_conllu(
                path, tag_field=field, labelled=labelled, encoding=data.encoding, max_errors=data.max_errors
            )
        else:
            return self._read_table(path, data, fmt, labelled)
        examples = []
        for s in sentences:
            ex: Example = {"_where": s.where, "tokens": s.tokens, "_lines": s.lines}
            if s.tags is not None and labelled:
                ex["tags"] = s.tags
            examples.append(ex)
        return examples

    def _read_table(self, path: str | Path, data: DataConfig, fmt: str, labelled: bool) -> list[Example]:
        from taskhead.data.readers import read_data_table

        cols = data.columns
        text_col = str(cols.text)
        table = read_data_table(path, data, text_column=text_col, fmt=fmt)
        tokens_col = str(cols.tokens if cols.tokens is not None else "tokens")
        tags_col = str(cols.tags if cols.tags is not None else "tags")
        problems = Problems(data.max_errors)
        if tokens_col not in table.columns and (labelled or text_col not in table.columns):
            found = ", ".join(table.columns) or "none"
            wanted = f"{tokens_col!r}" + ("" if labelled else f" or {text_col!r}")
            raise DataError([f"{table.path}: data.columns.tokens: no column {wanted} (columns: {found})"])
        if labelled and tags_col not in table.columns:
            found = ", ".join(table.columns) or "none"
            raise DataError([f"{table.path}: data.columns.tags: no column {tags_col!r} (columns: {found})"])
        if not table.rows:
            raise DataError([f"{table.path}: no records; expected at least one"])
        id_col = str(cols.id) if cols.id is not None and str(cols.id) in table.columns else None
        examples: list[Example] = []
        for row in table.rows:
            where = table.loc(row)
            ex: Example = {"_where": where}
            if id_col is not None and row.values.get(id_col) is not None:
                ex["id"] = row.values[id_col]
            if row.values.get(tokens_col) is not None or labelled:
                tokens = _string_list(row.values.get(tokens_col), where, tokens_col, problems)
                if tokens is None:
                    continue
                ex["tokens"] = tokens
            else:
                text = row.values.get(text_col)
                if not isinstance(text, str) or not text.strip():
                    problems.add(f"{where}: {text_col}: expected a non-empty text, found {text!r}")
                    continue
                ex["text"] = text
                ex["tokens"], ex["offsets"] = pretokenize(text, self.options.pretokenizer)
                if not ex["tokens"]:
                    problems.add(f"{where}: {text_col}: no words, only format characters in {text!r}")
                    continue
            if labelled:
                tags = _string_list(row.values.get(tags_col), where, tags_col, problems)
                if tags is None:
                    continue
                if len(tags) != len(ex["tokens"]):
                    problems.add(
                        f"{where}: {tags_col}: {len(tags)} tags for {len(ex['tokens'])} tokens; "
                        f"expected one tag per token"
                    )
                    continue
                ex["tags"] = tags
            examples.append(ex)
        problems.raise_if_any()
        return examples

    def to_example(self, record: Any, where: str) -> Example:
        if isinstance(record, str):
            record = {"text": record}
        elif isinstance(record, (list, tuple)):
            record = {"tokens": list(record)}
        if not isinstance(record, dict):
            raise DataError(
                [f"{where}: expected a text, a list of words or a dict, found {type(record).__name__}"]
            )
        ex: Example = {"_where": where}
        if record.get("id") is not None:
            ex["id"] = record["id"]
        problems = Problems(20)
        if record.get("tokens") is not None:
            tokens = _string_list(record["tokens"], where, "tokens", problems)
            problems.raise_if_any()
            ex["tokens"] = tokens
        else:
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DataError([f"{where}: text: expected a non-empty text (or `tokens`), found {text!r}"])
            ex["text"] = text
            ex["tokens"], ex["offsets"] = pretokenize(text, self.options.pretokenizer)
            if not ex["tokens"]:
                raise DataError([f"{where}: text: no words, only format characters in {text!r}"])
        return ex

    # ------------------------------------------------------------------ labels and schemes

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        """The tag scheme (detected or set), every split's tags checked against it (invalid positions
        failed, repaired or kept per ``task.invalid_tags``) and converted to ``task.convert_to``, the label
        set, and every tag checked against it. Returns the warnings (tags repaired or kept)."""
        train = splits.get("train", [])
        self._resolve_schemes(train)
        warnings = [w for name, examples in splits.items() if (w := self._check_tags(name, examples, data))]
        self._set_labels(train, data)
        self._check_known_tags(splits, data)
        return warnings

    def _resolve_schemes(self, train: list[Example]) -> None:
        """``source_scheme`` (the data's, detected where ``task.scheme`` is auto) and ``scheme`` (trained)."""
        from taskhead.tasks.tagging import detect_scheme

        if self.source_scheme is not None:
            return
        found = detect_scheme(ex["tags"] for ex in train if "tags" in ex)
        self.source_scheme = found if self.options.scheme == "auto" else self.options.scheme
        target = self.options.convert_to
        if target is not None and self.source_scheme == "plain":
            raise ConfigError(
                f"task.convert_to: {target} needs entity tags (B-/I- prefixes); the training tags are "
                f"plain tags (POS-style)"
            )
        self.scheme = target or self.source_scheme

    def _check_tags(self, name: str, examples: list[Example], data: DataConfig) -> str | None:
        """One split's tags checked against the source scheme (each problem located), repaired where asked,
        converted to the trained scheme; the warning for tags repaired or kept, if any."""
        from taskhead.tasks.tagging import convert, invalid_positions, repair, split_tag

        source, scheme = self.source_scheme, self.scheme
        assert source is not None and scheme is not None
        problems = Problems(data.max_errors)
        bad_sentences, bad_tags, first = 0, 0, ""
        for ex in examples:
            if "tags" not in ex:
                continue
            if source != "plain":
                unprefixed = [
                    i for i, tag in enumerate(ex["tags"]) if tag != "O" and split_tag(tag)[1] is None
                ]
                for i in unprefixed:
                    problems.add(
                        f"{_token_where(ex, i)}: tag: {ex['tags'][i]!r} has no B-/I-/E-/S- prefix; "
                        f"expected {source.upper()} tags (or task.scheme=plain)"
                    )
                if unprefixed:
                    continue
                bad = invalid_positions(ex["tags"], source)
                if bad:
                    bad_sentences += 1
                    bad_tags += len(bad)
                    first = first or _token_where(ex, bad[0])
                    if self.options.invalid_tags == "fail":
                        for i in bad:
                            previous = ex["tags"][i - 1] if i else "the sentence start"
                            problems.add(
                                f"{_token_where(ex, i)}: tag: {ex['tags'][i]!r} after {previous!r} "
                                f"is not valid {source.upper()}; set task.invalid_tags=repair to fix "
                                f"such tags"
                            )
                    elif self.options.invalid_tags == "repair":
                        ex["tags"] = repair(ex["tags"], source)
            if scheme != source:
                ex["tags"] = convert(ex["tags"], source, scheme)
        problems.raise_if_any()
        if not bad_tags:
            return None
        done = {"repair": "repaired", "keep": "kept as they are"}[self.options.invalid_tags]
        return (
            f"{name}: {bad_tags} tags in {bad_sentences} sentences are not valid {source.upper()} "
            f"(first at {first}); {done} (task.invalid_tags)"
        )

    def _set_labels(self, train: list[Example], data: DataConfig) -> None:
        """The label set: ``data.labels``, the saved one (a reloaded task), or the training tags (with the
        continuation tags of ``label_all_subtokens``); at least two."""
        from taskhead.tasks.tagging import continuation

        assert self.scheme is not None
        counts = Counter(tag for ex in train for tag in ex.get("tags", []))
        if data.labels:
            self.labels = list(data.labels)
        elif not self.labels:
            tags = set(counts)
            if self.options.label_all_subtokens:  # later sub-tokens of a B-X word are labelled I-X
                tags |= {continuation(tag, self.scheme) for tag in counts}
            self.labels = sorted(tags, key=_label_sort_key)
        if len(self.labels) < 2:
            raise DataError([f"{_file_of(train)}: fewer than two distinct tags in the training data"])

    def _check_known_tags(self, splits: dict[str, list[Example]], data: DataConfig) -> None:
        """Every tag of every split is one of the labels (did-you-mean on a typo)."""
        known = set(self.labels)
        source_name = "data.labels" if data.labels else "the training data"
        for examples in splits.values():
            problems = Problems(data.max_errors)
            for ex in examples:
                for i, tag in enumerate(ex.get("tags", [])):
                    if tag not in known:
                        close = difflib.get_close_matches(tag, self.labels, n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else ""
                        problems.add(
                            f"{_token_where(ex, i)}: tag: {tag!r} is not a tag of {source_name}{hint}"
                        )
            problems.raise_if_any()

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        from taskhead.tasks.tagging import entities, type_name

        dist: Counter[str] = Counter()
        for ex in examples:
            if "tags" not in ex:
                continue
            if self.scheme == "plain":
                dist.update(ex["tags"])
            else:
                dist.update(type_name(kind) for kind, _, _ in entities(ex["tags"], self.scheme or "iob2"))
        return SplitSummary(
            name, len(examples), 0, features.windowed if features else 0, dict(dist.most_common())
        )

    # ------------------------------------------------------------------ encoding

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        """Each sentence's words as sub-tokens, labelled on the first sub-token of each word (or on every
        one with ``label_all_subtokens``); a sentence longer than ``model.max_length`` becomes windows of
        whole words (``task.stride`` words of overlap), each owning the words it predicts.

        Raises:
            ConfigError: a tokenizer that is not a fast (Rust) one, which cannot map sub-tokens to words.
        """
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                "model.backbone: token classification needs a fast (Rust) tokenizer to map sub-tokens to "
                f"words; {type(tokenizer).__name__} is not one"
            )
        words = [list(ex["tokens"]) for ex in examples]
        enc, word_ids = _encode_words(tokenizer, words)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        per_example = self._windows(tokenizer, model, words, enc, word_ids, keys)
        label_index = {tag: i for i, tag in enumerate(self.labels)}
        inputs, owner_of, meta = [], [], []
        for i, ex in enumerate(examples):
            parts = per_example.get(i) or [({k: enc[k][i] for k in keys}, word_ids[i], (0, len(words[i])))]
            tags = ex.get("tags")
            for part, ids, own in parts:
                if tags is not None:
                    part = {**part, "labels": self._word_labels(tags, ids, label_index)}
                inputs.append(part)
                owner_of.append(i)
                meta.append((ids, own))
        windowed = sum(1 for parts in per_example.values() if len(parts) > 1)
        return Features(inputs, owner_of, truncated=0, windowed=windowed, meta=meta)

    def _windows(
        self,
        tokenizer: Any,
        model: ModelConfig,
        words: list[list[str]],
        enc: Any,
        word_ids: list[list[int | None]],
        keys: list[str],
    ) -> dict[int, list[tuple[dict[str, Any], list[int | None], tuple[int, int]]]]:
        """The sentences longer than ``model.max_length``: sentence index -> its windows of whole words,
        encoded together, each as (inputs, word id per sub-token, the word range it owns)."""
        budget = model.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        long = [i for i in range(len(words)) if len(enc["input_ids"][i]) > model.max_length]
        windows: dict[int, list[tuple[int, int]]] = {}
        for i in long:
            counts = [0] * len(words[i])
            for w in word_ids[i]:
                if w is not None:
                    counts[w] += 1
            windows[i] = word_windows(counts, budget, self.options.stride)
        flat = [(i, s, e) for i in long for s, e in windows[i]]
        if not flat:
            return {}
        win_enc = tokenizer(
            [words[i][s:e] for i, s, e in flat],
            is_split_into_words=True,
            truncation=True,
            max_length=model.max_length,
            verbose=False,
        )
        per_example: dict[int, list[tuple[dict[str, Any], list[int | None], tuple[int, int]]]] = {}
        position = 0
        for i in long:
            for (s, _e), own in zip(windows[i], owned_ranges(windows[i]), strict=True):
                part = {k: win_enc[k][position] for k in keys}
                ids = [None if w is None else w + s for w in win_enc.word_ids(position)]
                per_example.setdefault(i, []).append((part, ids, own))
                position += 1
        return per_example

    def _word_labels(self, tags: list[str], ids: list[int | None], label_index: dict[str, int]) -> list[int]:
        """One label per sub-token: the word's tag on its first sub-token; on later ones the continuation
        tag with ``label_all_subtokens``, else -100 (ignored), as on special tokens."""
        from taskhead.tasks.tagging import continuation

        labels, previous = [], None
        for w in ids:
            if w is None:
                labels.append(-100)
            elif w != previous:
                labels.append(label_index[tags[w]])
            elif self.options.label_all_subtokens:
                labels.append(label_index.get(continuation(tags[w], self.scheme or "iob2"), -100))
            else:
                labels.append(-100)
            previous = w
        return labels

    # ------------------------------------------------------------------ model

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        from taskhead.engine.modeling import labelled_head

        extra = {"classifier_dropout": model.head_dropout} if model.head_dropout is not None else {}
        # a fine-tuned tagging head in the backbone is reused with its rows matched by tag name
        return labelled_head(
            AutoModelForTokenClassification,
            backbone,
            model,
            tokenizer,
            self.labels,
            "token classification",
            **extra,
        )

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        from taskhead.engine.backbones import SAFE_LOADING

        return AutoModelForTokenClassification.from_pretrained(
            directory, trust_remote_code=model.trust_remote_code, **SAFE_LOADING
        )

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        import torch.nn.functional as F

        logits = outputs["logits"].float()
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum().clamp(min=1)
        return total / count

    # ------------------------------------------------------------------ outputs

    def word_probabilities(
        self, outputs: list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[np.ndarray]:
        """``[words, tags]`` probabilities per example, each word read from its first sub-token in the
        window that owns it."""
        per = [np.zeros((len(ex["tokens"]), len(self.labels)), dtype=np.float32) for ex in examples]
        for logits, i, (ids, (a, b)) in zip(outputs, features.example_index, features.meta, strict=True):
            previous = None
            for p, w in enumerate(ids):
                if w is not None and w != previous and a <= w < b:
                    per[i][w] = logits[p]
                previous = w
        out = []
        for z in per:
            z = z - z.max(1, keepdims=True) if len(z) else z
            e = np.exp(z)
            out.append(e / e.sum(1, keepdims=True) if len(z) else e)
        return out

    def _best_tags(self, probs: np.ndarray) -> list[int]:
        if self.options.decoding == "argmax" or self.scheme == "plain" or not len(probs):
            return probs.argmax(1).tolist()
        start, allowed, end = _transitions(self.labels, self.scheme or "iob2")
        logp = np.log(np.maximum(probs, 1e-12))
        score = np.where(start, logp[0], -np.inf)
        back = np.zeros((len(probs), len(self.labels)), dtype=np.int64)
        for t in range(1, len(probs)):
            cand = score[:, None] + np.where(allowed, 0.0, -np.inf)  # [from, to]
            back[t] = cand.argmax(0)
            score = cand.max(0) + logp[t]
        score = np.where(end, score, -np.inf)
        if not np.isfinite(score.max()):
            return probs.argmax(1).tolist()
        path = [int(score.argmax())]
        for t in range(len(probs) - 1, 0, -1):
            path.append(int(back[t, path[-1]]))
        return path[::-1]

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        from taskhead.tasks.tagging import entities, type_name

        predictions = []
        for ex, probs in zip(
            examples, self.word_probabilities(list(outputs), features, examples), strict=True
        ):
            best = self._best_tags(probs)
            tags = [self.labels[j] for j in best]
            scores = [float(probs[w, j]) for w, j in enumerate(best)]
            pred: dict[str, Any] = {"id": ex["id"]} if "id" in ex else {}
            pred.update(tokens=list(ex["tokens"]), tags=tags, scores=[round(s, 4) for s in scores])
            if self.scheme != "plain":
                text, offsets = _text_and_offsets(ex)
                pred["entities"] = [
                    {
                        "type": type_name(kind),  # CHUNK for untyped chunk tags (B, I, ...)
                        "text": text[offsets[s][0] : offsets[e - 1][1]],
                        "start": offsets[s][0],
                        "end": offsets[e - 1][1],
                        "words": [s, e],
                        "score": round(float(np.mean(scores[s:e])), 4),
                    }
                    for kind, s, e in entities(tags, self.scheme or "iob2")
                ]
            predictions.append(pred)
        return predictions

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        from taskhead.tasks.tagging import tagging_metrics

        return tagging_metrics(
            [ex["tags"] for ex in examples], [p["tags"] for p in predictions], self.scheme or "iob2"
        )

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "scheme": self.scheme, "source_scheme": self.source_scheme}

    def model_card(self) -> str:
        kind = (
            "part-of-speech style tags"
            if self.scheme == "plain"
            else f"{(self.scheme or '').upper()} entity tags"
        )
        lines = [f"- Token classification, {kind}, {len(self.labels)} tags: {', '.join(self.labels)}"]
        if self.source_scheme != self.scheme:
            lines.append(f"- Training tags converted from {(self.source_scheme or '').upper()}")
        lines.append(
            "- `model/` is a standard transformers token-classification model: "
            "`pipeline('token-classification', model='RUN_DIR/model')` loads it without taskhead "
            "(taskhead predicts per word from first sub-tokens, with windows for long sentences)"
        )
        return "\n".join(lines)


def _string_list(value: Any, where: str, column: str, problems: Problems) -> list[str] | None:
    if not isinstance(value, list) or not value:
        problems.add(f"{where}: {column}: expected a non-empty list of strings, found {value!r}"[:300])
        return None
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.add(f"{where}: {column}[{i}]: expected a non-empty string, found {item!r}")
            return None
    return value


def _token_where(ex: Example, i: int) -> str:
    """``file:LINE`` of the i-th token (CoNLL files), else the record's place with the token index."""
    lines = ex.get("_lines")
    if lines:
        return f"{ex['_where'].rsplit(':', 1)[0]}:{lines[i]}"
    return f"{ex['_where']} (token {i})"


def _file_of(examples: list[Example]) -> str:
    return examples[0]["_where"].rsplit(":", 1)[0] if examples else "train"


def _text_and_offsets(ex: Example) -> tuple[str, list[tuple[int, int]]]:
    if "offsets" in ex:
        return ex["text"], ex["offsets"]
    offsets, position = [], 0
    for token in ex["tokens"]:
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    return " ".join(ex["tokens"]), offsets


def _transitions(labels: list[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which tags may start a sentence, follow each tag, and end a sentence, in ``scheme``."""
    from taskhead.tasks.tagging import split_tag

    parts = [split_tag(tag) for tag in labels]
    n = len(labels)
    allowed = np.ones((n, n), dtype=bool)
    start = np.ones(n, dtype=bool)
    end = np.ones(n, dtype=bool)
    for j, (prefix, kind) in enumerate(parts):
        for i, (p_prev, k_prev) in enumerate(parts):
            inside = p_prev in ("B", "I") and k_prev == kind
            if (scheme == "iob2" and prefix == "I") or (scheme == "iob1" and prefix == "B"):
                allowed[i, j] = inside
            elif scheme == "bioes":
                open_prev = p_prev in ("B", "I")
                if prefix in ("I", "E"):
                    allowed[i, j] = inside
                else:  # O, B-, S- may not interrupt an open entity
                    allowed[i, j] = not open_prev
        if (scheme == "iob2" and prefix == "I") or (scheme == "bioes" and prefix in ("I", "E")):
            start[j] = False
        if scheme == "bioes" and prefix in ("B", "I"):
            end[j] = False
    return start, allowed, end
