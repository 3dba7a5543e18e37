"""`rl-dlm train algo=spg|espo|gdsd` runs two steps on the embedded model through the command line, at the
quickstart recipe's `algo_settings.<algo>` block (its learning rate, not another algorithm's), with small
settings so each run takes seconds.

Run: .venv/bin/python -m pytest tests/trainers/test_new_algos_cli.py -q      (≈ 40 s on 2 CPU cores)
"""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rl_dlm.hydra_app import ROOT, compose_config

SMALL = ["max_steps=2", "eval.before=false", "eval.after=false", "num_generations=2",
         "per_device_train_batch_size=4", "max_completion_length=16", "block_length=16", "diffusion_steps=4",
         "task.train_size=8", "task.eval_size=4", "report_to=[none]"]


@pytest.mark.parametrize("algo", ["spg", "espo", "gdsd"])
def test_cli_runs_two_steps_on_the_embedded_model(tmp_path, capsys, algo):
    from rl_dlm.hydra_app import train_main

    block = OmegaConf.load(ROOT / "recipes" / "quickstart.yaml").algo_settings[algo]
    cfg = compose_config([f"algo={algo}"] + SMALL)
    assert (cfg.learning_rate, cfg.num_iterations) == (block.learning_rate, block.num_iterations)

    train_main([f"algo={algo}", f"output_dir={tmp_path}"] + SMALL)
    out = capsys.readouterr().out
    assert f"algo={algo} " in out  # the banner names the algorithm as algo= does
    assert (tmp_path / "final" / "adapter_config.json").exists()
