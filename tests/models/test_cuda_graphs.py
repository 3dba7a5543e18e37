"""CUDA-graph replay of the rollouts' forwards (rl_dlm/models/cuda_graphs.py), its dispatch checked on CPU.

A CPU has no CUDA graphs, so `Replay` stands in for one: "capturing" records the forward and "replaying" runs it
again on the static input into the static output, without module hooks, which is what a CUDA graph does with
its recorded kernels. What is under test is everything around it: when a graph is used, what keys it (shape,
kept window, adapters on or off, merged or not, the element-wise kernels), that each call's input reaches the
static buffer, that callers get their own copy of the output, that a failed capture falls back to eager once,
and that a replaced model drops the graphs. That the GPU replay gives bit-identical logits is measured by
bench/profile_8b.py (`graph_equal`)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rl_dlm.models.cuda_graphs import GraphedForward
from rl_dlm.models.elementwise import EAGER, compiled_modules
from rl_dlm.models.policy import LoraSettings, add_lora
from rl_dlm.sampling.semi_ar import SemiARSampler
from tests.conftest import make_tiny_policy


class Replay:
    def __init__(self, forward, static_in):
        self.forward, self.static_in = forward, static_in
        self.static_out = forward(*static_in)
        self.replays = 0

    def replay(self):
        """Runs the forward again without module hooks: a real replay runs no Python at all."""
        self.replays += 1
        call = torch.nn.Module.__call__
        torch.nn.Module.__call__ = lambda module, *args, **kwargs: module.forward(*args, **kwargs)
        try:
            out = self.forward(*self.static_in)
        finally:
            torch.nn.Module.__call__ = call
        self.static_out.copy_(out)


@pytest.fixture
def cpu_graphs(monkeypatch):
    """GraphedForward on CPU: usable wherever it would be on a GPU, captures recorded by `Replay`."""
    captured = []

    def capture(self, key, forward, inputs):
        graph = Replay(forward, tuple(None if t is None else t.clone() for t in inputs))
        captured.append((key, graph))
        return graph, graph.static_in, graph.static_out

    real_usable = GraphedForward.usable
    monkeypatch.setattr(GraphedForward, "_capture", capture)
    monkeypatch.setattr(GraphedForward, "usable",
                        staticmethod(lambda model, ids: real_usable(model, _CudaLike(ids))))
    return captured


class _CudaLike:
    """A stand-in input that reports a CUDA device to `usable`, nothing else."""

    def __init__(self, t):
        self.t, self.device = t, torch.device("cuda")


def lora_policy(tokenizer):
    policy = make_tiny_policy(tokenizer)
    policy.model = add_lora(policy.model, LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    policy.model.eval()
    policy.cuda_graphs = True
    return policy


def test_usable_only_without_grad_training_or_moving_weights(tokenizer):
    policy = lora_policy(tokenizer)
    ids = _CudaLike(torch.zeros(1, 4, dtype=torch.long))
    with torch.no_grad():
        assert GraphedForward.usable(policy.model, ids)
        assert not GraphedForward.usable(policy.model, torch.zeros(1, 4, dtype=torch.long))  # CPU
        policy.model.train()
        assert not GraphedForward.usable(policy.model, ids)  # dropout would replay fixed masks
        policy.model.eval()
        next(policy.model.parameters()).ds_id = 0  # a DeepSpeed-managed weight
        assert not GraphedForward.usable(policy.model, ids)
    assert not GraphedForward.usable(policy.model, ids)  # grad on


@pytest.mark.parametrize("cached", [False, True])
def test_a_left_padded_rollout_replays_with_the_mask_as_a_graph_input(tokenizer, cpu_graphs, cached):
    """Padding is found once on the host; the 4-D key mask and position ids are copied into the graph like the
    token ids, so two batches padded differently share a graph and each gets its own (eager) tokens."""
    from rl_dlm.sampling.cached import CachedSemiARSampler

    policy = lora_policy(tokenizer)
    kw = dict(gen_length=16, block_length=8, steps=8, temperature=0.9)
    sampler = CachedSemiARSampler(**kw, cache="dual", early_stop=False) if cached else SemiARSampler(**kw)
    seeds = torch.tensor([3, 4])
    batches = []
    for pad in (2, 4):  # row 1 left-padded by `pad`
        prompts = torch.randint(10, 100, (2, 6), generator=torch.Generator().manual_seed(pad))
        prompts[1, :pad] = policy.pad_id
        batches.append((prompts, prompts != policy.pad_id))
    eager = [sampler.sample(policy, p, m, seeds).completion_ids for p, m in batches]
    with policy.inference():
        graphed = [sampler.sample(policy, p, m, seeds).completion_ids for p, m in batches]
    assert all(torch.equal(g, e) for g, e in zip(graphed, eager))
    assert not torch.equal(eager[0], eager[1])
    assert len(cpu_graphs) == (4 if cached else 2)  # captured once, for the first batch
    assert all(any(t is not None and t.dtype == torch.bool and t.ndim == 4 for t in g.static_in)
               for _, g in cpu_graphs)


def test_a_rollout_replays_one_graph_per_block_with_the_eager_tokens(tokenizer, cpu_graphs):
    policy = lora_policy(tokenizer)
    prompts = torch.randint(10, 100, (3, 6), generator=torch.Generator().manual_seed(2))
    mask, seeds = torch.ones_like(prompts, dtype=torch.bool), torch.tensor([5, 6, 7])
    sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9)
    eager = sampler.sample(policy, prompts, mask, seeds)  # outside inference(): no graphs
    assert not cpu_graphs
    with policy.inference():
        graphed = sampler.sample(policy, prompts, mask, seeds)
        again = sampler.sample(policy, prompts, mask, seeds)
    assert torch.equal(graphed.completion_ids, eager.completion_ids) and torch.equal(again.completion_ids,
                                                                                     eager.completion_ids)
    assert torch.equal(graphed.unmask_step, eager.unmask_step)
    assert [key[0][0] for key, _ in cpu_graphs] == [("logits", 6, 14), ("logits", 14, 22)]  # one per block
    # 4 steps per block and rollout: the first eager, the second captured and replayed, then replays
    assert [g.replays for _, g in cpu_graphs] == [7, 7]


def test_keys_separate_modes_and_outputs_are_the_callers_own(tokenizer, cpu_graphs):
    policy = lora_policy(tokenizer)
    ids = [torch.randint(10, 100, (2, 8), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        expect = [policy.logits(x, keep=slice(4, 8)) for x in ids]
        with policy.reference():
            expect_ref = policy.logits(ids[0], keep=slice(4, 8))
        with policy.inference():
            got = [policy.logits(x, keep=slice(4, 8)) for x in ids]  # eager, captured, replayed: one graph
            with policy.reference():  # adapters off: another code path, another graph
                ref = [policy.logits(ids[0], keep=slice(4, 8)) for _ in range(2)]
            for _ in range(2):
                policy.logits(ids[0][:1], keep=slice(4, 8))  # another shape
            policy.logits(ids[0], keep=slice(2, 8))  # another window, seen once: never captured
    assert all(torch.equal(g, e) for g, e in zip(got, expect)) and torch.equal(ref[1], expect_ref)
    assert not torch.equal(got[1], got[2])  # the replay did not overwrite what the capture call returned
    assert len(cpu_graphs) == 3
    policy.model = policy.model  # a replaced model: graphs dropped
    assert not policy.graphs.graphs


def test_least_recently_used_graphs_are_dropped_beyond_max_graphs(tokenizer, cpu_graphs):
    policy = lora_policy(tokenizer)
    policy.graphs.max_graphs = 2
    ids = torch.randint(10, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), policy.inference():
        for window in [(4, 8), (5, 8), (4, 8), (6, 8)]:
            for _ in range(2):
                policy.logits(ids, keep=slice(*window))
    assert [key[0][0][1:] for key in policy.graphs.graphs] == [(4, 8), (6, 8)]  # (5, 8) was the least recent


def test_graphs_are_dropped_while_their_outputs_exceed_the_memory_budget(tokenizer, cpu_graphs):
    """A large evaluation batch: each window's logits are big, so fewer graphs are kept (never fewer than one)."""
    policy = lora_policy(tokenizer)
    ids = torch.randint(10, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    one = 2 * 4 * policy.model.config.vocab_size * 4 / 2**30  # [2 rows, 4 positions, V] fp32 logits, in GiB
    policy.graphs.max_output_gib = 2.5 * one
    with torch.no_grad(), policy.inference():
        for window in [(4, 8), (3, 7), (2, 6), (1, 5)]:
            for _ in range(2):
                policy.logits(ids, keep=slice(*window))
    assert [key[0][0][1:] for key in policy.graphs.graphs] == [(2, 6), (1, 5)]
    assert policy.graphs.output_gib() == pytest.approx(2 * one)
    policy.graphs.max_output_gib = 0.0
    with torch.no_grad(), policy.inference():
        for _ in range(2):
            policy.logits(ids, keep=slice(0, 4))
    assert [key[0][0][1:] for key in policy.graphs.graphs] == [(0, 4)]  # the newest is always kept


def test_a_failed_capture_runs_eagerly_and_is_not_retried(tokenizer, monkeypatch):
    policy = lora_policy(tokenizer)
    attempts = []

    def capture_fails():
        attempts.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedForward, "usable", staticmethod(lambda model, ids: True))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", capture_fails)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    ids = torch.randint(10, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expect = policy.logits(ids, keep=slice(4, 8))
        with policy.inference():
            first = policy.logits(ids, keep=slice(4, 8))  # eager: no attempt yet
            with pytest.warns(UserWarning, match="CUDA graph capture failed"):
                second = policy.logits(ids, keep=slice(4, 8))
            third = policy.logits(ids, keep=slice(4, 8))
    assert all(torch.equal(t, expect) for t in (first, second, third))
    assert len(attempts) == 1 and list(policy.graphs.graphs.values()) == [None]


