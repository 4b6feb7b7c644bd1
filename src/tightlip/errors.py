"""One error root: every error that a user's input can cause is a :class:`TightlipError`.

The command line turns exactly these into a one-line message and exit code 2. Anything else
(an ``AssertionError``, a ``RuntimeError`` from a kernel, a :class:`SoundnessError`) is a bug
in tightlip and keeps its traceback.

Each class also derives from the builtin exception that fits it (``ValueError``,
``FileNotFoundError``, ``TypeError``), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class TightlipError(Exception):
    """Root of every error caused by what a user passed in (data, files, models, options)."""


class BadArgumentError(TightlipError, ValueError):
    """An option or argument has a value tightlip cannot use (the message names it)."""


class UnknownNameError(BadArgumentError):
    """A name (method, activation, loss, ...) that no registry holds; lists the choices."""


class NormError(BadArgumentError):
    """A norm other than 1, 2 or inf."""


class DatasetError(TightlipError):
    """A dataset is missing, corrupt, or has the wrong shape, range or labels."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No dataset directory was found; the message names every place looked."""


class CheckpointError(TightlipError, ValueError):
    """A checkpoint is missing, corrupt, or does not match its description."""


class ModelShapeError(TightlipError, ValueError):
    """Layer shapes do not fit together, or an input has the wrong shape."""


class UnsupportedLayerError(TightlipError, TypeError):
    """The model contains a layer that tightlip cannot reason about."""


class MethodNotApplicableError(TightlipError, ValueError):
    """A method cannot handle this model or norm (the message says why)."""


class SoundnessError(AssertionError):
    """A certified claim was contradicted (an attack broke a certified point): a bug.

    Deliberately *not* a :class:`TightlipError`: it is never the user's fault.
    """
