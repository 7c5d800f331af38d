"""The lanes of make demo / make reproduce: real subprocesses, dependencies between lanes, failures
named, and no lane waiting forever."""
import json
import sys

import pytest

from hpvit_lab.runs import CommandJob, run_lanes


def _job(tmp_path, name, seconds=0.0, needs=(), exit_code=0):
    """A python subprocess that records when it ran (start and end times) in its log."""
    code = (f"import time; print('start', time.time(), flush=True); time.sleep({seconds}); "
            f"print('end', time.time(), flush=True); raise SystemExit({exit_code})")
    return CommandJob(name, [sys.executable, "-c", code], tmp_path / f"{name}.log", needs=needs)


def _times(job):
    lines = dict(line.split() for line in job.log_file.read_text().splitlines() if line.strip())
    return float(lines["start"]), float(lines["end"])


def test_a_job_waits_for_what_it_needs_in_the_other_lane(tmp_path, capsys):
    slow = _job(tmp_path, "slow", seconds=1.5)
    # fast runs while slow runs, whatever the machine's load: slow waits (up to 120 s) for the
    # mark fast writes, and says whether it saw it.
    mark = tmp_path / "fast.mark"
    fast = CommandJob("fast", [sys.executable, "-c", f"import pathlib; pathlib.Path({str(mark)!r}).touch()"],
                      tmp_path / "fast.log")
    wait = (f"import pathlib, time\nmark, end = pathlib.Path({str(mark)!r}), time.time() + 120\n"
            "while not mark.exists() and time.time() < end: time.sleep(0.05)\n"
            "print('seen', int(mark.exists()), flush=True)")
    slow.argv = [sys.executable, "-c", wait + "\n" + slow.argv[-1]]
    after_slow = _job(tmp_path, "after_slow", needs=("slow",))
    wall = run_lanes([[slow], [fast, after_slow]], tag="t", poll_seconds=0.2)
    assert _times(after_slow)[0] >= _times(slow)[1]  # started after slow ended
    assert "seen 1" in slow.log_file.read_text()  # fast ran while slow was running
    assert wall >= 1.5
    printed = capsys.readouterr().out
    assert "[t] slow (1 thread(s)): python -c" in printed


def test_a_failed_job_is_named_and_stops_the_others(tmp_path):
    broken = _job(tmp_path, "broken", exit_code=3)
    long = _job(tmp_path, "long", seconds=60)
    with pytest.raises(RuntimeError, match=r"broken failed \(exit 3\); see .*broken\.log"):
        run_lanes([[broken], [long]], tag="t", poll_seconds=0.2)
    # stopped, not waited for: it never reached its end (it sleeps 60 s), whatever the load
    assert "end" not in (long.log_file.read_text() if long.log_file.exists() else "")


def test_lanes_that_wait_for_each_other_fail_at_once(tmp_path):
    first = _job(tmp_path, "first", needs=("second",))
    second = _job(tmp_path, "second", needs=("first",))
    with pytest.raises(RuntimeError, match="wait for each other: first \\(needs second\\)"):
        run_lanes([[first], [second]], tag="t")
    with pytest.raises(ValueError, match="no job is named 'missing'"):
        run_lanes([[_job(tmp_path, "x", needs=("missing",))]], tag="t")


def test_balanced_lanes_start_independent_work_beside_a_long_job(tmp_path):
    """The pre-training case: the jobs that do not need it go on the other lane, not behind it."""
    from hpvit_lab.runs import balanced_lanes

    cost = {"mae": 600, "convert": 10, "a_scratch": 430, "b_scratch": 240, "a_mae": 430, "b_mae": 240}
    jobs = [_job(tmp_path, "mae"), _job(tmp_path, "convert", needs=("mae",)),
            _job(tmp_path, "a_scratch"), _job(tmp_path, "b_scratch"),
            _job(tmp_path, "a_mae", needs=("convert",)), _job(tmp_path, "b_mae", needs=("convert",))]
    lanes = balanced_lanes(jobs, lambda job: cost[job.name])
    names = [[job.name for job in lane] for lane in lanes]
    assert names == [["mae", "convert", "a_mae"], ["a_scratch", "b_scratch", "b_mae"]]


