"""llama.cpp's tools as oracles (tests/oracles/llama_tools.py), on the running example's F32 GGUF
file written by the package: llama-perplexity loads it, scores the tokens that the package's
chunking scores, and reads a base file that the package writes."""
import pytest
import torch

from lec19quant import models, quality
from lec19quant.gguf import io
from oracles.llama_tools import kl_divergence, kld_base, llama_perplexity, tool  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def example():
    return models.load_model()


@pytest.fixture(scope="module")
def f32_file(example, tmp_path_factory):
    path = tmp_path_factory.mktemp("llama-tools") / "smollm2-135m-F32.gguf"
    io.write_gguf(*example, path, "F32", tokenizer_pre="smollm", progress=False)
    return path


@pytest.fixture(scope="module")
def llama_base(llama_perplexity, f32_file):  # noqa: F811
    text_file = f32_file.with_name("moby-dick-test.txt")
    text_file.write_text(models.load_text("moby-dick", "test"))
    base_file = f32_file.with_name("f32.kld")
    kld_base(f32_file, text_file, base_file, chunks=2)
    return base_file


def test_unknown_tools_are_named():
    with pytest.raises(ValueError, match="llama-server"):
        tool("llama-server")


def test_llama_cpp_chunks_and_scores_as_the_package_does(example, llama_base):
    _, tokenizer = example
    base = quality.Base.load(llama_base)  # its size is checked against 2 × 255 scored rows
    ours = quality.chunks(quality.tokenize(tokenizer, models.load_text("moby-dick", "test")), 512, 2)
    assert torch.equal(base.tokens, ours)  # the same token ids, the same chunks, no BOS (add_bos false)
    assert base.header.shape == (2 * 255, 2) and torch.equal(base.targets, ours[:, 257:].reshape(-1))


def test_llama_cpp_reads_the_package_base_file(example, f32_file, llama_base, tmp_path):
    """The package's base pass, saved in llama.cpp's format, is what llama.cpp's own F32 run
    compares with: PPL within 0.1%, nearly no divergence."""
    model, _ = example
    theirs = quality.Base.load(llama_base)
    ours = quality.base_logits(io.load_weights(model, io.read_gguf(f32_file)), theirs.tokens.reshape(-1), 512, 2)
    stats = kl_divergence(f32_file, ours.save(tmp_path / "package.kld"))
    assert stats["ppl_q"] == pytest.approx(stats["ppl_base"], rel=1e-3)
    assert stats["mean_kld"] < 1e-3 and stats["same_top_p"] > 0.98
