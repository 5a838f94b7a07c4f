"""What the chapter "Choosing a format" uses beside lec19quant.tradeoff: its checks (a right answer
passes, typical mistakes fail) and its figures."""
import matplotlib
import pytest

from lec19quant import checks, plots, tradeoff

matplotlib.use("Agg")


def front(sizes, errors):
    out, best = [], float("inf")
    for i in sorted(range(len(sizes)), key=lambda i: (sizes[i], errors[i])):
        if errors[i] < best:
            out.append(i)
            best = errors[i]
    return out


def best_under(sizes, errors, budget):
    fitting = [i for i, s in enumerate(sizes) if s <= budget]
    return min(fitting, key=lambda i: (errors[i], sizes[i], i)) if fitting else None


def test_right_answers_pass():
    assert "all 6 charts right" in checks.check_pareto_front(front).message
    assert "all 6 charts with a budget right" in checks.check_best_under(best_under).message


def test_pareto_mistakes_fail():
    def keeps_ties(sizes, errors):  # ≤ instead of <: equal points and equal errors stay
        out, best = [], float("inf")
        for i in sorted(range(len(sizes)), key=lambda i: (sizes[i], errors[i])):
            if errors[i] <= best:
                out.append(i)
                best = errors[i]
        return out

    def unsorted(sizes, errors):  # the right set, in the order of the input
        return sorted(front(sizes, errors))

    for wrong in (keeps_ties, unsorted, lambda s, e: list(range(len(s)))):
        with pytest.raises(checks.CheckFailed, match="check_pareto_front"):
            checks.check_pareto_front(wrong)


def test_budget_mistakes_fail():
    def strict(sizes, errors, budget):  # < budget: a scheme exactly at the budget is left out
        return best_under(sizes, errors, budget - 1e-9)

    def smallest(sizes, errors, budget):  # the smallest scheme, not the best one that fits
        fitting = [i for i, s in enumerate(sizes) if s <= budget]
        return min(fitting, key=lambda i: sizes[i]) if fitting else None

    for wrong in (strict, smallest, lambda s, e, b: 0):
        with pytest.raises(checks.CheckFailed, match="check_best_under"):
            checks.check_best_under(wrong)


def rows():
    m = tradeoff.Measurement
    return [m("q8_0", "GGUF", "float", 8.5, 1, 1.0, 0.003, 0.0002, 0.03, 97.0, 1),
            m("gguf Q4_K_M", "GGUF", "float", 5.5, 1, 1.05, 0.06, 0.005, 0.6, 88.0, 1),
            m("w4-row", "Quantization basics", "float", 4.05, 1, 2.0, 0.8, 0.02, 5.0, 50.0, 1),
            m("q6_k", "GGUF", "float", 7.0, 1, 1.0, 0.01, 0.001, 0.1, 95.0, 1)]


def test_size_quality_marks_the_frontier():
    fig = plots.size_quality(rows())
    ax = fig.axes[0]
    frontier = next(line for line in ax.get_lines() if line.get_label() == "Pareto frontier")
    assert list(frontier.get_xdata()) == [4.05, 5.5, 7.0, 8.5]
    assert {t.get_text() for t in ax.texts} == {"q8_0", "gguf Q4_K_M", "w4-row", "q6_k"}
    with pytest.raises(ValueError, match="no measurements"):
        plots.size_quality([])


def test_against_llama3_draws_the_types_measured_on_both():
    ours = tradeoff.as_file_types(rows())
    assert set(ours) == {"Q8_0", "Q4_K_M", "Q6_K"}
    fig = plots.against_llama3(ours)
    theirs, mine = (line for line in fig.axes[0].get_lines())
    assert len(theirs.get_xdata()) == len(mine.get_xdata()) == 3
    assert list(theirs.get_xdata()) == [tradeoff.gib_to_bits_per_weight(tradeoff.LLAMA3_8B[t][0]) for t in ours]
    with pytest.raises(ValueError, match="scoreboard"):
        plots.against_llama3({})
