"""The lanes of make demo / make reproduce: real subprocesses, dependencies between lanes, failures
named, and no lane waiting forever."""
import sys
import time

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
    fast = _job(tmp_path, "fast")
    after_slow = _job(tmp_path, "after_slow", needs=("slow",))
    wall = run_lanes([[slow], [fast, after_slow]], tag="t", poll_seconds=0.2)
    assert _times(after_slow)[0] >= _times(slow)[1]  # started after slow ended
    assert _times(fast)[0] < _times(slow)[1]  # while the other lane ran
    assert wall >= 1.5
    printed = capsys.readouterr().out
    assert "[t] slow (1 thread(s)): python -c" in printed


def test_a_failed_job_is_named_and_stops_the_others(tmp_path):
    broken = _job(tmp_path, "broken", exit_code=3)
    long = _job(tmp_path, "long", seconds=60)
    start = time.time()
    with pytest.raises(RuntimeError, match=r"broken failed \(exit 3\); see .*broken\.log"):
        run_lanes([[broken], [long]], tag="t", poll_seconds=0.2)
    assert time.time() - start < 30


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
