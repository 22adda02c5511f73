"""``taskhead train CONFIG --nproc N``: data-parallel training through torchrun and the Trainer's own DDP.

The launcher re-runs the same ``taskhead train`` command in N processes with ``torch.distributed.run``
(``--standalone``: one machine, a free rendezvous port). Each process trains on its share of every batch
(the Trainer shards the batches; the global batch is ``train.batch_size`` x N); on CPU the processes talk
through gloo, on GPUs through NCCL, one GPU per process. Only rank 0 reads out metrics and writes the run
directory. For several machines run the equivalent command on each:

    torchrun --nnodes M --nproc_per_node N --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m taskhead train CONFIG
    accelerate launch --num_machines M --num_processes N*M ... -m taskhead train CONFIG
"""

from __future__ import annotations

import subprocess
import sys

from taskhead.errors import ConfigError


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``taskhead ARGV`` in ``nproc`` processes; the exit code is torchrun's (non-zero if any failed)."""
    if nproc < 1:
        raise ConfigError(f"--nproc: expected a positive number of processes, got {nproc}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "taskhead",
        *argv,
    ]
    return subprocess.call(command)
