import pytest

from lec19quant import memory, roofline


def test_batch_one_fp16_is_memory_bound_and_reads_the_weights():
    cost = roofline.matmul_cost(1, 4096, 4096)
    assert cost.flops == 2 * 4096 * 4096
    assert cost.bytes == 4096 * 4096 * 2 + 4096 * 2 + 4096 * 2
    assert roofline.memory_bound(cost, "T4")
    assert roofline.min_time(cost, "T4") == cost.bytes / 320e9


def test_four_bit_weights_are_about_three_and_a_half_times_faster_at_batch_one():
    fp16 = roofline.min_time(roofline.matmul_cost(1, 4096, 4096), "H100")
    q4k = roofline.min_time(roofline.matmul_cost(1, 4096, 4096, weight_bits=memory.BITS_PER_WEIGHT["Q4_K"]), "H100")
    assert fp16 / q4k == pytest.approx(16 / 4.5, rel=0.01)  # REFERENCE: about 3.5×


def test_large_batches_are_compute_bound_and_the_format_stops_mattering():
    fp16 = roofline.matmul_cost(4096, 4096, 4096)
    q4 = roofline.matmul_cost(4096, 4096, 4096, weight_bits=4.5)
    assert not roofline.memory_bound(fp16, "A100") and not roofline.memory_bound(q4, "A100")
    assert roofline.min_time(fp16, "A100") == roofline.min_time(q4, "A100") == fp16.flops / 312e12


def test_ridge_point():
    # The H100's FP16 ridge is 989e12 / 3.35e12 ≈ 295 FLOP per byte: M ≈ 300 for 4096² fp16.
    assert roofline.memory_bound(roofline.matmul_cost(256, 4096, 4096), "H100")
    assert not roofline.memory_bound(roofline.matmul_cost(512, 4096, 4096), "H100")


def test_bad_arguments():
    with pytest.raises(ValueError, match="m must be a positive int"):
        roofline.matmul_cost(0, 4, 4)
    with pytest.raises(ValueError, match="weight_bits must be positive"):
        roofline.matmul_cost(1, 4, 4, weight_bits=0)
    with pytest.raises(ValueError, match="unknown GPU 'V100'"):
        roofline.min_time(roofline.matmul_cost(1, 4, 4), "V100")
