"""bench/rl_step.py's numbers: per-rank worker results → per-algorithm summaries → record and markdown tables.

A summary averages the measured rollout batches (all but the first, the warm-up) of rank 0, and lists every rank's
per-GPU throughput and peak memory. FLOP rates are relative to the matmul rate the same run measured at start-up.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from bench.record import write_record

STAGES = ("rollout", "reward", "refine", "advantage", "old_logp", "update")
HISTORY_KEYS = ("reward", "completion_length", "frac_reward_zero_std", "loss", "grad_norm", "clip_ratio",
                "igpo/triggered_groups", "igpo/replaced", "igpo/hinted_correct")
UNITS = {
    "s_per_rollout_batch": "s (wall, one rollout batch: all stages and its num_iterations optimizer steps)",
    "s_per_optimizer_step": "s (stage update / num_iterations: the micro-batches' forward + backward, clip, AdamW)",
    "s_per_optimizer_step_amortised": "s (s_per_rollout_batch / num_iterations)",
    "rows_per_s": "rollout rows / s per GPU (rows per rollout batch per process / s_per_rollout_batch)",
    "per_gpu_vs_1gpu": "rows_per_s of a multi-process entry / rows_per_s of the same algorithm's 1-GPU entry",
    "stages.*.seconds": "s per rollout batch (exclusive of nested stages: reward excludes refine)",
    "stages.*.tflops": "TFLOP/s achieved by the stage's counted FLOPs (bench/stage_meter.py)",
    "stages.*.frac_matmul": "fraction of matmul_tflops",
    "stages.*.tokens_forwarded_per_s": "tokens through the model body / s",
    "stages.rollout.generated_tokens_per_s": "completion tokens / s",
    "stages.update.trained_tokens_per_s": "tokens of the scored views / s (the loop's tokens_per_s/update)",
    "stages.*.peak_gib": "GiB, peak allocated during the stage",
    "peak_gib_allocated": "GiB, peak torch allocation of the run (rank 0)",
    "peak_gib_reserved": "GiB, peak torch reservation of the run (rank 0)",
    "matmul_tflops": "TFLOP/s of an 8192³ bf16 matrix product on the same GPU",
    "batches": "every rollout batch of rank 0 as measured (the first is the warm-up): per stage seconds, FLOPs, "
               "forwards, rows and tokens forwarded, LM-head positions used and computed, tracker token counts",
}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize_rank(worker: dict, matmul: float) -> dict:
    batches = worker["batches"]
    measured = batches[1:] if len(batches) > 1 else batches
    names = [n for n in STAGES if any(n in b["stages"] for b in measured)]
    names += sorted({n for b in measured for n in b["stages"]} - set(names))
    stages, total_flops = {}, 0.0
    for name in names:
        def get(key: str) -> float:
            return _mean([b["stages"].get(name, {}).get(key, 0.0) for b in measured])

        seconds, flops = get("seconds"), get("flops")
        total_flops += flops
        tflops = flops / seconds / 1e12 if seconds else 0.0
        entry = {"seconds": seconds, "tflops": tflops, "frac_matmul": tflops / matmul if matmul else None,
                 "forwards": get("forwards"),
                 "tokens_forwarded_per_s": get("tokens_forwarded") / seconds if seconds else 0.0,
                 "peak_gib": max(b["stages"].get(name, {}).get("peak_gib", 0.0) for b in measured)}
        if get("head_positions_computed"):
            entry["head_positions_used_fraction"] = get("head_positions_used") / get("head_positions_computed")
        if name == "rollout" and seconds:
            entry["generated_tokens_per_s"] = get("tracker_tokens") / seconds
        if name == "update" and seconds:
            entry["trained_tokens_per_s"] = get("tracker_tokens") / seconds
        stages[name] = entry
    settings = worker["settings"]
    mu = settings["num_iterations"]
    wall = _mean([b["wall_seconds"] for b in measured])
    rows = settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
    first_step = mu * (len(batches) - len(measured))
    history = [h for h in worker["history"] if h.get("step", 0) > first_step]
    return {
        "recipe": worker["recipe"], "world_size": worker["world_size"], "settings": settings,
        "sampler": worker["sampler"], "params": worker["params"], "checkpoint": worker["checkpoint"],
        "rollout_batches": len(batches), "measured_rollout_batches": len(measured), "complete": worker["complete"],
        "s_per_rollout_batch": wall, "s_per_optimizer_step": stages.get("update", {}).get("seconds", 0.0) / mu,
        "s_per_optimizer_step_amortised": wall / mu, "rows_per_s": rows / wall if wall else 0.0,
        "warmup_s_per_rollout_batch": batches[0]["wall_seconds"], "load_seconds": worker["load_seconds"],
        "tflops_per_rollout_batch": total_flops / wall / 1e12 if wall else 0.0, "matmul_tflops": matmul,
        "peak_gib_allocated": max([worker["load_peak_gib"]] + [b["peak_gib"] for b in batches]),
        "peak_gib_reserved": max([0.0] + [b.get("peak_reserved_gib", 0.0) for b in batches]),
        "stages": stages, "batches": batches,
        "history_means": {k: _mean([h[k] for h in history if isinstance(h.get(k), (int, float))])
                          for k in HISTORY_KEYS if any(k in h for h in history)},
    }


def summarize(workers: list[dict], matmul: float) -> dict:
    workers = sorted(workers, key=lambda w: w["rank"])
    out = summarize_rank(workers[0], matmul)
    if len(workers) > 1:
        per_rank = [summarize_rank(w, matmul) for w in workers]
        keep = ("rows_per_s", "s_per_rollout_batch", "peak_gib_allocated", "peak_gib_reserved")
        out["per_rank"] = [{"rank": w["rank"], **{k: s[k] for k in keep}} for w, s in zip(workers, per_rank)]
    return out


def relate_to_one_gpu(metrics: dict) -> dict:
    """A multi-process entry (`algo@zero2x8`) gets its per-GPU rows/s as a fraction of the 1-GPU entry (`algo`)."""
    for key, summary in metrics.items():
        base = metrics.get(key.split("@")[0]) if "@" in key else None
        if base and base.get("rows_per_s"):
            summary["per_gpu_vs_1gpu"] = summary["rows_per_s"] / base["rows_per_s"]
    return metrics


def _cell(stage: dict | None) -> str:
    if not stage or not stage["seconds"]:
        return "–"
    frac = stage.get("frac_matmul")
    return f"{stage['seconds']:.1f}" + (f" ({100 * frac:.0f} %)" if frac and stage["tflops"] > 0 else "")


def markdown(summaries: dict, problems: dict) -> str:
    head = ("| algorithm | recipe | rows × μ | s / rollout batch | s / optimizer step | rollout | reward | refine | "
            "old/ref log-probs | update | peak GiB (alloc. / reserved) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, s in summaries.items():
        st, cfg = s["stages"], s["settings"]
        rows = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
        lines.append(f"| {key} | {s['recipe']} | {rows} × {cfg['num_iterations']} | {s['s_per_rollout_batch']:.1f} | "
                     f"{s['s_per_optimizer_step']:.2f} | " + " | ".join(_cell(st.get(n)) for n in
                     ("rollout", "reward", "refine", "old_logp", "update"))
                     + f" | {s['peak_gib_allocated']:.1f} / {s['peak_gib_reserved']:.1f} |")
    lines += ["", "Stage cells: seconds per rollout batch (achieved FLOP rate as a fraction of the measured matmul "
              "rate). Tokens per second:", ""]
    head2 = ("| algorithm | rollout: generated | rollout: forwarded | old/ref: forwarded | update: forwarded | "
             "update: trained view tokens | rows/s per GPU | per GPU vs 1 GPU |")
    lines += [head2, "|" + "---|" * (head2.count("|") - 1)]
    for key, s in summaries.items():
        st = s["stages"]
        g = lambda n, k: f"{st[n][k]:,.0f}" if n in st and st[n].get(k) else "–"  # noqa: E731
        lines.append(f"| {key} | {g('rollout', 'generated_tokens_per_s')} | {g('rollout', 'tokens_forwarded_per_s')} | "
                     f"{g('old_logp', 'tokens_forwarded_per_s')} | {g('update', 'tokens_forwarded_per_s')} | "
                     f"{g('update', 'trained_tokens_per_s')} | {s['rows_per_s']:.3f} | "
                     + (f"{s['per_gpu_vs_1gpu']:.2f} |" if "per_gpu_vs_1gpu" in s else "– |"))
    for key, why in problems.items():
        lines.append(f"\n{key}: {why}")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summaries: dict, problems: dict, matmul: dict, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    relate_to_one_gpu(summaries)
    write_record(out / "rl_step.json", "rl_step", summaries, UNITS, command=args.command, matmul=matmul,
                 problems=problems, rollouts=args.rollouts, tiny=args.tiny, nproc=args.nproc,
                 deepspeed=args.deepspeed, overrides=args.set or [],
                 flop_count="bench/stage_meter.py: 2·N_body per token forwarded + 2·N_head per used logit position; "
                            "back-propagated forwards add input (2×), weight (2·N_trainable) gradients and, with "
                            "gradient checkpointing, the recompute (2×)")
    (out / "rl_step.md").write_text(markdown(summaries, problems))


def merge_records(paths: list[Path], out: Path) -> dict:
    """Several commands' rl_step.json → one record (a later file wins for the same algorithm key); a merged
    record may be one of them (its runs are kept)."""
    metrics, problems, runs = {}, {}, []
    for path in paths:
        record = json.loads(path.read_text())
        if record.get("runs"):  # an already merged record: keep the runs it was merged from
            runs.extend(record["runs"])
        else:
            runs.append({k: record.get(k) for k in ("command", "device", "git_revision", "date", "torch", "matmul")}
                        | {"algorithms": sorted(record["metrics"])})
        for key, summary in record["metrics"].items():
            metrics[key] = {**summary, "command": record["command"], "git_revision": record["git_revision"]}
        problems.update(record.get("problems") or {})
    problems = {k: v for k, v in problems.items() if k not in metrics or metrics[k].get("problem")}
    relate_to_one_gpu(metrics)
    out.mkdir(parents=True, exist_ok=True)
    record = write_record(out / "rl_step.json", "rl_step", metrics, UNITS, runs=runs, problems=problems,
                          merged_from=[shlex.quote(str(p)) for p in paths])
    (out / "rl_step.md").write_text(markdown(metrics, problems))
    sys.stdout.write(markdown(metrics, problems))
    return record
