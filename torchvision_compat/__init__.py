"""Import torchvision where its compiled ops do not match the installed torch.

torchvision's PyPI build can import against a CPU torch whose C++ ABI its `_C`
extension does not fit. Its ops then never get registered, and
`torchvision/_meta_registrations.py` fails at import with
``RuntimeError: operator torchvision::nms does not exist``, which breaks
``import torch_fidelity`` and ``import open_clip`` (neither uses those ops).

`ensure_torchvision()` imports torchvision; only on that exact error does it declare
the schemas of the two ops registered unconditionally (``nms``, ``qnms``), without
kernels, and import again. Calling those ops still fails, loudly. Wherever torchvision
loads normally this does nothing.

It is its own top-level package, below `samplers` and `metrics` (which call
`ensure_torchvision()` right before importing open_clip / torch_fidelity), so that neither
needs anything from a higher package. Importing it is cheap: nothing happens until the call.
"""

from __future__ import annotations

import sys

_MISSING_OP = "operator torchvision::nms does not exist"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the schema declarations alive
patched = False  # True once the fallback was needed


def ensure_torchvision() -> None:
    """Import torchvision, declaring its two unconditional op schemas only if they are missing."""
    global _library, patched
    try:
        import torchvision

        return
    except RuntimeError as error:
        if _MISSING_OP not in str(error):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS.values():
        _library.define(schema)
    patched = True
    import torchvision  # noqa: F401
