"""hpvit_d2.cpu_memory: glibc keeps freed memory, so a fresh large tensor costs no page faults."""
import json
import os
import subprocess
import sys

import pytest

from hpvit_d2 import cpu_memory

CHILD = """
import json, sys
from hpvit_d2 import cpu_memory
if sys.argv[1] == "retain":
    cpu_memory.retain_freed_cpu_memory()
print(json.dumps(cpu_memory.probe(megabytes=64, repeats=3)))
"""


def _probe(mode: str, env_value: str = "1") -> dict:
    env = dict(os.environ, **{cpu_memory.ENV_VAR: env_value})
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_retained_memory_makes_fresh_large_tensors_fault_free():
    system = _probe("system")
    retained = _probe("retain")
    assert system["policy"] == "not requested"
    assert retained["policy"].startswith("glibc keeps freed memory"), retained
    # 64 MB is 16384 pages of 4 KB: the system allocator maps (and faults in) each fresh tensor.
    # Kept memory is reused: on a quiet machine no page faults at all; under the parallel test
    # suite some kept pages were faulted in again (2/3 of them once), so the bar is relative.
    assert system["faults_per_fresh_gelu"] > 1000, system
    assert retained["faults_per_fresh_gelu"] <= 0.8 * system["faults_per_fresh_gelu"], (retained, system)


def test_the_environment_variable_turns_it_off():
    off = _probe("retain", env_value="0")
    assert off["policy"] == f"system allocator ({cpu_memory.ENV_VAR}=0)"
    assert off["faults_per_fresh_gelu"] > 1000 or not sys.platform.startswith("linux"), off
