"""The Predictor that serves a run directory: predictions and evaluation through the task and the one
in-order batched forward loop (``taskhead.engine.forward``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskhead.data.types import Example, Features
from taskhead.engine.devices import bf16_supported, resolve_device
from taskhead.engine.forward import forward_outputs
from taskhead.errors import ConfigError, DataError, RunDirError
from taskhead.evaluation import score_outputs


def inference_precision(device: torch.device, precision: str, backend: str = "torch") -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for a forward pass; ``auto`` is bf16 where the device runs it natively
    (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), else fp32. The forward loop's one rule applies to an
    explicit choice too (``engine.devices.native_precision``): bf16 only where the device runs it natively,
    fp16 only on CUDA, else fp32. The onnx backend computes in fp32.

    Raises:
        ConfigError: an unknown precision, or bf16 / fp16 with the onnx backend.
    """
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise ConfigError(f"precision: expected fp32, bf16, fp16 or auto, got {precision!r}")
    if backend == "onnx":
        if precision in ("bf16", "fp16"):
            raise ConfigError(
                f"precision: {precision} applies to the torch backend; the onnx backend runs fp32"
            )
        return "fp32"
    if precision in ("auto", "bf16"):
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "fp16":
        return "fp16" if device.type == "cuda" else "fp32"
    return "fp32"


