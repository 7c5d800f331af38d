"""
Starting the processes of a training job: detectron2's ``launch``, or joining the process group
that PyTorch's elastic launcher (``torchrun``) describes in the environment.
"""
import datetime
import logging
import multiprocessing
import os
import sys
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.utils import comm

__all__ = ["TORCHRUN_VARIABLES", "elastic_restart_count", "launch_job", "started_by_torchrun"]

logger = logging.getLogger("hpvit_d2")

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                      "MASTER_PORT")


def started_by_torchrun() -> bool:
    """True when the environment holds torchrun's process-group variables."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def elastic_restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _join_torchrun(timeout: datetime.timedelta) -> None:
    has_gpu = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if has_gpu:
        torch.cuda.set_device(local_rank)
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    # After a restart the store may still hold the dead group's addresses: a prefix per attempt.
    store = dist.PrefixStore(f"hpvit_d2/attempt_{elastic_restart_count()}", store)
    dist.init_process_group(backend="nccl" if has_gpu else "gloo", store=store, rank=rank,
                            world_size=world_size, timeout=timeout)
    comm.create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    comm.synchronize()


def _with_forked_loader_workers(main_func: Callable, *args) -> None:
    """``main_func(*args)`` in a process that detectron2's ``launch`` spawned, with DataLoader
    workers started by fork on Linux, as in a single process and under torchrun. A spawned
    process would otherwise spawn its loader workers too: each imports torch, detectron2 and the
    model code again before its first sample (seconds of CPU per worker, every run)."""
    if sys.platform.startswith("linux"):
        multiprocessing.set_start_method("fork", force=True)
    main_func(*args)


def launch_job(main_func: Callable, args: Sequence, *, num_gpus: int, num_machines: int = 1,
               machine_rank: int = 0, dist_url: str = "auto",
               timeout: datetime.timedelta = datetime.timedelta(minutes=30)) -> None:
    """
    Run ``main_func(*args)`` in every process of the job.

    Under ``torchrun`` (its variables in the environment) this process is one worker: it joins
    the group torchrun set up (``env://``) and runs ``main_func`` itself; ``--num-gpus`` and the
    machine flags are ignored. Otherwise detectron2's ``launch`` spawns ``num_gpus`` processes per
    machine (GLOO on the CPU), whose DataLoader workers start by fork on Linux, as a single
    process's and torchrun's do. ``timeout`` bounds how long a collective waits for a peer.
    """
    if started_by_torchrun():
        _join_torchrun(timeout)
        try:
            main_func(*args)
        finally:
            dist.destroy_process_group()
        return
    if num_gpus * num_machines > 1:  # launch spawns the processes
        main_func, args = _with_forked_loader_workers, (main_func, *args)
    launch(main_func, num_gpus, num_machines=num_machines, machine_rank=machine_rank,
           dist_url=dist_url, args=tuple(args), timeout=timeout)
