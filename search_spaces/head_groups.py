"""What the tracer needs of each prunable attention module: the layers its heads set the widths of, and the cost
entry of its attention matmuls (``q @ k^T`` and ``attn @ v``: FLOPs in proportion to the kept heads, which
``torch.utils.flop_counter`` counts inside the attention module but in none of its layers)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from search_spaces.attention import HeadLayout, attention_modules
from search_spaces.groups import LayerCost, Segment

# AMC's op-type feature of a head group (0 Linear, 1 Conv, 2 depthwise Conv).
ATTENTION_OP_TYPE = 3.0


@dataclass(frozen=True)
class HeadGroupTrace:
    """One attention module as a head group: the layers whose outputs (``seg_out``) and inputs (``seg_in``) follow
    its heads, by full name and how many of their channels do, and the cost entry of its matmuls (None: none
    counted)."""

    name: str
    layout: HeadLayout
    seg_out: dict[str, int]
    seg_in: dict[str, int]
    matmuls: LayerCost | None

    @property
    def qkv(self) -> str:
        return f"{self.name}.{self.layout.qkv}"


def head_groups(model: nn.Module, ignored: set[int], leaf_flops: dict[str, int], ran: set[str]
                ) -> list[HeadGroupTrace]:
    """A head group per attention module of ``model`` whose qkv projection ran as a module (``ran``: module names;
    Torch-Pruning cannot follow one applied functionally, as Swin V2, EVA and BEiT do) and none of whose layers is
    ``ignored`` (module ids)."""
    modules = dict(model.named_modules())
    found = []
    for name, layout in attention_modules(model).items():
        if f"{name}.{layout.qkv}" not in ran or any(id(m) in ignored for m in modules[name].modules()):
            continue
        full = {child: f"{name}.{child}" for child in
                (layout.qkv, layout.proj, *layout.head_outputs, *layout.head_inputs, *layout.channel_outputs)}
        seg_out = {full[layout.qkv]: 3 * layout.channels,
                   **{full[c]: layout.heads for c in layout.head_outputs},
                   **{full[c]: layout.channels for c in layout.channel_outputs},
                   **_own_parameters(modules[name], name, layout)}
        seg_in = {full[layout.proj]: layout.channels, **{full[c]: layout.heads for c in layout.head_inputs}}
        inner = sum(leaf_flops.get(f"{name}.{child}", 0) for child, m in modules[name].named_modules()
                    if child and isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)))
        matmul_flops = leaf_flops.get(name, 0) - inner
        matmuls = None if matmul_flops <= 0 else LayerCost(
            name=name, flops_unit=matmul_flops // layout.heads, weight_unit=0, per_out_params=0,
            out_segments=(Segment(name, layout.heads),), in_segments=(Segment(None, 1),))
        found.append(HeadGroupTrace(name, layout, seg_out, seg_in, matmuls))
    return found


def _own_parameters(module: nn.Module, name: str, layout: HeadLayout) -> dict[str, int]:
    """The module's own parameters that follow its heads (by full name), with how many entries do."""
    params = dict(module.named_parameters(recurse=False))
    return {**{f"{name}.{p}": layout.heads for p in layout.head_tensors if p in params},
            **{f"{name}.{p}": layout.channels for p in layout.channel_tensors if p in params}}


def head_features(attention: nn.Module, heads: int, flops: int) -> dict[str, float]:
    """AMC's descriptors of a head group: op type 3 (attention), its input width and heads, and the whole
    module's FLOPs (projections and matmuls) and parameters."""
    return {"op_type": ATTENTION_OP_TYPE, "in_channels": float(attention.qkv.in_features),
            "out_channels": float(heads), "kernel": 1.0, "stride": 1.0, "feature_size": 1.0, "flops": float(flops),
            "params": float(sum(p.numel() for p in attention.parameters()))}
