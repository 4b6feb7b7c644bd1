"""Bring your own network: ONNX files, state dicts with their architecture, and ONNX export.

* :func:`~tightlip.interop.load.load_model`: one loader for every command (a tightlip
  checkpoint, an ``.onnx`` file, or a state dict *with* its architecture; a bare state dict is
  refused, since the order and kind of its layers cannot be read from its keys);
* :func:`~tightlip.interop.onnx_import.import_onnx`: an ONNX graph as a tightlip model, with
  input normalisation and batch normalisation folded into the neighbouring affine maps so
  every bound and radius is in the units of the raw input;
* :func:`~tightlip.interop.architecture.from_state_dict`: a state dict and a written
  architecture (``flatten,linear,relu,linear``) or a model spec JSON;
* :func:`~tightlip.interop.onnx_export.export_onnx`: any tightlip model as ONNX, checked to read
  back exactly;
* :mod:`~tightlip.interop.check`: every imported network must reproduce its source's outputs
  before it is bounded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ImportedModel", "export_onnx", "import_onnx", "load_model"]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (``onnx`` takes about a second to load)."""
    if name == "ImportedModel":
        from tightlip.interop.imported import ImportedModel

        return ImportedModel
    if name == "load_model":
        from tightlip.interop.load import load_model

        return load_model
    if name == "export_onnx":
        from tightlip.interop.onnx_export import export_onnx

        return export_onnx
    if name == "import_onnx":
        from tightlip.interop.onnx_import import import_onnx

        return import_onnx
    raise AttributeError(f"module 'tightlip.interop' has no attribute {name!r}")
