"""Peak memory of ``taskhead validate`` on a large classification CSV, against the file's size.

Writes (in a temporary directory, removed afterwards) a CSV of about ``--mb`` megabytes of realistic rows:
a text column of varied length (a few words to a few hundred, log-normally distributed, median about 95
characters) holding commas, doubled quotes inside quoted fields and a few non-ASCII words, and a label
column (one of four topics). It then runs ``taskhead validate CONFIG`` in a subprocess, twice:

  baseline   the same command on a two-row file of the same kind: interpreter, imports, config loading
  full       the command on the large file

and reports each one's peak resident set size (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, read in
a wrapper process of its own so that the two runs do not share one maximum), with the ratios
``full / size`` and ``(full - baseline) / size`` (what validation adds per byte of data).

    python benchmarks/validate_memory.py              # 200 MB
    python benchmarks/validate_memory.py --mb 40      # quicker
    python benchmarks/validate_memory.py --python     # taskhead.validate(...) in-process instead of the CLI

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABELS = ("world", "sports", "business", "science")
WORDS = (  # noqa: SIM905 - a word list reads best as one string
    "the a of to in and on for with at by from market team game season price shares company research "
    "study space government election city police report said says new first last year week today "
    "win lose score goal player coach league fans stock bank rates oil growth profit quarter launch "
    "scientists found planet climate data model software users phone internet security court law"
).split()
ACCENTED = ("café", "naïve", "Zürich", "São", "Malmö", "résumé")

# Runs one command and prints its peak RSS in KiB (Linux ru_maxrss units): a process of its own per
# measurement, since RUSAGE_CHILDREN keeps the largest child ever waited for.
WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def sentence(rng: random.Random) -> str:
    """One text: log-normal length in words (median ~16 words, ~95 characters), with punctuation."""
    n = max(2, min(400, int(math.exp(rng.gauss(2.8, 0.7)))))
    words = [rng.choice(WORDS) for _ in range(n)]
    for i in range(0, n, 7):  # a comma every few words, now and then a quote or an accented word
        roll = rng.random()
        if roll < 0.5:
            words[i] += ","
        elif roll < 0.6:
            words[i] = f'"{words[i]}"'
        elif roll < 0.65:
            words[i] = rng.choice(ACCENTED)
    return " ".join(words).capitalize() + "."


def csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path: Path, megabytes: float, seed: int = 0) -> int:
    """A CSV of about ``megabytes`` MB (10^6 bytes) with a header ``text,label``; returns the rows written."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    size = rows = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("text,label\n")
        chunk: list[str] = []
        while size < target:
            line = f"{csv_field(sentence(rng))},{rng.choice(LABELS)}\n"
            chunk.append(line)
            size += len(line.encode("utf-8"))
            rows += 1
            if len(chunk) >= 10_000:
                fh.write("".join(chunk))
                chunk.clear()
        fh.write("".join(chunk))
    return rows


def write_config(directory: Path, data: Path) -> Path:
    config = directory / f"{data.stem}.json"  # JSON is YAML: load_config reads it
    config.write_text(
        json.dumps({"task": "classification", "data": {"train": str(data)}, "output_dir": str(directory)}),
        encoding="utf-8",
    )
    return config


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[int, int]:
    """``(return code, peak RSS in bytes)`` of ``command`` run to completion."""
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1]) * 1024


def command(config: Path, python_api: bool) -> list[str]:
    if python_api:
        code = "import sys, taskhead; r = taskhead.validate(sys.argv[1]); print(len(r.splits['train']))"
        return [sys.executable, "-c", code, str(config)]
    return [sys.executable, "-m", "taskhead", "validate", str(config)]


def measure(megabytes: float, *, python_api: bool = False, seed: int = 0) -> dict[str, float]:
    """Write the files, run baseline and full, return the figures (bytes and ratios)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    src = Path(__file__).resolve().parents[1] / "src"
    env.setdefault("PYTHONPATH", str(src))
    with tempfile.TemporaryDirectory(prefix="validate-memory-") as tmp:
        directory = Path(tmp)
        big, small = directory / "train.csv", directory / "tiny.csv"
        t0 = time.perf_counter()
        rows = write_csv(big, megabytes, seed)
        small.write_text("text,label\nA first text.,world\nA second text.,sports\n", encoding="utf-8")
        written = time.perf_counter() - t0
        size = big.stat().st_size
        rc, baseline = peak_rss(command(write_config(directory, small), python_api), env)
        if rc:
            sys.exit(f"baseline validate failed with exit code {rc}")
        t0 = time.perf_counter()
        rc, full = peak_rss(command(write_config(directory, big), python_api), env)
        seconds = time.perf_counter() - t0
        if rc:
            sys.exit(f"validate of {big} failed with exit code {rc}")
    return {
        "file_bytes": size,
        "rows": rows,
        "write_s": written,
        "validate_s": seconds,
        "baseline_rss": baseline,
        "peak_rss": full,
        "total_ratio": full / size,
        "added_ratio": (full - baseline) / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the CSV in MB (10^6 bytes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python", action="store_true", help="taskhead.validate(...) instead of the CLI")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    r = measure(args.mb, python_api=args.python, seed=args.seed)
    mib = 1024 * 1024
    how = "taskhead.validate(CONFIG)" if args.python else "taskhead validate CONFIG"
    size = r["file_bytes"] / 1e6
    print(f"{how}: {size:.1f} MB CSV, {r['rows']:,} rows, validated in {r['validate_s']:.1f} s")
    print(f"  baseline peak RSS (2-row file): {r['baseline_rss'] / mib:8.1f} MiB")
    print(f"  peak RSS:                       {r['peak_rss'] / mib:8.1f} MiB")
    print(f"  peak / file size:               {r['total_ratio']:8.2f}x")
    print(f"  (peak - baseline) / file size:  {r['added_ratio']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
