"""
Data for HPViT-D2: the embedded shapes dataset (``hpvit_d2.data.shapes``), checked COCO and
Cityscapes loading, and a dataset mapper that handles or rejects bad images and annotations.

Submodules are imported explicitly (``import hpvit_d2.data.shapes`` registers the shapes dataset).
"""
