"""The assignment checks of the chapter "Why quantize"."""
from collections.abc import Callable

from .. import memory
from .core import Passed, _run


def count_params_cases() -> list[dict]:
    """Configs of dense decoders that test a parameter count: the shipped ones (Qwen3 with its
    query/key norms and head_dim ≠ d/h, Llama with grouped-query attention, SmolLM2 with a tied
    head), and variants with the head tied or untied and with as many key/value heads as heads."""
    shipped = [memory.get_config(name) for name in memory.CONFIGS]
    llama, smol, qwen = (memory.get_config(name) for name in
                         ("meta-llama/Llama-3.1-8B", "HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen3-0.6B"))
    return shipped + [dict(llama, tie_word_embeddings=True), dict(smol, tie_word_embeddings=False),
                      dict(qwen, num_key_value_heads=qwen["num_attention_heads"])]


def check_count_params(student: Callable[[dict], int]) -> Passed:
    """student(config) must return the parameter count of the dense decoder `config` describes,
    `memory.count_params(config)`: per block the attention, MLP and norm weights, plus the
    embedding, the final norm and the output head unless it is tied to the embedding."""
    cases = count_params_cases()
    return _run("check_count_params", lambda config: student(dict(config)), cases,
                [memory.count_params(c) for c in cases], lambda got, want: bool(got == want),
                lambda c: (f"{c['model_type']} with d = {c['hidden_size']}, {c['num_hidden_layers']} layers, "
                           f"h = {c['num_attention_heads']}, h_kv = {c.get('num_key_value_heads')}, "
                           f"tied = {c.get('tie_word_embeddings', False)}"), "configs")
