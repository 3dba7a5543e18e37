"""bench/rollout.py checks itself on CPU: its `+unfused`, `+wide` and `+adds` modes time the code before fused
projections, before masked-only draws and before residual sums in the GEMM in the same run, record the speed-up
over it and draw the same tokens."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_baseline_modes_record_the_speed_up_and_the_same_tokens(tmp_path):
    args = ["--tiny", "--n", "2", "--prompt", "8", "--gen", "16", "--steps", "8", "--block", "8",
            "--modes", "none,none+unfused,none+adds,dual+graphs,dual+graphs+unfused,dual+graphs+wide",
            "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(ROOT / "bench" / "rollout.py"), *args], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    metrics = json.loads((tmp_path / "rollout.json").read_text())["metrics"]
    assert set(metrics) == {"none", "none+unfused", "none+adds", "dual+graphs", "dual+graphs+unfused",
                            "dual+graphs+wide"}
    for fused in ("none", "dual+graphs"):
        assert metrics[fused]["speedup_vs_unfused"] > 0
        assert metrics[fused]["token_agreement_with_unfused"] == 1.0
    assert metrics["dual+graphs"]["speedup_vs_wide"] > 0
    assert metrics["dual+graphs"]["token_agreement_with_wide"] == 1.0
    assert metrics["none"]["speedup_vs_adds"] > 0 and metrics["none"]["token_agreement_with_adds"] == 1.0
    assert metrics["none+unfused"]["token_agreement_with_exact"] == 1.0
    assert all(0 < m["fraction_of_sustained_matmul"] for m in metrics.values())
    assert all(m["graph_captures"] >= 0 for k, m in metrics.items() if "graphs" in k)
