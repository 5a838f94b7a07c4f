"""llm-compressor (vLLM's quantization library) as an oracle for SmoothQuant and AWQ.

Installed with --no-deps (its pins clash with the project's transformers; see the Makefile); only
its SmoothQuant and AWQ modifiers are used, through its `oneshot` entry point on a small model
saved to a temporary directory. On a machine without CUDA one call needs a patch: its AWQ cache
pins memory, which torch refuses without an accelerator, so pinning becomes a no-op here.
"""
import tempfile
from contextlib import contextmanager

import pytest
import torch

llmcompressor = pytest.importorskip("llmcompressor")


def tiny_llama(layers: int = 1, hidden: int = 128, intermediate: int = 256, heads: int = 4, kv_heads: int = 4,
               vocab: int = 49152, seed: int = 0, outliers: bool = True):
    """A random Llama-type model small enough for the oracle, with a few input channels of the
    norms' weights made large (massive activations, as in real models) when `outliers`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    if outliers:
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight.copy_(1 + 0.3 * torch.rand(hidden))
                    norm.weight[torch.randperm(hidden)[:3]] *= 20
    return model


@contextmanager
def _recording(awq_losses: dict, awq_scales: dict):
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.pipelines.cache import IntermediatesCache

    saved = AWQModifier._compute_best_scale, AWQModifier._compute_loss, IntermediatesCache.pin_memory

    def best_scale(self, mapping, *args):
        awq_losses[mapping.smooth_name] = []
        self._recording = awq_losses[mapping.smooth_name]
        awq_scales[mapping.smooth_name] = s = saved[0](self, mapping, *args)
        return s

    def loss(self, *args):
        value = saved[1](self, *args)
        self._recording.append(value)
        return value

    AWQModifier._compute_best_scale, AWQModifier._compute_loss = best_scale, loss
    IntermediatesCache.pin_memory = lambda self, index: None
    try:
        yield
    finally:
        AWQModifier._compute_best_scale, AWQModifier._compute_loss, IntermediatesCache.pin_memory = saved


def run(model, tokenizer, tokens: torch.Tensor, recipe) -> tuple[dict, dict]:
    """Run llm-compressor's oneshot on a copy of `model` (saved and reloaded) with calibration rows
    `tokens` (batch, T). Returns the transformed model and, for AWQ, the losses of the grid search
    and the chosen scales by smooth layer."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    losses, scales = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        copy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        rows = Dataset.from_dict({"input_ids": tokens.tolist(), "attention_mask": torch.ones_like(tokens).tolist()})
        with _recording(losses, scales):
            oneshot(model=copy, processor=tokenizer, dataset=rows, recipe=recipe, num_calibration_samples=len(tokens),
                    max_seq_length=tokens.shape[1], pipeline="sequential")
    return copy, losses, scales


def ct_quantizer(bits: int, group_size: int):
    """compressed-tensors' own asymmetric group rounding (min–max per group, its qparams and its
    fake quantization), the rounding llm-compressor's AWQ search simulates for W{bits}A16_ASYM."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group_size)

    def quantize(w):
        groups = w.reshape(w.shape[0], -1, group_size)
        scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        return fake_quantize(w, scale, zero, args)

    return quantize
