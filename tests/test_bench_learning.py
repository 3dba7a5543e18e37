"""The learning benchmark's run specs (`bench/learning.py --algos`), the settings it gives each of the nine
algorithms (all built through `algo_trainer`), and how its report labels them."""
import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learning import (ALGOS, ROOT, SIZES, Size, budget, paper_num_iterations, parse_algo,  # noqa: E402
                            run_config)
from bench.learning_report import label  # noqa: E402
from rl_dlm.hydra_app import compose_algo  # noqa: E402


def test_every_algorithm_of_conf_algo_is_benchmarked():
    assert sorted(ALGOS) == sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))


def test_spec_sets_rate_and_passes_overrides():
    assert parse_algo("igpo") == ("igpo", [])
    assert parse_algo("gdpo@1e-4+objective.beta=0.04+likelihood.full_canvas=true+likelihood.quadrature=monte_carlo"
                      ) == ("gdpo", ["learning_rate=0.0001", "objective.beta=0.04", "likelihood.full_canvas=true",
                                     "likelihood.quadrature=monte_carlo"])
    assert parse_algo("espo+advantage=zscore+lr_scheduler_type=cosine") == (
        "espo", ["advantage=zscore", "lr_scheduler_type=cosine"])  # a component choice and a top-level key


@pytest.mark.parametrize("spec,message", [
    ("grpo", "unknown algorithm 'grpo'"),
    ("gdpo+beta", "not FIELD=VALUE"),
    ("gdpo@fast", "not a learning rate"),
    ("gdpo+bogus=1", "gdpo\\+bogus=1: unknown key 'bogus'"),
    ("gdpo+beta=0.04", "did you mean objective.beta"),  # the flat names of earlier records
    ("spg+objective.epsilon=0.2", "not of the chosen objective=sandwich"),
    ("gdpo+num_iterations=0", "num_iterations must be ≥ 1"),
    ("espo+likelihood.draws=two", "likelihood.draws must be an integer"),
    ("spg+objective=token", "likelihood=spg"),  # components that do not fit, found before any model loads
])
def test_bad_spec_names_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_algo(spec)
    with pytest.raises(ValueError, match=message):
        run_config(SIZES["cpu"], spec, "countdown", 0)


def test_report_labels_show_every_change():
    assert label("gdpo@1e-4+objective.beta=0.04") == "GDPO (lr 1e-4, objective.beta=0.04)"
    assert label("gdpo@1e-4+beta=0.04") == "GDPO (lr 1e-4, beta=0.04)"  # earlier records' specs still render
    assert label("mdpo") == "MDPO" and label("espo") == "ESPO" and label("gdsd+likelihood.tlc=true") == (
        "GDSD (likelihood.tlc=true)")
    assert label("gdpo", 1e-4, 4e-4) == "GDPO (lr 1e-4)" and label("gdpo", 4e-4, 4e-4) == "GDPO"


def test_run_config_scales_the_sequence_ratio_rates_caps_mu_and_lets_the_spec_win():
    size = SIZES["gpu"]
    rates = {spec: run_config(size, spec, "countdown", 0)[2].learning_rate
             for spec in ("diffu_grpo", "mdpo", "spg", "gdsd", "gdpo", "espo", "gdpo@2e-4")}
    assert rates == {"diffu_grpo": 4e-4, "mdpo": 4e-4, "spg": 4e-4, "gdsd": 4e-4, "gdpo": 1e-4, "espo": 1e-4,
                     "gdpo@2e-4": 2e-4}
    for name in ("gdpo", "espo"):  # half over the CPU's 10 batches
        assert run_config(SIZES["cpu"], name, "countdown", 0)[2].learning_rate == 2e-4
    name, overrides, args = run_config(size, "diffu_grpo+objective.beta=0.0", "countdown", 1)  # paper μ 12 → 4
    assert (name, args.num_iterations, args.max_steps, args.seed) == ("diffu_grpo", 4, size.rollouts * 4, 1)
    assert (args.num_generations, args.per_device_train_batch_size, args.lora_r) == (8, 32, 16)
    assert compose_algo(name, overrides).objective.beta == 0.0 and compose_algo(name).objective.beta == 0.04
    _, _, args = run_config(size, "gdsd+num_iterations=2", "countdown", 0)  # a spec's μ sets the step count
    assert (args.num_iterations, args.max_steps) == (2, size.rollouts * 2)
    assert run_config(size, "mdpo", "countdown", 0)[2].num_iterations == 1  # paper μ below the cap


