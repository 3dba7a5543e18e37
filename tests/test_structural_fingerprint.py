"""A structural change keeps every logged number: a seeded 3-rollout-batch CPU run of each of the six algorithms
logs bit-identical metrics (time and throughput keys aside) to the fingerprint recorded before the change
(bench/results/structural_fingerprint.json, made by `python bench/structural_fingerprint.py --write`), and with
`fused_projections=false` to the one recorded before fused projections existed (`..._unfused.json`)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))

from bench.structural_fingerprint import (ALGOS, FINGERPRINT, FINGERPRINT_UNFUSED, UNFUSED,  # noqa: E402
                                         differences, fingerprint)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_logged_metrics_are_bit_identical_to_the_fingerprint(algo):
    expected = json.loads(FINGERPRINT.read_text())
    assert differences(expected["history"], fingerprint([algo])) == []


@pytest.mark.parametrize("algo", list(ALGOS))
def test_the_unfused_path_is_bit_identical_to_the_code_before_fusion(algo):
    """fused_projections=false calls every projection as its own module, as before fused_projections.py."""
    expected = json.loads(FINGERPRINT_UNFUSED.read_text())
    assert differences(expected["history"], fingerprint([algo], UNFUSED)) == []


def test_a_changed_number_is_reported_with_its_algorithm_step_and_key():
    expected = {"gdpo": [{"loss": 0.5, "step": 1}]}
    assert differences(expected, {"gdpo": [{"loss": 0.5000000000000001, "step": 1}]}) == [
        "gdpo step 1 loss: expected 0.5, got 0.5000000000000001"]
    assert differences(expected, {"gdpo": [{"loss": 0.5, "step": 1}]}) == []
