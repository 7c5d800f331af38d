"""hpvit_d2.cpu_memory: glibc keeps freed memory, so a fresh large tensor costs no page faults
(measured by the lab's hpvit_lab.memory_probe)."""
import json
import resource
import subprocess
import sys

import pytest

from hpvit_d2 import cpu_memory
from hpvit_lab import lab_env

PAGES = 64 * 2**20 // resource.getpagesize()  # the pages of a 64 MB tensor
REPEATS = 9
CHILD = f"""
REPEATS = {REPEATS}
import json, sys
from hpvit_d2 import cpu_memory
from hpvit_lab.memory_probe import probe
if sys.argv[1] == "retain":
    cpu_memory.retain_freed_cpu_memory()
print(json.dumps(probe(megabytes=64, repeats=REPEATS)))
"""


def _probe(mode: str, env_value: str = "1") -> dict:
    env = lab_env(**{cpu_memory.ENV_VAR: env_value})
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_retained_memory_makes_fresh_large_tensors_fault_free():
    """What it means: under the system allocator every fresh 64 MB tensor is new memory, faulted
    in page by page; with freed memory kept, fresh tensors reuse it and cost no page fault. The
    count is the probe process's own page faults (getrusage), which other processes do not change.
    The heap may need a few calls to hold the tensor (a small allocation made in between, such as
    a thread pool starting, splits the freed block and the heap grows once more; under load that
    happens more often): the median over 9 calls is what the policy gives once it has."""
    system = _probe("system")
    retained = _probe("retain")
    assert system["policy"] == "not requested"
    assert retained["policy"].startswith("glibc keeps freed memory"), retained
    assert min(system["faults_of_each_gelu"]) >= PAGES, system
    assert retained["faults_per_fresh_gelu"] == 0, retained


def test_the_environment_variable_turns_it_off():
    off = _probe("retain", env_value="0")
    assert off["policy"] == f"system allocator ({cpu_memory.ENV_VAR}=0)"
    assert off["faults_per_fresh_gelu"] > 1000 or not sys.platform.startswith("linux"), off
