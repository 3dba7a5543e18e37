"""bench/rl_step.py checks itself on CPU: the random checkpoints have the official layout and load through the
families' checks, the FLOP count matches a hand count, every algorithm completes two rollout batches, and a
2-process ZeRO-2 run (gloo) records per-rank throughput."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.test_cuda_graphs import cpu_graphs  # noqa: F401 (a fixture)
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))

from bench.random_checkpoint import SHAPES, _shard_plan, weight_shapes, write_checkpoint  # noqa: E402
from bench.random_reward import benchmark_only_random_correctness, benchmark_only_random_reward  # noqa: E402


def test_8b_shapes_match_the_official_tensor_and_parameter_counts():
    """The official safetensors indexes: LLaDA-8B 291 tensors / 8,015,581,184 params; Dream-7B 339 / 7,615,616,512."""
    for name, tensors, params in (("llada8b", 291, 8_015_581_184), ("diffucoder7b", 339, 7_615_616_512)):
        shapes = weight_shapes(SHAPES[name])
        assert len(shapes) == tensors
        assert sum(torch.Size(s).numel() for _, s in shapes) == params
        plan = _shard_plan(shapes, SHAPES[name].shards)  # the official shard counts, 6 and 4, in key order
        assert len(plan) == SHAPES[name].shards and [n for shard in plan for n in shard] == shapes
    llada, dream = SHAPES["llada8b"].specials, SHAPES["diffucoder7b"].specials
    assert (llada["<|startoftext|>"], llada["<|endoftext|>"], llada["<|mdm_mask|>"], llada["<|eot_id|>"]) == \
        (126080, 126081, 126336, 126348)
    assert (llada["<|start_header_id|>"], llada["<|end_header_id|>"], SHAPES["llada8b"].tokenizer_size) == \
        (126346, 126347, 126349)
    assert (dream["<|endoftext|>"], dream["<|im_start|>"], dream["<|im_end|>"], dream["<|beginoftext|>"],
            dream["<|mask|>"], dream["<|dlm_pad|>"]) == (151643, 151644, 151645, 151665, 151666, 151667)


@pytest.mark.parametrize("shape", ["tiny_llada", "tiny_diffucoder"])
def test_random_checkpoint_has_the_official_layout_and_loads(tmp_path, shape):
    from rl_dlm.models.policy import load_policy

    out = write_checkpoint(shape, tmp_path / shape, log=lambda _: None)
    spec = SHAPES[shape]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] and config["model_type"] in ("llada", "Dream") and config["auto_map"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert sorted(set(index["weight_map"].values())) == files == [f"model-{k:05d}-of-00002.safetensors" for k in (1, 2)]
    policy = load_policy(out)
    assert set(policy.model.state_dict()) == set(index["weight_map"]) == {n for n, _ in weight_shapes(spec)}
    ids = spec.specials
    if spec.family == "llada":
        assert (policy.mask_id, policy.stop_id, policy.pad_id) == (ids["<|mdm_mask|>"], ids["<|eot_id|>"],
                                                                   ids["<|endoftext|>"])
    else:
        assert (policy.mask_id, policy.stop_id, policy.pad_id) == (ids["<|mask|>"], ids["<|im_end|>"],
                                                                   ids["<|dlm_pad|>"])
        assert policy.family.shift_logits
    assert len(policy.tokenizer) == spec.tokenizer_size
    text = policy.tokenizer.apply_chat_template([{"role": "user", "content": "w10 w11"}], tokenize=False,
                                                add_generation_prompt=True)
    assert policy.tokenizer(text, add_special_tokens=False)["input_ids"][-3:] != [0, 0, 0]  # no unknown tokens
    # reused, not rewritten, when the marker matches
    before = (out / files[0]).stat().st_mtime_ns
    write_checkpoint(shape, out, log=lambda _: None)
    assert (out / files[0]).stat().st_mtime_ns == before


def test_random_rewards_are_seeded_by_the_completion():
    ids = [[1, 2, 3], [1, 2, 3], [3, 2, 1]]
    scores = benchmark_only_random_reward(None, None, ids)
    assert scores[0] == scores[1] != scores[2] and all(0 <= s < 1 for s in scores)
    many = [[i, i + 1] for i in range(2000)]
    correct = benchmark_only_random_correctness(None, None, many, p_correct=0.1)
    assert set(correct) == {0.0, 1.0} and 0.07 < sum(correct) / len(correct) < 0.13


def _flops(params: dict, rows: int, tokens: int, used: int, grad: bool, checkpointing: bool) -> float:
    body = 2.0 * (params["body"] + params["lora"]) * rows * tokens
    head = 2.0 * params["head"] * rows * used
    if not grad:
        return body + head
    return 2 * (body + head) + 2.0 * params["trainable_body"] * rows * tokens + (body if checkpointing else 0.0)


@pytest.mark.parametrize("graphs", [False, True])
def test_flop_count_matches_a_hand_count(tmp_path, request, graphs):
    """Also with the rollouts replayed from CUDA graphs (a CPU stand-in, tests/models/test_cuda_graphs.py),
    where no hook sees a replay: the meter charges each replay its capture's counts."""
    from bench.rl_step import main

    if graphs:
        captured = request.getfixturevalue("cpu_graphs")

    out = tmp_path / "run"
    main(["--tiny", "--algos", "diffu_grpo", "--out", str(out), "--ckpt-dir", str(tmp_path / "ckpt"),
          "--work-dir", str(tmp_path / "work")])
    worker = json.loads((tmp_path / "work" / "diffu_grpo.rank0.json").read_text())
    p, s = worker["params"], worker["settings"]
    # tiny LLaDA: 2 blocks of d 64, MLP 128; LoRA r 4 on q, k, v, attn_out (4·(64+64)) and ff_proj, up_proj, ff_out
    # (4·(64+128)) per block; head 384 × 64
    assert (p["body"], p["lora"], p["head"]) == (2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64,
                                                 2 * (4 * 4 * 128 + 3 * 4 * 192), 384 * 64)
    assert p["trainable_body"] == p["lora"] and not p["head_trainable"]
    rows = s["per_device_train_batch_size"] * s["gradient_accumulation_steps"]
    prompt, length, mu = s["max_prompt_length"], s["max_completion_length"], s["num_iterations"]
    total = prompt + length
    batch = worker["batches"][1]["stages"]
    steps = s["diffusion_steps"]
    assert batch["rollout"]["forwards"] == steps and batch["rollout"]["tokens_forwarded"] == steps * rows * total
    if graphs:
        assert captured and sum(g.replays for _, g in captured) > steps  # both rollout batches replayed
    assert batch["rollout"]["flops"] == pytest.approx(_flops(p, rows * steps, total, s["block_length"], False, True))
    # stage 4: old and reference log-probs (LoRA off for the reference) for each of the μ plans
    ref = 2.0 * p["body"] * rows * total + 2.0 * p["head"] * rows * length
    assert batch["old_logp"]["flops"] == pytest.approx(mu * (_flops(p, rows, total, length, False, True) + ref))
    assert batch["update"]["flops"] == pytest.approx(mu * _flops(p, rows, total, length, True, True))
    assert batch["update"]["head_positions_computed"] == mu * rows * length  # only the completion (Policy.logits keep)
    record = json.loads((out / "rl_step.json").read_text())
    summary = record["metrics"]["diffu_grpo"]
    assert record["device"] == "cpu" and record["command"].startswith("python bench/rl_step.py")
    assert summary["measured_rollout_batches"] == 1 and summary["complete"]
    assert summary["stages"]["update"]["seconds"] == pytest.approx(batch["update"]["seconds"])
    assert sorted(p.name for p in out.iterdir()) == ["rl_step.json", "rl_step.md"]  # workers' files stay in --work-dir


