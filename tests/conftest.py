import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

# The lab (projects/HPViT/hpvit_lab: make demo, make reproduce, make bench) is tested too; it
# passes the folder on PYTHONPATH to the processes it starts (hpvit_lab.lab_env).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "projects" / "HPViT"))



def pytest_configure(config):
    """The warnings the commands silence (hpvit_d2.known_warnings, the one list), for pytest's
    per-test filters too."""
    from hpvit_d2.known_warnings import QUIET_WARNINGS

    for category, message in QUIET_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")


# detectron2 reads $DETECTRON2_DATASETS once, when imported: the tests of its built-in names rely on
# the default (./datasets from the working directory), and set the variable in fresh processes.
os.environ.pop("DETECTRON2_DATASETS", None)

# Tests run on the CPU; keep them deterministic and within 2 cores. `make test` runs two pytest-xdist
# workers (one per core): each worker, and every process a test starts, then uses one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))

# About how long each file takes in `make test` (s, on one of two xdist workers on 2 cores; a file
# whose tests run several processes at once takes longer there than alone). The Makefile hands the
# files out in collection order (--dist loadfile --no-loadscope-reorder), and they are collected
# longest first: the suite lasts as long as its busier worker, so neither should start a long file
# while the other is nearly done. A file not listed counts as short. These numbers only order the
# files; no result depends on them.
FILE_SECONDS = {
    "test_benchmark.py": 200, "test_distributed.py": 145, "test_operations.py": 130,
    "test_nothing_lost.py": 110,
    "test_study.py": 250, "test_pretrain.py": 90, "test_engine.py": 115, "test_bad_data.py": 80, "test_cli.py": 65,
    "test_wheel.py": 60, "test_demo.py": 50,
    "test_wrong_weights.py": 45, "test_semseg.py": 40, "test_small_vits.py": 35,
    "test_hf_checkpoints.py": 28, "test_fair_baselines.py": 22,
    "test_checkpoint.py": 17, "test_attention.py": 16, "test_stock_tool.py": 15,
    "test_inference.py": 14, "test_semseg_configs.py": 14, "test_cpu_memory.py": 11,
    "test_datasets.py": 10, "test_classifier.py": 10, "test_amp.py": 9, "test_yacs.py": 8,
    "test_backbone.py": 7, "test_shapes.py": 7, "test_command_line.py": 7, "test_configs.py": 6,
    "test_runs.py": 5, "test_cityscapes_eval.py": 5, "test_readme_snippets.py": 25,
}


def pytest_collection_modifyitems(items):
    """Files longest first (FILE_SECONDS), each file's tests in their order (a stable sort)."""
    items.sort(key=lambda item: FILE_SECONDS.get(item.path.name, 0), reverse=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@contextlib.contextmanager
def logging_as_before():
    """Loggers left as they were found. A command run in-process (train, convert) attaches
    handlers bound to that test's captured stdout/stderr (detectron2's ``setup_logger``, cached,
    and ``log_to_stderr``); a later test in the same worker would then log into a closed stream
    ("--- Logging error ---") or find the library's logger already configured. Around every
    test (``_logging_as_before``), and around a module fixture that runs a command in-process."""
    import logging

    from detectron2.utils.logger import setup_logger

    def state():
        loggers = [logging.getLogger()] + [logging.getLogger(name) for name in
                                           list(logging.root.manager.loggerDict)]
        return {logger.name: (list(logger.handlers), logger.propagate, logger.level)
                for logger in loggers}

    before = state()
    try:
        yield
    finally:
        for name, (handlers, propagate, level) in state().items():
            logger = logging.getLogger(name) if name != "root" else logging.getLogger()
            old_handlers, old_propagate, old_level = before.get(name, ([], True, logging.NOTSET))
            for handler in handlers:
                if handler not in old_handlers:
                    logger.removeHandler(handler)
            logger.propagate, logger.level = old_propagate, old_level
        setup_logger.cache_clear()


@pytest.fixture(autouse=True)
def _logging_as_before():
    with logging_as_before():
        yield


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models, too small to gain from threads: one avoids waiting on a busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="CUDA-only: runs where a GPU is present (none here)")
# Numeric equivalence tests run on every device there is; the CUDA case is listed as skipped
# (with its reason, by -ra) on machines without a GPU, never dropped in silence.
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_ONLY)]
