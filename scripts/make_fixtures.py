#!/usr/bin/env python3
"""Regenerate the genuine int4 producer fixtures under tests/fixtures/producers/.

Every fixture is written by the real quantization library from a tiny random Llama
(hidden 256, intermediate 512, 2 layers, 4 heads, 4 kv heads, vocab 1000) that is
built locally from a config (nothing is downloaded).  Calibration data are random
token ids from a fixed seed.  lm_head is never quantized, so every quantized Linear
has N % 64 == 0 and K % 128 == 0.

Usage (one virtualenv per producer; run the script with that venv's python):

    python scripts/make_fixtures.py --producer NAME --out DIR

NAME is one of the fixture names below; DIR is (re)created (an existing DIR is
removed first, but only if it is empty or holds a config.json), normally
tests/fixtures/producers/NAME.

Environment setup, exactly as run (CPU-only, 2 cores, Python 3.11.7; pip finds
the CPU torch wheel in /opt/wheels).  Every venv gets the CPU torch first, then
everything else is installed under a constraints file so that nothing can pull a
CUDA torch:

    mkdir -p /tmp/venvs && echo 'torch==2.13.0' > /tmp/venvs/constraints.txt
    # for each V in ct quanto llmc gptqmodel awq:
    python3 -m venv /tmp/venvs/$V
    /tmp/venvs/$V/bin/pip install torch==2.13.0        # -> torch 2.13.0+cpu
    export PIP_CONSTRAINT=/tmp/venvs/constraints.txt
    # then, per venv:
    /tmp/venvs/ct/bin/pip        install compressed-tensors==0.20.0 transformers
    /tmp/venvs/quanto/bin/pip    install optimum-quanto==0.2.7 transformers
    /tmp/venvs/llmc/bin/pip      install llmcompressor==0.14.0.1
    /tmp/venvs/gptqmodel/bin/pip install gptqmodel==7.6.0
    /tmp/venvs/gptqmodel/bin/pip install optimum==2.3.0   # for transformers' GPTQConfig route
    /tmp/venvs/awq/bin/pip       install autoawq==0.2.9
    # AutoRound (issue 14), in the worktree: python3 -m venv .venv-ar, torch first, then
    .venv-ar/bin/pip install torch==2.13.0 && PIP_CONSTRAINT=/tmp/venvs/constraints.txt .venv-ar/bin/pip install auto-round==0.16.1

Resolved versions seen: transformers 5.24.0 in ct, quanto, gptqmodel and awq;
llmcompressor 0.14.0.1 pulls transformers 5.17.0 and compressed-tensors 0.19.0
(not 0.20.0); safetensors 0.8.0, tokenizers 0.23.3, accelerate 1.15.0.

Producer -> venv:

    gptqmodel_sym, gptqmodel_asym, gptqmodel_actorder, transformers_gptq_v2 -> gptqmodel
        (needs GPTQMODEL_CPU_WORKERS=2 on a 2-core box; the script sets it if unset)
    autoawq_gemm                                  -> awq
    ct_sym, ct_asym                               -> ct
    llmc_w4a16, llmc_w4a16_asym                   -> llmc
    quanto_qint4_fp16, quanto_qint4_bf16          -> quanto
    autoround_*                                   -> .venv-ar (auto-round 0.16.1, transformers 5.24.0);
        smaller model (SMALL_LLAMA), RTN iters=0; see tests/fixtures/producers/README.md section 7

All fixtures (about 2 minutes in total; GPTQModel JIT-builds a C++ packer on its first run):

    cd /work/main
    F=tests/fixtures/producers
    for p in ct_sym ct_asym; do /tmp/venvs/ct/bin/python scripts/make_fixtures.py --producer $p --out $F/$p; done
    for p in llmc_w4a16 llmc_w4a16_asym; do /tmp/venvs/llmc/bin/python scripts/make_fixtures.py --producer $p --out $F/$p; done
    for p in quanto_qint4_fp16 quanto_qint4_bf16; do /tmp/venvs/quanto/bin/python scripts/make_fixtures.py --producer $p --out $F/$p; done
    for p in gptqmodel_sym gptqmodel_asym gptqmodel_actorder transformers_gptq_v2; do
        GPTQMODEL_CPU_WORKERS=2 /tmp/venvs/gptqmodel/bin/python scripts/make_fixtures.py --producer $p --out $F/$p; done
    /tmp/venvs/awq/bin/python scripts/make_fixtures.py --producer autoawq_gemm --out $F/autoawq_gemm
    for p in autoround_gptq_sym autoround_gptq_sym_g32_mixed autoround_gptq_asym autoround_awq_asym \
             autoround_awq_asym_g64_bf16 autoround_awq_sym autoround_plain_asym_mixed autoround_plain_asym_model_free \
             autoround_gptqmodel_asym autoround_gptqmodel_sym_g32 autoround_export_gptq autoround_export_awq \
             autoround_export_awq_sym autoround_export_gptq_mixed; do
        .venv-ar/bin/python scripts/make_fixtures.py --producer $p --out $F/$p; done

Reproducibility (checked by regenerating every fixture twice): all *.safetensors
are byte-identical on rerun.  GPTQModel's config.json / quantize_config.json
differ between runs only in meta.offload_to_disk_path (a random temp dir), and
its quant_log.csv in the timing column.  AutoAWQ was NOT reproducible with 2
torch threads (a few hundred codes in the MLP layers changed between runs), so
the AWQ producer sets torch.set_num_threads(1).

After writing, the script prints a summary (tensor names/dtypes/shapes of
model.layers.0.mlp.down_proj.*, quantization_config keys, first qzeros words).
`--inspect DIR` prints that summary for an existing fixture (needs only
torch + safetensors).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

# nothing may be fetched from a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_SEED = 0
CALIB_SEED = 1234
N_CALIB = 16
CALIB_LEN = 64

# Files that are large and not needed by a decoder; removed from the fixture after saving.
DROP_FILES = {"tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt"}


# ---------------------------------------------------------------------------------------------
# common helpers


def _dtype(name):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def build_model(dtype_name: str, **sizes):
    """The tiny random Llama, deterministic for a given dtype; `sizes` overrides config fields
    (the AutoRound fixtures use SMALL_LLAMA to stay small)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(MODEL_SEED)
    fields = dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=1000,
        max_position_embeddings=256,
    )
    cfg = LlamaConfig(**{**fields, **sizes})
    # transformers >= 5 calls it `dtype`, older versions `torch_dtype`
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        cfg.dtype = dtype_name
    else:
        cfg.torch_dtype = dtype_name
    model = LlamaForCausalLM(cfg)  # init in fp32 under the fixed seed, then cast
    model = model.to(_dtype(dtype_name)).eval()
    return model