def test_paper_mu_is_the_compositions():
    assert {a: paper_num_iterations(a) for a in ("spg", "espo", "gdsd", "diffu_grpo")} == {
        "spg": 4, "espo": 8, "gdsd": 8, "diffu_grpo": 12}
    assert all(paper_num_iterations(a) == compose_algo(a).num_iterations for a in ALGOS)


@pytest.mark.parametrize("size_name", ["cpu", "gpu"])
def test_the_six_presets_get_the_settings_their_preset_config_gave_them(size_name):
    """Before `algo_trainer`, a run was `<Algo>Config(**budget, μ, rate, ...)`: the same `RLConfig` and the same
    rollout sampler now (the components are the same too: tests/test_component_groups.py), so the six's earlier
    records stay comparable."""
    from rl_dlm.hydra_app import trainer_args
    from rl_dlm.trainers import TRAINERS

    size = SIZES[size_name]
    for name, (trainer_cls, config_cls) in TRAINERS.items():
        _, overrides, args = run_config(size, name, "countdown", 0)
        mu = min(config_cls().num_iterations, size.max_num_iterations)
        preset = config_cls(**{**budget(size, "countdown"), "learning_rate": args.learning_rate},
                            num_iterations=mu, output_dir=args.output_dir, seed=0, max_steps=size.rollouts * mu,
                            logging_steps=mu)
        for f in dataclasses.fields(args):
            assert getattr(preset, f.name) == getattr(args, f.name), (name, f.name)
        trainer = trainer_cls.__new__(trainer_cls)  # just enough of one for its default sampler
        trainer.args, trainer.family_name = preset, "llada"
        assert repr(trainer_args(compose_algo(name, overrides))[1]) == repr(trainer.default_sampler()), name


@pytest.mark.parametrize("algo", ["spg", "espo", "gdsd"])
def test_a_config_only_algorithm_runs_through_the_benchmark(algo):
    """SPG, ESPO and GDSD have no preset: the benchmark builds them from their composition and trains them."""
    from bench.learning import run_one

    size = Size(tasks=("countdown",), seeds=(0,), rollouts=1, eval_every=1, n_eval=4, prompts=1, group=2,
                max_num_iterations=1)
    result = run_one(size, str(ROOT / "checkpoints" / "tiny-llada"), algo, "countdown", 0, 0.0)
    assert result["algo"] == algo and result["paper_num_iterations"] == compose_algo(algo).num_iterations
    assert result["num_iterations"] == 1  # min(paper μ, max_num_iterations)
    assert [p[0] for p in result["points"]] == [0, 1] and 0 <= result["after"] <= 1
    assert result["reward_first"] is not None


def test_schedule_is_shared_and_a_spec_can_change_it():
    """GPU size decays the rate to 0 over the run; CPU size keeps it constant; `+lr_scheduler_type=` wins."""
    assert run_config(SIZES["gpu"], "cj_grpo", "countdown", 0)[2].lr_scheduler_type == "cosine"
    assert run_config(SIZES["cpu"], "spg", "countdown", 0)[2].lr_scheduler_type == "constant_with_warmup"
    _, _, args = run_config(SIZES["gpu"], "gdpo+lr_scheduler_type=constant_with_warmup", "countdown", 0)
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

    from bench.learning import start_policy

    model = str(ROOT / "checkpoints" / "tiny-llada")

    states = iter(range(1000, 1004))

    def adapters(seed):
        torch.manual_seed(next(states))  # a different global state for every call: the run's seed decides
        _, _, args = run_config(SIZES["cpu"], "diffu_grpo", "countdown", seed)
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
