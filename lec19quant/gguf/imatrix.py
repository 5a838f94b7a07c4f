"""llama.cpp's importance matrix: how much each input channel of each weight matrix matters.

Running the model on calibration text, `llama-imatrix` records for every weight matrix W of a
layer (y = W·x) the sum over the tokens of x_j² for each input column j, and the number of
tokens. The quantizer weights the squared error of every weight in column j by the mean
importance Σx_j²/n (`ImportanceMatrix.weights`): the expected output error of a weight change
δ in column j is E[(δ·x_j)²] = δ²·E[x_j²].

    imat = collect(model, token_ids, chunk_size=512)   # as llama-imatrix -c 512
    imat.save("imatrix.gguf")                           # llama-quantize --imatrix imatrix.gguf
    imat = ImportanceMatrix.load("imatrix.gguf")        # or a legacy .dat
    quantize(w, "Q4_K", imatrix=imat.weights("blk.3.ffn_down.weight"))

Like llama-imatrix, `collect` cuts the tokens into chunks of `chunk_size`, runs each chunk as
its own sequence, and takes entries for the matrix products of the layers ("blk.*"): 7 per
layer of a Llama (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down), none for
the output head. Files: the GGUF format of current llama.cpp (general.type "imatrix", keys
imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size; F32 tensors <name>.in_sum2 and
<name>.counts) and the legacy binary .dat that llama-quantize still reads.
"""
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from .io import gguf_names

MIN_TOKENS = 16  # llama-imatrix ignores matrix products of fewer tokens


