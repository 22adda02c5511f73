"""Batched forward passes in input order, and the Predictor that serves a run directory.

Inputs are sorted by length so that each batch is padded only to its own longest input, run under
``torch.inference_mode``, and the outputs are put back in input order: the caller never sees the
sorted order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskhead.devices import autocast_context, bf16_supported, resolve_device
from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length, longest first (the first batch shows the peak memory)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def forward_outputs(
    model: torch.nn.Module,
    features: Features,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    loss_fn: Callable[..., torch.Tensor] | None = None,
    progress: str | None = None,
) -> tuple[np.ndarray | list[np.ndarray], float | None]:
    """Logits for every feature, in input order, and the mean loss when features carry labels.

    Per-sequence logits come back as one array ``[features, ...]``; per-token logits (``[batch, tokens,
    labels]``) as a list with one ``[tokens, labels]`` array per feature, cut to the feature's own length.
    """
    n = len(features.inputs)
    out: np.ndarray | None = None
    per_token: list[np.ndarray] | None = None
    loss_sum, loss_count = 0.0, 0
    was_training = model.training
    model.eval()
    batches = list(length_sorted_batches(features.lengths(), batch_size))
    bar = progress_bar(progress, n)
    try:
        with torch.inference_mode(), autocast_context(device, precision):
            for idx in batches:
                batch = collate([features.inputs[i] for i in idx])
                labels = batch.pop("labels", None)
                result = model(**{k: v.to(device) for k, v in batch.items()})
                logits = _logits(result)
                if loss_fn is not None and labels is not None:
                    loss_sum += float(loss_fn(result, labels.to(device))) * len(idx)
                    loss_count += len(idx)
                if logits.dim() == 3:
                    rows = logits.cpu().numpy()
                    per_token = per_token if per_token is not None else [rows[:0, 0]] * n
                    for j, i in enumerate(idx):
                        per_token[i] = rows[j, : len(features.inputs[i]["input_ids"])]
                else:
                    if out is None:
                        out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
                    out[idx] = logits.cpu().numpy()
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if per_token is not None:
        return per_token, (loss_sum / loss_count if loss_count else None)
    if out is None:
        out = np.empty((0,), dtype=np.float32)
    return out, (loss_sum / loss_count if loss_count else None)


def _logits(result: Any) -> torch.Tensor:
    """The scores as one tensor: ``logits``, or span start and end logits as ``[batch, tokens, 2]``."""
    if "logits" in result:
        return result["logits"].float()
    return torch.stack([result["start_logits"], result["end_logits"]], dim=-1).float()


def progress_bar(description: str | None, total: int) -> Any:
    if description is None:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="ex", leave=False, disable=None)


def inference_precision(device: torch.device, precision: str, backend: str = "torch") -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for a forward pass; ``auto`` is bf16 where the device runs it natively
    (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), else fp32. The onnx backend computes in fp32."""
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise ConfigError(f"precision: expected fp32, bf16, fp16 or auto, got {precision!r}")
    if backend == "onnx":
        if precision in ("bf16", "fp16"):
            raise ConfigError(
                f"precision: {precision} applies to the torch backend; the onnx backend runs fp32"
            )
        return "fp32"
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


