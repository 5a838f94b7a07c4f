"""lec19quant.gguf.imatrix against llama.cpp's own tools (tests/oracles/llama_tools.py) on the
running example's F32 GGUF file written by the package, calibrated on the State of the Union:

- llama-imatrix -c 64 --chunks 4: the same 210 entries (7 per layer, none for the head or the
  embedding), the same counts and chunk bookkeeping, sums within float32 summation tolerance;
- files both ways: the file llama-imatrix writes is byte for byte the file the package writes
  for the matrix it reads from it; llama.cpp's reader (llama-imatrix --in-file, by the loader
  that llama-quantize uses) reads the package's GGUF file and writes it back unchanged, as GGUF
  and as the package's own legacy .dat, and reads that .dat;
- llama-quantize --imatrix <the package's file> writes, tensor by tensor, the types and bytes of
  `io.write_gguf(..., imatrix=)` for Q4_K_M and Q2_K: every weighted format of these recipes on
  the running example (Q5_0, Q4_K, Q6_K; Q4_0, Q3_K), and the same metadata. (IQ4_XS/IQ4_NL
  matched too when tried, but llama-quantize takes about 25 CPU-seconds for them; their bytes
  are tested against ggml_quantize_chunk in test_gguf_weighted.)

How llama-imatrix (tools/imatrix/imatrix.cpp of the bundled llama.cpp) chunks: it tokenizes the
whole text with BOS only where the vocabulary adds one (SmolLM2's does not: add_bos_token false,
so the chunks are plain slices of the package tokenizer's ids, as test_llama_tools shows for
llama-perplexity, which tokenizes by the same call), takes the first --chunks whole chunks of -c
tokens, and runs each as a sequence of its own (up to n_batch / n_ctx of them in one batch, which
changes no sum). It needs at least two chunks of text.
"""
import gguf
import numpy as np
import pytest
from oracles import llama_tools
from oracles.llama_tools import llama_imatrix, llama_quantize  # noqa: F401  (the session fixtures)

from lec19quant import models, quality
from lec19quant.gguf import imatrix, io

CHUNK, CHUNKS = 64, 4  # llama-imatrix -c 64 --chunks 4
KINDS = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
#: the formats in the running example's files: rows of 576 fall back from Q4_K/Q6_K to Q5_0/Q8_0
#: and from Q2_K to Q4_0; ffn_down's rows of 1536 keep the K-quants
FORMATS = {"Q4_K_M": {"Q5_0", "Q4_K", "Q6_K", "Q8_0", "F32"}, "Q2_K": {"Q4_0", "Q3_K", "Q8_0", "F32"}}


@pytest.fixture(scope="module")
def example():
    return models.load_model()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("imatrix-llama-cpp")


@pytest.fixture(scope="module")
def f32_file(example, workdir):
    path = workdir / "smollm2-135m-F32.gguf"
    io.write_gguf(*example, path, "F32", tokenizer_pre="smollm", progress=False)
    return path


