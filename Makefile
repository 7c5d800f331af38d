# HPViT-D2: make setup | make test | make demo | make pretrain | make reproduce | make reproduce-full |
#           make demo-semseg | make demo-classify | make bench
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

.PHONY: setup test demo pretrain demo-semseg demo-classify reproduce reproduce-full bench clean

setup:
	@PYTHON="$(PYTHON)" VENV="$(VENV)" TORCH_SPEC="$(TORCH_SPEC)" bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(LAB) -m hpvit_lab.demo_run

pretrain: setup
	$(LAB) -m hpvit_lab.pretrain

demo-semseg: setup
	$(LAB) -m hpvit_lab.study semseg --readme

demo-classify: setup
	$(LAB) -m hpvit_lab.study classify --readme

reproduce: setup
	$(LAB) -m hpvit_lab.study detection

reproduce-full: setup
	$(LAB) -m hpvit_lab.study detection --full

bench: setup
	$(LAB) -m hpvit_lab.bench

clean:
	rm -rf output
