"""The learning benchmark's run specs (`bench/learning.py --algos`) and how its report labels them."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learning import RATE_SCALE, SIZES, budget, parse_algo  # noqa: E402
from bench.learning_report import label  # noqa: E402


def test_spec_sets_rate_and_typed_config_fields():
    assert parse_algo("igpo") == ("igpo", {})
    assert parse_algo("gdpo@1e-4+beta=0.04+full_canvas=true+elbo_sampler=monte_carlo") == (
        "gdpo", {"learning_rate": 1e-4, "beta": 0.04, "full_canvas": True, "elbo_sampler": "monte_carlo"})


@pytest.mark.parametrize("spec", ["grpo", "gdpo+bogus=1", "gdpo+beta"])
def test_bad_spec_names_what_is_wrong(spec):
    with pytest.raises(ValueError, match="unknown algorithm|FIELD=VALUE"):
        parse_algo(spec)


def test_report_labels_show_every_change():
    assert label("gdpo@1e-4+beta=0.04") == "GDPO (lr 1e-4, beta=0.04)"
    assert label("mdpo") == "MDPO"
    assert label("gdpo", 1e-4, 4e-4) == "GDPO (lr 1e-4)" and label("gdpo", 4e-4, 4e-4) == "GDPO"


def test_only_gdpo_leaves_the_shared_rate_and_the_shared_settings_match_the_docs():
    assert RATE_SCALE == {"gdpo": 0.25}
    shared = budget(SIZES["gpu"], "countdown")
    assert (shared["learning_rate"], shared["num_generations"], shared["lora_r"]) == (4e-4, 8, 16)
