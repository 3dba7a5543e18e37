"""bench/profile_8b.py checks itself on CPU (`--tiny`): every section is recorded, including the sampling
entries that compare the masked-only draw with the draw at every position."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_profile_script_records_every_section(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "profile_8b.py"), "--tiny", "--skip-compile",
                    "--out", str(tmp_path)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    metrics = json.loads((tmp_path / "profile_8b.json").read_text())["metrics"]
    for key in ("gemm_fraction_of_matmul", "sampling", "forward_base", "graphs_base", "forward_base_unfused",
                "forward_lora", "graphs_lora", "update", "update_unfused"):
        assert metrics[key], key
    for entry in metrics["sampling"]["semi_ar"]:
        assert entry["masked_only_ms"] > 0 and entry["every_position_ms"] > 0
    assert all(entry["graph_equal"] for entry in metrics["graphs_base"] + metrics["graphs_lora"])