@pytest.mark.parametrize("refresh_every", [None, 2])
def test_dual_cache_steps_replay_against_cache_buffers_kept_across_rollouts(tokenizer, cpu_graphs, refresh_every):
    """The block-cached sampler: refreshes and window steps replay (one graph per block each), refreshes refill
    the same K/V buffers, which a third rollout reuses with no new capture, and the tokens are the eager ones."""
    from rl_dlm.sampling.cached import CachedSemiARSampler

    policy = lora_policy(tokenizer)
    prompts = torch.randint(10, 100, (2, 6), generator=torch.Generator().manual_seed(8))
    mask, seeds = torch.ones_like(prompts, dtype=torch.bool), torch.tensor([3, 4])
    sampler = CachedSemiARSampler(gen_length=16, block_length=8, steps=8, temperature=0.9, cache="dual",
                                  refresh_every=refresh_every, early_stop=False)
    eager = sampler.sample(policy, prompts, mask, seeds)
    with policy.inference():
        rollouts = [sampler.sample(policy, prompts, mask, seeds) for _ in range(2)]
        (cache,) = policy.graphs.states.values()
        buffers = [t.data_ptr() for t in cache.keys.values()]
        captures = len(cpu_graphs)
        rollouts.append(sampler.sample(policy, prompts, mask, seeds))
    assert all(torch.equal(r.completion_ids, eager.completion_ids) for r in rollouts)
    assert [t.data_ptr() for t in cache.keys.values()] == buffers and len(cpu_graphs) == captures
    kinds = sorted(str(key[0][0][1]) for key, _ in cpu_graphs)  # the window: None for a refresh
    assert kinds == ["(14, 22)", "(6, 14)", "None", "None"]
    # 4 steps per block and rollout, 2 blocks, 3 rollouts; each key's first call ran eagerly
    assert sum(g.replays for _, g in cpu_graphs) == 3 * 2 * 4 - 4


def test_a_graph_never_replays_kernels_the_model_no_longer_runs(tokenizer, cpu_graphs):
    """`compile_elementwise` switches the element-wise kernels of a loaded model; a graph captured before replays
    the kernels it recorded, so the kernel set is part of every key."""
    policy = lora_policy(tokenizer)
    ids = torch.randint(10, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    doubled = dataclasses.replace(EAGER, name="doubled", norm=lambda x, w, eps: 2 * EAGER.norm(x, w, eps))

    def switch(kernels):
        for module in compiled_modules(policy.model):
            module.elementwise = kernels

    with torch.no_grad(), policy.inference():
        before = [policy.logits(ids, keep=slice(4, 8)) for _ in range(3)]  # eager, captured, replayed
        switch(doubled)
        assert policy.kernels() == "doubled"
        after = [policy.logits(ids, keep=slice(4, 8)) for _ in range(3)]
        switch(EAGER)
        again = policy.logits(ids, keep=slice(4, 8))  # the first graph, still kept
    assert all(torch.equal(a, after[0]) for a in after) and not torch.allclose(after[2], before[2])
    assert torch.equal(again, before[0]) and len(cpu_graphs) == 2 and policy.graphs.captures == 2
