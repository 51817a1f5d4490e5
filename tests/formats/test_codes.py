"""Every lazy codes view gives the same slices as the dense codes it stands for."""
import numpy as np
import pytest
import torch

from marlin_convert.formats.awq import _pack_cols, _unpack_cols
from marlin_convert.formats.codes import DenseCodes, WordsAlongNCodes, MarlinCodes, WordsAlongKCodes
from tests._support.words import pack_rows
from tests._support.reference import seed_pack
from tests._support.seeds import stable_seed

N, K = 192, 384


def _views(codes: np.ndarray):
    dense = torch.from_numpy(codes)
    ct_packed = torch.from_numpy(pack_rows(np.ascontiguousarray(codes.T)).T.copy())  # [N, K/8]
    return {
        "dense": DenseCodes(dense),
        "gptq": WordsAlongNCodes(torch.from_numpy(pack_rows(np.ascontiguousarray(codes.T))), n=N, k=K),
        "awq": WordsAlongNCodes(_pack_cols(torch.from_numpy(np.ascontiguousarray(codes.T))), n=N, k=K, unpack_rows=_unpack_cols),
        "ct": WordsAlongKCodes(ct_packed, n=N, k=K),
        "marlin": MarlinCodes(torch.from_numpy(seed_pack(codes)), n=N, k=K),
    }


@pytest.mark.parametrize("kind", ["dense", "gptq", "awq", "ct", "marlin"])
def test_views_agree_with_dense(kind):
    rng = np.random.default_rng(stable_seed("test_views_agree_with_dense", kind))
    codes = rng.integers(0, 16, size=(N, K), dtype=np.uint8)
    view = _views(codes)[kind]
    assert view.shape == (N, K)
    np.testing.assert_array_equal(view.full().numpy(), codes)
    np.testing.assert_array_equal(view.cols(128, 384).numpy(), codes[:, 128:384])
    np.testing.assert_array_equal(view.cols(8, 24).numpy(), codes[:, 8:24])
    np.testing.assert_array_equal(view.rows(64, 192).numpy(), codes[64:192])
    idx = rng.permutation(K)[:77]
    np.testing.assert_array_equal(view.take_cols(torch.from_numpy(idx)).numpy(), codes[:, idx])


@pytest.mark.parametrize("kind", ["dense", "gptq", "awq", "ct", "marlin"])
@pytest.mark.parametrize("act_order", [False, True])
def test_fast_paths_agree_with_the_reference(kind, act_order):
    rng = np.random.default_rng(stable_seed("test_fast_paths_agree_with_the_reference", kind, act_order))
    codes = rng.integers(0, 16, size=(N, K), dtype=np.uint8)
    view = _views(codes)[kind]
    perm = torch.from_numpy(rng.permutation(K)) if act_order else None
    want = codes[:, perm.numpy()] if act_order else codes
    np.testing.assert_array_equal(view.marlin_rows(128, 384, perm).numpy(), seed_pack(np.ascontiguousarray(want))[8:24])
    np.testing.assert_array_equal(view.kpacked_rows(128, 256).numpy(), pack_rows(np.ascontiguousarray(codes.T))[16:32])


def test_act_order_marlin_view_restores_input_order():
    rng = np.random.default_rng(stable_seed("test_act_order_marlin_view_restores_input_order"))
    codes = rng.integers(0, 16, size=(N, K), dtype=np.uint8)
    perm = rng.permutation(K)
    view = MarlinCodes(torch.from_numpy(seed_pack(np.ascontiguousarray(codes[:, perm]))), n=N, k=K, perm=torch.from_numpy(perm))
    np.testing.assert_array_equal(view.full().numpy(), codes)
    np.testing.assert_array_equal(view.rows(64, 128).numpy(), codes[64:128])
    np.testing.assert_array_equal(view.kpacked_rows(0, K).numpy(), pack_rows(np.ascontiguousarray(codes.T)))


@pytest.mark.parametrize("act_order", [False, True])
def test_marlin_view_waits_for_the_tile_rows_it_reads(act_order):
    """A `B` still being read (`ready`): each view asks for at least the tile rows it reads before reading them.
    Here rows arrive only when asked for (zeros until then), so a view that asked for too few gives zeros."""
    rng = np.random.default_rng(stable_seed("test_marlin_view_waits_for_the_tile_rows_it_reads", act_order))
    codes = rng.integers(0, 16, size=(N, K), dtype=np.uint8)
    perm = rng.permutation(K) if act_order else None
    stored = seed_pack(np.ascontiguousarray(codes[:, perm] if act_order else codes))
    want_words = pack_rows(np.ascontiguousarray(codes.T))

    def fresh():
        packed = torch.zeros(stored.shape, dtype=torch.int32)
        landed = [0]

        def ready(rows):
            if rows > landed[0]:
                packed[landed[0]:rows] = torch.from_numpy(stored[landed[0]:rows])
                landed[0] = rows

        view = MarlinCodes(packed, n=N, k=K, perm=None if perm is None else torch.from_numpy(perm), ready=ready)
        return view, landed

    view, landed = fresh()
    np.testing.assert_array_equal(view.kpacked_rows(0, 128).numpy(), want_words[0:16])
    assert landed[0] == (8 if not act_order else K // 16)  # only the rows it needs, without act-order
    np.testing.assert_array_equal(view.kpacked_rows(128, 256).numpy(), want_words[16:32])
    for name, call, want in (("full", lambda v: v.full(), codes), ("rows", lambda v: v.rows(64, 192), codes[64:192]),
                             ("cols", lambda v: v.cols(128, 384), codes[:, 128:384])):
        np.testing.assert_array_equal(call(fresh()[0]).numpy(), want, err_msg=name)
