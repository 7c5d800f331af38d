"""Training and evaluation: detectron2's trainers with this project's checkpointer, loader and hooks."""
from .distributed import elastic_restart_count, launch_job, started_by_torchrun
from .hooks import DDPSyncCheck, ReseedEachIteration, SaveOnSignal, ignore_stop_signals
from .train_loop import build_ddp, build_train_loader, do_test, do_train, evaluate

__all__ = ["DDPSyncCheck", "ReseedEachIteration", "SaveOnSignal", "build_ddp", "build_train_loader",
           "do_test", "do_train", "elastic_restart_count", "evaluate", "ignore_stop_signals",
           "launch_job", "started_by_torchrun"]
