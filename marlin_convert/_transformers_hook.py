"""Register the "marlin" quantization method with transformers without importing transformers.

If transformers' quantizer registry (`transformers.quantizers.auto`) is already imported, register now;
otherwise a post-import hook on that one module registers right after it is first imported (which
`from_pretrained` does). Costs `import marlin_convert` nothing measurable and never requires transformers.
"""
from __future__ import annotations

import importlib.machinery
import sys

__all__ = ["install", "TARGET"]

TARGET = "transformers.quantizers.auto"


def _register() -> None:
    try:
        from .runtime.hf import register
    except Exception as e:  # noqa: BLE001 - an incompatible transformers must not break its own import
        import logging

        logging.getLogger("marlin_convert").warning("marlin_convert: cannot register with transformers: %s", e)
        return
    register()


class _Loader:
    """Wraps the real loader of TARGET; duck-typed (importlib.abc costs ~10 ms to import)."""

    def __init__(self, inner: object):
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        return self._inner.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._inner.exec_module(module)  # type: ignore[attr-defined]
        _register()


class _Finder:
    """A meta path finder for TARGET only (duck-typed)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # one shot: find the real spec without us, then wrap its loader
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)  # type: ignore[arg-type]
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Register now if transformers' registry is loaded, else once it is."""
    if TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
