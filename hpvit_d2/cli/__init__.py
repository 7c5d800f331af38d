"""
The commands (argument parsing and messages over library calls). Nothing in the library imports
this package. Each module has a ``main(argv) -> exit code`` and an ``entry()`` for setup.py's
console scripts; ``projects/HPViT/*.py`` are the detectron2-style scripts that call them.
"""
