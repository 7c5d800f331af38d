# HPViT-D2: make setup | make test | make demo | make demo-semseg | make demo-classify | make reproduce | make bench
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
# The lab (projects/HPViT/hpvit_lab): experiment harnesses beside the library, not in its wheel.
LAB := PYTHONPATH=projects/HPViT $(PY)
# Two pytest-xdist workers, one per core; a test file stays on one worker (module fixtures once),
# and the files go out in collection order, longest first (tests/conftest.py: FILE_SECONDS).
TEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

export PYTHONWARNINGS ?= ignore::FutureWarning,ignore::UserWarning

.PHONY: setup test demo demo-semseg demo-classify reproduce bench clean

setup:
	@PYTHON="$(PYTHON)" VENV="$(VENV)" TORCH_SPEC="$(TORCH_SPEC)" bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(LAB) -m hpvit_lab.demo_run

demo-semseg: setup
	$(LAB) -m hpvit_lab.demo_semseg

demo-classify: setup
	$(LAB) -m hpvit_lab.demo_classify

reproduce: setup
	$(LAB) -m hpvit_lab.reproduce

bench: setup
	$(LAB) -m hpvit_lab.bench

clean:
	rm -rf output
