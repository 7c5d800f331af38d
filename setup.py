import re
from pathlib import Path

from setuptools import find_packages, setup

# One version: the package's own __version__.
VERSION = re.search(r'__version__ = "([^"]+)"', (Path(__file__).parent / "hpvit_d2" / "__init__.py").read_text()).group(1)

setup(
    name="hpvit_d2",
    version=VERSION,
    description="Hierarchical plain Vision Transformers (HPViT) for Detectron2",
    packages=find_packages(include=["hpvit_d2", "hpvit_d2.*"]),
    # The LazyConfigs and yacs files ship in the wheel: model_zoo finds them by name.
    package_data={"hpvit_d2": ["configs/*.py", "configs/*/*.py", "configs/*/*.yaml"]},
    python_requires=">=3.9",
    # detectron2 is not on PyPI and cannot be pinned here: see README ("Installing detectron2").
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy>=1.24",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "pycocotools>=2.0.6",
        "cityscapesscripts>=2.2",
        "shapely>=2.0",
        "opencv-python-headless>=4.8",
        "matplotlib>=3.6",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "timm>=0.9",
        "tqdm>=4.29",
        "safetensors>=0.4",
    ],
    # The lab's MAE pre-training (projects/HPViT/hpvit_lab, make reproduce) uses transformers;
    # Hugging Face checkpoint directories load without it.
    extras_require={"lab": ["transformers>=4.40"]},
    entry_points={
        "console_scripts": [
            "hpvit-train=hpvit_d2.cli.train:entry",
            "hpvit-demo=hpvit_d2.cli.demo:entry",
            "hpvit-convert=hpvit_d2.cli.convert:entry",
            "hpvit-export=hpvit_d2.cli.export:entry",
            "hpvit-browse=hpvit_d2.cli.browse:entry",
            "hpvit-classify=hpvit_d2.cli.classify:entry",
        ],
    },
)
