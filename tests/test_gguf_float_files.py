"""Unquantized GGUF files (llama.cpp's convert --outtype f32/f16/bf16), the base of every
KL-divergence comparison: 2-D weights in the file's format, norms in F32, a general.name."""
import copy

import ml_dtypes
import numpy as np
import pytest
import torch

from lec19quant.gguf import io, recipes


@pytest.fixture(scope="module")
def tiny():
    import transformers

    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      tie_word_embeddings=True, max_position_embeddings=128)
    config._name_or_path = "some/dir/tiny-llama"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, :4] = torch.tensor([1e-40, -0.0, 70000.0, 1 + 2 ** -9])
    return model


ROUND = {"F32": lambda w: w, "F16": lambda w: torch.from_numpy(w.numpy().astype(np.float16).astype(np.float32)),
         "BF16": lambda w: torch.from_numpy(w.numpy().astype(ml_dtypes.bfloat16).astype(np.float32))}


@pytest.mark.parametrize("ftype", ["F32", "F16", "BF16"])
def test_float_files_round_trip(tiny, tmp_path, ftype):
    path = tmp_path / f"tiny-{ftype}.gguf"
    types = io.write_gguf(tiny, None, path, ftype, progress=False)
    contents = io.read_gguf(path)
    assert contents.metadata["general.name"] == "tiny-llama"
    assert contents.metadata["general.file_type"] == int(recipes.FTYPES[ftype][1])
    assert {types[n] for n in types if n.endswith("norm.weight")} == {"F32"}
    assert {types[n] for n in types if not n.endswith("norm.weight")} == {ftype}
    loaded = io.load_weights(copy.deepcopy(tiny), contents).state_dict()
    for name, w in tiny.state_dict().items():
        expected = w if name.endswith("norm.weight") else ROUND[ftype](w)  # ml_dtypes/numpy: nearest even
        assert torch.equal(loaded[name], expected), name
    weights, _ = io.quantized_weights(tiny, ftype)
    for name, w in weights.items():
        assert torch.equal(w, loaded[name]), name
