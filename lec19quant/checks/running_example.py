"""The assignment checks of the chapter "The running example"."""
import functools
import math
from collections.abc import Callable

from .. import models
from .core import Passed, _run


@functools.lru_cache(maxsize=1)
def running_example():
    """The default model and its tokenizer, loaded once per process (every check shares them)."""
    return models.load_model()


def perplexity_cases() -> list[str]:
    """Excerpts of the evaluation text (moby-dick), of 4 to about 50 tokens."""
    text = models.load_text("moby-dick", "test")
    return [text[:200], "Call me Ishmael.", text[-120:]]


def check_perplexity(student: Callable) -> Passed:
    """student(model, tokenizer, text) must return the model's perplexity on the text's tokens as
    one window, exp(−mean log p(x_t | x_<t)) over every token after the first: what
    `models.perplexity(model, tokenizer, text, context=len(tokens))` computes (to within 1e-4,
    relative). The model is the running example, loaded once per process."""
    model, tokenizer = running_example()
    cases = perplexity_cases()
    wants = [models.perplexity(model, tokenizer, text, context=len(tokenizer(text)["input_ids"])).perplexity
             for text in cases]
    return _run("check_perplexity", lambda text: float(student(model, tokenizer, text)), cases, wants,
                lambda got, want: math.isclose(got, want, rel_tol=1e-4),
                lambda text: f"text {text[:30]!r}… ({len(tokenizer(text)['input_ids'])} tokens)", "texts")