@dataclass(eq=False)  # hashable by identity: caches of quantized blocks are keyed by it
class ImportanceMatrix:
    """Σx² per input column (`sums`, float32) and the number of tokens (`counts`) of each weight
    matrix, by GGUF tensor name, with where they came from."""

    sums: dict[str, np.ndarray]
    counts: dict[str, int]
    chunk_count: int = 0
    chunk_size: int = 0
    datasets: list[str] = field(default_factory=list)

    def weights(self, name: str) -> np.ndarray:
        """The importance that llama-quantize passes to the quantizer for tensor `name`: the
        mean Σx²/n per column (float32), or ones when the matrix saw no tokens."""
        if name not in self.sums:
            raise KeyError(f"the importance matrix has no entry for {name!r} ({len(self.sums)} entries)")
        count = self.counts[name]
        if count <= 0:
            return np.ones_like(self.sums[name])
        return self.sums[name] / np.float32(count)

    def __contains__(self, name: str) -> bool:
        return name in self.sums

    def __len__(self) -> int:
        return len(self.sums)

    def save(self, path, legacy: bool = False) -> Path:
        """Write the file llama-imatrix writes, byte for byte: GGUF, or (`legacy`) the old binary .dat."""
        path = Path(path)
        if legacy:
            path.write_bytes(self._legacy_bytes())
            return path
        writer = gguf.GGUFWriter(path, arch="")
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes none
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(gguf.Keys.IMatrix.DATASETS, list(self.datasets))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, self.chunk_count)
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, self.chunk_size)
        for name in sorted(self.sums):  # llama-imatrix sorts the names too
            # one dense matrix: ggml's shape (n, 1) has one dimension, so the file stores ne = [n] and [1]
            writer.add_tensor(f"{name}.in_sum2", self.sums[name].astype(np.float32).reshape(-1))
            writer.add_tensor(f"{name}.counts", np.array([self.counts[name]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    def _legacy_bytes(self) -> bytes:
        """int32 entries; per entry with data (sorted): int32 name length, name, int32 ncall (chunks,
        rounded up), int32 n, n float32 (Σx²/count)·ncall; then int32 chunk count and the
        dataset name (int32 length, bytes)."""
        if self.chunk_size <= 0:
            raise ValueError("the legacy format stores chunks: chunk_size must be > 0")
        names = sorted(name for name, count in self.counts.items() if count > 0)  # llama-imatrix skips the rest
        out = [struct.pack("<i", len(names))]
        for name in names:
            ncall = -(-self.counts[name] // self.chunk_size)
            values = self.weights(name) * np.float32(ncall)
            out += [struct.pack("<i", len(name.encode())), name.encode(), struct.pack("<ii", ncall, len(values)),
                    values.astype("<f4").tobytes()]
        dataset = (self.datasets[-1] if self.datasets else "").encode()
        out += [struct.pack("<ii", self.chunk_count, len(dataset)), dataset]
        return b"".join(out)

    @classmethod
    def load(cls, path) -> "ImportanceMatrix":
        """Read a file of llama-imatrix, GGUF or legacy .dat. A legacy file keeps only
        (Σx²/count)·ncall and ncall (chunks): `sums` and `counts` are those, so `weights` still
        gives the mean, as llama-quantize computes it."""
        path = Path(path)
        with path.open("rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return cls._load_gguf(path)
        return cls._load_legacy(path.read_bytes(), path)

    @classmethod
    def _load_gguf(cls, path: Path) -> "ImportanceMatrix":
        reader = gguf.GGUFReader(path)
        fields = reader.fields

        def value(key, default):
            return fields[key].contents() if key in fields else default

        tensors = {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
        sums, counts = {}, {}
        for name, data in tensors.items():
            if name.endswith(".in_sum2"):
                base = name[:-len(".in_sum2")]
                if base + ".counts" not in tensors:
                    raise ValueError(f"{path}: {base} has sums but no counts")
                if tensors[base + ".counts"].size != 1:
                    raise ValueError(f"{path}: {base} has {tensors[base + '.counts'].size} counts (a mixture of "
                                     f"experts); only dense matrices are read here")
                sums[base], counts[base] = data, round(float(tensors[base + ".counts"][0]))
        if not sums:
            raise ValueError(f"{path} holds no importance matrix entries (<name>.in_sum2)")
        return cls(sums, counts, int(value(gguf.Keys.IMatrix.CHUNK_COUNT, 0)),
                   int(value(gguf.Keys.IMatrix.CHUNK_SIZE, 0)), list(value(gguf.Keys.IMatrix.DATASETS, [])))

    @classmethod
    def _load_legacy(cls, data: bytes, path: Path) -> "ImportanceMatrix":
        try:
            (n,), at = struct.unpack_from("<i", data), 4
            if n < 1:
                raise ValueError("no entries")
            sums, counts = {}, {}
            for _ in range(n):
                (length,) = struct.unpack_from("<i", data, at)
                name = data[at + 4:at + 4 + length].decode()
                ncall, nval = struct.unpack_from("<ii", data, at + 4 + length)
                at += 12 + length
                sums[name] = np.frombuffer(data, "<f4", nval, at).astype(np.float32)
                counts[name] = ncall
                at += 4 * nval
            chunk_count, datasets = 0, []
            if at < len(data):
                chunk_count, length = struct.unpack_from("<ii", data, at)
                if length > 0:
                    datasets.append(data[at + 8:at + 8 + length].decode())
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is neither a GGUF nor a legacy imatrix file: {e}") from None
        return cls(sums, counts, chunk_count, 0, datasets)


def matrices(model: nn.Module) -> dict[str, nn.Linear]:
    """The weight matrices that llama-imatrix takes entries for, by GGUF name: the nn.Linear
    layers of the transformer blocks ("blk.*"); not the output head."""
    modules = dict(model.named_modules())
    out = {}
    for hf_name, name in gguf_names(model).items():
        module = modules.get(hf_name.removesuffix(".weight"))
        if name.startswith("blk.") and isinstance(module, nn.Linear):
            out[name] = module
    return out


@torch.inference_mode()
def collect(model: nn.Module, tokens, chunk_size: int = 512, chunks: int | None = None,
            dataset: str = "") -> ImportanceMatrix:
    """Run `model` over `tokens` (token ids, 1-D) as llama-imatrix does: the first `chunks`
    (default: all) whole chunks of `chunk_size` tokens, each a sequence of its own, and sum x²
    per input column of every `matrices(model)` entry over all their tokens."""
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if not isinstance(chunk_size, int) or chunk_size < MIN_TOKENS:
        raise ValueError(f"chunk_size must be an int ≥ {MIN_TOKENS} (llama-imatrix ignores matrix products of "
                         f"fewer tokens), got {chunk_size!r}")
    available = len(tokens) // chunk_size
    if available < 1:
        raise ValueError(f"{len(tokens)} tokens do not make one chunk of {chunk_size}")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks must be None or a positive int, got {chunks!r}")
    n_chunks = available if chunks is None else min(chunks, available)
    targets = matrices(model)
    sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in targets.items()}
    counts = dict.fromkeys(targets, 0)

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sums[name] += x.square().sum(0).cpu()
            counts[name] += x.shape[0]
        return hook

    hooks = [m.register_forward_pre_hook(hook_for(name)) for name, m in targets.items()]
    device = next(model.parameters()).device
    try:
        for i in range(n_chunks):
            model(tokens[i * chunk_size:(i + 1) * chunk_size][None].to(device))
    finally:
        for h in hooks:
            h.remove()
    return ImportanceMatrix({name: s.float().numpy() for name, s in sums.items()}, counts, n_chunks, chunk_size,
                            [dataset] if dataset else [])
