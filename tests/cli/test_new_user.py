"""Issue 9: the CLI as a new user meets it, through the real `marlin-convert` console script in a subprocess.

Each test names the numbered item of the issue it covers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests._support.files import tree_hashes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
GPTQ = FIXTURES / "gptqmodel_sym"
QUANTO = FIXTURES / "quanto_qint4_fp16"


def _console_script() -> str:
    beside = Path(sys.executable).parent / "marlin-convert"
    found = str(beside) if beside.exists() else shutil.which("marlin-convert")
    assert found, "the marlin-convert console script is not installed (pip install -e .)"
    return found


def run(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`marlin-convert ARGS` in a subprocess, offline, with wide lines."""
    full_env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([_console_script(), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=timeout)


def _no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


# ----------------------------------------------------------------------------- 1. usage errors


@pytest.mark.parametrize("args, expect", [
    ([], "Usage:"),
    (["help"], "No such command"),
    (["pack", str(GPTQ)], "'-o' / '--output'"),
    (["pack", str(GPTQ), "-o"], "-o"),
    (["--bogus"], "No such option"),
    (["--install-completion"], "No such option"),
    (["inspect"], "SRC"),
])
def test_usage_errors_print_usage_and_exit_2(args, expect):
    res = run(*args)
    _no_traceback(res)
    assert res.returncode == 2, res.stderr
    assert expect in res.stdout + res.stderr
    assert "internal error" not in res.stderr and "ModuleNotFoundError" not in res.stderr


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_short_help_works_like_help(flag):
    for args in ([flag], ["pack", flag], ["verify", flag]):
        res = run(*args)
        assert res.returncode == 0 and "Usage: marlin-convert" in res.stdout, res.stderr


def test_version_short_flag():
    res = run("-V")
    assert res.returncode == 0 and "marlin-convert" in res.stdout


def test_cli_never_imports_click():
    """typer 0.29 bundles its own click; the package may import only what pyproject declares."""
    code = "import sys; sys.modules['click'] = None; sys.argv[0] = 'marlin-convert'; from marlin_convert.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", code, "pack", str(GPTQ)], capture_output=True, text=True)
    assert res.returncode == 2 and "--output" in res.stderr and "ModuleNotFoundError" not in res.stderr, res.stderr


