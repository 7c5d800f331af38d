import os
import sys
from pathlib import Path

import pytest
import torch

# The lab (projects/HPViT/hpvit_lab: make demo, make reproduce, make bench) is tested too; its
# package puts the folder on PYTHONPATH for the processes it starts.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "projects" / "HPViT"))

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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _logging_as_before():
    """Loggers left as the test found them. A command run in-process (train, convert) attaches
    handlers bound to that test's captured stdout/stderr (detectron2's ``setup_logger``, cached,
    and ``log_to_stderr``); a later test in the same worker would then log into a closed stream
    ("--- Logging error ---") or find the library's logger already configured."""
    import logging

    from detectron2.utils.logger import setup_logger

    def state():
        loggers = [logging.getLogger()] + [logging.getLogger(name) for name in
                                           list(logging.root.manager.loggerDict)]
        return {logger.name: (list(logger.handlers), logger.propagate, logger.level)
                for logger in loggers}

    before = state()
    yield
    for name, (handlers, propagate, level) in state().items():
        logger = logging.getLogger(name) if name != "root" else logging.getLogger()
        old_handlers, old_propagate, old_level = before.get(name, ([], True, logging.NOTSET))
        for handler in handlers:
            if handler not in old_handlers:
                logger.removeHandler(handler)
        logger.propagate, logger.level = old_propagate, old_level
    setup_logger.cache_clear()


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
