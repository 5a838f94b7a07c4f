"""The figures the book draws, each from the package's own numbers.

One module per chapter, named after it (plots.gguf holds the GGUF chapter's figures); every
figure is also available here, as plots.k_block(...).
"""
from .choosing_a_format import against_llama3, size_quality
from .gguf import gguf_errors, k_block, recipe_map
from .gptq import damp_and_act_order, error_as_columns_are_processed
from .imatrix import codebook_levels, imatrix_gain, importance_profile, weighted_block
from .llm_int8 import outlier_token_fractions, threshold_tradeoff
from .making_it_fast import gpu_results, roofline
from .measuring_quality import kld_distribution, llama_cpp_comparison
from .number_formats import bit_layout, relative_spacing, value_grid
from .nvfp4 import block_max_placement, format_errors, scale_windows
from .qat import fake_quantize_node, grid_drift, ptq_vs_qat
from .qlora import finetuning_curve, memory_budgets, nf4_levels
from .quantization_basics import error_heatmaps, error_vs_bits, outlier_growth, quantization_histogram
from .running_example import activation_heatmap
from .smoothquant_awq import awq_loss_curves, smoothing_magnitudes
from .why_quantize import footprint_vs_bits
