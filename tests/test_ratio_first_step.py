"""The importance ratio is exactly 1 at the first inner step of every rollout, in the mode the update runs in
(train mode, LoRA dropout 0.05 as in the 8B recipes, adapters already non-zero), for both stage-5 paths:
the plain one (diffu-GRPO) and the one that updates in groups of views (CJ-GRPO's trajectory replay,
MDPO's step replay).

- `disable_dropout=True` (the default, TRL's name): every dropout of the policy is off, so the old
  log-probs (no grad) and the update's log-probs come from the same function; ρ = 1 for any μ.
- μ = 1: the old log-probs are the update's own, detached, so ρ ≡ 1 even with dropout on.
- control: dropout on and μ > 1 does move ρ away from 1, so the setup can tell the difference."""
from __future__ import annotations

import pytest
import torch

from rl_dlm.hydra_app import build, compose_config

SMALL = ["num_generations=2", "per_device_train_batch_size=2", "gradient_accumulation_steps=2",
         "task.train_size=8", "task.eval_size=4", "eval.before=false", "eval.after=false", "lora_r=4",
         "lora_alpha=8", "lora_dropout=0.05", "logging_steps=1", "learning_rate=1e-2", "report_to=[none]",
         "max_completion_length=16", "diffusion_steps=8", "block_length=16", "objective.beta=0.04",
         "+task.rewards.noise={_target_: tests.trainers.test_cj_mdpo_igpo_e2e.noisy_text_reward}"]


def trained_history(tmp_path, algo: str, mu: int, *extra: str) -> list[dict]:
    """Two rollouts of μ steps each, from non-zero adapters (LoRA's B starts at 0, where dropout on the
    adapter path changes nothing)."""
    cfg = compose_config([f"algo={algo}", f"output_dir={tmp_path}", f"num_iterations={mu}",
                          f"max_steps={2 * mu}", *SMALL, *extra])
    trainer = build(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    history = trainer.train()
    assert [h["step"] for h in history] == list(range(1, 2 * mu + 1))
    assert trainer.policy.model.training  # the update ran in train mode
    return history


def first_inner_steps(history: list[dict], mu: int) -> list[dict]:
    return [h for h in history if (h["step"] - 1) % mu == 0]


@pytest.mark.parametrize("algo,mu,extra", [
    ("diffu_grpo", 1, []),
    ("diffu_grpo", 3, []),
    ("cj_grpo", 2, []),
    ("mdpo", 1, ["likelihood.top_k_steps=2"]),
    ("mdpo", 2, ["likelihood.top_k_steps=2"]),
])
def test_ratio_is_one_at_every_first_inner_step_with_dropout_disabled(tmp_path, algo, mu, extra):
    for h in first_inner_steps(trained_history(tmp_path, algo, mu, *extra), mu):
        assert h["ratio_mean"] == 1.0, (h["step"], h["ratio_mean"])
        assert h["clip_fraction"] == 0.0, (h["step"], h["clip_fraction"])


@pytest.mark.parametrize("algo,extra", [("diffu_grpo", []), ("mdpo", ["likelihood.top_k_steps=2"])])
def test_mu_one_ratio_is_one_even_with_dropout_on(tmp_path, algo, extra):
    history = trained_history(tmp_path, algo, 1, "disable_dropout=false", *extra)
    for h in history:
        assert h["ratio_mean"] == 1.0 and h["clip_fraction"] == 0.0, h


def test_dropout_on_with_mu_above_one_moves_the_ratio(tmp_path):
    """The control: the setup above is sensitive to dropout in the update."""
    history = trained_history(tmp_path, "diffu_grpo", 2, "disable_dropout=false")
    assert any(h["ratio_mean"] != 1.0 for h in first_inner_steps(history, 2))


def test_disable_dropout_zeroes_every_dropout_of_the_policy(tmp_path):
    cfg = compose_config(["algo=diffu_grpo", f"output_dir={tmp_path}", "max_steps=1", *SMALL])
    trainer = build(cfg)
    dropouts = [m for m in trainer.policy.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert any("lora_dropout" in n for n, m in trainer.policy.model.named_modules()
               if isinstance(m, torch.nn.Dropout))  # LoRA's are modules, so they are covered
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    kept = build(compose_config(["algo=diffu_grpo", f"output_dir={tmp_path}", "max_steps=1",
                                 "disable_dropout=false", *SMALL]))
    assert {m.p for m in kept.policy.model.modules() if isinstance(m, torch.nn.Dropout)} >= {0.05}


def test_cli_logs_ratio_one_and_no_clipping_after_the_adapters_moved(tmp_path, monkeypatch, capsys):
    """`rl-dlm train algo=diffu_grpo num_iterations=1 max_steps=3 lora_dropout=0.05`, made small, with a reward
    that varies within each group so that step 1 moves the adapters: steps 2 and 3 run with non-zero adapters,
    in train mode, where LoRA dropout would move the ratio."""
    import rl_dlm.hydra_app as app
    from rl_dlm.cli import main

    built = []
    monkeypatch.setattr(app, "build", lambda cfg, build=app.build: built.append(build(cfg)) or built[-1])
    main(["train", "algo=diffu_grpo", "num_iterations=1", "max_steps=3", "lora_dropout=0.05",
          f"output_dir={tmp_path}", "eval.before=false", "eval.after=false", "logging_steps=1", "task.train_size=8",
          "num_generations=4", "per_device_train_batch_size=8", "max_completion_length=16", "block_length=16",
          "diffusion_steps=4", SMALL[-1]])
    trainer = built[0]
    assert any(p.abs().sum() > 0 for n, p in trainer.policy.model.named_parameters() if "lora_B" in n)
    history = trainer.tracker.history
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history[1:]:
        assert h["ratio_mean"] == 1.0 and h["clip_fraction"] == 0.0, h
    printed = capsys.readouterr().out
    assert all(f"step {n}: " in printed for n in (2, 3)) and "ratio_mean=1 " in printed


def test_disable_dropout_makes_train_mode_forwards_repeat_exactly(tokenizer):
    """Residual, embedding and attention dropout of the native LLaDA (the attention one is a config number that
    SDPA reads, not a module) and LoRA's dropout: after `disable_dropout`, train mode is deterministic."""
    from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config
    from rl_dlm.models.policy import LoraSettings, add_lora, disable_dropout

    torch.manual_seed(0)
    config = tiny_llada_config(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               d_model=32, n_layers=2, n_heads=2, mlp_hidden_size=64, attention_dropout=0.3,
                               residual_dropout=0.3, embedding_dropout=0.3)
    model = add_lora(LLaDAModelLM(config), LoraSettings(r=4, alpha=8, dropout=0.3)).train()
    ids = torch.randint(0, 100, (2, 12))
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is live
    disable_dropout(model)
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert model.get_base_model().config.attention_dropout == 0.0