def training_precision(recorded: Any, device: torch.device) -> str | None:
    """The precision a run recorded for its training (``fp32``, ``bf16``, ``fp16``) when ``device`` runs it
    natively (bf16: CUDA with bf16, CPUs with AVX-512 BF16 or AMX; fp16: CUDA), else None."""
    if recorded == "fp32":
        return "fp32"
    if recorded == "bf16" and bf16_supported(device):
        return "bf16"
    if recorded == "fp16" and device.type == "cuda":
        return "fp16"
    return None


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
        trust_remote_code: bool = False,
    ) -> None:
        """Load ``run_dir``: safetensors weights only, and the model's own Python code only when asked.

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
            trust_remote_code: allow the model's own Python code (``auto_map``). Only the caller grants
                it: a run saved with ``model.trust_remote_code: true`` is refused without it.

        Raises:
            RunDirError: a missing or unfinished run directory.
            UnsafeWeightsError: weights only as pickle files (``pytorch_model.bin``), no safetensors.
            ConfigError: the run needs its own code and ``trust_remote_code`` is False; a bad option.
        """
        from taskhead.workflows.files import run_identity

        self.run_dir = Path(run_dir)
        for _ in range(3):  # an --overwrite may swap the folder between reading taskhead.json and model/
            before = run_identity(self.run_dir)
            try:
                self._load(device, backend, onnx_variant, onnx_dir, trust_remote_code)
            except Exception:
                if run_identity(self.run_dir) == before:
                    raise
                continue
            if run_identity(self.run_dir) == before:
                break
        else:
            raise RunDirError(
                f"{self.run_dir}: replaced by another command while loading, three times; load it again once "
                f"the training or export that writes it has finished"
            )
        self.model.eval()
        self.batch_size = batch_size
        self.precision = inference_precision(self.device, precision, backend)
        self.eval_precision = self.precision
        if precision == "auto" and backend == "torch":  # evaluate reproduces the training-time evaluation
            self.eval_precision = (
                training_precision(self.meta.get("precision"), self.device) or self.precision
            )
        self.progress = progress

    def _load(
        self,
        device: str,
        backend: str,
        onnx_variant: str,
        onnx_dir: str | Path | None,
        trust_remote_code: bool,
    ) -> None:
        """Read taskhead.json, the tokenizer and the model of ``self.run_dir`` (one attempt)."""
        from transformers import AutoTokenizer

        from taskhead.config import RunConfig
        from taskhead.engine.backbones import check_remote_code, check_safetensors, quiet_loading
        from taskhead.tasks import build_task
        from taskhead.workflows.rundir import read_meta

        self.meta = read_meta(self.run_dir)
        model_dir = self.run_dir / "model"
        check_safetensors(model_dir)
        check_remote_code(self.run_dir, self.meta, trust_remote_code)
        self.config = RunConfig.model_validate(self.meta["config"])
        # the saved config never grants remote code: the caller's flag replaces it
        self.config.model.trust_remote_code = trust_remote_code
        self.task = build_task(self.config.task, **self.meta.get("task_state", {}))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.backend = backend
        if backend == "onnx":  # ONNX Runtime on the CPU stands in for the torch module in forward_outputs
            from taskhead.engine.onnx import export_dir, load_onnx_model
            from taskhead.workflows.outputs import warn_leftovers

            if device not in ("auto", "cpu"):
                raise ConfigError(
                    f"device: the onnx backend runs on the CPU; got {device!r} (use auto or cpu)"
                )
            self.device = torch.device("cpu")
            onnx_dir = export_dir(self.run_dir, onnx_dir)
            warn_leftovers(onnx_dir)  # a folder an interrupted export left between two renames is put back
            self.model: Any = load_onnx_model(self.run_dir, onnx_dir, variant=onnx_variant)
        elif backend == "torch":
            self.device = resolve_device(device)
            with quiet_loading():
                self.model = self.task.load_model(model_dir, self.config.model).to(self.device)
        else:
            raise ConfigError(f"backend: expected 'torch' or 'onnx', got {backend!r}")

    @classmethod
    def from_memory(
        cls,
        run_dir: str | Path,
        config: Any,
        task: Any,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 64,
        precision: str = "fp32",
        progress: bool = False,
    ) -> Predictor:
        """A Predictor over a model in memory (``Run.in_memory()``: the trained model before saving), on
        the device the model is on."""
        self = cls.__new__(cls)
        self.run_dir, self.meta, self.config, self.task = Path(run_dir), {}, config, task
        self.tokenizer, self.model, self.backend = tokenizer, model, "torch"
        self.device = next(model.parameters()).device
        self.batch_size, self.progress = batch_size, progress
        self.precision = inference_precision(self.device, precision)
        self.eval_precision = self.precision
        return self

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    def _run(
        self,
        examples: list[Example],
        *,
        with_loss: bool = False,
        task: Any = None,
        precision: str | None = None,
    ) -> tuple[np.ndarray | list[np.ndarray], Features, float | None]:
        from taskhead.data.collate import PadCollator

        task = task if task is not None else self.task
        features = task.encode(examples, self.tokenizer, self.config.model)
        collate = PadCollator(self.tokenizer.pad_token_id, sequence_labels=task.traits.sequence_labels)
        run = task.run_outputs or forward_outputs
        outputs, loss = run(
            self.model,
            features,
            collate,
            batch_size=self.batch_size,
            device=self.device,
            precision=precision or self.precision,
            loss_fn=task.loss if with_loss else None,
            progress="predicting" if self.progress else None,
        )
        return outputs, features, loss

    def predict_examples(self, examples: list[Example], **settings: Any) -> list[dict[str, Any]]:
        """Predictions for already-made examples, in order.

        ``settings`` are decoding settings for this call (generation runs: ``num_beams=4``, ...), over the
        run's own. An example may carry its own under ``"_decoding"`` (the server stamps each request's):
        examples are run in groups of equal settings, so one request's settings never reach another's.

        Raises:
            ConfigError: a setting the task does not have, or a value out of range.
        """
        if not examples:
            return []
        groups: dict[str, list[int]] = {}
        chosen: dict[str, dict[str, Any]] = {}
        for i, ex in enumerate(examples):
            merged = {**settings, **(ex.get("_decoding") or {})}
            key = json.dumps(merged, sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
            chosen[key] = merged
        predictions: list[dict[str, Any]] = [{} for _ in examples]
        for key, idx in groups.items():
            task = self.task_with(chosen[key])
            group = [examples[i] for i in idx]
            outputs, features, _ = self._run(group, task=task)
            for i, pred in zip(idx, task.decode(outputs, features, group), strict=True):
                predictions[i] = pred
        return predictions

    def task_with(self, settings: dict[str, Any], where: str = "--set") -> Any:
        """The run's task with decoding ``settings`` over its own (the task itself when there are none).

        Raises:
            ConfigError: the task has no decoding settings, an unknown key (with the closest match), or a
                bad value; the message starts with ``where``.
        """
        if not settings:
            return self.task
        return self.task.with_decoding(settings, where)

    def to_example(self, record: Any, where: str, columns: Any = None) -> Example:
        """The task's example for one input; dicts may use the run's training column names (``columns``,
        default the run's ``data.columns``) or the generic names (``text``/``text_pair``,
        ``question``/``context``, ``source``)."""
        from taskhead.data.json_readers import lone_surrogate

        found = lone_surrogate(record)
        if found is not None:
            raise DataError(
                [f"{where}: {found}: a lone surrogate is not a character; expected valid Unicode text"]
            )
        columns = self.config.data.columns if columns is None else columns
        return self.task.to_example(generic_record(record, columns), where)

    def predict(self, inputs: Sequence[Any] | str, **settings: Any) -> list[dict[str, Any]]:
        """Predict for texts, pairs or dicts, one prediction per input, in order.

        Args:
            inputs: a text; or a list of texts, ``(text, text_pair)`` / ``(question, context)`` pairs, or
                dicts with the generic names (``text``, ``text_pair``, ``question``, ``context``,
                ``source``, ``tokens``) or the run's training column names, optionally with an ``id``.
            **settings: decoding settings of generation runs for this call (``num_beams=4``,
                ``max_new_tokens=32``, ``do_sample=True``, ...); default: the run's own.

        Raises:
            DataError: an input the task cannot take (``input N`` names it).
            ConfigError: a decoding setting the task does not have, or a bad value.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        self.task_with(settings)  # unknown or bad settings fail before any input is encoded
        examples = [self.to_example(x, f"input {i}") for i, x in enumerate(inputs, 1)]
        return self.predict_examples(examples, **settings)

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
        self,
        path: str | Path,
        *,
        fmt: str = "auto",
        id_column: str | None = None,
        **settings: Any,
    ) -> list[dict[str, Any]]:
        """Predict for every input of a file (``-``: standard input), in input order.

        Every prediction starts with where its input was: ``"line"`` (the 1-based line of a text, JSON
        Lines or CSV/TSV record, or of the first token of a CoNLL sentence) or ``"record"`` (Parquet, JSON
        arrays), followed by ``"id"`` when the input has one (the column ``id_column``, default the run's
        ``data.columns.id``). A raw-text file gives one output per line: a blank line gives
        ``{"line": N, "error": "empty text"}`` in its place. Inputs are read as ``read_inputs`` reads them
        (the run's own column names and layouts, or the generic names).

        Args:
            path: the input file, or ``-``.
            fmt: ``auto`` (by extension; standard input is sniffed) or a format name.
            id_column: the column holding each input's id; every record must have one.
            **settings: decoding settings of generation runs (as in ``predict``).

        Raises:
            DataError: unreadable input, an input without an id in ``id_column``.
            ConfigError: ``id_column`` given for raw text or CoNLL input, which have no columns; a bad
                decoding setting.
        """
        from taskhead.data.readers import read_text_source, split_lines

        self.task_with(settings, "--set")  # unknown or bad settings fail before the input is read
        data = self._data(fmt, id_column)
        resolved = self.task.input_format(path, data)  # None: the extension tells nothing
        if id_column is not None and resolved in ("text", "conll", "conllu"):
            raise ConfigError(
                f"--id-column {id_column}: {resolved} input has no columns; ids come from JSON Lines, "
                f"CSV/TSV or Parquet input (outputs of {resolved} input carry their line numbers)"
            )
        examples = self._read_inputs(path, data)
        if id_column is not None:
            missing = [ex["_where"] for ex in examples if ex.get("id") is None or not str(ex["id"]).strip()]
            if missing:
                raise DataError(
                    [f"{where}: {id_column}: missing id (--id-column {id_column})" for where in missing[:20]],
                    total=len(missing),
                )
        predictions = [
            {**_location(ex["_where"]), **pred}
            for ex, pred in zip(examples, self.predict_examples(examples, **settings), strict=True)
        ]
        if resolved != "text":
            return predictions
        lines = split_lines(read_text_source(path, data.encoding))
        return _with_blank_lines(predictions, lines)

    def read_inputs(self, path: str | Path, *, fmt: str = "auto") -> list[Example]:
        """Prediction inputs from a file (or ``-``: standard input).

        The task's own reader with the run's column names and layouts comes first (CoNLL, SQuAD JSON,
        parallel text, training columns); where it cannot read the file, each row (or each non-blank line of
        a text file) goes through ``to_example``, which takes the generic names. The task reader's located
        error is raised when neither reads the file.

        Raises:
            DataError: a file neither way reads, naming file, line and field.
        """
        return self._read_inputs(path, self._data(fmt, None))

    def _read_inputs(self, path: str | Path, data: Any) -> list[Example]:
        from taskhead.errors import TaskheadError

        # standard input is read once and kept by data.readers, so both readers see the same bytes
        readers = [lambda: self.task.read(path, data, labelled=False), lambda: self._read_generic(path, data)]
        if _generic_header(path, data):
            # a run trained on headerless columns (by index) given a file whose header names generic columns:
            # its own reader would read the header row as an input and take columns by position
            readers.reverse()
        try:
            return readers[0]()
        except TaskheadError as own:
            first = own
        try:
            return readers[1]()
        except TaskheadError:
            raise first from None

    def _read_generic(self, path: str | Path, data: Any) -> list[Example]:
        from taskhead.data.readers import (
            detect_format,
            numbered_lines,
            read_data_table,
            read_text_source,
            sniff_format,
        )

        spec = str(path)
        fmt = data.format
        if fmt == "auto":
            fmt = sniff_format(read_text_source(path, data.encoding)) if spec == "-" else detect_format(path)
        if fmt == "text":
            name = "<stdin>" if spec == "-" else spec
            text = read_text_source(path, data.encoding)
            examples = [
                self.to_example(line, f"{name}:{n}", data.columns)
                for n, line in numbered_lines(text)
                if line.strip()
            ]
        else:
            header = _generic_header(path, data)
            if header:
                data = data.model_copy(update={"header": True})
            table = read_data_table(path, data, text_column="text", fmt=fmt)
            one_text = not header and not data.header and len(table.columns) == 1  # a headerless text column
            examples = [
                self.to_example(
                    row.values[table.columns[0]] if one_text else dict(row.values),
                    table.loc(row),
                    data.columns,
                )
                for row in table.rows
            ]
        if not examples:
            raise DataError([f"{spec}: no inputs found"])
        return examples

    def evaluate(self, data: str | Path | list[Example], **settings: Any) -> dict[str, Any]:
        """Metrics on a labelled data file (or already-read examples); ``settings`` as in ``predict``.

        With ``precision="auto"`` (the default) the forward pass runs in the precision the run was trained
        and evaluated in (``taskhead.json``: ``precision``) where this device runs it natively, so the
        metrics of the training-time evaluation in ``metrics.json`` are reproduced; predictions keep ``auto``.
        """
        task = self.task_with(settings)
        examples = self.read(data, labelled=True) if isinstance(data, (str, Path)) else data
        self.task.prepare({"eval": examples}, self.config.data)  # checks labels against the saved set
        if not examples:
            return {}
        outputs, features, loss = self._run(
            examples, with_loss=True, task=task, precision=self.eval_precision
        )
        return score_outputs(task, outputs, features, examples, loss)  # the scorer of training's evaluation


GENERIC_NAMES = ("id", "text", "text_pair", "question", "context", "source", "tokens")


def generic_record(record: Any, columns: Any) -> Any:
    """A dict input with the run's training column names copied to the generic names the tasks'
    ``to_example`` takes (``sentence1`` -> ``text`` where ``data.columns.text`` is ``sentence1``); other
    inputs as they are. A generic name already in the record wins."""
    if not isinstance(record, dict):
        return record
    configured = {"anchor": "text", "positive": "text_pair"}
    out = dict(record)
    for name, column in columns:
        generic = configured.get(name, name)
        if generic in GENERIC_NAMES and isinstance(column, (str, int)) and str(column) in record:
            out.setdefault(generic, record[str(column)])
    return out


def _generic_header(path: str | Path, data: Any) -> bool:
    """Whether ``path`` is a CSV/TSV file whose first row names generic columns (``text``, ``source``, ...)
    while the run reads its data without a header (``data.header: false``, columns by index)."""
    from taskhead.data.readers import detect_format, open_data_file, read_text_source, split_lines

    if data.header:
        return False
    try:
        fmt = detect_format(path, data.format) if str(path) != "-" else data.format
    except DataError:
        return False
    if fmt not in ("csv", "tsv"):
        return False
    if str(path) == "-":
        head = read_text_source(path, data.encoding)[:65536]  # standard input is read once and kept
    else:
        with open_data_file(path) as handle:
            head = handle.read(65536).decode(data.encoding, errors="replace")
    first = next((line for line in split_lines(head) if line.strip()), "")
    cells = {cell.strip().strip('"') for cell in first.split("," if fmt == "csv" else "\t")}
    return bool(cells & (set(GENERIC_NAMES) - {"id"}))


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
