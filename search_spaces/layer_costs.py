"""The analytic cost entries of a traced model's layers: how each layer's FLOPs and parameters follow the kept
channels of the groups that set its widths (see :class:`search_spaces.groups.LayerCost`)."""

from __future__ import annotations

from torch import nn

from search_spaces.groups import LayerCost, Segment
from search_spaces.surgery import CONV_TYPES

# Per layer name, the slices of one of its dimensions that follow a group.
Slices = dict[str, list[Segment]]


def layer_costs(
    model: nn.Module, modules: dict[str, nn.Module], leaf_flops: dict[str, int], out_of: Slices, in_of: Slices
) -> tuple[list[LayerCost], int, dict[str, str]]:
    """Per-layer cost entries (which groups set each layer's widths), the parameters no group touches and the
    groups whose channels Torch-Pruning maps onto more channels than a layer has (name -> why: excluded).

    ``out_of`` and ``in_of`` give, per layer, the slices of its output and input channels that follow each group.

    A parameter outside any Conv/Linear/Norm layer that a group prunes (a layer scale, a position
    embedding) is an entry of its own, named by the parameter.
    """
    loose = {n: p for n, p in model.named_parameters() if n in out_of}
    overflow: dict[str, str] = {}
    layers: list[LayerCost] = []
    constant_params = 0
    for name, module in modules.items():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, (*CONV_TYPES, nn.Linear)):
            flops = leaf_flops.get(name, 0)
            layers.append(_weight_cost(name, module, flops, out_of.get(name, []), in_of.get(name, []), overflow))
        elif name in out_of and all(p.dim() == 1 for p in own):  # BatchNorm, LayerNorm, PReLU, ...
            per_channel = sum(p.numel() for p in own) // own[0].numel()
            layers.append(LayerCost(name=name, flops_unit=0, weight_unit=0, per_out_params=per_channel,
                                    out_segments=_segments(out_of[name], own[0].numel(), name, overflow),
                                    in_segments=(Segment(None, 1),)))
        else:
            n_params = sum(p.numel() for p in own)
            constant_params += n_params - sum(p.numel() for p in own if any(p is q for q in loose.values()))
    for name, param in loose.items():
        channels = [d for d in param.shape if d > 1][-1]  # Torch-Pruning prunes the last non-singleton dim
        layers.append(LayerCost(name=name, flops_unit=0, weight_unit=0, per_out_params=param.numel() // channels,
                                out_segments=_segments(out_of[name], channels, name, overflow),
                                in_segments=(Segment(None, 1),)))
    return layers, constant_params, overflow


def _segments(known: list[Segment], total: int, name: str, overflow: dict[str, str]) -> tuple[Segment, ...]:
    """The ``total`` channels of layer ``name``: the ``known`` groups' slices and the rest (never pruned).

    If the groups claim more than ``total``, the layer is kept whole and each of them goes into ``overflow``.
    """
    rest = total - sum(s.size for s in known)
    if rest < 0:  # Torch-Pruning's index mapping (splits, reshapes) claims more channels than there are
        why = f"Torch-Pruning maps {total - rest} channels onto the {total} of {name}"
        for s in known:
            overflow.setdefault(s.group, why)
        return (Segment(None, total),)
    return (*known, Segment(None, rest)) if rest > 0 else tuple(known)


def _weight_cost(
    name: str, module: nn.Module, flops: int, out_known: list[Segment], in_known: list[Segment],
    overflow: dict[str, str],
) -> LayerCost:
    """The cost entry of one Conv or Linear layer whose output and input channels follow ``out_known`` and
    ``in_known``."""
    if isinstance(module, nn.Linear):
        out_dim, in_dim, unit = module.out_features, module.in_features, 1
    else:
        depthwise = module.groups == module.in_channels and module.groups > 1
        out_dim = module.out_channels
        in_dim = 1 if depthwise else module.in_channels // module.groups
        unit = int(module.weight[0, 0].numel())
        if depthwise:
            in_known = []
        elif module.groups > 1:  # each output channel sees one part of the input: a share per group
            in_known = [Segment(s.group, s.size // module.groups) for s in in_known]
    return LayerCost(
        name=name,
        flops_unit=flops // (out_dim * in_dim),
        weight_unit=unit,
        per_out_params=1 if module.bias is not None else 0,
        out_segments=_segments(out_known, out_dim, name, overflow),
        in_segments=_segments(in_known, in_dim, name, overflow),
    )
