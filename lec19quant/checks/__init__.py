"""Assignment checks: run a student's function on every case and compare with the package.

A check that passes returns a one-line `Passed` message (a notebook shows it); a wrong answer
raises `CheckFailed`, an AssertionError that says how many cases failed and shows the first:
the input, the expected answer and the student's. An exception inside the student's function
counts as a wrong answer for that case.

One module per chapter, named after it (checks.number_formats, checks.gguf, ...); every check is
also available here, as checks.check_absmax(...).
"""
from .choosing_a_format import budget_cases, chart_cases, check_best_under, check_pareto_front
from .core import CheckFailed, Passed
from .gguf import check_q8_0, check_scale_min_k4, check_use_more_bits, q8_0_cases
from .gptq import check_column_update, check_inverse_hessian_cholesky
from .imatrix import activation_cases, check_importance, check_iq4_nl_codes, iq4_nl_cases
from .llm_int8 import check_llm_int8_matmul, check_outlier_columns, llm_int8_cases
from .making_it_fast import check_min_time
from .measuring_quality import check_kl_divergence, check_same_top, logit_pairs
from .number_formats import (
    check_codebook,
    check_decode,
    check_encode,
    check_from_bits,
    check_to_bits,
    encode_cases,
)
from .nvfp4 import check_nvfp4_dequantize, check_nvfp4_quantize, nvfp4_cases
from .qat import check_fake_quantize, check_lsq_gradient
from .qlora import check_adamw_step, check_lora_merge, check_nf4_quantize
from .quantization_basics import (
    check_absmax,
    check_vectorwise_matmul,
    check_zeropoint,
    quantization_cases,
)
from .running_example import check_perplexity
from .smoothquant_awq import check_fold_scales, check_smoothing_factors, fold_cases, smoothing_cases
from .why_quantize import check_count_params
