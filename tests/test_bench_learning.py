"""The learning benchmark's run specs (`bench/learning.py --algos`) and how its report labels them."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learning import SIZES, parse_algo, run_config  # noqa: E402
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


def test_run_config_scales_gdpo_rate_caps_mu_and_lets_the_spec_win():
    size = SIZES["gpu"]
    rates = {spec: run_config(size, spec, "countdown", 0)[1].learning_rate
             for spec in ("diffu_grpo", "mdpo", "gdpo", "gdpo@2e-4")}
    assert rates == {"diffu_grpo": 4e-4, "mdpo": 4e-4, "gdpo": 1e-4, "gdpo@2e-4": 2e-4}
    assert run_config(SIZES["cpu"], "gdpo", "countdown", 0)[1].learning_rate == 2e-4  # half over 10 batches
    _, args = run_config(size, "diffu_grpo+beta=0.0", "countdown", 1)  # paper μ = 12 → 4
    assert (args.num_iterations, args.max_steps, args.beta, args.seed) == (4, size.rollouts * 4, 0.0, 1)
    assert (args.num_generations, args.per_device_train_batch_size, args.lora_r) == (8, 32, 16)


def test_schedule_is_shared_and_a_spec_can_change_it():
    """GPU size decays the rate to 0 over the run; CPU size keeps it constant; `+lr_scheduler_type=` wins."""
    assert run_config(SIZES["gpu"], "cj_grpo", "countdown", 0)[1].lr_scheduler_type == "cosine"
    assert run_config(SIZES["cpu"], "cj_grpo", "countdown", 0)[1].lr_scheduler_type == "constant_with_warmup"
    _, args = run_config(SIZES["gpu"], "gdpo+lr_scheduler_type=constant_with_warmup", "countdown", 0)
    assert args.lr_scheduler_type == "constant_with_warmup"


def test_deterministic_kernels_are_restored_after_the_build():
    import torch

    from bench.learning import deterministic_kernels

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels():
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cuda.cudnn_sdp_enabled()


def test_rl_runs_under_deterministic_kernels_use_math_attention(monkeypatch):
    """`--deterministic` RL runs leave only the math attention kernel (flash / efficient backward passes may
    accumulate with atomics); the start-model build keeps them."""
    import torch

    from bench.learning import deterministic_kernels, make_deterministic

    cuda = torch.backends.cuda
    flags = (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.cudnn_sdp_enabled(),
             torch.are_deterministic_algorithms_enabled())
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        make_deterministic(math_attention=True)
        assert not (cuda.flash_sdp_enabled() or cuda.mem_efficient_sdp_enabled() or cuda.cudnn_sdp_enabled())
        assert cuda.math_sdp_enabled() and torch.are_deterministic_algorithms_enabled()
        with deterministic_kernels():  # the same start model with or without --deterministic
            assert cuda.flash_sdp_enabled() and cuda.mem_efficient_sdp_enabled()
        assert not (cuda.flash_sdp_enabled() or cuda.mem_efficient_sdp_enabled())
    finally:
        cuda.enable_flash_sdp(flags[0])
        cuda.enable_mem_efficient_sdp(flags[1])
        cuda.enable_cudnn_sdp(flags[2])
        torch.use_deterministic_algorithms(flags[3])


def test_a_runs_adapters_are_a_function_of_its_seed():
    import torch

    from bench.learning import ROOT, start_policy

    model = str(ROOT / "checkpoints" / "tiny-llada")

    states = iter(range(1000, 1004))

    def adapters(seed):
        torch.manual_seed(next(states))  # a different global state for every call: the run's seed decides
        _, args = run_config(SIZES["cpu"], "diffu_grpo", "countdown", seed)
        model_ = start_policy(model, args).model
        return torch.cat([p.detach().flatten() for n, p in sorted(model_.named_parameters()) if "lora_A" in n])

    assert torch.equal(adapters(0), adapters(0)) and not torch.equal(adapters(0), adapters(1))


def test_table_lists_each_seeds_gain_in_seed_order():
    """Parallel runs finish in any order; the brackets follow the seeds, as the caption says."""
    from bench.learning_report import table

    def run(seed, after):
        return {"algo": "gdpo", "task": "countdown", "seed": seed, "after": after, "seconds": 1.0,
                "gain_points": round(100 * (after - 0.1), 1), "learning_rate": 1e-4}

    record = {"size": {"tasks": ["countdown"], "seeds": [0, 1], "n_eval": 500, "rollouts": 80, "prompts": 4,
                       "group": 8, "learning_rate": 4e-4},
              "metrics": {"before": {"countdown": 0.1}, "runs": [run(1, 0.3), run(0, 0.2)]},
              "device": "cpu", "start_model": {"source": "x"}, "command": "python x", "git_revision": "abc",
              "date": "today"}
    assert "10.0 → 25.0 (**+15.0**; +10.0, +20.0)" in table(record)
