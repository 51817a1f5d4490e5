"""What the real console script imports: `--help`, `--version`, usage errors and `inspect` (of a source or
of a marlin-convert output, text or JSON) start without torch (issue 15). Python itself lists the imports
(PYTHONPROFILEIMPORTTIME writes one line per imported module to stderr)."""
import json
from pathlib import Path

import pytest

from tests._support.cli import run_console

PRODUCERS = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
HEAVY = ("torch", "triton", "transformers", "huggingface_hub", "safetensors")


def _imports(*args):
    """Run the console script; its exit code, stdout, and the top-level packages it imported."""
    proc = run_console(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    names = {line.rsplit("|", 1)[1].strip().split(".")[0]
             for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    assert "marlin_convert" in names  # the listing works: our own package is in it
    return proc.returncode, proc.stdout, names


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("pack", "--help"), ("verify", "--help"),
                                  ("pack", str(PRODUCERS / "gptqmodel_sym")),  # usage error: no -o
                                  ("inspect", "--no-such-option", "x"), ("frobnicate",)],
                         ids=["help", "version", "pack-help", "verify-help", "missing-output", "bad-option", "bad-command"])
def test_help_version_and_usage_errors_import_neither_torch_nor_numpy(args):
    code, _, names = _imports(*args)
    assert code == (0 if any(a in ("--help", "--version") for a in args) else 2)
    assert not names & {*HEAVY, "numpy"}, sorted(names & {*HEAVY, "numpy"})


@pytest.mark.parametrize("producer", ["gptqmodel_actorder", "gptqmodel_asym", "transformers_gptq_v2", "autoawq_gemm",
                                      "ct_asym", "llmc_w4a16", "quanto_qint4_bf16", "autoround_gptq_sym_g32_mixed",
                                      "autoround_awq_asym"])
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_inspect_of_a_source_imports_no_torch(producer, json_out):
    code, out, names = _imports("inspect", PRODUCERS / producer, *(["--json"] if json_out else []))
    assert code == 0
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    if json_out:
        assert json.loads(out)["totals"]["eligible_layers"] > 0
    else:
        assert "eligible" in out


def test_inspect_of_an_output_and_bad_input_import_no_torch(cli, tmp_path):
    assert cli("pack", PRODUCERS / "gptqmodel_actorder", "-o", tmp_path / "out").code == 0
    code, out, names = _imports("inspect", tmp_path / "out", "--json")
    assert code == 0 and json.loads(out)["converted_from"]["format"] == "gptq"
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    code, _, names = _imports("inspect", tmp_path / "missing")
    assert code == 2 and not names & set(HEAVY)


def test_a_misspelt_gemm_backend_is_refused_without_torch(cli, tmp_path):
    """`verify OUT --gemm-backend <not a backend>` is a usage error found before any work: no torch imported."""
    assert cli("pack", PRODUCERS / "gptqmodel_sym", "-o", tmp_path / "out").code == 0
    code, _, names = _imports("verify", tmp_path / "out", "--gemm-backend", "tritn")
    assert code == 2 and not names & {"torch", "triton", "transformers"}, sorted(names & set(HEAVY))


def test_pack_does_import_torch(tmp_path):
    """The listing sees torch where it is imported: a conversion."""
    code, _, names = _imports("pack", PRODUCERS / "gptqmodel_sym", "-o", tmp_path / "out")
    assert code == 0 and "torch" in names
