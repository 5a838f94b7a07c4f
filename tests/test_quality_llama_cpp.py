"""lec19quant.quality against llama-perplexity (built from the llama-cpp-python sdist by
tests/oracles/llama_tools.py) on the running example's GGUF files: 8 chunks of 512 tokens of
Moby-Dick's evaluation split, F32 base, Q8_0 and Q4_K_M written by the package, Q3_K_M written
by llama-quantize (tests/oracles/llama_comparison.py). About 4 minutes on 2 quiet cores once the
tools are built (the build: about 4 minutes more, once per machine)."""
import pytest
from oracles.llama_comparison import three_way
from oracles.llama_tools import llama_perplexity, parse_kld  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.llama_cpp_quality  # `make test-llama-cpp`; `make test` leaves it out


@pytest.fixture(scope="module")
def measured(llama_perplexity, tmp_path_factory):  # noqa: F811
    return three_way(tmp_path_factory.mktemp("llama-quality"), n_chunks=8)


def rows(measured):
    return {row["file"]: row for row in measured["rows"]}


def test_llama_cpp_loads_every_file_and_scores_the_same_tokens(measured):
    assert set(rows(measured)) == {"F32", "Q8_0", "Q4_K_M", "Q3_K_M"}
    assert measured["scored tokens"] == 8 * 255
    assert measured["tokenizers agree"]  # llama.cpp's ids of the text are the package's
    # the F32 file against its own base: no divergence beyond llama.cpp's 16-bit code
    f32 = rows(measured)["F32"]["llama.cpp"]
    assert f32["mean_kld"] < 1e-4 and f32["same_top_p"] > 0.999


def test_base_perplexity_within_a_thousandth(measured):
    llama = rows(measured)["F32"]["llama.cpp"]["ppl_base"]
    for row in measured["rows"]:
        assert row["package"]["ppl_base"] == pytest.approx(llama, rel=1e-3)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K_M", "Q3_K_M"])
def test_emulating_llama_cpp_reproduces_its_numbers(measured, name):
    row = rows(measured)[name]
    theirs, ours = row["llama.cpp"], row["package, llama.cpp arithmetic"]
    assert ours["ppl_q"] == pytest.approx(theirs["ppl_q"], rel=0.01)
    assert ours["mean_kld"] == pytest.approx(theirs["mean_kld"], rel=0.15)


def test_parse_kld_names_what_is_missing():
    with pytest.raises(ValueError, match="printed no ppl_q"):
        parse_kld("Mean PPL(base) : 1.0 ± 0.1\n")
