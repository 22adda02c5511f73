"""The ONNX Runtime model behind ``Predictor(run, backend="onnx")``, and its loader.

``OnnxModel`` stands in for the torch module in ``taskhead.engine.forward``: collated tensors in, a dict of
torch tensors with the torch model's output keys out (and ``embed(batch)`` for models that embed, as the
embedding task's does), so batching, decoding and metrics are one code path for both backends. The export
itself (``taskhead export``) is ``taskhead.workflows.export``. Importing this module imports neither torch
nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.errors import ExportError

if TYPE_CHECKING:
    import torch

EXPORT_FILE = "export.json"
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def export_dir(run_dir: Path, onnx_dir: str | Path | None = None) -> Path:
    """Where a run's export is: ``onnx_dir``, else ``RUN/onnx``."""
    return Path(onnx_dir) if onnx_dir is not None else Path(run_dir) / "onnx"


def weights_fingerprint(model_dir: Path) -> str:
    """A cheap fingerprint of the weight files: names, sizes and four 1 MiB samples of each file."""
    digest = hashlib.sha256()
    chunk = 1 << 20
    for path in sorted(p for p in model_dir.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(model_dir)}:{size}".encode())
        with path.open("rb") as fh:
            for offset in sorted({0, size // 3, 2 * size // 3, max(size - chunk, 0)}):
                fh.seek(offset)
                digest.update(fh.read(chunk))
    return digest.hexdigest()


class OnnxModel:
    """An ONNX Runtime session that ``engine.forward.forward_outputs`` calls like the torch model.

    Collated tensors in (extra keys such as ``labels`` are ignored), a dict of CPU torch tensors keyed like
    the torch model's outputs out.
    """

    training = False

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        # the same number of threads as torch would use (OMP_NUM_THREADS, else the physical cores)
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        """Inference only: ``forward_outputs`` restores the previous mode, which is always eval."""
        return self

    def to(self, device: Any) -> OnnxModel:
        return self

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings of one padded batch, as the embedding task's model gives them."""
        if "embeddings" not in self.output_names:
            raise ExportError(
                f"{self.path}: this model has no embeddings output ({', '.join(self.output_names)})"
            )
        return self(**batch)["embeddings"]

    def __call__(self, **batch: Any) -> dict[str, torch.Tensor]:
        import numpy as np
        import torch

        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise ExportError(
                f"{self.path}: the ONNX model needs {', '.join(missing)}, which the batch lacks "
                f"(batch: {', '.join(sorted(batch))}); export the run again"
            )
        feeds = {n: np.asarray(batch[n].cpu().numpy(), dtype=np.int64) for n in self.input_names}
        outputs = self.session.run(self.output_names, feeds)
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outputs, strict=True)}


def load_onnx_model(
    run_dir: Path,
    onnx_dir: str | Path | None = None,
    *,
    variant: str = "fp32",
    threads: int | None = None,
) -> OnnxModel:
    """The exported model of a run (``RUN/onnx`` unless ``onnx_dir``), checked against the run's weights.

    Reads the folder as it is: a caller that may follow an interrupted export first puts the folder back
    (``taskhead.workflows.outputs.warn_leftovers(export_dir(...))``, as ``Predictor`` does).

    Raises:
        ExportError: no export, no model of that variant, or an export of other weights than the run's.
    """
    directory = export_dir(run_dir, onnx_dir)
    meta_path = directory / EXPORT_FILE
    if variant not in VARIANTS:
        raise ExportError(f"onnx_variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    if not meta_path.is_file():
        raise ExportError(
            f"{run_dir}: no ONNX export ({meta_path} is missing); "
            f"run `taskhead export {run_dir} --format onnx` first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{meta_path}:{exc.lineno}: malformed JSON: {exc.msg}; export the run again"
        ) from None
    if variant not in meta.get("variants", {}):
        flag = " --quantize int8" if variant == "int8" else ""
        raise ExportError(
            f"{directory}: no {variant} model; run `taskhead export {run_dir} --format onnx{flag}` first"
        )
    if meta.get("weights") != weights_fingerprint(run_dir / "model"):
        raise ExportError(
            f"{directory}: exported from other weights than {run_dir / 'model'} holds now (retrained or "
            f"replaced since); run `taskhead export {run_dir} --format onnx` again"
        )
    return OnnxModel(directory / meta["variants"][variant]["file"], threads=threads)