class Predictor:
    """Loads a finished run directory and predicts, in input order, one prediction per input."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        device: str = "auto",
        batch_size: int = 64,
        precision: str = "auto",
        progress: bool = False,
        backend: str = "torch",
        onnx_variant: str = "fp32",
        onnx_dir: str | Path | None = None,
    ) -> None:
        """Load ``run_dir``.

        Args:
            run_dir: a finished run directory.
            device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (the onnx backend runs on the CPU).
            batch_size: inputs per forward pass (sorted by length, padded per batch).
            precision: ``auto`` (default: bf16 autocast where the device runs it natively, i.e. CUDA with
                bf16 and CPUs with AVX-512 BF16 or AMX, else fp32), ``fp32``, ``bf16`` or ``fp16``.
            progress: show a progress bar.
            backend: ``torch``, or ``onnx`` for ONNX Runtime on the run's ``taskhead export`` output.
            onnx_variant: ``fp32`` or ``int8`` (exported with ``--quantize int8``).
            onnx_dir: the export directory when it is not ``RUN_DIR/onnx``.
        """
        from transformers import AutoTokenizer

        from taskhead.backbones import quiet_loading
        from taskhead.config import RunConfig
        from taskhead.rundir import read_meta
        from taskhead.tasks import build_task

        self.run_dir = Path(run_dir)
        self.meta = read_meta(self.run_dir)
        self.config = RunConfig.model_validate(self.meta["config"])
        self.task = build_task(self.config.task, **self.meta.get("task_state", {}))
        model_dir = self.run_dir / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.backend = backend
        if backend == "onnx":  # ONNX Runtime on the CPU stands in for the torch module in forward_outputs
            from taskhead.export import load_onnx_model

            if device not in ("auto", "cpu"):
                raise ConfigError(
                    f"device: the onnx backend runs on the CPU; got {device!r} (use auto or cpu)"
                )
            self.device = torch.device("cpu")
            self.model: Any = load_onnx_model(self.run_dir, onnx_dir, variant=onnx_variant)
        elif backend == "torch":
            self.device = resolve_device(device)
            with quiet_loading():
                self.model = self.task.load_model(model_dir, self.config.model).to(self.device)
        else:
            raise ConfigError(f"backend: expected 'torch' or 'onnx', got {backend!r}")
        self.model.eval()
        self.batch_size = batch_size
        self.precision = inference_precision(self.device, precision, backend)
        self.progress = progress

    @property
    def labels(self) -> list[str]:
        return list(getattr(self.task, "labels", []))

    def _run(
        self, examples: list[Example], *, with_loss: bool = False
    ) -> tuple[np.ndarray | list[np.ndarray], Features, float | None]:
        from taskhead.data.collate import PadCollator

        features = self.task.encode(examples, self.tokenizer, self.config.model)
        collate = PadCollator(
            self.tokenizer.pad_token_id, sequence_labels=getattr(self.task, "sequence_labels", False)
        )
        run = getattr(self.task, "run_outputs", None) or forward_outputs
        outputs, loss = run(
            self.model,
            features,
            collate,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
            loss_fn=self.task.loss if with_loss else None,
            progress="predicting" if self.progress else None,
        )
        return outputs, features, loss

    def predict_examples(self, examples: list[Example]) -> list[dict[str, Any]]:
        if not examples:
            return []
        outputs, features, _ = self._run(examples)
        return self.task.decode(outputs, features, examples)

    def predict(self, inputs: Sequence[Any] | str) -> list[dict[str, Any]]:
        """Predict for texts, (text, text_pair) pairs or dicts with the task's fields (``text``, ``id``)."""
        if isinstance(inputs, str):
            inputs = [inputs]
        examples = [self.task.to_example(x, f"input {i}") for i, x in enumerate(inputs, 1)]
        return self.predict_examples(examples)

    def read(
        self, path: str | Path, *, labelled: bool, fmt: str | None = None, id_column: str | None = None
    ) -> list[Example]:
        """Read a file (``-``: standard input) with the run's data settings (column names, format,
        encoding); ``fmt`` and ``id_column`` override ``data.format`` and ``data.columns.id``."""
        return self.task.read(path, self._data(fmt, id_column), labelled=labelled)

    def _data(self, fmt: str | None, id_column: str | None) -> Any:
        data = self.config.data
        if fmt is not None:
            data = data.model_copy(update={"format": fmt})
        if id_column is not None:
            data = data.model_copy(update={"columns": data.columns.model_copy(update={"id": id_column})})
        return data

    def predict_file(
        self, path: str | Path, *, fmt: str = "auto", id_column: str | None = None
    ) -> list[dict[str, Any]]:
        """Predict for every input of a file (``-``: standard input), in input order.

        Every prediction starts with where its input was: ``"line"`` (the 1-based line of a text, JSON
        Lines or CSV/TSV record, or of the first token of a CoNLL sentence) or ``"record"`` (Parquet, JSON
        arrays), followed by ``"id"`` when the input has one (the column ``id_column``, default the run's
        ``data.columns.id``). A raw-text file gives one output per line: a blank line gives
        ``{"line": N, "error": "empty text"}`` in its place.

        Args:
            path: the input file, or ``-``.
            fmt: ``auto`` (by extension; standard input is sniffed) or a format name.
            id_column: the column holding each input's id; every record must have one.

        Raises:
            DataError: unreadable input, an input without an id in ``id_column``.
            ConfigError: ``id_column`` given for raw text or CoNLL input, which have no columns.
        """
        from taskhead.data.readers import read_text_source, split_lines

        data = self._data(fmt, id_column)
        resolved = _input_format(self.task, path, data)
        if id_column is not None and resolved in ("text", "conll", "conllu"):
            raise ConfigError(
                f"--id-column {id_column}: {resolved} input has no columns; ids come from JSON Lines, "
                f"CSV/TSV or Parquet input (outputs of {resolved} input carry their line numbers)"
            )
        examples = self.task.read(path, data, labelled=False)
        if id_column is not None:
            missing = [ex["_where"] for ex in examples if ex.get("id") is None or not str(ex["id"]).strip()]
            if missing:
                raise DataError(
                    [f"{where}: {id_column}: missing id (--id-column {id_column})" for where in missing[:20]],
                    total=len(missing),
                )
        predictions = [
            {**_location(ex["_where"]), **pred}
            for ex, pred in zip(examples, self.predict_examples(examples), strict=True)
        ]
        if resolved != "text":
            return predictions
        lines = split_lines(read_text_source(path, data.encoding))
        return _with_blank_lines(predictions, lines)

    def evaluate(self, data: str | Path | list[Example]) -> dict[str, Any]:
        """Metrics on a labelled data file (or already-read examples)."""
        examples = self.read(data, labelled=True) if isinstance(data, (str, Path)) else data
        self.task.prepare({"eval": examples}, self.config.data)  # checks labels against the saved set
        if not examples:
            return {}
        outputs, features, loss = self._run(examples, with_loss=True)
        metrics = self.task.score(self.task.decode(outputs, features, examples), examples)
        return add_loss(metrics, loss, self.task)