def save_base(dtype_name: str, directory: str, tokenizer: bool = False, **sizes):
    model = build_model(dtype_name, **sizes)
    model.save_pretrained(directory)
    if tokenizer:
        make_tokenizer(sizes.get("vocab_size", 1000)).save_pretrained(directory)
    return directory


def make_tokenizer(vocab_size: int = 1000):
    """A tiny local word-level tokenizer (vocab 1000 by default) for producers that insist on one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(3, vocab_size):
        vocab[f"w{i}"] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    return tok


def calib_ids(n=N_CALIB, length=CALIB_LEN, vocab_size=1000):
    """Random calibration token ids, fixed seed, as a list of 1-D LongTensors."""
    import torch

    g = torch.Generator().manual_seed(CALIB_SEED)
    return [torch.randint(3, vocab_size, (length,), generator=g) for _ in range(n)]


def fresh_dir(out):
    if os.path.exists(out):
        if os.listdir(out) and not os.path.exists(os.path.join(out, "config.json")):
            sys.exit(f"refusing to remove {out}: not empty and no config.json in it")
        shutil.rmtree(out)
    os.makedirs(out)


def strip_files(out):
    for f in os.listdir(out):
        if f in DROP_FILES:
            os.remove(os.path.join(out, f))


# ---------------------------------------------------------------------------------------------
# producers


def make_gptqmodel(out, sym: bool, desc_act: bool):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    torch.manual_seed(MODEL_SEED)
    with tempfile.TemporaryDirectory() as base:
        # GPTQModel.load() insists on a tokenizer in the model dir (it fails without one)
        save_base("float16", base, tokenizer=True)
        qcfg = QuantizeConfig(bits=4, group_size=128, sym=sym, desc_act=desc_act)
        model = GPTQModel.load(base, qcfg, device="cpu")
        samples = [{"input_ids": ids.tolist(), "attention_mask": [1] * len(ids)} for ids in calib_ids()]
        model.quantize(samples, batch_size=1)
        model.save(out)
    strip_files(out)


def make_transformers_gptq_v2(out):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    import torch
    from transformers import AutoModelForCausalLM, GPTQConfig

    with tempfile.TemporaryDirectory() as base:
        save_base("float16", base, tokenizer=True)
        tok = make_tokenizer()
        ids = calib_ids()
        dataset = [" ".join(f"w{int(t)}" for t in x) for x in ids]
        qcfg = GPTQConfig(
            bits=4, group_size=128, sym=True, desc_act=False, dataset=dataset, tokenizer=tok,
            checkpoint_format="gptq_v2",
        )
        torch.manual_seed(MODEL_SEED)
        model = AutoModelForCausalLM.from_pretrained(
            base, quantization_config=qcfg, device_map="cpu", dtype=torch.float16
        )
        model.save_pretrained(out)
    strip_files(out)


def make_autoawq(out):
    import torch
    from awq import AutoAWQForCausalLM

    with tempfile.TemporaryDirectory() as base:
        save_base("float16", base, tokenizer=True)
        tok = make_tokenizer()
        torch.set_num_threads(1)  # AWQ's scale search is not bit-reproducible with 2 threads
        torch.manual_seed(MODEL_SEED)
        model = AutoAWQForCausalLM.from_pretrained(base, device_map="cpu", torch_dtype=torch.float16)
        calib = [x.tolist() for x in calib_ids()]  # list of lists of token ids: no tokenization
        model.quantize(
            tok,
            quant_config={"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"},
            calib_data=calib,
            max_calib_samples=N_CALIB,
            max_calib_seq_len=CALIB_LEN,
        )
        model.save_quantized(out)
    strip_files(out)


def make_ct(out, sym: bool):
    """compressed-tensors directly: apply config, min/max qparams, pack-quantized compress, save."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    model = build_model("bfloat16")
    args = QuantizationArgs(num_bits=4, type="int", symmetric=sym, strategy="group", group_size=128)
    qconfig = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
        ignore=["lm_head"],
        quantization_status=QuantizationStatus.INITIALIZED,
    )
    apply_quantization_config(model, qconfig)
    with torch.no_grad():
        for name, m in model.named_modules():
            if getattr(m, "quantization_scheme", None) is None:
                continue
            w = m.weight
            N, K = w.shape
            wg = w.reshape(N, K // 128, 128)
            scale, zp = calculate_qparams(wg.amin(-1), wg.amax(-1), args)
            m.weight_scale.data.copy_(scale.to(m.weight_scale.dtype))
            if hasattr(m, "weight_zero_point"):
                m.weight_zero_point.data.copy_(zp.to(m.weight_zero_point.dtype))
            m.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    strip_files(out)


def make_llmc(out, scheme: str):
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as base:
        # oneshot() re-reads the config from model.name_or_path, so load from a saved base
        save_base("bfloat16", base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        recipe = QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])
        oneshot(model=model, recipe=recipe)
        model.save_pretrained(out, save_compressed=True)
    strip_files(out)


