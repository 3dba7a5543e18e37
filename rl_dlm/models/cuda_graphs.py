"""CUDA-graph replay of the rollouts' fixed-shape forwards: the same kernels on the same memory, so the same logits.

Why: at batch size 1 a LLaDA-8B denoising step is launch-bound. Its ~2 000 kernels (peft's LoRA adds four per
adapted projection) take ~29 ms to launch for ~9 ms of GPU work (bench/RESULTS.md). A sampler forwards the same
canvas shape with the same kept window many times (every step of a semi-AR block, every block of every later
rollout), so each (shape, window, mode) runs eagerly once, is captured at its second call and replayed from then
on; a shape seen once (a padded length that never recurs) costs nothing. The mode (`Policy.graphed`) names the
code path: adapters on or off, merged or not, and the element-wise kernels the model runs, which
`compile_elementwise` switches in place and a replay would not see. The graph re-runs the recorded kernels on the
recorded memory: the weights are read where they live, so optimizer steps (in place) are seen, and the logits
are bit-identical to the eager forward's (bench/profile_8b.py checks it on the GPU, `graph_equal`).

The block-cached sampler's refreshes and window steps replay too: its KV cache is kept across rollouts
(`GraphedForward.state`) and a refresh refills the same buffers, which the window graphs read and write.

Where it applies (`GraphedForward.usable`): a CUDA device, no gradient, the model in eval mode, and weights that
stay in place (not ZeRO-3 partitions, which DeepSpeed gathers per call). Left-padded batches too: `Policy.logits`
checks for padding on the host once and hands the native models a 4-D key mask they take without a check
(rl_dlm/models/key_mask.py), and the mask and position ids are graph inputs like the token ids, so a capture
holds no host synchronisation. Everything else runs eagerly, as does a key whose capture failed (said once; a
model of another library that checks its mask on the host is one). Written here because nothing we depend on
fits: `torch.compile`'s "reduce-overhead" mode also captures graphs, but recompiles the whole 8B forward per
window and shape (minutes per key) and changes kernels (so not bit-identical); transformers' static caches are
for causal decoding.

Memory: one shared pool (about one forward's activations) plus each key's output ([N, |keep|, V]; at most
`max_graphs` keys and `max_output_gib` of outputs, the least recently used dropped first) and, for the block
cache, one set of K/V buffers per canvas shape (2 × layers × N × T × d in the activation dtype: 2.6 GiB at
LLaDA-8B, 12 rows × 456 tokens, bf16); `reset()` frees them. A rollout whose keys need more than the budget (64
rows of the 8B model: 16 keys of 0.5 GiB) drops and re-captures some in every rollout; on an H100 that cost the
64-row dual-cache rollout 0.8 points of the matmul rate (bench/RESULTS.md), so the budget stays. Anything that
replaces a parameter's storage (`load_state_dict(assign=True)`, a new model) must call `reset()`; `Policy` does
it when its model is replaced.

    graphs = GraphedForward()
    logits = graphs(key, forward, input_ids)   # forward(input_ids) → logits; eager, then captured and replayed
    cache = graphs.state(("kv", n, t), BlockKVCache)   # what the graphs read and write, kept across rollouts
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable, Hashable

import torch
from torch import Tensor, nn


class GraphedForward:
    def __init__(self, max_graphs: int = 32, max_output_gib: float = 4.0):
        # least recently used graphs are dropped beyond `max_graphs`, or while their outputs hold more than
        # `max_output_gib` (an 8B evaluation batch of 200 rows has 1.6 GiB of logits per window; a dropped key
        # is captured again at its second call, so a rollout still replays all but two steps of a block)
        self.max_graphs, self.max_output_gib = max_graphs, max_output_gib
        self.graphs: OrderedDict[Hashable, tuple | None] = OrderedDict()  # key → (graph, static inputs, output)
        self.calls: OrderedDict[Hashable, int] = OrderedDict()  # eager calls of keys not captured (yet)
        self.states: dict[Hashable, object] = {}
        self.pool = None
        self.captures = 0  # graphs captured so far (a count that keeps rising in steady use means keys are dropped)

    @staticmethod
    def usable(model: nn.Module, input_ids: Tensor) -> bool:
        if input_ids.device.type != "cuda" or torch.is_grad_enabled() or model.training:
            return False
        first = next(model.parameters(), None)
        return first is not None and not hasattr(first, "ds_id")  # DeepSpeed-managed weights move between calls

    def output_gib(self) -> float:
        """GiB held by the captured graphs' static outputs."""
        return sum(e[2].numel() * e[2].element_size() for e in self.graphs.values() if e is not None) / 2**30

    def reset(self):
        self.graphs.clear()
        self.calls.clear()
        self.states.clear()
        self.pool = None

    def state(self, key: Hashable, make: Callable[[], object]) -> object:
        """An object that must outlive one rollout for the graphs to stay valid (a KV cache whose buffers the
        captured kernels read and write), made once per key; dropped by `reset()`."""
        if key not in self.states:
            self.states[key] = make()
        return self.states[key]

    def __call__(self, key: Hashable, forward: Callable[..., Tensor], *inputs: Tensor | None) -> Tensor:
        """forward(*inputs) → logits. A key's first call runs eagerly (and warms up what a capture must not
        hold: cuBLAS workspaces, the KV cache's buffers); its second is captured and replayed, later ones
        replayed. So a shape seen once (a padded batch of a length that never recurs) costs nothing extra.
        Inputs are copied into the graph's static buffers: only their shapes are part of the key."""
        key = (key, tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in inputs),
               torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        if key not in self.graphs:
            self.calls[key] = self.calls.pop(key, 0) + 1
            if self.calls[key] == 1:
                while len(self.calls) > 16 * self.max_graphs:  # keys seen once; the oldest can go
                    self.calls.popitem(last=False)
                return forward(*inputs)
            del self.calls[key]
            self.captures += 1
            self.graphs[key] = self._capture(key, forward, inputs)
            while len(self.graphs) > 1 and (len(self.graphs) > self.max_graphs
                                            or self.output_gib() > self.max_output_gib):
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        entry = self.graphs[key]
        if entry is None:
            return forward(*inputs)
        graph, static_in, static_out = entry
        for buffer, t in zip(static_in, inputs):
            if t is not None:
                buffer.copy_(t)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out; callers may keep what they got

    def _capture(self, key, forward, inputs: tuple[Tensor | None, ...]):
        static_in = tuple(None if t is None else t.clone() for t in inputs)
        try:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = forward(*static_in)
        except RuntimeError as exc:  # e.g. an operation that synchronises with the host inside the forward
            torch.cuda.synchronize()
            warnings.warn(f"CUDA graph capture failed for {key}; this forward runs eagerly: {exc}", stacklevel=3)
            return None
        return graph, static_in, static_out
