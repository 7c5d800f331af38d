import re
from pathlib import Path

from setuptools import find_packages, setup

# One version: the package's own __version__; one set of pins: requirements.txt's runtime section.
_REQUIREMENTS = (Path(__file__).parent / "requirements.txt").read_text().split("\n# lab")[0]
RUNTIME_REQUIREMENTS = [line.strip() for line in _REQUIREMENTS.splitlines()
                        if line.strip() and not line.startswith("#")]
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (Path(__file__).parent / "hpvit_d2" / "__init__.py").read_text()).group(1)

setup(
    name="hpvit_d2",
    version=VERSION,
    description="Hierarchical plain Vision Transformers (HPViT) for Detectron2",
    packages=find_packages(include=["hpvit_d2", "hpvit_d2.*"]),
    # The LazyConfigs and yacs files ship in the wheel: model_zoo finds them by name.
    package_data={"hpvit_d2": ["configs/*.py", "configs/*/*.py", "configs/*/*.yaml"]},
    python_requires=">=3.9",
    # detectron2 is not on PyPI and cannot be declared here: see README ("Installation"). Its
    # own dependencies are, with the pins of requirements.txt (its runtime section).
    install_requires=["torch>=2.0", "torchvision>=0.15", *RUNTIME_REQUIREMENTS],
    extras_require={"lab": ["transformers>=4.40", "scipy>=1.10"], "onnx": ["onnx>=1.15", "onnxruntime>=1.17"]},
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
