"""ONNX export of encoder runs (``taskhead export``).

``taskhead export RUN --format onnx [--quantize int8]`` traces the model's forward pass over the inputs the
run's tokenizer produces (``input_ids``, ``attention_mask``, and ``token_type_ids`` where it makes them)
with dynamic batch and sequence axes, checks ONNX Runtime's outputs against PyTorch's on synthetic
batches, and writes ``RUN/onnx/``::

    model.onnx       fp32 graph; outputs named like the torch model's (logits | start_logits, end_logits |
                     embeddings)
    model.int8.onnx  with --quantize int8: onnxruntime's dynamic int8 quantization of the weights
    export.json      inputs, outputs, opset, max |onnx - torch| per variant, a fingerprint of the weights

The ONNX Runtime model that ``Predictor(run, backend="onnx")`` runs, and its loader, are in
``taskhead.engine.onnx``. Importing this module imports neither torch nor onnx (the CLI lists it).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.engine.onnx import EXPORT_FILE, VARIANTS, OnnxModel, weights_fingerprint
from taskhead.errors import ExportError

if TYPE_CHECKING:
    import torch

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits", "start_logits", "end_logits", "embeddings")
OPSET = 17
ATOL, RTOL = 1e-4, 1e-3  # fp32 ONNX against PyTorch on the check batches: |a - b| <= ATOL + RTOL * |b|
ENCODER_TASKS = "classification, token-classification, question-answering, embedding"


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``taskhead export`` to the CLI."""
    p = subparsers.add_parser(
        "export", help="export an encoder run to ONNX for fast CPU inference (ONNX Runtime)"
    )
    p.add_argument("run_dir")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--quantize", choices=["int8"], help="also write a dynamically quantized int8 model")
    p.add_argument("--out", help="output directory (default: RUN_DIR/onnx)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the run's own Python code (never taken from the run's saved files)",
    )
    return {"export": _cmd_export}


def _cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.run_dir) / "onnx"
    report = export_onnx(
        args.run_dir,
        out=out,
        quantize=args.quantize,
        opset=args.opset,
        trust_remote_code=args.trust_remote_code,
    )
    for variant, entry in report["variants"].items():
        print(
            f"{variant}: {out / entry['file']} (max |onnx - torch| {entry['max_abs_diff']:.2e} "
            f"over {entry['checked_values']} values)"
        )
    return 0


# ---------------------------------------------------------------------------------------------- export


