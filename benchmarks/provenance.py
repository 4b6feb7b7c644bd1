"""What every benchmark records beside its table: the command, the commit and the hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import torch


def git_commit() -> str:
    """The short hash of HEAD, with ``+dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def hardware() -> str:
    """A one-line description of the machine that made the numbers."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {gpu}"


def command() -> str:
    return " ".join(["python", *sys.argv])
