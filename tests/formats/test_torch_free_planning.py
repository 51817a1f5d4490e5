"""Planning without torch (issue 15) plans what planning with torch planned: the dtype size table against
torch's own item sizes, `LayerPlan.scale_dtype` as a torch dtype whichever way it was set, and every
producer fixture planned from numpy arrays (`Checkpoint.read_array`, what `inspect` and `pack` use) and from
torch tensors (`Checkpoint.read`, what a caller of `Format.plan` may pass)."""
from pathlib import Path

import pytest
import torch

from marlin_convert.checkpoint import open_checkpoint
from marlin_convert.dtypes import DTYPE_NAMES, DTYPE_SIZES, TORCH_DTYPES
from marlin_convert.formats import MARKER_FILES, FormatContext, LayerPlan, detect_format
from marlin_convert.formats.plan_json import plan_from_json, plan_to_json

PRODUCERS = Path(__file__).resolve().parents[1] / "fixtures" / "producers"


def test_dtype_sizes_are_torch_item_sizes():
    assert set(TORCH_DTYPES) == set(DTYPE_SIZES)  # torch 2.13 has every safetensors dtype we know
    assert {name: dt.itemsize for name, dt in TORCH_DTYPES.items()} == DTYPE_SIZES
    assert DTYPE_NAMES[torch.bfloat16] == "BF16" and TORCH_DTYPES["F16"] is torch.float16


def test_scale_dtype_reads_as_a_torch_dtype_however_it_was_set():
    plan = LayerPlan(prefix="l", format="gptq", sources={})
    assert plan.scale_dtype is torch.float16 and plan.scale_dtype_name == "F16"
    plan.scale_dtype = "BF16"
    assert plan.scale_dtype is torch.bfloat16
    plan.scale_dtype = torch.float32
    assert plan.scale_dtype_name == "F32"
    assert LayerPlan(prefix="l", format="gptq", sources={}, scale_dtype=torch.bfloat16) == \
        LayerPlan(prefix="l", format="gptq", sources={}, scale_dtype="BF16")
    data = plan_to_json(plan)
    assert data["scale_dtype"] == "F32" and plan_from_json(data) == plan
    with pytest.raises(KeyError):
        plan.scale_dtype = "F17"


@pytest.mark.parametrize("producer", sorted(p.name for p in PRODUCERS.iterdir() if p.is_dir()))
def test_plans_from_numpy_arrays_and_from_torch_tensors_are_equal(producer):
    with open_checkpoint(PRODUCERS / producer, marker_files=MARKER_FILES) as ckpt:
        ctx = FormatContext(config=ckpt.config, json_files=ckpt.json_files, tensors=ckpt.specs())
        fmt = detect_format(ctx)
        from_arrays, from_tensors = fmt.plan(ctx, ckpt.read_array), fmt.plan(ctx, ckpt.read)
    assert from_arrays == from_tensors
    assert from_arrays.layers
