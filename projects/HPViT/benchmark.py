#!/usr/bin/env python
"""
Speed and memory of HPViT-B against detectron2's ViT-B / ViTDet-B, in one run on this machine.

    python projects/HPViT/benchmark.py                      # 512 and 1024, 3 runs, 2 threads
    python projects/HPViT/benchmark.py --sizes 512 --runs 5 --parts backbone
    python projects/HPViT/benchmark.py --device cuda --amp  # CUDA, bf16 autocast

Prints the table and writes benchmark.{json,md,png} to --out (default output/benchmark).
See projects/HPViT/hpvit_lab/bench.py for what is measured and how.
"""
from hpvit_lab.bench import entry

if __name__ == "__main__":
    entry()
