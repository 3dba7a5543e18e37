"""CUDA-graph replay of the rollouts' fixed-shape forwards: the same kernels on the same memory, so the same logits.

Why: at batch size 1 a LLaDA-8B denoising step is launch-bound. Its ~2 000 kernels (peft's LoRA adds four per
adapted projection) take ~29 ms to launch for ~9 ms of GPU work (bench/RESULTS.md). A sampler forwards the same
canvas shape with the same kept window many times (every step of a semi-AR block, every block of every later
rollout), so each (shape, window, mode) is captured once and replayed. The graph re-runs the recorded kernels on
the recorded memory: the weights are read where they live, so optimizer steps (in place) are seen, and the
logits are bit-identical to the eager forward's (bench/profile_8b.py checks it on the GPU, `graph_equal`).

Where it applies (`GraphedForward.usable`): a CUDA device, no gradient, the model in eval mode, no attention
mask (a left-padded batch needs a host-side check per forward, which a capture cannot hold), and weights that
stay in place (not ZeRO-3 partitions, which DeepSpeed gathers per call). Everything else runs eagerly, as does a
key whose capture failed (said once). Written here because nothing we depend on fits: `torch.compile`'s
"reduce-overhead" mode also captures graphs, but recompiles the whole 8B forward per window and shape (minutes
per key) and changes kernels (so not bit-identical); transformers' static caches are for causal decoding.

Memory: one shared pool (about one forward's activations) plus each key's output ([N, |keep|, V]); `reset()`
frees them. Anything that replaces a parameter's storage (`load_state_dict(assign=True)`, a new model) must call
`reset()`; `Policy` does it when its model is replaced.

    graphs = GraphedForward()
    logits = graphs(key, forward, input_ids)   # forward(input_ids) → logits; captured on the first call per key
"""
from __future__ import annotations

import warnings
from typing import Callable, Hashable

import torch
from torch import Tensor, nn


class GraphedForward:
    def __init__(self, warmup: int = 1):
        self.warmup = warmup
        self.graphs: dict[Hashable, tuple | None] = {}  # key → (graph, static input, static output), None: eager
        self.pool = None

    @staticmethod
    def usable(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> bool:
        if input_ids.device.type != "cuda" or torch.is_grad_enabled() or model.training or attention_mask is not None:
            return False
        first = next(model.parameters(), None)
        return first is not None and not hasattr(first, "ds_id")  # DeepSpeed-managed weights move between calls

    def reset(self):
        self.graphs.clear()
        self.pool = None

    def __call__(self, key: Hashable, forward: Callable[[Tensor], Tensor], input_ids: Tensor) -> Tensor:
        key = (key, tuple(input_ids.shape), input_ids.dtype, input_ids.device, torch.is_autocast_enabled("cuda"),
               torch.get_autocast_dtype("cuda"))
        if key not in self.graphs:
            self.graphs[key] = self._capture(key, forward, input_ids)
        entry = self.graphs[key]
        if entry is None:
            return forward(input_ids)
        graph, static_in, static_out = entry
        static_in.copy_(input_ids)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out; callers may keep what they got

    def _capture(self, key, forward, input_ids: Tensor):
        static_in = input_ids.clone()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # lazy initialisation (cuBLAS handles, workspaces) stays out of the graph
                for _ in range(self.warmup):
                    forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = forward(static_in)
        except RuntimeError as exc:  # e.g. an operation that synchronises with the host inside the forward
            torch.cuda.synchronize()
            warnings.warn(f"CUDA graph capture failed for {key}; this forward runs eagerly: {exc}", stacklevel=3)
            return None
        return graph, static_in, static_out
