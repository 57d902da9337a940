"""The machine facts benchmarks and trained models record next to int8 encoder results."""

from __future__ import annotations

from labeling.int8 import INT8_ISA_FLAGS, machine_facts

INTEL = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_int8 amx_tile
"""
AMD = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma
"""


def test_the_int8_instruction_sets_are_read_from_cpuinfo() -> None:
    intel = machine_facts(INTEL)
    assert intel["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert intel["int8_isa"] == ["avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"]
    amd = machine_facts(AMD)
    assert (amd["cpu"], amd["int8_isa"]) == ("AMD EPYC", ["avx2"])
    assert set(intel["int8_isa"]) <= set(INT8_ISA_FLAGS)


def test_no_cpuinfo_still_answers() -> None:
    facts = machine_facts("")
    assert facts["int8_isa"] == []
    assert isinstance(facts["cpu"], str)
    assert facts["onnxruntime"]  # a dependency of the package
    assert facts["cpus"] is None or facts["cpus"] >= 1


def test_products_on_the_derived_weight_grid_are_exact_on_this_cpu() -> None:
    """The E5 conversion keeps its int8 weights on WEIGHT_RANGE so that no CPU saturates: on
    this machine, whatever its instruction sets, such products equal the exact ones."""
    from labeling.int8 import WEIGHT_RANGE, int8_products_exact

    assert WEIGHT_RANGE[1] * 255 * 2 <= 32767  # a pair of products fits in int16
    assert int8_products_exact(*WEIGHT_RANGE)
    assert int8_products_exact(*WEIGHT_RANGE, seed=1)
    facts = machine_facts("")
    assert facts["int8_weight_grid_exact"] is True
    assert isinstance(facts["int8_full_range_exact"], bool)  # False on AVX2 without VNNI
