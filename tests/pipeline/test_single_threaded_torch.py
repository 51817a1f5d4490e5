"""`single_threaded_torch`: CPU commands run torch on one thread and put the setting back; a command whose
(default or given) device is not the CPU leaves torch's threads alone."""
from __future__ import annotations

import torch

from marlin_convert.pipeline.options import single_threaded_torch


def _threads_inside(**kwargs) -> tuple[int, int]:
    @single_threaded_torch
    def on_cpu_only() -> int:
        return torch.get_num_threads()

    @single_threaded_torch
    def elsewhere_by_default(*, device: torch.device = torch.device("meta")) -> int:
        return torch.get_num_threads()

    return on_cpu_only(), elsewhere_by_default(**kwargs)


def test_cpu_commands_run_single_threaded_and_restore():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        no_device, meta_default = _threads_inside()
        assert no_device == 1  # a command without `device` (unpack) runs on the CPU
        assert meta_default == 2  # its default device is not the CPU: untouched
        assert _threads_inside(device=torch.device("cpu"))[1] == 1  # given the CPU: single-threaded
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
