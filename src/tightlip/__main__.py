"""``python -m tightlip``: the command line, as ``torchrun ... -m tightlip train ...`` runs it
on every process of a distributed run."""

from tightlip.cli import app

if __name__ == "__main__":
    app(prog_name="tightlip")
