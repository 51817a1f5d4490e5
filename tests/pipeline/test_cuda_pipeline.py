"""The CUDA pipeline writes exactly the CPU pipeline's files (marked `cuda`: skipped without a GPU)."""
import pytest

from marlin_convert import pack_checkpoint, unpack_checkpoint
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.files import tree_hashes


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.cuda
def test_pipeline_cuda_writes_the_cpu_bytes(tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src, sym=False, act_order=True, shards=3, bias=True, ineligible=True)
    pack_checkpoint(src, tmp_path / "cpu", device="cpu")
    report = pack_checkpoint(src, tmp_path / "cuda", device="cuda")
    assert report.device == "cuda"
    cpu, gpu = _files(tmp_path / "cpu"), _files(tmp_path / "cuda")
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        if name.endswith(".safetensors"):
            assert cpu[name] == gpu[name], name


@pytest.mark.cuda
def test_whole_checkpoint_is_byte_identical_on_cpu_and_cuda(tmp_path):
    """Determinism across devices: every output file, manifest included, is the same from either path."""
    make_gptq_checkpoint(tmp_path / "src", sym=False, act_order=True, shards=3, bias=True, ineligible=True)
    pack_checkpoint(tmp_path / "src", tmp_path / "cpu", device="cpu", jobs=1)
    pack_checkpoint(tmp_path / "src", tmp_path / "cuda", device="cuda", jobs=4)
    assert tree_hashes(tmp_path / "cpu") == tree_hashes(tmp_path / "cuda")
    unpack_checkpoint(tmp_path / "cuda", tmp_path / "back")
    unpack_checkpoint(tmp_path / "cpu", tmp_path / "back_cpu")
    assert tree_hashes(tmp_path / "back") == tree_hashes(tmp_path / "back_cpu")