def make_quanto(out, dtype_name: str):
    import torch
    from optimum.quanto import QuantizedModelForCausalLM, qint4

    with tempfile.TemporaryDirectory() as base:
        save_base(dtype_name, base)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=_dtype(dtype_name))
        qmodel = QuantizedModelForCausalLM.quantize(model, weights=qint4, exclude="lm_head")
        qmodel.save_pretrained(out)
    strip_files(out)


SMALL_LLAMA = dict(hidden_size=128, intermediate_size=256, vocab_size=256)
"""The AutoRound fixtures' model: q/k/v/o N=K=128, gate/up N=256 K=128, down N=128 K=256
(every Linear still Marlin-eligible), and a 256-word vocabulary, so each fixture is ~0.3 MB."""


def make_autoround(out, *, fmt: str, sym: bool, group_size: int = 128, layer_config=None, model_free=False):
    """auto-round RTN (iters=0) on the small random Llama, saved with `format=fmt`.

    `fmt` is auto-round's export format: "auto_round" (which picks auto_round:auto_gptq for
    symmetric and auto_round:auto_awq for asymmetric int4, or plain auto_round when an override
    layer has another bit width), "auto_round:gptqmodel", "auto_round:auto_gptq", or the
    exports "auto_gptq" / "auto_awq". `model_free` goes through auto-round's model-free writer
    (it reads the base checkpoint's files; plain RTN, no calibration).
    """
    import torch
    from auto_round import AutoRound

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        base = os.path.join(work, "base")
        save_base("float16", base, tokenizer=True, **SMALL_LLAMA)
        torch.manual_seed(MODEL_SEED)
        common = dict(bits=4, group_size=group_size, sym=sym, iters=0, layer_config=layer_config)
        if model_free:
            ar = AutoRound(base, disable_opt_rtn=True, model_free=True, **common)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float16)
            dataset = [" ".join(f"w{int(t)}" for t in x) for x in calib_ids(vocab_size=SMALL_LLAMA["vocab_size"])]
            ar = AutoRound(model, make_tokenizer(SMALL_LLAMA["vocab_size"]), dataset=dataset,
                           nsamples=N_CALIB, seqlen=CALIB_LEN, **common)
        saved = os.path.join(work, "saved")
        ar.quantize_and_save(saved, format=fmt)
        # auto-round may append a `<model>-w4g128` folder to output_dir: take the folder with config.json
        found = [root for root, _, files in os.walk(saved) if "config.json" in files]
        if len(found) != 1:
            sys.exit(f"expected one saved model under {saved}, found {found}")
        for name in os.listdir(found[0]):
            if name != ".cache":  # the model-free writer leaves an empty download cache behind
                shutil.move(os.path.join(found[0], name), os.path.join(out, name))
    strip_files(out)


