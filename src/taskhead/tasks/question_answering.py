"""Extractive question answering: start/end token classification over a question + context pair.

The question and the context are encoded as a pair, truncating only the context; a context longer than
``max_length`` is cut into overlapping windows (``doc_stride`` tokens shared) with offset mappings. A window
that does not hold the whole answer points at the [CLS] position, and answers that fit in no window are
counted and reported. Prediction takes the n best start/end pairs over all windows of a question, limited
to ``max_answer_length`` tokens, and maps them back to character offsets in the original context.
SQuAD v2 style questions without an answer are predicted when the null score beats the best span by more
than ``null_threshold`` (tunable on the eval set).

With the default settings the saved model is the standard ``AutoModelForQuestionAnswering`` of the
backbone, which plain transformers loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch

    from taskhead.config import DataConfig, ModelConfig


class QuestionAnsweringOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["question-answering"] = "question-answering"
    doc_stride: int | None = Field(
        None,
        ge=0,
        description="Tokens shared by neighbouring windows of a long context; default 128, or half a "
        "window's context room when that is smaller.",
    )
    max_question_length: int = Field(64, ge=4, description="Questions are cut to this many tokens.")
    max_answer_length: int = Field(30, ge=1, description="Longest answer predicted, in tokens.")
    n_best: int = Field(20, ge=1, description="Start and end candidates considered per window.")
    top_k: int = Field(1, ge=1, description="Answers returned per question (the best, then alternatives).")
    no_answer: bool | Literal["auto"] = Field(
        "auto", description="Allow 'no answer' (SQuAD v2); `auto`: when the training data has such questions."
    )
    null_threshold: float = Field(0.0, description="Predict no answer when null score - best span > this.")
    tune_null_threshold: bool = Field(True, description="Tune null_threshold on the eval set (no_answer on).")


# transformers 5 removed the question-answering pipeline: the card shows the plain model instead.
QA_CARD_SNIPPET = (
    "",
    "```python",
    "import torch",
    "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
    "",
    "tokenizer = AutoTokenizer.from_pretrained('RUN_DIR/model')",
    "model = AutoModelForQuestionAnswering.from_pretrained('RUN_DIR/model')",
    'inputs = tokenizer("who won the match", "the team won the match", return_tensors="pt")',
    "with torch.no_grad():",
    "    out = model(**inputs)",
    "context = torch.tensor([s == 1 for s in inputs.sequence_ids(0)])  # answers lie in the context",
    "start = int(out.start_logits[0].masked_fill(~context, -1e9).argmax())",
    "end = start + int(out.end_logits[0, start:].masked_fill(~context[start:], -1e9).argmax())",
    'print(tokenizer.decode(inputs["input_ids"][0, start : end + 1]))',
    "```",
)


class QuestionAnsweringTask(TaskBase):
    name: ClassVar[str] = "question-answering"
    Options: ClassVar[type[BaseModel]] = QuestionAnsweringOptions
    traits: ClassVar[TaskTraits] = TaskTraits(
        fits_on_eval=True,  # the null threshold (task.tune_null_threshold)
        example_input='[("who won the match", "the team won the match")]',
        truncated_message=(
            "{n} of {total} questions are longer than task.max_question_length tokens and were cut to it"
        ),
        lost_message=(
            "the answer of {n} of {total} questions fits in no window of model.max_length={max_length} "
            "tokens (an answer longer than a window); they train as 'no answer' in every window"
        ),
    )

    def __init__(
        self,
        options: QuestionAnsweringOptions,
        *,
        no_answer: bool | None = None,
        null_threshold: float | None = None,
        **_: Any,
    ) -> None:
        self.options = options
        self.allow_no_answer = no_answer
        self.null_threshold = null_threshold if null_threshold is not None else options.null_threshold
        self.labels: list[str] = []
        self.standard_head = True

    @property
    def default_metric(self) -> str:
        return "f1"

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        names = ["exact_match", "f1"]
        if any(self._gold(ex) == [""] for ex in examples):  # SQuAD v2: per group of questions too
            names += [f"{group}_{m}" for group in ("has_answer", "no_answer") for m in names]
        return directions(*names)

    # ------------------------------------------------------------------ reading

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        from taskhead.data.readers import detect_format
        from taskhead.data.squad import is_squad_json, read_qa_table, read_squad

        fmt: str = data.format  # or "squad", which only this task reads
        if fmt in ("auto", "jsonl") and str(path) != "-" and Path(str(path)).suffix.lower() == ".json":
            fmt = "squad" if is_squad_json(path, data.encoding) else "jsonl"
        if fmt == "squad":
            records = read_squad(path, labelled=labelled, encoding=data.encoding, max_errors=data.max_errors)
        else:
            cols = data.columns
            columns = {
                key: str(value)
                for key, value in {
                    "id": cols.id,
                    "question": cols.question,
                    "context": cols.context,
                    "answers": cols.answers,
                    "answer_start": cols.answer_start,
                }.items()
                if value is not None
            }
            records = read_qa_table(
                path,
                detect_format(path, fmt) if str(path) != "-" else ("jsonl" if fmt == "auto" else fmt),
                columns=columns,
                labelled=labelled,
                header=data.header,
                encoding=data.encoding,
                quoting=data.quoting,
                max_errors=data.max_errors,
            )
        return [self._example(r, labelled) for r in records]

    @staticmethod
    def _example(record: Any, labelled: bool) -> Example:
        ex: Example = {
            "_where": record.where,
            "id": record.id,
            "question": record.question,
            "context": record.context,
        }
        if record.title is not None:
            ex["title"] = record.title
        if labelled:
            ex["answers"] = [(text, start) for text, start in record.answers]
            ex["is_impossible"] = bool(record.is_impossible)
        return ex

    def to_example(self, record: Any, where: str) -> Example:
        if isinstance(record, (tuple, list)) and len(record) == 2:
            record = {"question": record[0], "context": record[1]}
        if not isinstance(record, dict):
            raise DataError(
                [
                    f"{where}: expected a (question, context) pair or a dict with 'question' and 'context', "
                    f"found {type(record).__name__}"
                ]
            )
        ex: Example = {"_where": where, "id": str(record.get("id", where))}
        for key in ("question", "context"):
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError([f"{where}: {key}: expected a non-empty string, found {value!r}"])
            ex[key] = value
        return ex

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        train = splits.get("train", [])
        if self.allow_no_answer is None:
            option = self.options.no_answer
            unanswerable = any(ex.get("is_impossible") for ex in train)
            self.allow_no_answer = unanswerable if option == "auto" else bool(option)
        warnings = []
        if not self.allow_no_answer:
            for name, examples in splits.items():
                n = sum(1 for ex in examples if ex.get("is_impossible"))
                if n:
                    warnings.append(
                        f"{name}: {n} questions have no answer, but the model cannot answer 'no answer' "
                        f"(the training data has none; set task.no_answer=true)"
                    )
        return warnings

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        labelled = [ex for ex in examples if "answers" in ex]
        dist = {}
        if labelled:
            impossible = sum(1 for ex in labelled if ex["is_impossible"])
            dist = {"answerable": len(labelled) - impossible}
            if impossible:
                dist["no answer"] = impossible
        return SplitSummary(
            name,
            len(examples),
            features.truncated if features else 0,
            features.windowed if features else 0,
            dist,
        )

    # ------------------------------------------------------------------ encoding

    def _cut_questions(self, questions: list[str], tokenizer: Any) -> tuple[list[str], int]:
        """Questions cut to ``max_question_length`` tokens, and how many were cut."""
        limit = self.options.max_question_length
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        cut = [
            q if len(ids) <= limit else q[: enc["offset_mapping"][i][limit - 1][1]]
            for i, (q, ids) in enumerate(zip(questions, enc["input_ids"], strict=True))
        ]
        return cut, sum(1 for ids in enc["input_ids"] if len(ids) > limit)

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                "model.backbone: question answering needs a fast (Rust) tokenizer for offset mappings; "
                f"{type(tokenizer).__name__} is not one"
            )
        room = (
            model.max_length
            - self.options.max_question_length
            - tokenizer.num_special_tokens_to_add(pair=True)
        )
        stride = (
            self.options.doc_stride if self.options.doc_stride is not None else min(128, max(room // 2, 0))
        )
        if stride >= room:
            raise ConfigError(
                f"task.doc_stride: {self.options.doc_stride} leaves windows no room to advance with "
                f"model.max_length={model.max_length} and max_question_length="
                f"{self.options.max_question_length}; use a doc_stride below {max(room, 1)}"
            )
        questions, cut = self._cut_questions([ex["question"].lstrip() for ex in examples], tokenizer)
        enc = tokenizer(
            questions,
            [ex["context"] for ex in examples],
            truncation="only_second",
            max_length=model.max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            verbose=False,
        )
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        owners = enc["overflow_to_sample_mapping"]
        inputs, meta = [], []
        found = [False] * len(examples)
        windows = [0] * len(examples)
        for j, i in enumerate(owners):
            ex = examples[i]
            windows[i] += 1
            sequence = enc.sequence_ids(j)
            offsets = [
                tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][j], sequence, strict=True)
            ]
            ids = enc["input_ids"][j]
            cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            part = {k: enc[k][j] for k in keys}
            if "answers" in ex:
                span = self._answer_tokens(ex, offsets)
                found[i] = found[i] or span is not None
                part["labels"] = list(span) if span is not None else [cls, cls]
            inputs.append(part)
            meta.append((offsets, cls))
        lost = sum(
            1
            for i, ex in enumerate(examples)
            if ex.get("answers") and not ex.get("is_impossible") and not found[i]
        )
        windowed = sum(1 for n in windows if n > 1)
        return Features(inputs, list(owners), truncated=cut, windowed=windowed, lost=lost, meta=meta)

    @staticmethod
    def _answer_tokens(ex: Example, offsets: list[tuple[int, int] | None]) -> tuple[int, int] | None:
        """Token start and end of the first gold answer when this window holds all of it."""
        if ex.get("is_impossible") or not ex.get("answers"):
            return None
        text, start = ex["answers"][0]
        end = start + len(text)
        context = [p for p, o in enumerate(offsets) if o is not None]
        if not context or offsets[context[0]][0] > start or offsets[context[-1]][1] < end:  # type: ignore[index]
            return None
        s = next(p for p in context if offsets[p][1] > start)  # type: ignore[index]
        e = next(p for p in reversed(context) if offsets[p][0] < end)  # type: ignore[index]
        return (s, e) if s <= e else None

    # ------------------------------------------------------------------ model

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        from taskhead.engine.modeling import standard_head

        net = standard_head(AutoModelForQuestionAnswering, backbone, model, tokenizer, "question answering")
        return mask_padded_positions(net)

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        from taskhead.engine.backbones import SAFE_LOADING

        common = {"trust_remote_code": model.trust_remote_code, **SAFE_LOADING}
        net = AutoModelForQuestionAnswering.from_pretrained(directory, **common)
        return mask_padded_positions(net)

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        import torch.nn.functional as F

        start = F.cross_entropy(outputs["start_logits"].float(), labels[:, 0], reduction="sum")
        end = F.cross_entropy(outputs["end_logits"].float(), labels[:, 1], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return (start + end) / count  # the mean of the start and end losses, like the standard head's

    # ------------------------------------------------------------------ outputs

    def _candidates(
        self, outputs: list[np.ndarray], features: Features, n_examples: int
    ) -> list[tuple[list[tuple[float, int, int]], float]]:
        """Per example: span candidates (score, char start, char end), best first and distinct, and the
        smallest null score over its windows."""
        spans: list[dict[tuple[int, int], float]] = [{} for _ in range(n_examples)]
        null = [np.inf] * n_examples
        n_best, longest = self.options.n_best, self.options.max_answer_length
        for scores, i, (offsets, cls) in zip(outputs, features.example_index, features.meta, strict=True):
            start, end = scores[:, 0], scores[:, 1]
            null[i] = min(null[i], float(start[cls] + end[cls]))
            context = np.array([p for p, o in enumerate(offsets) if o is not None], dtype=np.int64)
            if not len(context):
                continue
            top_s = context[np.argsort(-start[context], kind="stable")[:n_best]]
            top_e = context[np.argsort(-end[context], kind="stable")[:n_best]]
            for s in top_s:
                for e in top_e:
                    if e < s or e - s + 1 > longest:
                        continue
                    key = (offsets[s][0], offsets[e][1])
                    score = float(start[s] + end[e])
                    if score > spans[i].get(key, -np.inf):
                        spans[i][key] = score
        return [
            (sorted(((v, a, b) for (a, b), v in found.items()), key=lambda c: (-c[0], c[1])), nl)
            for found, nl in zip(spans, null, strict=True)
        ]

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        predictions = []
        for ex, (cands, null) in zip(
            examples, self._candidates(list(outputs), features, len(examples)), strict=True
        ):
            scores = np.array(
                [c[0] for c in cands] + ([null] if self.allow_no_answer else []), dtype=np.float64
            )
            probs = (
                np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if len(scores) else scores
            )
            answers = [
                {"answer": ex["context"][a:b], "start": a, "end": b, "score": round(float(p), 6)}
                for (_, a, b), p in zip(cands, probs, strict=False)
            ][: self.options.top_k]
            unanswered = not cands or (self.allow_no_answer and null - cands[0][0] > self.null_threshold)
            pred: dict[str, Any] = {"id": ex["id"]}
            if unanswered:
                no = float(probs[-1]) if self.allow_no_answer and len(probs) else 1.0
                pred.update(answer="", start=None, end=None, score=round(no, 6), no_answer=True)
            else:
                pred.update(answers[0])
                if self.allow_no_answer:
                    pred["no_answer"] = False
            if self.options.top_k > 1:
                pred["alternatives"] = answers[1:] if not unanswered else answers
            predictions.append(pred)
        return predictions

    @staticmethod
    def _gold(ex: Example) -> list[str]:
        return [""] if ex.get("is_impossible") or not ex.get("answers") else [t for t, _ in ex["answers"]]

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        from taskhead.tasks.squad_metrics import squad_scores

        keys = [str(k) for k in range(len(examples))]  # positions: ids may repeat across files
        return squad_scores(
            {k: p["answer"] for k, p in zip(keys, predictions, strict=True)},
            {k: self._gold(ex) for k, ex in zip(keys, examples, strict=True)},
        )

    def fit_on_eval(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> dict[str, Any]:
        """Choose the null threshold that maximises F1 on the eval set (SQuAD v2's best-threshold search)."""
        if not (self.allow_no_answer and self.options.tune_null_threshold):
            return {}
        from taskhead.tasks.squad_metrics import best_null_threshold, question_scores

        diffs, gain = [], []
        for ex, (cands, null) in zip(
            examples, self._candidates(list(outputs), features, len(examples)), strict=True
        ):
            gold = self._gold(ex)
            span = ex["context"][cands[0][1] : cands[0][2]] if cands else ""
            diffs.append(null - cands[0][0] if cands else np.inf)
            # what answering (instead of abstaining) gains on this question
            gain.append(question_scores(span, gold)[1] - question_scores("", gold)[1])
        # tied differences are one step (best_null_threshold): a threshold answers all of them or none
        threshold, _ = best_null_threshold(diffs, gain)
        if threshold is None:  # answer nothing: below the smallest difference
            finite = [d for d in diffs if np.isfinite(d)]
            threshold = float(min(finite) - 1.0) if finite else self.options.null_threshold
        self.null_threshold = threshold
        return {"null_threshold": threshold}

    def state(self) -> dict[str, Any]:
        return {"no_answer": self.allow_no_answer, "null_threshold": self.null_threshold}

    def model_card(self) -> str:
        lines = [
            "- Extractive question answering: answer spans of the context, windows of "
            f"`max_length` tokens sharing {self.options.doc_stride or 'up to 128'} (doc_stride)"
        ]
        if self.allow_no_answer:
            lines.append(f"- Answers 'no answer' when null score - best span > {self.null_threshold:.3f}")
        lines.append(
            "- `model/` is a standard transformers question-answering model; without taskhead (which "
            "predicts from the n best spans over context windows) the most likely single span is:"
        )
        return "\n".join([*lines, *QA_CARD_SNIPPET])


def mask_padded_positions(model: torch.nn.Module) -> torch.nn.Module:
    """Give padded positions the lowest start/end logit, so that they take no share of the softmax.

    transformers' ``*ForQuestionAnswering`` heads score every position of the padded batch, so an
    example's start/end loss changed with how long its batch mates were (dynamic padding): the training-time
    evaluation, ``Predictor.evaluate`` at another batch size and a gradient-accumulated step all disagreed.
    A forward hook (re-attached on every load; the saved weights stay plain transformers) masks them.
    """
    import torch

    def hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]  # forward(input_ids, attention_mask, ...)
        if mask is None:
            return output
        padded = mask == 0
        for key in ("start_logits", "end_logits"):
            logits = output[key]
            output[key] = logits.masked_fill(padded.to(logits.device), torch.finfo(logits.dtype).min)
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    return model
