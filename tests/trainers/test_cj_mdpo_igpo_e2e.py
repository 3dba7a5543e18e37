"""CJ-GRPO, MDPO and IGPO end to end on the embedded model, composed exactly as `rl-dlm train algo=<name>
max_steps=2 ...` composes them: two steps change the LoRA weights with a finite loss. A within-group
varying reward is added so that every algorithm has a learning signal at this tiny size."""
from __future__ import annotations

import pytest

from rl_dlm.hydra_app import build, compose_config
from tests.trainers.test_coupled_gdpo_e2e import train_two_steps

SMALL = ["max_steps=2", "num_generations=2", "per_device_train_batch_size=4", "task.train_size=8",
         "task.eval_size=4", "eval.before=false", "eval.after=false", "lora_r=4", "lora_alpha=8",
         "lora_dropout=0.0", "logging_steps=1", "learning_rate=1e-2", "report_to=[none]",
         "max_completion_length=16", "diffusion_steps=8", "block_length=16",
         "+task.rewards.noise={_target_: tests.trainers.test_cj_mdpo_igpo_e2e.noisy_text_reward}"]


def noisy_text_reward(completions, **kw):
    """Varies with the text, so groups of two have non-zero advantages."""
    text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(sum(map(ord, t)) % 7) for t in text]


@pytest.mark.parametrize("algo,sampler,extra", [
    ("cj_grpo", "FullDiffusionSampler", []),
    # μ = 1 as in the paper (quickstart: 4); 4 replayed steps forwarded 3 + 1 (CJ-GRPO and IGPO: one by one)
    ("mdpo", "MaskGITSampler", ["num_iterations=1", "likelihood.top_k_steps=4", "replay_steps_per_forward=3"]),
    ("igpo", "SemiARSampler", []),
])
def test_two_steps_from_the_composed_config(tmp_path, algo, sampler, extra):
    cfg = compose_config([f"algo={algo}", f"output_dir={tmp_path}", *SMALL, *extra])
    trainer = build(cfg)
    assert type(trainer.components.sampler).__name__ == sampler
    history = train_two_steps(trainer)
    if algo == "igpo":
        assert "igpo/triggered_groups" in history[0]
    if algo == "mdpo":
        assert "step_reward/first" in history[0]


def test_sampler_options_compose_and_mismatches_fail_at_start_up(tmp_path):
    cfg = compose_config(["algo=mdpo", "sampler.rcr=true", f"output_dir={tmp_path}", *SMALL[:-1]])
    assert build(cfg).components.sampler.rcr
    cfg = compose_config(["algo=cj_grpo", "sampler=maskgit", "sampler.rcr=true", f"output_dir={tmp_path}",
                          *SMALL[:-1]])
    with pytest.raises(ValueError, match="unmask_step"):  # RCR has no commit map to replay
        build(cfg)
    cfg = compose_config(["algo=igpo", "sampler=eoser_ass", f"output_dir={tmp_path}", *SMALL[:-1]])
    with pytest.raises(ValueError, match="hint_ids"):
        build(cfg)
