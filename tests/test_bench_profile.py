"""bench/profile_8b.py, bench/elementwise_kernels.py, bench/gemm_shapes.py and bench/train_step.py's compiled
variants check themselves on CPU (`--tiny`): every section is recorded, including the sampling entries that compare
the masked-only draw with the draw at every position, the compiled element-wise entries, the update with every
block compiled, and the GEMMs cuBLAS and Inductor run."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_profile_script_records_every_section(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "profile_8b.py"), "--tiny", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    metrics = json.loads((tmp_path / "profile_8b.json").read_text())["metrics"]
    for key in ("gemm_fraction_of_matmul", "sampling", "forward_base", "graphs_base", "forward_base_unfused",
                "forward_lora", "graphs_lora", "update", "update_unfused", "forward_base_compiled_elementwise",
                "graphs_base_compiled_elementwise", "forward_lora_compiled_elementwise", "update_compiled_elementwise",
                "update_compiled_blocks", "forward_base_bs1", "dual_step_base", "forward_base_bs1_compiled_elementwise",
                "dual_step_base_compiled_elementwise"):
        assert metrics[key], key
    assert metrics["compiled_graph_breaks"] == 0
    for entry in metrics["sampling"]["semi_ar"]:
        assert entry["masked_only_ms"] > 0 and entry["every_position_ms"] > 0
    assert all(entry["graph_equal"] for entry in metrics["graphs_base"] + metrics["graphs_lora"])


def test_elementwise_kernels_script_times_every_variant(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "elementwise_kernels.py"), "--tiny", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    metrics = json.loads((tmp_path / "elementwise_kernels.json").read_text())["metrics"]
    for variant in ("eager", "compiled", "compiled_static", "compiled_dynamic", "compiled_flip"):
        assert set(metrics[variant]) == {"rope_ms", "rope_contiguous_ms", "rope_before_transpose_ms", "rope_rows_ms",
                                         "norm_ms", "silu_mul_ms", "silu_mul_2d_ms", "rope_autograd_small_ms"}, variant
    assert metrics["rope_compiled_equal_eager"] and metrics["rope_flip_equal_eager"]  # bit for bit on the CPU
    assert "def call(" in (tmp_path / "rope_compiled_code.txt").read_text()


def test_lora_casts_host_script_compares_with_the_code_before(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "lora_casts_host.py"), "--tiny", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    metrics = json.loads((tmp_path / "lora_casts_host.json").read_text())["metrics"]
    assert metrics["now_ms"] > 0 and metrics["before_ms"] > 0 and metrics["modules"] > 100


def test_train_step_script_times_the_update_with_every_block_compiled(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--tiny", "--updates", "1",
                    "--compiled-blocks", "--out", str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    metrics = json.loads((tmp_path / "train_step.json").read_text())["metrics"]
    assert metrics["compiled_blocks"]["seconds_per_update"] > 0
    assert metrics["compiled_blocks"]["graph_breaks"] == 0
    assert metrics["max_abs_logp_difference_of_compiled_blocks"] < 1e-4  # fp32 on the CPU: rounding only


def test_gemm_shapes_script_times_cublas_and_the_autotuned_gemms(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "gemm_shapes.py"), "--tiny", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    metrics = json.loads((tmp_path / "gemm_shapes.json").read_text())["metrics"]
    for rows in ("rows_7", "rows_33"):
        assert set(metrics[rows]) == {"qkv", "attn_out", "ff_up", "ff_out", "block"}
        assert metrics[rows]["block"]["cublas_ms"] > 0 and metrics[rows]["block"]["autotuned_ms"] > 0
        assert all(e["max_rel_difference"] < 1e-2 for name, e in metrics[rows].items() if name != "block")
