"""`rl-dlm eval` and `rl_dlm.eval.evaluate_protocol`: the papers' protocol (greedy, steps = length × ratio, fixed
block) over tasks × generation lengths, on the embedded tiny model; accuracy per task and length is printed and
every completion is written with its per-row rewards."""
from __future__ import annotations

import json

import pytest
import torch

from rl_dlm.data.tasks import make_split
from rl_dlm.eval import EvalTask, evaluate_protocol, format_results, load_for_eval, protocol_steps
from rl_dlm.hydra_app import eval_main
from rl_dlm.reward_runner import RewardFunction, RewardRunner

from tests.conftest import EMBEDDED

TINY = ["eval.gen_lengths=[16,32]", "eval.block_length=16", "eval.steps_per_token=0.25", "task.eval_size=3",
        "eval.batch_size=3"]


def test_rl_dlm_eval_prints_accuracy_per_task_and_length_and_writes_completions(tmp_path, capsys, monkeypatch):
    import rl_dlm.hydra_app as app

    built, instantiate = [], app.instantiate

    def spy(node, **kw):
        if "gen_length" in node:  # a sampler node (reward nodes go through the same function)
            built.append(dict(node))
        return instantiate(node, **kw)

    monkeypatch.setattr(app, "instantiate", spy)
    eval_main(["eval.tasks=[countdown,arithmetic]", *TINY, "sampler.remasking=random", f"output_dir={tmp_path}"])
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.startswith(("countdown", "arithmetic"))]
    assert [(w[0], int(w[1]), int(w[2]), int(w[3]), int(w[6])) for w in lines] == [
        ("countdown", 16, 4, 16, 3), ("countdown", 32, 8, 16, 3), ("arithmetic", 16, 4, 16, 3),
        ("arithmetic", 32, 8, 16, 3)]
    assert all(0.0 <= float(w[4]) <= 1.0 for w in lines)
    # Any sampler configuration: the composed one, with only length, steps, block and temperature set.
    assert [(b["gen_length"], b["steps"], b["block_length"], b["temperature"], b["remasking"]) for b in built] == [
        (16, 4, 16, 0.0, "random"), (32, 8, 16, 0.0, "random")] * 2
    records = [json.loads(line) for line in (tmp_path / "eval" / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 12
    first = records[0]
    assert (first["task"], first["gen_length"], first["steps"], first["index"]) == ("countdown", 16, 4, 0)
    assert set(first["rewards"]) == {"correct"} and isinstance(first["completion"], str)
    assert first["correct"] == (first["rewards"]["correct"] == 1.0)
    assert first["columns"]["numbers"] and first["prompt"][0]["role"] == "user"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [(r["task"], r["gen_length"]) for r in results] == [(w[0], int(w[1])) for w in lines]
    acc = sum(r["correct"] for r in records if r["task"] == "countdown" and r["gen_length"] == 32) / 3
    assert results[1]["accuracy"] == pytest.approx(acc)


def test_protocol_defaults_and_bad_lengths_fail_before_any_rollout(tiny_policy):
    assert protocol_steps(128, 0.5, 32) == 64 and protocol_steps(512, 0.5, 32) == 256
    with pytest.raises(ValueError, match="48 is not a multiple of eval.block_length=32"):
        protocol_steps(48, 0.5, 32)
    rows = make_split("countdown", "test", 2)
    runner = RewardRunner([RewardFunction(lambda completions, **kw: [0.0] * len(completions), name="zero")],
                          correct="zero")
    made = []
    with pytest.raises(ValueError, match="not a multiple"):
        evaluate_protocol(tiny_policy, [EvalTask("a", rows, runner), EvalTask("b", rows, runner, gen_lengths=[24])],
                          gen_lengths=[16], block_length=16, make_sampler=lambda *a: made.append(a))
    assert made == []  # the plan is checked before the first rollout


def test_evaluate_protocol_python_api_with_a_custom_sampler(tiny_policy, tmp_path):
    from rl_dlm.sampling.semi_ar import SemiARSampler

    rows = make_split("countdown", "test", 4)
    runner = RewardRunner([RewardFunction(lambda completions, **kw: [1.0] * len(completions), name="ok")],
                          correct="ok")
    made = []

    def make_sampler(gen_length, steps, block_length):
        made.append((gen_length, steps, block_length))
        return SemiARSampler(gen_length=gen_length, block_length=block_length, steps=steps, remasking="random")

    results = evaluate_protocol(tiny_policy, [EvalTask("cd", rows, runner)], gen_lengths=[8, 16], block_length=8,
                                make_sampler=make_sampler, batch_size=3, completions_path=tmp_path / "c.jsonl")
    assert made == [(8, 4, 8), (16, 8, 8)]
    assert [(r["gen_length"], r["accuracy"], r["n"]) for r in results] == [(8, 1.0, 4), (16, 1.0, 4)]
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 8
    assert format_results(results).splitlines()[1].split()[:4] == ["cd", "8", "4", "8"]


def test_load_for_eval_merges_a_trained_adapter(tmp_path):
    from rl_dlm.models.policy import LoraSettings, load_policy

    trained = load_policy(str(EMBEDDED), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    torch.manual_seed(0)
    for name, param in trained.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)  # as if trained: the adapter now changes the logits
    trained.model.save_pretrained(tmp_path / "final")
    trained.tokenizer.save_pretrained(tmp_path / "final")
    ids = torch.tensor([trained.tokenizer("Using the numbers [1, 2, 3]")["input_ids"]])
    with torch.no_grad():
        expected = trained.logits(ids)
        with trained.reference():
            base = trained.logits(ids)
    loaded = load_for_eval(str(tmp_path / "final"), device="cpu")  # an adapter directory, as train saves it
    with torch.no_grad():
        got = loaded.logits(ids)
    assert not hasattr(loaded.model, "disable_adapter")  # merged: a plain model, no LoRA in the forward
    assert torch.allclose(got, expected, atol=1e-4) and not torch.allclose(got, base, atol=1e-3)


@pytest.mark.parametrize("overrides,expected", [([], (True, True)),
                                                (["cuda_graphs=false", "fused_projections=false"], (False, False))])
def test_rl_dlm_eval_takes_the_speed_knobs_from_the_config(tmp_path, monkeypatch, overrides, expected):
    """The trainer's `cuda_graphs` and `fused_projections` apply to `rl-dlm eval` too (CUDA graphs replay only
    on a GPU; here the policy just carries the setting)."""
    import rl_dlm.eval as ev

    seen, real = [], ev.load_for_eval

    def spy(*args, **kwargs):
        policy = real(*args, **kwargs)
        seen.append((policy.cuda_graphs, kwargs["fused_projections"]))
        return policy

    monkeypatch.setattr(ev, "load_for_eval", spy)
    eval_main(["eval.gen_lengths=[16]", "eval.block_length=16", "eval.steps_per_token=0.25", "task.eval_size=1",
               "eval.batch_size=1", f"output_dir={tmp_path}", *overrides])
    assert seen == [expected]
