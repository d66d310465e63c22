"""Multi-head attention as a group whose unit is a whole head.

An attention module with an integer ``num_heads``, a fused ``qkv`` Linear and an output ``proj`` Linear (timm's
ViT, DeiT, DeiT III, Swin, MobileViT blocks) is taken to lay out ``qkv``'s outputs as ``[3, heads, head_dim]`` and
``proj``'s inputs as ``[heads, head_dim]``. Removing head ``h`` removes those slices from both, and from whatever
else the module keeps one of per head (a relative-position bias table's column, a logit scale) or per attention
channel (q/v biases, a scale norm, a gate), and sets the module's ``num_heads`` (and ``attn_dim``) to what is
left, so the pruned module still runs, traces and exports. Torch-Pruning's per-layer functions do the cutting;
this module only knows the layout. The layout is assumed from the sizes: the trace-time check
(:func:`search_spaces.group_check.head_check`) confirms it per module (removing a head must equal silencing it),
and excludes modules whose forward pass disagrees (Swin V2, EVA, BEiT and CaiT reshape with the input width).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.ground.errors import PolicyError

# Module attributes that count attention channels (heads x head_dim); kept true after pruning.
CHANNEL_COUNT_ATTRIBUTES = ("attn_dim",)


@dataclass(frozen=True)
class HeadLayout:
    """Where the heads of one attention module live (names relative to the module).

    Attributes:
        heads: number of heads.
        head_dim: channels per head (of q, k and v alike).
        qkv: the fused projection whose outputs are ``[3, heads, head_dim]``.
        proj: the output projection whose inputs are ``[heads, head_dim]``.
        head_outputs / head_inputs: other Linear layers with one output / input per head.
        channel_outputs: other Linear and LayerNorm layers with one output per attention channel.
        head_tensors / channel_tensors: the module's own parameters and float buffers whose last non-singleton
            dimension has one entry per head / per attention channel.
    """

    heads: int
    head_dim: int
    qkv: str
    proj: str
    head_outputs: tuple[str, ...] = ()
    head_inputs: tuple[str, ...] = ()
    channel_outputs: tuple[str, ...] = ()
    head_tensors: tuple[str, ...] = ()
    channel_tensors: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        """Attention channels: heads x head_dim."""
        return self.heads * self.head_dim

    def channel_indices(self, heads: Sequence[int]) -> list[int]:
        """Indices of the attention channels of ``heads`` (into ``proj``'s inputs)."""
        return [h * self.head_dim + d for h in sorted(heads) for d in range(self.head_dim)]

    def qkv_indices(self, heads: Sequence[int]) -> list[int]:
        """Indices of ``qkv``'s outputs that belong to ``heads`` (their q, k and v parts)."""
        channels = self.channel_indices(heads)
        return [part * self.channels + c for part in range(3) for c in channels]


def head_layout(module: nn.Module) -> HeadLayout | None:
    """The head layout of ``module`` if it is a multi-head attention with a fused qkv projection, else None.

    Grouped-query attention (fewer key/value heads than query heads) is not recognised: its heads are not
    independent units.
    """
    heads = getattr(module, "num_heads", None)
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        return None
    if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear):
        return None
    if getattr(module, "num_kv_heads", heads) != heads or qkv.out_features % (3 * heads):
        return None
    head_dim = qkv.out_features // (3 * heads)
    if proj.in_features != heads * head_dim:
        return None
    channels = heads * head_dim
    head_outputs, head_inputs, channel_outputs = [], [], []
    for name, child in module.named_modules():
        if not name or child is qkv or child is proj:
            continue
        if isinstance(child, nn.Linear):
            if child.out_features == heads:
                head_outputs.append(name)
            elif child.out_features == channels:
                channel_outputs.append(name)
            if child.in_features == heads:
                head_inputs.append(name)
        elif isinstance(child, nn.LayerNorm) and tuple(child.normalized_shape) == (channels,):
            channel_outputs.append(name)
    head_tensors, channel_tensors = [], []
    for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        sizes = [d for d in tensor.shape if d > 1]
        if not tensor.is_floating_point() or not sizes:
            continue
        if sizes[-1] == heads:
            head_tensors.append(name)
        elif sizes[-1] == channels:
            channel_tensors.append(name)
    return HeadLayout(heads, head_dim, "qkv", "proj", tuple(head_outputs), tuple(head_inputs),
                      tuple(channel_outputs), tuple(head_tensors), tuple(channel_tensors))


def attention_modules(model: nn.Module) -> dict[str, HeadLayout]:
    """Every attention module of ``model`` whose heads can be pruned, by name."""
    found = {}
    for name, module in model.named_modules():
        layout = head_layout(module)
        if layout is not None:
            found[name] = layout
    return found


def head_scores(qkv_scores: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
    """One score per head from scores of ``qkv``'s output channels: the sum over its q, k and v channels."""
    if qkv_scores.numel() != 3 * layout.channels:
        raise PolicyError(f"expected {3 * layout.channels} qkv channel scores ({layout.heads} heads of "
                          f"{layout.head_dim}), got {qkv_scores.numel()}")
    return qkv_scores.detach().float().view(3, layout.heads, layout.head_dim).sum(dim=(0, 2))


def prune_heads(module: nn.Module, layout: HeadLayout, removed: Sequence[int]) -> None:
    """Remove the heads ``removed`` from ``module`` in place (at least one head must stay).

    Raises:
        PolicyError: ``removed`` names a head the module does not have, or every head.
    """
    removed = sorted(set(int(h) for h in removed))
    if any(h < 0 or h >= layout.heads for h in removed):
        raise PolicyError(f"heads {removed} are not all among the {layout.heads} heads of the attention module")
    if len(removed) >= layout.heads:
        raise PolicyError(f"removing {len(removed)} of {layout.heads} heads would leave the attention without heads")
    if not removed:
        return
    parts = dict(module.named_modules())
    channels = layout.channel_indices(removed)
    tp.prune_linear_out_channels(parts[layout.qkv], layout.qkv_indices(removed))
    tp.prune_linear_in_channels(parts[layout.proj], channels)
    for name in layout.head_outputs:
        tp.prune_linear_out_channels(parts[name], removed)
    for name in layout.head_inputs:
        tp.prune_linear_in_channels(parts[name], removed)
    for name in layout.channel_outputs:
        layer = parts[name]
        prune = tp.prune_layernorm_out_channels if isinstance(layer, nn.LayerNorm) else tp.prune_linear_out_channels
        prune(layer, channels)
    for name in layout.head_tensors:
        _cut_last_dim(module, name, removed)
    for name in layout.channel_tensors:
        _cut_last_dim(module, name, channels)
    module.num_heads = layout.heads - len(removed)
    for attribute in CHANNEL_COUNT_ATTRIBUTES:
        if getattr(module, attribute, None) == layout.channels:
            setattr(module, attribute, module.num_heads * layout.head_dim)


def _cut_last_dim(module: nn.Module, name: str, removed: Sequence[int]) -> None:
    """Drop the ``removed`` entries of the last non-singleton dimension of the module's own tensor ``name``."""
    tensor, gone = getattr(module, name), set(removed)
    dim = max(i for i, d in enumerate(tensor.shape) if d > 1)
    keep = torch.tensor([i for i in range(tensor.shape[dim]) if i not in gone], device=tensor.device)
    cut = tensor.data.index_select(dim, keep).contiguous()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(cut, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, cut)