def test_a_rerun_leaves_out_the_steps_that_only_reused_runs_need(tmp_path, capsys):
    """make reproduce run again: its fine-tunes are reused, so neither the pre-training nor the
    conversions they need run again; a step whose outputs are gone, or that a job to run needs,
    does."""
    from hpvit_lab.runs import TrainRun

    written = tmp_path / "step.out"
    code = f"import pathlib; pathlib.Path({str(written)!r}).write_text('x'); print('ran')"

    def step():
        return CommandJob("step", [sys.executable, "-c", code], tmp_path / "step.log",
                          outputs=(written,))

    run_lanes([[step()]], tag="t")  # the first run of the step: its record is written
    assert step().finished_record() is not None
    # A finished run that needs it: the record run_lanes writes, and the final metrics.
    run = TrainRun("run", "mask_rcnn_hpvit_tiny.py", tmp_path / "run", 1, needs=("step",))
    run.output_dir.mkdir()
    (run.output_dir / "metrics.json").write_text(json.dumps({"iteration": 0, "bbox/AP": 1.0}) + "\n")
    run.done_file.write_text(json.dumps({"argv": run.command(), "threads": 1, "seconds": 5.0}))
    ran = step().done_file.stat().st_mtime_ns
    capsys.readouterr()

    durations, not_run = {}, set()  # the step in the later lane: the first waits for it
    run_lanes([[run], [step()]], tag="t", threads=1, reuse=True, durations=durations,
              not_run=not_run)
    printed = capsys.readouterr().out
    assert "[t] run: reused" in printed and "[t] step: not run (only reused runs need it" in printed
    assert not_run == {"step"} and set(durations) == {"step", "run"}
    assert step().done_file.stat().st_mtime_ns == ran
    # A job to run needs it, or its output is gone: it runs again.
    other = CommandJob("other", [sys.executable, "-c", "pass"], tmp_path / "other.log",
                       needs=("step",))
    run_lanes([[step(), run], [other]], tag="t", threads=1, reuse=True)
    assert "[t] step (1 thread(s))" in capsys.readouterr().out
    written.unlink()
    not_run = set()
    run_lanes([[step(), run]], tag="t", threads=1, reuse=True, not_run=not_run)
    assert not_run == set() and written.is_file()
    assert "[t] step (1 thread(s))" in capsys.readouterr().out


def test_a_finished_command_run_is_reused_and_a_changed_one_runs_again(tmp_path, capsys):
    """A classifier run (a CommandJob marked ``is_run``, as hpvit_lab.study builds timm's) that
    finished the same command with its outputs there is not trained again on a rerun; one whose
    command changed, or a step not marked as a run, is."""
    summary = tmp_path / "run" / "summary.json"

    def run_job(flag="a", is_run=True):
        code = (f"import pathlib; p = pathlib.Path({str(summary)!r}); p.parent.mkdir(exist_ok=True); "
                f"p.write_text({flag!r}); print('trained')")
        return CommandJob("run", [sys.executable, "-c", code, flag], tmp_path / "run.log",
                          outputs=(summary,), is_run=is_run)

    run_lanes([[run_job()]], tag="t", reuse=True)
    trained = summary.stat().st_mtime_ns
    capsys.readouterr()
    run_lanes([[run_job()]], tag="t", reuse=True)
    assert "[t] run: reused" in capsys.readouterr().out and summary.stat().st_mtime_ns == trained
    run_lanes([[run_job("b")]], tag="t", reuse=True)  # another command: trained again
    assert "[t] run (" in capsys.readouterr().out and summary.read_text() == "b"
    run_lanes([[run_job("b", is_run=False)]], tag="t", reuse=True)  # a plain step: runs again
    assert "reused" not in capsys.readouterr().out
