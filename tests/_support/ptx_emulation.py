"""Triton's CPU interpreter (`TRITON_INTERPRET=1`) with the Triton GEMM's inline PTX emulated in numpy, so its
kernels run on a machine without a GPU (issue #13: check a kernel change before spending device time on it).

Triton 3.6's interpreter raises on `tl.inline_asm_elementwise`; `install()` replaces that builder method with
an emulation of the PTX the GEMM's kernels issue (`_triton_gemm_kernels`: the dequantization asm, `_settled`'s
`mov`): `prmt.b32`, `mov.b32` (immediates, registers, and `{lo, hi}` unpacking), `shr.b32`, `lop3.b32`,
`sub.f16x2`, `mul.f16x2`, `fma.rn.f16x2`, `fma.rn.bf16x2`, `add.f16`, `cvt.f32.f16`, `add.f32` (the GEMV
prototype's, `scripts/gemv_prototype.py`), `mul.f32` and `cvt.rn.f16x2.f32` (the GEMV's bfloat16 x), element by
element (pack 1). Half-precision arithmetic is done in float64 and rounded once to
nearest even, as the hardware does for fp16; bf16 results are rounded through float32, which can round twice only
where the float64 value needs more than 24 bits (not for the symmetric and zero-point decodes, whose products are
exact). Anything else raises `NotImplementedError` naming the line.
`install()` also widens bfloat16 operands of `tl.dot`, which the interpreter would multiply as their raw bits.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

__all__ = ["install", "run_asm"]

_U32 = np.uint32


def _f16(bits: np.ndarray) -> np.ndarray:
    return (bits & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64)


def _bf16(bits: np.ndarray) -> np.ndarray:
    return ((bits & 0xFFFF).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _to_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).view(np.uint16).astype(_U32)


def _to_bf16(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(_U32) & 0xFFFF
    return np.where(nan, _U32(0x7FC0), r)


def _lanes(op, *regs: np.ndarray, unpack, pack) -> np.ndarray:
    lo = pack(op(*(unpack(r) for r in regs)))
    hi = pack(op(*(unpack(r >> 16) for r in regs)))
    return (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)


def _lop3(a: np.ndarray, b: np.ndarray, c: np.ndarray, lut: int) -> np.ndarray:
    out = np.zeros_like(a)
    for i in range(8):
        if lut >> i & 1:
            out |= (a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)
    return out


def _prmt(a: np.ndarray, b: np.ndarray, sel: int) -> np.ndarray:
    src = (a.astype(np.uint64) | (b.astype(np.uint64) << 32))
    out = np.zeros_like(a)
    for byte in range(4):
        nib = sel >> (4 * byte) & 0xF
        if nib & 8:
            raise NotImplementedError("prmt sign replication")
        out |= (((src >> (8 * nib)) & 0xFF).astype(_U32)) << (8 * byte)
    return out


def run_asm(asm: str, n_out: int, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The 32-bit registers `$0 .. $(n_out - 1)` after running `asm` with `$n_out ..` holding `inputs` (uint32
    arrays of one shape)."""
    regs: dict[str, np.ndarray] = {f"${n_out + i}": np.asarray(v, dtype=_U32) for i, v in enumerate(inputs)}
    shape = np.broadcast(*regs.values()).shape if regs else ()

    def val(tok: str) -> np.ndarray:
        tok = tok.strip()
        if tok in regs:
            return regs[tok]
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", tok):
            return np.full(shape, int(tok, 0) & 0xFFFFFFFF, dtype=_U32)
        raise NotImplementedError(f"unknown operand {tok!r}")

    for raw in asm.replace("{\n", "\n").split(";"):
        line = raw.strip().strip("{}").strip()
        if not line or line.startswith(".reg"):
            continue
        op, _, rest = line.partition(" ")
        if op == "mov.b32" and rest.lstrip().startswith("{"):
            dst, src = rest.split("}")
            lo, hi = (t.strip() for t in dst.strip(" {").split(","))
            v = val(src.strip(" ,"))
            regs[lo], regs[hi] = v & 0xFFFF, v >> 16
            continue
        args = [t.strip() for t in rest.split(",")]
        d, srcs = args[0], args[1:]
        if op == "mov.b32":
            regs[d] = val(srcs[0]).copy()
        elif op == "shr.b32":
            regs[d] = val(srcs[0]) >> _U32(int(srcs[1], 0))
        elif op == "lop3.b32":
            regs[d] = _lop3(val(srcs[0]), val(srcs[1]), val(srcs[2]), int(srcs[3], 0))
        elif op == "prmt.b32":
            regs[d] = _prmt(val(srcs[0]), val(srcs[1]), int(srcs[2], 0))
        elif op == "sub.f16x2":
            regs[d] = _lanes(lambda x, y: x - y, val(srcs[0]), val(srcs[1]), unpack=_f16, pack=_to_f16)
        elif op == "fma.rn.f16x2":
            regs[d] = _lanes(lambda x, y, z: x * y + z, *(val(s) for s in srcs), unpack=_f16, pack=_to_f16)
        elif op == "mul.f16x2":
            regs[d] = _lanes(lambda x, y: x * y, val(srcs[0]), val(srcs[1]), unpack=_f16, pack=_to_f16)
        elif op == "add.f16":
            regs[d] = _to_f16(_f16(val(srcs[0])) + _f16(val(srcs[1])))
        elif op == "cvt.f32.f16":
            regs[d] = _f16(val(srcs[0]) & 0xFFFF).astype(np.float32).view(_U32)
        elif op == "add.f32":
            regs[d] = (val(srcs[0]).view(np.float32) + val(srcs[1]).view(np.float32)).view(_U32)
        elif op == "mul.f32":
            regs[d] = (val(srcs[0]).view(np.float32) * val(srcs[1]).view(np.float32)).view(_U32)
        elif op == "cvt.rn.f16x2.f32":  # the first source to the upper half
            hi, lo = (val(s).view(np.float32).astype(np.float64) for s in srcs)
            regs[d] = (_to_f16(hi) << 16) | _to_f16(lo)
        elif op == "fma.rn.bf16x2":
            regs[d] = _lanes(lambda x, y, z: x * y + z, *(val(s) for s in srcs), unpack=_bf16, pack=_to_bf16)
        else:
            raise NotImplementedError(f"PTX not emulated: {line!r}")
    return [regs[f"${i}"] for i in range(n_out)]


