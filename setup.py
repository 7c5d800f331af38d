from setuptools import find_packages, setup

setup(
    name="hpvit_d2",
    version="0.2.0",
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
        "transformers>=4.40",
    ],
    entry_points={
        "console_scripts": [
            "hpvit-train=hpvit_d2.cli.train:entry",
            "hpvit-demo=hpvit_d2.cli.demo:entry",
            "hpvit-convert=hpvit_d2.cli.convert:entry",
            "hpvit-bench=hpvit_d2.cli.bench:entry",
            "hpvit-summary=hpvit_d2.cli.summary:entry",
            "hpvit-demo-run=hpvit_d2.cli.demo_run:entry",
            "hpvit-reproduce=hpvit_d2.cli.reproduce:entry",
            "hpvit-pretrain-mae=hpvit_d2.cli.pretrain_mae:entry",
            "hpvit-export=hpvit_d2.cli.export:entry",
            "hpvit-browse=hpvit_d2.cli.browse:entry",
            "hpvit-classify=hpvit_d2.cli.classify:entry",
            "hpvit-demo-semseg=hpvit_d2.cli.demo_semseg:entry",
            "hpvit-demo-classify=hpvit_d2.cli.demo_classify:entry",
        ],
    },
)
