"""Test-side helpers shared by the tests and the benchmarks in scripts/, each written once.

- `reference`: the seed's pack/unpack and vLLM's scale/zero-point permutations, restated independently.
- `words`: AutoGPTQ's int32 word packing (qweight rows, qzeros columns), restated.
- `checkpoints`: synthetic checkpoints with their ground truth, written by the official safetensors writer.
- `cli`: the `marlin-convert` CLI run in process.
- `files`: hashes of a directory tree (to prove an input was left untouched).
- `seeds`: stable seeds for parametrized cases (`hash()` of a string changes between runs).
- `ptx_emulation`: Triton's CPU interpreter with the GEMM kernels' inline PTX emulated (needs Triton).

None of it imports from the package under test, except `cli`, which runs it.
"""
