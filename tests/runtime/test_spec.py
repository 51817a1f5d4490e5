"""The layer description written into quantization_config gives back every layer's spec."""
import subprocess
import sys

from marlin_convert.runtime.spec import LayerSpec, describe_layers, layer_spec


def test_mixed_layers_round_trip_through_the_description():
    specs = {
        "a": LayerSpec(128, "int", True, "float16"),
        "b": LayerSpec(128, "int", True, "float16"),
        "c": LayerSpec(-1, None, False, "bfloat16"),
        "d": LayerSpec(64, "float", True, "float16"),
    }
    qc = describe_layers(specs)
    assert (qc["group_size"], qc["zero_point"], qc["desc_act"], qc["sym"]) == (128, "int", True, False)
    assert set(qc["layer_overrides"]) == {"c", "d"}
    assert {p: layer_spec(qc, p) for p in specs} == specs


def test_transformers_learns_marlin_when_it_is_imported_after_marlin_convert():
    code = ("import sys, marlin_convert\n"
            "assert 'transformers' not in sys.modules\n"
            "from transformers import AutoModelForCausalLM\n"
            "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING, AUTO_QUANTIZATION_CONFIG_MAPPING\n"
            "assert AUTO_QUANTIZER_MAPPING['marlin'].__name__ == 'MarlinHfQuantizer'\n"
            "assert AUTO_QUANTIZATION_CONFIG_MAPPING['marlin'].__name__ == 'MarlinConfig'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_transformers_learns_marlin_when_it_was_imported_first():
    code = ("import transformers.quantizers.auto as auto\n"
            "assert 'marlin' not in auto.AUTO_QUANTIZER_MAPPING\n"
            "import marlin_convert\n"
            "assert auto.AUTO_QUANTIZER_MAPPING['marlin'].__name__ == 'MarlinHfQuantizer'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