def export_onnx(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    quantize: str | None = None,
    opset: int = OPSET,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Export a finished encoder run to ONNX; returns what ``export.json`` records.

    Args:
        run_dir: the run directory.
        out: output directory (default ``RUN_DIR/onnx``); replaced as a whole, atomically; a folder that
            holds files other than an export's is refused.
        quantize: ``"int8"`` to add a dynamically quantized model next to the fp32 one.
        opset: ONNX opset version.
        trust_remote_code: allow the run's own Python code (a run saved asking for it is refused without).

    Raises:
        ExportError: a generation run, a model whose outputs have none of the known names, or an fp32 graph
            whose outputs differ from PyTorch's beyond ``ATOL`` / ``RTOL``.
        UnsafeWeightsError, ConfigError: pickle-only weights; remote code not trusted (see ``Predictor``).
    """
    from taskhead.workflows.outputs import Kind, check_replaceable, replace_dir
    from taskhead.workflows.predict import Predictor

    if quantize not in (None, "int8"):
        raise ExportError(f"quantize: expected 'int8' or none, got {quantize!r}")
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / "onnx"
    export_kind = Kind("a taskhead export", (EXPORT_FILE,), (EXPORT_FILE, *VARIANTS.values()))
    check_replaceable(target, export_kind, "--out", ExportError)
    predictor = Predictor(run_dir, device="cpu", trust_remote_code=trust_remote_code)
    _require_encoder(run_dir, predictor)
    model, tokenizer = predictor.model, predictor.tokenizer
    names = [n for n in INPUT_NAMES if n in tokenizer("a", "b")]
    shape = _Synthetic(model, tokenizer, names, predictor.config.model.max_length)
    axes = _output_axes(model, shape, run_dir)
    report: dict[str, Any] = {
        "format": "onnx",
        "task": predictor.task.name,
        "opset": opset,
        "inputs": names,
        "outputs": list(axes),
        "tolerance": {"atol": ATOL, "rtol": RTOL},
        "weights": weights_fingerprint(run_dir / "model"),
        "variants": {},
        "versions": _versions(),
    }

    replace_dir(target, lambda d: _write_variants(d, run_dir, model, shape, axes, opset, quantize, report))
    return report


def _write_variants(
    directory: Path,
    run_dir: Path,
    model: Any,
    shape: _Synthetic,
    axes: dict[str, dict[int, str]],
    opset: int,
    quantize: str | None,
    report: dict[str, Any],
) -> None:
    """Trace the fp32 graph into ``directory``, check it against PyTorch on ``shape``'s batches, add the
    int8 variant if asked, and write ``export.json`` last (``report`` gains each variant's entry).

    Raises:
        ExportError: the fp32 graph's outputs differ from PyTorch's beyond ``ATOL`` / ``RTOL``.
    """
    from taskhead.workflows.files import atomic_write_json

    fp32 = directory / VARIANTS["fp32"]
    _trace(model, shape, axes, fp32, opset)
    checks = shape.check_batches()
    entry = _compare(fp32, model, checks)
    if not entry["within_tolerance"]:
        raise ExportError(
            f"{run_dir}: the ONNX graph's outputs differ from PyTorch's by up to "
            f"{entry['max_abs_diff']:.3g} (tolerance atol={ATOL}, rtol={RTOL}); the model holds "
            f"operations the exporter does not reproduce; try another --opset"
        )
    report["variants"]["fp32"] = {"file": fp32.name, **entry}
    if quantize == "int8":
        int8 = directory / VARIANTS["int8"]
        _quantize(fp32, int8)
        report["variants"]["int8"] = {"file": int8.name, **_compare(int8, model, checks)}
    atomic_write_json(directory / EXPORT_FILE, report)


def _versions() -> dict[str, str]:
    from taskhead.workflows.rundir import library_versions

    versions = library_versions()
    for lib in ("onnx", "onnxruntime"):
        versions[lib] = __import__(lib).__version__
    return versions


def _require_encoder(run_dir: Path, predictor: Any) -> None:
    """Refuse models that generate: one exported forward pass does not cover decoding token by token."""
    model = predictor.model
    config = getattr(model, "config", None)
    can_generate = getattr(model, "can_generate", None)
    if getattr(config, "is_encoder_decoder", False) or (callable(can_generate) and can_generate()):
        raise ExportError(
            f"{run_dir}: export supports encoder tasks ({ENCODER_TASKS}); this run's task "
            f"{predictor.task.name!r} generates text token by token, which one exported forward pass does "
            f"not cover; serve it with the PyTorch backend"
        )


class _Synthetic:
    """Random token batches shaped like the run's inputs, right-padded like the collator pads them."""

    def __init__(self, model: Any, tokenizer: Any, names: list[str], max_length: int) -> None:
        self.names = names
        self.vocab = len(tokenizer)
        self.types = int(getattr(getattr(model, "config", None), "type_vocab_size", 1) or 1)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.longest = min(max_length, positions or max_length, 128)

    def batch(self, lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
        import torch

        gen = torch.Generator().manual_seed(seed)
        width = max(lengths)
        batch = {
            "input_ids": torch.randint(0, self.vocab, (len(lengths), width), generator=gen),
            "attention_mask": torch.zeros(len(lengths), width, dtype=torch.long),
            "token_type_ids": torch.zeros(len(lengths), width, dtype=torch.long),
        }
        for row, n in enumerate(lengths):
            batch["attention_mask"][row, :n] = 1
            batch["input_ids"][row, n:] = 0
            if self.types > 1:  # a second segment, as a text pair has
                batch["token_type_ids"][row, n // 2 : n] = 1
        return {k: batch[k] for k in self.names}

    def trace_batch(self) -> dict[str, torch.Tensor]:
        # padding in the traced batch: with a mask of all ones transformers may drop the mask from the graph
        return self.batch([min(9, self.longest), min(6, self.longest - 1)], seed=0)

    def check_batches(self) -> list[dict[str, torch.Tensor]]:
        top = self.longest
        return [
            self.batch([top], seed=1),
            self.batch([max(2, top // 4), top // 2, max(3, top // 3), 5], seed=2),
            self.batch([top, max(2, top - 3)], seed=3),
        ]


def _call(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's outputs by name: the known keys of its forward's output, or ``embeddings`` from
    ``model.embed(batch)`` for models that have one (an embedding run's forward computes a training loss)."""
    embed = getattr(model, "embed", None)
    if callable(embed):
        return {"embeddings": embed(batch)}
    result = model(**batch)
    return {k: result[k] for k in OUTPUT_NAMES if k in result}


def _outputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    with torch.inference_mode():
        return _call(model, batch)


def _output_axes(model: Any, shape: _Synthetic, run_dir: Path) -> dict[str, dict[int, str]]:
    """Each output's dynamic axes: 0 is the batch; an axis that follows the input length is the sequence."""
    short = _outputs(model, shape.batch([7, 7], seed=4))
    long = _outputs(model, shape.batch([11, 11, 11], seed=5))
    if not short:
        raise ExportError(
            f"{run_dir}: the model's outputs have none of the names export knows ({', '.join(OUTPUT_NAMES)})"
        )
    return {
        name: {0: "batch", **{i: "sequence" for i in range(1, t.dim()) if t.shape[i] != long[name].shape[i]}}
        for name, t in short.items()
    }


def _trace(model: Any, shape: _Synthetic, axes: dict[str, dict[int, str]], path: Path, opset: int) -> None:
    import torch

    names, outputs = shape.names, list(axes)

    class Forward(torch.nn.Module):
        """Positional tensors in (ONNX inputs have no keywords), the named outputs out, as a tuple."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            result = _call(self.model, dict(zip(names, tensors, strict=True)))
            return tuple(result[k] for k in outputs)

    batch = shape.trace_batch()
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names} | axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks the check batches then verify
        # the TorchScript exporter (dynamo=False): traces transformers' encoders offline in under a second
        torch.onnx.export(
            Forward().eval(),
            tuple(batch[n] for n in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing tip through the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def _compare(path: Path, model: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Max and mean |onnx - torch| over every output value of the check batches."""
    import numpy as np

    session = OnnxModel(path, threads=1)
    worst, total, count, close = 0.0, 0.0, 0, True
    for batch in batches:
        expected = _outputs(model, batch)
        got = session(**batch)
        for name, ref in expected.items():
            a, b = got[name].numpy(), ref.float().numpy()
            diff = np.abs(a - b)
            worst = max(worst, float(diff.max()))
            total += float(diff.sum())
            count += diff.size
            close = close and bool(np.allclose(a, b, atol=ATOL, rtol=RTOL))
    return {
        "max_abs_diff": worst,
        "mean_abs_diff": total / max(count, 1),
        "checked_values": count,
        "check_batches": len(batches),
        "within_tolerance": close,
    }