@pytest.fixture(scope="module")
def text_file(workdir):
    path = workdir / "sotu-train.txt"
    path.write_text(models.load_text("sotu", "train"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def theirs_file(llama_imatrix, f32_file, text_file, workdir):  # noqa: F811
    return _written(llama_tools.imatrix(f32_file, text_file, workdir / "llama.gguf", n_ctx=CHUNK, chunks=CHUNKS),
                    workdir / "llama.gguf")


@pytest.fixture(scope="module")
def theirs(theirs_file):
    return imatrix.ImportanceMatrix.load(theirs_file)


@pytest.fixture(scope="module")
def ours(example, text_file):
    model, tokenizer = example
    tokens = quality.tokenize(tokenizer, text_file.read_text(encoding="utf-8"))
    return imatrix.collect(model, tokens, chunk_size=CHUNK, chunks=CHUNKS, dataset=str(text_file))


@pytest.fixture(scope="module")
def ours_file(ours, workdir):
    return ours.save(workdir / "package.gguf")


def _written(output: str, path):
    assert path.is_file(), f"the tool wrote no {path.name}; its output ends:\n{output[-2000:]}"
    return path


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest |ours − theirs| / |theirs| over the columns (0 where both are 0)."""
    ours, theirs = ours.astype(np.float64), theirs.astype(np.float64)
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), np.finfo(np.float64).tiny)))


def test_the_same_entries_and_counts(theirs, ours, text_file):
    assert set(theirs.sums) == set(ours.sums)
    assert len(theirs) == 210 and {name.split(".")[2] for name in theirs.sums} == KINDS  # 7 × 30 layers
    assert "output.weight" not in theirs and "token_embd.weight" not in theirs  # no head without --process-output
    assert theirs.counts == ours.counts and set(theirs.counts.values()) == {CHUNK * CHUNKS}  # no BOS added
    assert (theirs.chunk_count, theirs.chunk_size) == (ours.chunk_count, ours.chunk_size) == (CHUNKS, CHUNK)
    assert theirs.datasets == ours.datasets == [str(text_file)]
    assert all(theirs.sums[name].shape == ours.sums[name].shape for name in ours.sums)


def test_sums_agree_within_float_summation(theirs, ours):
    """llama.cpp sums x² in float32 token by token, the package in float64; with attention in
    float32 (llama_tools.F32_ATTENTION) every column of every matrix agrees to 1e-4 (2.7e-5 at
    worst, in blk.18.attn_output; with llama-imatrix's defaults 5e-3). The first layer's q/k/v
    see only the normalized token embeddings: their agreement to 1e-5 (9.5e-7) says that the
    tokens are the same."""
    worst = {name: relative_difference(ours.sums[name], theirs.sums[name]) for name in ours.sums}
    assert max(worst.values()) < 1e-4, max(worst.items(), key=lambda item: item[1])
    assert max(worst[f"blk.0.attn_{kind}.weight"] for kind in "qkv") < 1e-5


def test_the_llama_imatrix_file_is_the_package_file(theirs, theirs_file, workdir):
    """Read by the package and written again, llama-imatrix's file comes back byte for byte."""
    assert theirs.save(workdir / "llama-again.gguf").read_bytes() == theirs_file.read_bytes()


def test_llama_cpp_reads_the_package_files(llama_imatrix, ours, ours_file, f32_file, workdir):  # noqa: F811
    """llama.cpp's loader reads the package's GGUF file and writes it back unchanged, as GGUF and
    as legacy .dat (the package's .dat, byte for byte); the package's .dat read by llama.cpp gives
    the same counts and, up to float rounding of the mean times the chunks, the same sums."""
    again = _written(llama_tools.combine(f32_file, [ours_file], workdir / "again.gguf", n_ctx=CHUNK),
                     workdir / "again.gguf")
    assert again.read_bytes() == ours_file.read_bytes()
    dat = _written(llama_tools.combine(f32_file, [ours_file], workdir / "again.dat", n_ctx=CHUNK, legacy=True),
                   workdir / "again.dat")
    assert dat.read_bytes() == ours.save(workdir / "package.dat", legacy=True).read_bytes()
    from_dat = _written(llama_tools.combine(f32_file, [workdir / "package.dat"], workdir / "from-dat.gguf",
                                            n_ctx=CHUNK), workdir / "from-dat.gguf")
    back = imatrix.ImportanceMatrix.load(from_dat)
    assert back.counts == ours.counts and back.chunk_count == CHUNKS and back.datasets == ours.datasets
    for name in ours.sums:
        np.testing.assert_allclose(back.sums[name], ours.sums[name], rtol=1e-6)


def contents(path) -> tuple[dict, dict[str, tuple[str, bytes]]]:
    """A GGUF file's metadata (without the GGUF.* header fields) and its tensors' types and bytes."""
    reader = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return keys, {t.name: (t.tensor_type.name, t.data.tobytes()) for t in reader.tensors}


@pytest.mark.parametrize("ftype", FORMATS)
def test_llama_quantize_writes_the_package_bytes(ftype, example, f32_file, ours, ours_file, workdir,
                                                 llama_quantize):  # noqa: F811
    """llama-quantize --imatrix <the package's file> and `io.write_gguf(imatrix=)`: the same type
    and the same bytes for every tensor, the same metadata but the imatrix file's name."""
    theirs_path = workdir / f"llama-{ftype}.gguf"
    _written(llama_tools.quantize(f32_file, theirs_path, ftype, imatrix=ours_file), theirs_path)
    ours_path = workdir / f"package-{ftype}.gguf"
    types = io.write_gguf(*example, ours_path, ftype, tokenizer_pre="smollm", progress=False, imatrix=ours)
    (keys_theirs, theirs), (keys_mine, mine) = contents(theirs_path), contents(ours_path)
    assert set(theirs) == set(mine) == set(types) and len(mine) == 272
    differ = sorted(name for name in mine if theirs[name] != mine[name])
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}: {[theirs[n][0] for n in differ[:3]]}"
    assert {t for t, _ in mine.values()} == FORMATS[ftype]
    assert keys_theirs.pop("quantize.imatrix.file") == str(ours_file)
    assert keys_theirs == keys_mine and keys_mine["quantize.imatrix.entries_count"] == 210
