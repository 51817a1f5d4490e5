"""The GEMMs `verify --gemm` can run, named once for the pipeline (which refuses a wrong `--gemm-backend` before
any work, without importing torch) and for `runtime.gemm_check` (which runs them; runtime may not import the
pipeline)."""
from __future__ import annotations

from .errors import MarlinConvertError

__all__ = ["GEMM_BACKENDS", "check_gemm_backend"]

GEMM_BACKENDS = ("quanto", "triton")


def check_gemm_backend(backend: str) -> None:
    """MarlinConvertError unless `backend` is one of `GEMM_BACKENDS`."""
    if backend not in GEMM_BACKENDS:
        raise MarlinConvertError(f"unknown GEMM backend {backend!r}; choose one of {', '.join(GEMM_BACKENDS)}")