def test_python_dash_m():
    res = subprocess.run([sys.executable, "-m", "marlin_convert", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "marlin-convert" in res.stdout, res.stderr


# ----------------------------------------------------------------------------- 2. Hugging Face cache and hub ids


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hf_cache(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """A cache laid out as huggingface_hub writes it: blobs named by hash, refs/main, snapshot links to ../../blobs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    return snapshot


def test_cache_snapshot_with_symlinks_packs(tmp_path):
    snapshot = _hf_cache(tmp_path / "hub", "org/tiny", GPTQ)
    assert (snapshot / "model.safetensors").is_symlink()
    res = run("inspect", snapshot)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    res = run("pack", snapshot, "-o", out)
    assert res.returncode == 0, res.stderr
    assert not (out / "model.safetensors").is_symlink()
    assert run("verify", snapshot, out).returncode == 0


def test_hub_id_resolves_from_the_offline_cache(tmp_path):
    cache = tmp_path / "hub"
    _hf_cache(cache, "org/tiny", GPTQ)
    res = run("pack", "org/tiny", "-o", tmp_path / "out", "--cache-dir", cache)
    assert res.returncode == 0, res.stderr
    res = run("pack", "org/tiny", "-o", tmp_path / "out2", "--revision", COMMIT, env={"HF_HUB_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr
    res = run("inspect", "org/tiny", "--cache-dir", cache, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["format"] == "gptq"


def test_unknown_hub_id_offline_is_a_clean_error(tmp_path):
    res = run("pack", "org/missing", "-o", tmp_path / "out", "--cache-dir", tmp_path / "empty")
    _no_traceback(res)
    assert res.returncode == 2 and "org/missing" in res.stderr and "HF_HUB_OFFLINE" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_link_leaving_the_cache_repo_is_refused_with_a_way_forward(tmp_path):
    snapshot = _hf_cache(tmp_path / "hub", "org/tiny", GPTQ)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("secret")
    (snapshot / "notes.txt").symlink_to(elsewhere)
    res = run("pack", snapshot, "-o", tmp_path / "out")
    _no_traceback(res)
    assert res.returncode == 2 and "points outside" in res.stderr and "--local-dir" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_local_dir_download_metadata_is_not_copied(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(GPTQ, src)
    meta = src / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "model.safetensors.metadata").write_text("abc\n123\n")
    (src / ".cache" / "huggingface" / ".gitignore").write_text("*\n")
    res = run("pack", src, "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "out" / ".cache").exists()


# ----------------------------------------------------------------------------- 3. --force


def test_force_refuses_a_foreign_folder(tmp_path):
    foreign = tmp_path / "some_dir"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    res = run("pack", GPTQ, "-o", foreign, "--force")
    _no_traceback(res)
    assert res.returncode == 2 and "not a marlin-convert output" in res.stderr, res.stderr
    assert (foreign / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["some_dir"]


def test_force_replaces_an_empty_folder_and_a_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert run("pack", GPTQ, "-o", out, "--force").returncode == 0
    assert run("pack", GPTQ, "-o", out, "--force").returncode == 0
    assert run("verify", GPTQ, out).returncode == 0


def test_force_into_the_current_directory_is_refused_cleanly(tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    for force in (["--force"], []):
        res = run("pack", GPTQ, "-o", ".", *force, cwd=here)
        _no_traceback(res)
        assert res.returncode == 2 and "busy" not in res.stderr and "current directory" in res.stderr, res.stderr
        assert list(here.iterdir()) == []


# ----------------------------------------------------------------------------- 4. exit codes


def test_unpack_of_a_non_output_is_bad_input(tmp_path):
    res = run("unpack", GPTQ, "-o", tmp_path / "back")
    _no_traceback(res)
    assert res.returncode == 2 and "not a marlin-convert output" in res.stderr, res.stderr


def test_swapped_verify_arguments_get_a_hint(tmp_path):
    out = tmp_path / "out"
    assert run("pack", GPTQ, "-o", out).returncode == 0
    res = run("verify", out, GPTQ)
    assert res.returncode == 2 and "did you mean" in res.stderr and f"verify {GPTQ} {out}" in res.stderr, res.stderr


def _plain_fp16(root: Path) -> Path:
    root.mkdir()
    gen = torch.Generator().manual_seed(9)
    save_file({"model.layers.0.mlp.down_proj.weight": torch.randn(64, 128, generator=gen).half()}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float16"}))
    return root


@pytest.mark.parametrize("strict", [False, True])
def test_plain_fp16_is_nothing_to_convert(tmp_path, strict):
    src = _plain_fp16(tmp_path / "fp16")
    res = run("pack", src, "-o", tmp_path / "out", *(["--strict"] if strict else []))
    _no_traceback(res)
    assert res.returncode == 3 and "not quantized" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 6. --json


def test_json_errors_parse(tmp_path):
    res = run("pack", tmp_path / "missing", "-o", tmp_path / "out", "--json")
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["exit_code"] == res.returncode == 2 and "schema_version" in data
    assert "no such directory" in data["error"]["message"] and data["error"]["type"]
    src = _plain_fp16(tmp_path / "fp16")
    res = run("pack", src, "-o", tmp_path / "out", "--json")
    assert json.loads(res.stdout)["exit_code"] == res.returncode == 3
    res = run("unpack", GPTQ, "-o", tmp_path / "back", "--json")
    assert json.loads(res.stdout)["exit_code"] == 2
    res = run("pack", GPTQ, "--json")  # usage error: -o missing
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["type"] == "UsageError" and "--output" in res.stderr


def test_every_report_has_a_schema_version(tmp_path):
    out = tmp_path / "out"
    for args in (["inspect", GPTQ], ["pack", GPTQ, "-o", out], ["verify", GPTQ, out], ["unpack", out, "-o", tmp_path / "b"],
                 ["inspect", out]):
        res = run(*args, "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["schema_version"] == 1


# ----------------------------------------------------------------------------- 7. stale source metadata


@pytest.mark.parametrize("fixture, stale", [(GPTQ, "quantize_config.json"), (QUANTO, "quanto_qmap.json")])
def test_source_quantization_files_are_set_aside_and_restored(tmp_path, fixture, stale):
    out, back = tmp_path / "out", tmp_path / "back"
    assert run("pack", fixture, "-o", out).returncode == 0
    assert not (out / stale).exists(), "a loader would read the source's quantization from it"
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "marlin"
    res = run("unpack", out, "-o", back)
    assert res.returncode == 0, res.stderr
    assert (back / stale).read_bytes() == (fixture / stale).read_bytes()


def test_a_changed_set_aside_file_fails_unpack(tmp_path):
    out = tmp_path / "out"
    assert run("pack", GPTQ, "-o", out).returncode == 0
    aside = next(out.rglob("quantize_config.json"))
    aside.write_text(aside.read_text().replace("128", "64"))
    res = run("unpack", out, "-o", tmp_path / "back")
    assert res.returncode == 1 and "quantize_config.json" in res.stderr and not (tmp_path / "back").exists()


# ----------------------------------------------------------------------------- 8. inspect


def test_inspect_groups_layers_and_lists_tensors_with_all(tmp_path):
    res = run("inspect", GPTQ)
    assert res.returncode == 0, res.stderr
    assert "model.layers.*.mlp.down_proj" in res.stdout and "g128" in res.stdout and " sym " in res.stdout
    assert "model.layers.0.mlp.down_proj.qweight" not in res.stdout
    assert "14 of 14 quantized layers eligible" in res.stdout
    full = run("inspect", GPTQ, "--all")
    assert "model.layers.0.mlp.down_proj.qweight" in full.stdout and "model.layers.1.mlp.down_proj.qweight" in full.stdout
    assert len(res.stdout.splitlines()) < len(full.stdout.splitlines()) / 3


def test_inspect_describes_a_marlin_output(tmp_path):
    out = tmp_path / "out"
    assert run("pack", GPTQ, "-o", out).returncode == 0
    res = run("inspect", out)
    assert res.returncode == 0, res.stderr
    assert "converted from gptq" in res.stdout and "model.layers.*.self_attn.q_proj" in res.stdout
    data = json.loads(run("inspect", out, "--json").stdout)
    assert data["converted_from"]["format"] == "gptq" and data["totals"]["eligible_layers"] == 14


# ----------------------------------------------------------------------------- 9. messages


def test_nonexistent_path_says_no_such_directory(tmp_path):
    for cmd in (["inspect", tmp_path / "nope"], ["pack", tmp_path / "nope", "-o", tmp_path / "o"],
                ["unpack", tmp_path / "nope", "-o", tmp_path / "o"], ["verify", tmp_path / "nope"]):
        res = run(*cmd)
        assert res.returncode == 2 and "no such directory" in res.stderr, (cmd, res.stderr)


@pytest.mark.parametrize("name, kind", [("model-q4_k_m.gguf", "GGUF"), ("pytorch_model.bin", ".bin")])
def test_unsupported_weight_files_are_named(tmp_path, name, kind):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(b"\0" * 64)
    (src / "config.json").write_text("{}")
    res = run("inspect", src)
    _no_traceback(res)
    assert res.returncode == 2 and kind in res.stderr and "not supported" in res.stderr and "GPTQ" in res.stderr, res.stderr


def test_plain_fp16_inspect_says_not_quantized(tmp_path):
    res = run("inspect", _plain_fp16(tmp_path / "fp16"))
    assert res.returncode == 3 and "not quantized" in res.stderr


def test_help_has_no_type_placeholders_and_quotes_install_hints():
    for cmd in ([], ["inspect"], ["pack"], ["unpack"], ["verify"]):
        res = run(*cmd, "--help")
        assert res.returncode == 0 and "<bool>" not in res.stdout, res.stdout
    assert "pip install 'marlin-convert[gpu-verify]'" in " ".join(run("verify", "--help").stdout.split())


def test_titles_do_not_break_mid_word(tmp_path):
    deep = tmp_path / ("a_rather_long_directory_name_" * 3) / "checkpoint"
    shutil.copytree(GPTQ, deep)
    res = run("inspect", deep, env={"COLUMNS": "60"})
    assert res.returncode == 0 and str(deep) in res.stdout, res.stdout


def test_one_shard_is_singular(tmp_path):
    out = tmp_path / "out"
    assert run("pack", GPTQ, "-o", out).returncode == 0
    res = run("unpack", out, "-o", tmp_path / "back")
    assert "(1 shard," in res.stdout and "1 shards" not in res.stdout, res.stdout


# ----------------------------------------------------------------------------- 10. progress from Python


def test_python_api_shows_a_tqdm_bar_when_asked(tmp_path):
    code = ("import sys; from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint; "
            "pack_checkpoint(sys.argv[1], sys.argv[2], progress=True); unpack_checkpoint(sys.argv[2], sys.argv[3], progress=True); "
            "verify_checkpoint(sys.argv[2], progress=True)")
    res = subprocess.run([sys.executable, "-c", code, str(GPTQ), str(tmp_path / "o"), str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for label in ("pack", "unpack", "verify"):
        assert f"{label}: 100%" in res.stderr, res.stderr
    quiet = subprocess.run([sys.executable, "-c", "import sys; from marlin_convert import pack_checkpoint; "
                            "pack_checkpoint(sys.argv[1], sys.argv[2])", str(GPTQ), str(tmp_path / "q")],
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# ----------------------------------------------------------------------------- 11. housekeeping

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return section.split("```", 2)[1].strip("\n")


def test_quick_start_runs_and_writes_nothing_into_the_clone(tmp_path):
    script = _block_after("## Quick start")
    assert "marlin-convert pack" in script
    before = sorted(p.name for p in REPO.iterdir())
    env = {**os.environ, "PATH": f"{Path(_console_script()).parent}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path),
           "COLUMNS": "200"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in REPO.iterdir()) == before
    assert list(tmp_path.rglob("tiny-back/model.safetensors"))


def test_install_section_gives_the_cpu_torch_command():
    install = _block_after("## Install")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in install


def test_no_committed_logs_and_one_copy_of_the_tiny_checkpoint():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.startswith("logs/")]
    assert not [f for f in tracked if f.startswith("examples/tiny-gptq/")], "a byte-identical copy of the gptqmodel_sym fixture"
