#!/usr/bin/env python
"""
Export a trained model (TorchScript of the detector, ONNX of the backbone), checked against eager,
with detectron2's tools/deploy/export_model.py flags.

    python projects/HPViT/export.py --config-file mask_rcnn_hpvit_tiny.py --weights model_final.pth \
        --sample-image photo.jpg --format torchscript --export-method tracing --output exported/

See hpvit_d2/cli/export.py.
"""
from hpvit_d2.cli.export import entry

if __name__ == "__main__":
    entry()