def _to_reg(data: np.ndarray) -> np.ndarray:
    if data.dtype.itemsize == 2:
        return data.view(np.uint16).astype(_U32)
    if data.dtype.itemsize == 4:
        return data.view(np.uint32)
    raise NotImplementedError(f"inline asm operand of {data.dtype}")


def _from_reg(reg: np.ndarray, np_dtype: np.dtype) -> np.ndarray:
    if np_dtype.itemsize == 2:
        return (reg & 0xFFFF).astype(np.uint16).view(np_dtype)
    return reg.astype(np.uint32).view(np_dtype)


class _Call:
    def __init__(self, results: list[Any]) -> None:
        self.results = results

    def get_result(self, i: int) -> Any:
        return self.results[i]


def install() -> None:
    """Make the interpreter's `create_inline_asm` run `run_asm` (pack 1 only)."""
    import triton.language as tl
    from triton.runtime import interpreter

    def create_inline_asm(self, inline_asm, constraints, values, types, is_pure, pack):
        if pack != 1:
            raise NotImplementedError("inline asm with pack > 1")
        n_out = sum(c.strip().startswith("=") for c in constraints.split(","))
        shape = np.broadcast(*(v.data for v in values)).shape
        regs = run_asm(inline_asm, n_out, [np.broadcast_to(_to_reg(v.data), shape) for v in values])
        out = []
        for reg, ty in zip(regs, types):
            scalar = getattr(ty, "element_ty", ty)
            out.append(interpreter.TensorHandle(_from_reg(reg, interpreter._get_np_dtype(scalar)), scalar))
        return _Call(out)

    interpreter.InterpreterBuilder.create_inline_asm = create_inline_asm
    dot = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        # Triton 3.6's interpreter multiplies bfloat16 operands as their raw uint16 bits: widen them first
        def widened(h):
            if h.dtype != tl.bfloat16:
                return h
            return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

        return dot(self, widened(a), widened(b), d, input_precision, max_num_imprecise_acc)

    interpreter.InterpreterBuilder.create_dot = create_dot
