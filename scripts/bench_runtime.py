"""MarlinLinear forward vs dense fp16 nn.Linear vs the bare Marlin kernel call, on Llama-70B layer shapes,
timed with CUDA graphs; and from_pretrained wall time of a converted Llama-70B-shaped checkpoint vs
building the same model dense from the source.

    PYTHONPATH=. python scripts/bench_runtime.py [--blocks 8] [--skip-load] [--skip-layers]

Needs a CUDA GPU, optimum-quanto and transformers. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _cuda_timing import graph_time_us  # scripts/, first on sys.path

SHAPES = [("q_proj / o_proj", 8192, 8192), ("gate_proj / up_proj", 28672, 8192), ("down_proj", 8192, 28672)]
BATCHES = (1, 16, 64)


def layer_bench() -> None:
    from marlin_convert.layout import pack, permute_scales
    from marlin_convert.runtime import LayerSpec, MarlinLinear
    from marlin_convert.runtime.backends import _quanto_state

    dev = torch.device("cuda")
    print("| layer (N x K) | batch | dense fp16 (µs) | bare kernel (µs) | MarlinLinear (µs) | bare / MarlinLinear | dense / MarlinLinear | rel err vs dense |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, k in SHAPES:
        g = torch.Generator(device=dev).manual_seed(0)
        codes = torch.randint(0, 16, (n, k), generator=g, device=dev, dtype=torch.uint8)
        scales = (torch.rand(k // 128, n, generator=g, device=dev) * 0.01 + 0.001).half()
        layer = MarlinLinear(k, n, LayerSpec(128, None, False, "float16"), device=dev)
        layer.B.copy_(pack(codes))
        layer.s.copy_(permute_scales(scales, group_size=128, k=k))
        dense = torch.nn.Linear(k, n, bias=False, device=dev, dtype=torch.float16)
        with torch.no_grad():
            dense.weight.copy_(((codes.float() - 8) * scales.float().repeat_interleave(128, 0).t()).half())
        del codes
        for m in BATCHES:
            x = torch.randn(m, k, device=dev, dtype=torch.float16)
            with torch.no_grad():
                layer(x)  # choose the backend and derive its state outside the graph
                st = _quanto_state(layer, dev)
                out = torch.empty(m, n, device=dev, dtype=torch.float16)

                def bare():
                    st.lib.marlin_gemm_f16i4(x, layer.B, out, st.s, st.sz, st.workspace, -1, -1, -1, 16)

                td = graph_time_us([lambda: dense(x)], reps=5, inner=50)
                tb = graph_time_us([bare], reps=5, inner=50)
                tm = graph_time_us([lambda: layer(x)], reps=5, inner=50)
                err = float((layer(x).float() - dense(x).float()).norm() / dense(x).float().norm())
            print(f"| {label} ({n} x {k}) | {m} | {td:.1f} | {tb:.1f} | {tm:.1f} | {tb / tm:.2f} | {td / tm:.2f}× | {err:.1e} |", flush=True)
        del dense, layer
        torch.cuda.empty_cache()


def load_bench(blocks: int) -> None:
    import marlin_convert  # noqa: F401
    from marlin_convert import pack_checkpoint
    from marlin_convert.runtime.forward_check import dense_from_source
    from tests.runtime.helpers import write_random_llama_gptq
    from transformers import AutoModelForCausalLM

    root = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        t = time.perf_counter()
        write_random_llama_gptq(root / "src", layers=blocks, hidden=8192, intermediate=28672, heads=64, kv_heads=8,
                                vocab=32000)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        pack_checkpoint(root / "src", root / "out", device="cuda")
        t_pack = time.perf_counter() - t
        torch.cuda.synchronize()
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(str(root / "out"), dtype=torch.float16).cuda()
        torch.cuda.synchronize()
        t_marlin = time.perf_counter() - t
        mem_marlin = torch.cuda.memory_allocated() / 2**30
        del model
        torch.cuda.empty_cache()
        t = time.perf_counter()
        dense = dense_from_source(root / "src", torch.float16, torch.device("cuda"))
        torch.cuda.synchronize()
        t_dense = time.perf_counter() - t
        mem_dense = torch.cuda.memory_allocated() / 2**30
        del dense
        print(f"\n{blocks}-block Llama-70B-shaped model (hidden 8192, intermediate 28672, vocab 32000); "
              f"source written in {t_write:.1f} s, packed on the GPU in {t_pack:.1f} s (page cache warm for both loads)")
        print("| load | wall time (s) | GPU memory after (GiB) |\n|---|---|---|")
        print(f"| converted: from_pretrained(..., dtype=float16).cuda() | {t_marlin:.1f} | {mem_marlin:.1f} |")
        print(f"| dense from source (decode + dequantize on the GPU, then load_state_dict) | {t_dense:.1f} | {mem_dense:.1f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-layers", action="store_true")
    args = ap.parse_args()
    import transformers

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, transformers {transformers.__version__}\n")
    if not args.skip_layers:
        layer_bench()
    if not args.skip_load:
        load_bench(args.blocks)


if __name__ == "__main__":
    main()
