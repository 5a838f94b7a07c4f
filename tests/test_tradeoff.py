"""tradeoff: sizes from stored bytes, the Pareto frontier, every scheme on the chart."""
import dataclasses
import random
import pytest
import torch

from lec19quant import quality, tradeoff
from lec19quant.nn import named_schemes

def dominated(i, sizes, errors) -> bool:
    """The definition: another point is no larger and closer, or smaller and as close, or the
    same point earlier in the list."""
    return any((sizes[j] <= sizes[i] and errors[j] < errors[i]) or (sizes[j] < sizes[i] and errors[j] <= errors[i])
               or (sizes[j] == sizes[i] and errors[j] == errors[i] and j < i) for j in range(len(sizes)) if j != i)


@pytest.mark.parametrize("seed", range(30))
def test_pareto_front_is_the_set_of_undominated_points_in_order_of_size(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    # few distinct values, so that ties in size, in error and whole equal points are common
    sizes = [rng.choice([3.0, 4.5, 4.5, 5.5, 6.6, 8.5, 16.0]) for _ in range(n)]
    errors = [rng.choice([0.0, 0.001, 0.03, 0.03, 0.2, 1.0]) for _ in range(n)]
    front = tradeoff.pareto_front(sizes, errors)
    assert set(front) == {i for i in range(n) if not dominated(i, sizes, errors)}
    assert [sizes[i] for i in front] == sorted(sizes[i] for i in front)
    assert all(errors[a] > errors[b] for a, b in zip(front, front[1:]))  # along the front, bigger is better


def test_pareto_front_of_nothing_is_empty():
    assert tradeoff.pareto_front([], []) == []


def test_llama3_scoreboard_sizes_give_the_formats_bits_per_weight():
    # llama.cpp's F16 file of LLaMA 3 8B is 14.97 GiB: 16 bits for each of its weights
    assert tradeoff.gib_to_bits_per_weight(14.97) == pytest.approx(16.0, abs=0.02)
    # Q8_0 stores 34 bytes per 32 weights (8.5 bits); a few F32 norms add almost nothing
    assert tradeoff.gib_to_bits_per_weight(tradeoff.LLAMA3_8B["Q8_0"][0]) == pytest.approx(8.5, abs=0.02)
    klds = [kld for _, kld, _ in tradeoff.LLAMA3_8B.values()]
    sizes = [gib for gib, _, _ in tradeoff.LLAMA3_8B.values()]
    assert klds == sorted(klds) and sizes == sorted(sizes, reverse=True)  # the scoreboard's own order


class Tokens:
    """A tokenizer for tests: one token per byte of the text, modulo the vocabulary."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, text):
        return {"input_ids": [b % self.vocab for b in text.encode()]}


def tiny_model(architecture: str, layers: int):
    """A random model of `architecture` ("Llama" or "Qwen3") with rows of 256 and 512 weights, and
    the base pass over 4 chunks of 16 random tokens."""
    import transformers

    config = getattr(transformers, f"{architecture}Config")(
        vocab_size=96, hidden_size=256, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = getattr(transformers, f"{architecture}ForCausalLM")(config).eval()
    return model, Tokens(96), quality.base_logits(model, torch.randint(0, 96, (64,)), n_ctx=16, n_chunks=4)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("Llama", 2)


def test_block_matrices_are_the_decoder_layers_linears(tiny):
    model, _, _ = tiny
    blocks = tradeoff.block_matrices(model)
    kinds = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert set(blocks) == {f"model.layers.{i}.{k}" for i in range(2) for k in kinds}
    assert blocks["model.layers.1.mlp.down_proj"] == (256, 512) and blocks["model.layers.0.self_attn.k_proj"] == (128, 256)


def _bits(blocks, bits_of_row):
    """Bits per weight of matrices whose rows of `in` weights take bits_of_row(in) bits each."""
    return sum(o * bits_of_row(i) for o, i in blocks.values()) / sum(o * i for o, i in blocks.values())


def test_sizes_come_from_the_stored_bytes(tiny):
    model, tokenizer, base = tiny
    blocks = tradeoff.block_matrices(model)
    every = tradeoff.candidates()
    expected = {
        "q8_0": 8.5, "gguf Q4_K_M": None,  # Q8_0: 34 bytes per 32 weights
        "w8-row": _bits(blocks, lambda i: 8 * i + 32),  # one float32 absmax per row
        "w4-g32": _bits(blocks, lambda i: (4 + 1) * i),  # one float32 absmax per 32 weights
        "llm_int8-ideal": _bits(blocks, lambda i: 24 * i + 32),  # int8 codes, a row scale, the 16-bit copy
    }
    got = {name: tradeoff.measure(every[name], model, tokenizer, base, "calibration text " * 40)
           for name in expected}
    for name, bits in expected.items():
        if bits is not None:
            assert got[name].bits_per_weight == pytest.approx(bits, rel=1e-12), name
        assert got[name].mb * 1e6 * 8 == pytest.approx(got[name].bits_per_weight * sum(o * i for o, i in blocks.values()))
    # Q4_K_M: rows of 256 and 512 hold whole super-blocks, so every matrix is Q4_K (4.5 bits) or Q6_K (6.5625)
    assert 4.5 < got["gguf Q4_K_M"].bits_per_weight < 6.5625
    assert all(0 < m.mean_kld and 0 <= m.same_top <= 100 for m in got.values())


def test_a_candidate_that_changes_nothing_measures_zero(tiny):
    model, tokenizer, base = tiny
    names = list(tradeoff.block_matrices(model))
    unchanged = tradeoff.Candidate("float32", "none", "float", lambda m, t, c: tradeoff.stored_bytes(m, names))
    m = tradeoff.measure(unchanged, model, tokenizer, base, "")
    assert m.bits_per_weight == 32 and m.mean_kld == pytest.approx(0, abs=1e-6) and m.same_top == 100
    assert m.ppl_ratio == pytest.approx(1, abs=1e-6)


def test_every_scheme_of_the_package_is_a_candidate():
    names = set(tradeoff.candidates())
    assert set(named_schemes()) <= names
    assert set(tradeoff.RTN) <= names
    assert {f"gguf {t}" + (" + imatrix" if i else "") for t, i in tradeoff.GGUF_FILE_TYPES} <= names
    assert all(c.chapter for c in tradeoff.candidates().values())


def test_saved_table_has_a_row_for_every_candidate():
    about, rows = tradeoff.load()
    saved = {r.name for r in rows}
    assert saved == set(tradeoff.candidates()), (
        f"{tradeoff.SAVED.name} is stale (missing {sorted(set(tradeoff.candidates()) - saved)}, "
        f"gone {sorted(saved - set(tradeoff.candidates()))}): python -m lec19quant.tradeoff --save")
    assert about["evaluated_on"] == "moby-dick" and about["calibrated_on"].startswith("sotu")


def test_save_and_load_round_trip(tmp_path):
    m = tradeoff.Measurement("q8_0", "GGUF", "float", 8.5, 1.0, 1.001, 0.002, 0.0001, 0.01, 98.5, 3.0)
    path = tradeoff.save([m, dataclasses.replace(m, name="nf4")], tmp_path / "t.json", model="x")
    about, rows = tradeoff.load(path)
    assert about == {"model": "x"} and rows == [m, dataclasses.replace(m, name="nf4")]


def test_file_types_prefer_the_recipe_over_the_single_format():
    m = tradeoff.Measurement("q4_k", "GGUF", "float", 4.5, 1.0, 1.0, 0.05, 0.0, 0.1, 90.0, 1.0)
    rows = [m, dataclasses.replace(m, name="gguf Q4_K_M"), dataclasses.replace(m, name="q8_0"),
            dataclasses.replace(m, name="gguf Q2_K + imatrix")]
    types = tradeoff.as_file_types(rows)
    assert types == {"Q8_0": rows[2], "Q4_K_M": rows[1]}


def test_every_candidate_quantizes_another_architecture():
    """The chapter's full-size run measures every candidate on a Qwen3 model from the hub: here
    each one runs on a tiny random Qwen3 (rows of 256 and 512 weights, whole K-quant super-blocks)
    and stores fewer bits than float32 (LLM.int8()'s ideal variant, with its 16-bit copy, more)."""
    from lec19quant.models import load_text

    model, tokenizer, base = tiny_model("Qwen3", 1)
    calibration = load_text("sotu", "train")[:20_000]
    for name, candidate in tradeoff.candidates().items():
        m = tradeoff.measure(candidate, model, tokenizer, base, calibration)
        assert (m.bits_per_weight > 24) == (name == "llm_int8-ideal") and m.bits_per_weight < 32, name
        assert m.mean_kld > 0 and m.ppl_ratio > 0, name