_AR_MIXED = {"model.layers.0.mlp.down_proj": {"bits": 16}, "model.layers.1.self_attn.o_proj": {"bits": 8}}
"""One layer kept at 16 bits and one quantized to 8 bits: the extra_config overrides."""


PRODUCERS = {
    "gptqmodel_sym": lambda out: make_gptqmodel(out, sym=True, desc_act=False),
    "gptqmodel_asym": lambda out: make_gptqmodel(out, sym=False, desc_act=False),
    "gptqmodel_actorder": lambda out: make_gptqmodel(out, sym=True, desc_act=True),
    "transformers_gptq_v2": make_transformers_gptq_v2,
    "autoawq_gemm": make_autoawq,
    "ct_sym": lambda out: make_ct(out, sym=True),
    "ct_asym": lambda out: make_ct(out, sym=False),
    "llmc_w4a16": lambda out: make_llmc(out, "W4A16"),
    "llmc_w4a16_asym": lambda out: make_llmc(out, "W4A16_ASYM"),
    "quanto_qint4_fp16": lambda out: make_quanto(out, "float16"),
    "quanto_qint4_bf16": lambda out: make_quanto(out, "bfloat16"),
    "autoround_gptq_sym": lambda out: make_autoround(out, fmt="auto_round", sym=True),
    "autoround_gptq_sym_g32_mixed": lambda out: make_autoround(
        out, fmt="auto_round", sym=True, group_size=32, layer_config=_AR_MIXED),
    "autoround_gptq_asym": lambda out: make_autoround(out, fmt="auto_round:auto_gptq", sym=False),
    "autoround_awq_asym": lambda out: make_autoround(out, fmt="auto_round", sym=False),
    "autoround_awq_asym_g64_bf16": lambda out: make_autoround(
        out, fmt="auto_round", sym=False, group_size=64, layer_config={"model.layers.0.mlp.down_proj": {"bits": 16}}),
    "autoround_plain_asym_mixed": lambda out: make_autoround(
        out, fmt="auto_round", sym=False, group_size=64, layer_config=_AR_MIXED),
    "autoround_plain_asym_model_free": lambda out: make_autoround(out, fmt="auto_round", sym=False, model_free=True),
    "autoround_gptqmodel_asym": lambda out: make_autoround(out, fmt="auto_round:gptqmodel", sym=False),
    "autoround_gptqmodel_sym_g32": lambda out: make_autoround(out, fmt="auto_round:gptqmodel", sym=True, group_size=32),
    "autoround_export_gptq": lambda out: make_autoround(out, fmt="auto_gptq", sym=True),
    "autoround_export_awq": lambda out: make_autoround(out, fmt="auto_awq", sym=False),
    "autoround_awq_sym": lambda out: make_autoround(out, fmt="auto_round:auto_awq", sym=True),
    "autoround_export_awq_sym": lambda out: make_autoround(out, fmt="auto_awq", sym=True),
    # the overrides go into GPTQModel-style `dynamic`; (auto_awq refuses an 8-bit layer itself)
    "autoround_export_gptq_mixed": lambda out: make_autoround(out, fmt="auto_gptq", sym=True, layer_config=_AR_MIXED),
}