def _input_format(task: Any, path: str | Path, data: Any) -> str | None:
    """The format ``task.read`` reads ``path`` in: the task's own rule (``input_format``) where it has
    one, else the extension, and a sniff for standard input; None when the extension tells nothing (the
    task's reader then decides, e.g. parallel text files)."""
    from taskhead.data.readers import detect_format, read_text_source, sniff_format

    rule = getattr(task, "input_format", None)
    if rule is not None:
        return str(rule(path, data))
    if data.format != "auto":
        return str(data.format)
    if str(path) == "-":
        return sniff_format(read_text_source(path, data.encoding))
    try:
        return detect_format(path)
    except DataError:
        return None


_LINE = re.compile(r":(\d+)$")
_RECORD = re.compile(r"\(record (\d+)\)$")


def _location(where: str) -> dict[str, int]:
    """``{"line": N}`` for ``file:N``, ``{"record": N}`` for ``file (record N)``, else nothing."""
    if match := _LINE.search(where):
        return {"line": int(match.group(1))}
    if match := _RECORD.search(where):
        return {"record": int(match.group(1))}
    return {}


def _with_blank_lines(predictions: list[dict[str, Any]], lines: list[str]) -> list[dict[str, Any]]:
    """The predictions of a raw-text file with ``{"line": N, "error": "empty text"}`` for each blank
    line, all in line order: one output per line of the file."""
    blank = [{"line": n, "error": "empty text"} for n, line in enumerate(lines, 1) if not line.strip()]
    return sorted([*predictions, *blank], key=lambda p: p.get("line", 0))


def add_loss(metrics: dict[str, Any], loss: float | None, task: Any) -> dict[str, Any]:
    """The mean loss of a labelled split, and its perplexity for tasks that report one (language models)."""
    if loss is not None:
        metrics["loss"] = loss
        if getattr(task, "reports_perplexity", False):
            from taskhead.generation_metrics import perplexity

            metrics["perplexity"] = perplexity(loss)
    return metrics
