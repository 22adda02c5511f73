"""The ``taskhead`` command: a thin shell over the Python API.

``taskhead --help`` and ``taskhead validate`` never import torch. User errors print one line per problem
(``error: FILE:LINE: field: problem``) and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

EXIT_USAGE = 2

EXTENSIONS = (
    # modules with ``register(subparsers) -> {command: handler}``; they must not import torch at import time
    "taskhead.retrieval.cli",
    "taskhead.serving.cli",
    "taskhead.workflows.export",
    "taskhead.config_keys",
)


def _parser() -> argparse.ArgumentParser:
    # Long on purpose: one flat list of the core commands' options, read top to bottom like `--help`
    # (the extension modules declare theirs in their own register functions).
    from taskhead import __version__

    p = argparse.ArgumentParser(
        prog="taskhead",
        description="Fine-tune pretrained transformers on NLP tasks, evaluate them and predict with them.",
    )
    p.add_argument("--version", action="version", version=f"taskhead {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a model from a YAML config; writes a run directory")
    t.add_argument("config", help="YAML config file")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint of output_dir")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel training in N processes on this machine (torchrun; gloo on CPU, NCCL on GPUs)",
    )

    v = sub.add_parser("validate", help="check a config and every data file without loading a model")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    e = sub.add_parser("evaluate", help="score a finished run on a labelled data file")
    e.add_argument("run_dir")
    e.add_argument("data", help="labelled data file in the training data's layout")
    e.add_argument(
        "--output",
        help="metrics JSON path (default: RUN_DIR/evaluate-<data name>.json; with --backend onnx "
        "RUN_DIR/evaluate-<data name>.onnx-<variant>.json, so the PyTorch result is kept)",
    )
    _inference_options(e)

    r = sub.add_parser("predict", help="predict for a file (JSON Lines, CSV/TSV, text) or - for stdin")
    r.add_argument("run_dir")
    r.add_argument("input", help="input file, or - for standard input")
    r.add_argument("--output", "-o", help="JSON Lines output file (default: standard output)")
    r.add_argument(
        "--format",
        default="auto",
        choices=["auto", "csv", "tsv", "jsonl", "parquet", "text", "conll", "conllu"],
        help="input format (default: from the extension; stdin and token-classification .txt: sniffed, "
        "see README 'Prediction input')",
    )
    r.add_argument(
        "--id-column",
        metavar="COLUMN",
        help="column (JSON Lines, CSV/TSV, Parquet) whose value each output carries as `id`; every record "
        "must have one (default: the run's data.columns.id, when present). Outputs always carry their "
        "input's `line` (or `record`)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="decoding setting of a generation run for this prediction, e.g. --set num_beams=4 "
        "(repeatable; default: the run's own)",
    )
    _inference_options(r)
    for module in EXTENSIONS:  # index / search / mine / serve / export: each module adds its own commands
        try:
            extension = import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # not part of this installation
            raise
        COMMANDS.update(extension.register(sub))
    return p


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="autocast precision for the forward pass (default auto: bf16 where the device runs it "
        "natively, else fp32; bf16 and fp16 run only where the device runs them natively, else fp32)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="forward pass engine: torch, or ONNX Runtime on `taskhead export` output (CPU)",
    )
    p.add_argument("--onnx-variant", default="fp32", choices=["fp32", "int8"], help="with --backend onnx")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the run's own Python code (never taken from the run's saved files)",
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from taskhead.console import info, print_table, summary_table, warn
    from taskhead.workflows.validate import validate

    report = validate(args.config, args.overrides)
    for w in report.warnings:
        warn(w)
    print_table(summary_table(report.summaries(), encoded=False), stdout=True)
    info(
        f"{args.config}: OK (task {report.config.task_name}, {sum(map(len, report.splits.values()))} records)"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        from taskhead.engine.distributed import launch

        return launch(args.nproc, _without_nproc(args.argv))
    from taskhead.workflows.train import train

    run = train(args.config, args.overrides, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run directory: {run.run_dir}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _predictor(args: argparse.Namespace) -> Any:
    from taskhead.workflows.predict import Predictor

    return Predictor(
        args.run_dir,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        progress=True,
        backend=args.backend,
        onnx_variant=args.onnx_variant,
        trust_remote_code=args.trust_remote_code,
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from taskhead.console import print_table
    from taskhead.evaluation import metrics_table
    from taskhead.workflows.files import atomic_write_json
    from taskhead.workflows.outputs import check_output_file

    if args.output:
        check_output_file(args.output, "--output", [args.data])
    predictor = _predictor(args)
    metrics = predictor.evaluate(args.data)
    print_table(metrics_table(metrics, f"{args.data}"), stdout=True)
    engine = {"backend": args.backend}
    if args.backend == "onnx":
        engine["onnx_variant"] = args.onnx_variant
    out = Path(args.output) if args.output else evaluation_path(Path(args.run_dir), Path(args.data), args)
    atomic_write_json(out, {"data": str(args.data), **engine, "metrics": metrics})
    print(f"metrics written to {out}")
    return 0


def evaluation_path(run_dir: Path, data: Path, args: argparse.Namespace) -> Path:
    """``taskhead evaluate``'s default result file: ``RUN/evaluate-<data stem>.json`` for PyTorch and
    ``RUN/evaluate-<data stem>.onnx-<variant>.json`` for ONNX Runtime, so neither overwrites the other."""
    engine = "" if args.backend == "torch" else f".{args.backend}-{args.onnx_variant}"
    return run_dir / f"evaluate-{data.stem}{engine}.json"


def _cmd_predict(args: argparse.Namespace) -> int:
    from taskhead.workflows.files import atomic_write_text
    from taskhead.workflows.outputs import check_output_file

    if args.output:
        check_output_file(args.output, "--output", [args.input])
    settings = _settings(args.settings)
    predictor = _predictor(args)
    predictions = predictor.predict_file(args.input, fmt=args.format, id_column=args.id_column, **settings)
    lines = [json.dumps(p, ensure_ascii=False) for p in predictions]
    text = "\n".join(lines) + ("\n" if lines else "")
    if args.output:
        atomic_write_text(Path(args.output), text)
        print(f"{len(lines)} predictions written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _settings(items: list[str]) -> dict[str, Any]:
    """``--set num_beams=4 --set do_sample=true`` -> ``{"num_beams": 4, "do_sample": True}`` (YAML values)."""
    from taskhead.config import parse_override
    from taskhead.errors import ConfigError

    settings: dict[str, Any] = {}
    for item in items:
        try:
            parts, value = parse_override(item)
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {str(exc).split(': ', 1)[-1]}") from None
        settings[".".join(parts)] = value
    return settings


COMMANDS: dict[str, Any] = {
    "train": _cmd_train,
    "validate": _cmd_validate,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` relaunches
    # overrides may also follow options (`train cfg.yaml --overwrite train.epochs=1`)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from taskhead.errors import TaskheadError

    try:
        return COMMANDS[args.command](args)
    except TaskheadError as exc:
        if args.debug:
            raise
        for line in str(exc).split("\n"):  # messages are joined with \n; a value may hold U+2028
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
