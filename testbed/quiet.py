"""Importing pybullet without its banner: its C module prints its build time when first imported."""

from __future__ import annotations

import importlib
import os
import sys


def import_pybullet_quietly() -> None:
    """Import pybullet with stdout and stderr sent to /dev/null for the moment, keeping the terminal for results."""
    if "pybullet" in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            importlib.import_module("pybullet")
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