@pytest.mark.slow
def test_tiny_run_completes_every_algorithm_and_merges(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/rl_step.py", "--tiny", "--out", str(tmp_path / "a"), "--ckpt-dir",
           str(tmp_path / "ckpt"), "--work-dir", str(tmp_path / "work")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "a" / "rl_step.json").read_text())
    assert sorted(record["metrics"]) == sorted(["diffu_grpo", "gdpo", "coupled_grpo", "cj_grpo", "mdpo", "igpo",
                                                "spg", "espo", "gdsd"])
    for key, summary in record["metrics"].items():
        assert summary["complete"] and summary["rollout_batches"] == 2, key
        assert {"rollout", "reward", "old_logp", "update"} <= set(summary["stages"]), key
        assert summary["stages"]["update"]["tflops"] > 0 and summary["s_per_rollout_batch"] > 0
        assert summary["history_means"]["frac_reward_zero_std"] == 0.0  # random rewards: every group has signal
    assert "refine" in record["metrics"]["igpo"]["stages"] and "refine" in record["metrics"]["mdpo"]["stages"]
    assert record["metrics"]["coupled_grpo"]["checkpoint"].endswith("tiny_diffucoder")
    assert "| igpo | llada8b_igpo |" in (tmp_path / "a" / "rl_step.md").read_text()
    merged = subprocess.run([sys.executable, "bench/rl_step.py", "--merge", str(tmp_path / "a" / "rl_step.json"),
                             "--out", str(tmp_path / "m")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr[-3000:]
    joined = json.loads((tmp_path / "m" / "rl_step.json").read_text())
    assert joined["metrics"].keys() == record["metrics"].keys() and joined["runs"][0]["command"] == record["command"]


@pytest.mark.slow
def test_tiny_run_under_torchrun_with_zero2_records_each_rank(tmp_path):
    pytest.importorskip("deepspeed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/rl_step.py", "--tiny", "--algos", "diffu_grpo", "--nproc", "2", "--deepspeed",
           "zero2", "--out", str(tmp_path / "ds"), "--ckpt-dir", str(tmp_path / "ckpt"), "--work-dir",
           str(tmp_path / "work")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    summary = json.loads((tmp_path / "ds" / "rl_step.json").read_text())["metrics"]["diffu_grpo@zero2x2"]
    assert summary["world_size"] == 2 and summary["settings"]["deepspeed"]["zero_optimization"]["stage"] == 2
    assert [r["rank"] for r in summary["per_rank"]] == [0, 1] and all(r["rows_per_s"] > 0 for r in summary["per_rank"])


def test_every_algorithm_has_an_8b_recipe_of_its_trainer():
    from bench.rl_step import ALGOS
    from rl_dlm.hydra_app import ROOT, compose_config, trainer_args

    assert set(ALGOS) == {p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")}
    for algo, (recipe, shape) in ALGOS.items():
        cfg = compose_config([f"recipe={recipe}"])
        args, _, _ = trainer_args(cfg)
        assert cfg.algo_name == algo, recipe
        text = (ROOT / "recipes" / f"{recipe}.yaml").read_text()
        header = [line for line in text.splitlines() if line.startswith("#")]
        assert args.bf16 and args.lora_r == 128, recipe
        # checkpointing, or a header that says what the recipe does instead and what it costs in memory
        assert args.gradient_checkpointing or "without gradient checkpointing" in " ".join(header), recipe
        assert SHAPES[shape].family == ("dream" if algo == "coupled_grpo" else "llada")
        assert any(f"rl-dlm train recipe={recipe}" in line for line in header), f"{recipe}: no launch command"


def test_multi_process_entries_are_related_to_the_one_gpu_entry():
    from bench.rl_step_report import relate_to_one_gpu

    metrics = relate_to_one_gpu({"gdpo": {"rows_per_s": 2.0}, "gdpo@zero2x8": {"rows_per_s": 1.8},
                                 "mdpo@zero3x8": {"rows_per_s": 1.0}})
    assert metrics["gdpo@zero2x8"]["per_gpu_vs_1gpu"] == pytest.approx(0.9)
    assert "per_gpu_vs_1gpu" not in metrics["mdpo@zero3x8"] and "per_gpu_vs_1gpu" not in metrics["gdpo"]
