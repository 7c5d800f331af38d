"""``python -m hpvit_d2.convert``: the checkpoint converter command (:mod:`hpvit_d2.cli.convert`)
at its documented name. Importing this module imports no command code."""

if __name__ == "__main__":
    from hpvit_d2.cli.convert import entry

    entry()