# ---------------------------------------------------------------------------------------------
# inspection


def inspect(directory, layer="model.layers.0.mlp.down_proj"):
    from safetensors import safe_open

    print(f"== {directory}")
    for f in sorted(os.listdir(directory)):
        print(f"  file {f}  {os.path.getsize(os.path.join(directory, f))} bytes")
    cfg_path = os.path.join(directory, "config.json")
    if os.path.exists(cfg_path):
        cfg = json.load(open(cfg_path))
        print("  config dtype:", cfg.get("dtype", cfg.get("torch_dtype")))
        qc = cfg.get("quantization_config")
        print("  quantization_config keys:", sorted(qc) if qc else None)
    tensors = {}
    for f in sorted(os.listdir(directory)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(directory, f), "pt") as sf:
                for k in sf.keys():
                    tensors[k] = sf.get_tensor(k)
    for k in sorted(tensors):
        if k.startswith(layer + "."):
            t = tensors[k]
            print(f"  {k}: {str(t.dtype).replace('torch.', '')} {list(t.shape)}")
    others = sorted({str(t.dtype) for k, t in tensors.items() if "layers" not in k or "norm" in k})
    print("  dtypes of non-layer / norm tensors:", others)
    for k in sorted(tensors):
        if k.startswith(layer + ".") and ("qzeros" in k or "zero_point" in k):
            t = tensors[k]
            words = t.flatten()[:8].tolist()
            print(f"  {k} first words:", [hex(w & 0xFFFFFFFF) for w in words])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--producer", choices=sorted(PRODUCERS))
    ap.add_argument("--out")
    ap.add_argument("--inspect", metavar="DIR")
    a = ap.parse_args(argv)
    if a.inspect:
        inspect(a.inspect)
        return 0
    if not (a.producer and a.out):
        ap.error("--producer and --out are required")
    out = os.path.abspath(a.out)
    fresh_dir(out)
    PRODUCERS[a.producer](out)
    inspect(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
