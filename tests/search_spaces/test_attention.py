"""Attention modules as head groups: whole heads pruned across qkv, proj and per-head tensors, the model's own
num_heads kept true, the attention matmuls in the exact cost model, clear errors for policies that cannot be."""

from __future__ import annotations

import pytest
import torch
from factories import tiny_swin, tiny_vit
from torch import nn

from autoprune import PruningSchedule, apply_policy
from autoprune.final.schedule import prune_gradually
from autoprune.prune.channels import group_importances, prune, replay_history
from search_spaces import SearchSpace
from search_spaces.cost import CostModel
from search_spaces.ground.errors import PolicyError
from search_spaces.head_groups import ATTENTION_OP_TYPE

MODELS = {"vit": (tiny_vit, (2, 1, 16, 16)), "swin": (tiny_swin, (2, 3, 32, 32))}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_attention_module_is_a_head_group_whose_heads_stay_true(name: str) -> None:
    """Costs of these models against the pruned and counted ones: test_space.test_analytic_cost_equals_real_pruning."""
    factory, shape = MODELS[name]
    model, inputs = factory(), torch.randn(*shape)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    attention = {n: m for n, m in model.named_modules() if type(m).__name__ in ("Attention", "WindowAttention")}
    heads = {g.name: g for g in space if g.unit == "head"}
    assert set(heads) == set(attention) and not set(space.excluded) & set(attention)
    assert all(heads[n].channels == attention[n].num_heads and heads[n].round_to == 1 for n in heads)
    assert all(g.features["op_type"] == ATTENTION_OP_TYPE for g in heads.values())
    assert not any(n.endswith(".qkv") for n in space.names)  # the fused projection is pruned by whole heads only
    policy = space.policy({g.name: g.max_ratio for g in space})
    pruned = apply_policy(model, policy, inputs)
    assert pruned(inputs).shape == model(inputs).shape
    for module_name, group in heads.items():
        module = pruned.get_submodule(module_name)
        assert module.num_heads == group.kept_channels(group.max_ratio) < group.channels
        assert module.qkv.out_features == 3 * module.proj.in_features == 3 * module.num_heads * 8


def test_attention_matmuls_are_counted_per_kept_head() -> None:
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    matmuls = next(layer for layer in space.layers if layer.name == "blocks.0.attn")
    tokens, head_dim = 17, 8  # 16 patches and the class token; 32 channels over 4 heads
    assert matmuls.flops_unit == 2 * 2 * 2 * tokens * tokens * head_dim  # q @ k^T and attn @ v, batch 2, per head
    full = CostModel(space).cost({}).flops
    one_head_less = CostModel(space).cost({"blocks.0.attn": 0.25}).flops
    qkv_and_proj = 2 * 2 * tokens * 32 * (3 * head_dim + head_dim)
    assert full - one_head_less == matmuls.flops_unit + qkv_and_proj


def test_the_least_important_heads_go_and_the_history_replays() -> None:
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    attention = model.blocks[0].attn
    with torch.no_grad():
        for part in range(3):  # head 2 of block 0 gets the smallest q, k and v weights
            attention.qkv.weight[part * 32 + 16: part * 32 + 24] *= 0.01
    space = SearchSpace.from_model(model, inputs, round_to=1)
    result = prune(model, space.policy({n: 0.25 if n == "blocks.0.attn" else 0.0 for n in space.names}), inputs,
                   space=space)
    assert ("blocks.0.attn", True, [2]) in result.history
    kept_rows = torch.cat([attention.qkv.weight[p * 32 + h * 8: p * 32 + h * 8 + 8] for p in range(3)
                           for h in (0, 1, 3)])
    assert torch.equal(result.model.blocks[0].attn.qkv.weight, kept_rows)
    replayed = replay_history(tiny_vit(), result.history, inputs)
    replayed.load_state_dict(result.model.state_dict())
    assert torch.allclose(replayed(inputs), result.model(inputs))


def test_swin_relative_position_bias_loses_the_pruned_heads_columns() -> None:
    model, inputs = tiny_swin(), torch.randn(2, 3, 32, 32)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    name = "layers.1.blocks.0.attn"
    table = model.get_submodule(name).relative_position_bias_table
    pruned = prune(model, space.policy({**dict.fromkeys(space.names, 0.0), name: 0.5}), inputs, space=space)
    removed = next(step[2] for step in pruned.history if step[0] == name)
    kept = [h for h in range(4) if h not in removed]
    assert torch.equal(pruned.model.get_submodule(name).relative_position_bias_table, table[:, kept])


def test_a_policy_that_leaves_no_head_or_splits_one_is_refused_by_name() -> None:
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    with pytest.raises(PolicyError, match=r"blocks\.0\.attn=0\.9000 \(max 0\.7500: 0 of its 4 heads would stay\)"):
        space.policy({**dict.fromkeys(space.names, 0.0), "blocks.0.attn": 0.9})
    with pytest.raises(PolicyError, match=r"blocks\.0\.attn\.qkv is inside attention modules pruned by whole heads"):
        space.policy({**dict.fromkeys(space.names, 0.0), "blocks.0.attn.qkv": 0.5})


@pytest.mark.slow
def test_a_pruned_vit_exports_to_torch_export_and_onnx_with_matching_outputs(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    pruned = apply_policy(model, space.policy({n: min(0.5, space[n].max_ratio) for n in space.names}), inputs)
    expected = pruned(inputs)
    program = torch.export.export(pruned, (inputs,))
    assert torch.allclose(program.module()(inputs), expected, atol=1e-5)
    torch.onnx.export(pruned, (inputs,), str(tmp_path / "vit.onnx"), dynamo=True).save(str(tmp_path / "vit.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    assert torch.allclose(torch.from_numpy(output), expected, atol=1e-4)


def test_global_ranking_scores_each_head_on_the_channels_scale() -> None:
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    scores = group_importances(model, inputs, group_names=space.names)
    assert {name: len(scores[name]) for name in ("blocks.0.attn", "blocks.1.attn")} == {"blocks.0.attn": 4,
                                                                                         "blocks.1.attn": 4}
    channel_scores = torch.cat([s for n, s in scores.items() if space[n].unit == "channel"])
    assert 0.2 < float(scores["blocks.0.attn"].mean() / channel_scores.mean()) < 5  # one scale for both


def test_gradual_pruning_down_to_one_head_replays_from_its_history() -> None:
    model, inputs = tiny_vit(), torch.randn(2, 1, 16, 16)
    space = SearchSpace.from_model(model, inputs, round_to=1)
    policy = space.policy({**dict.fromkeys(space.names, 0.0), "blocks.0.attn": 0.75, "blocks.0.mlp.fc1": 0.5})
    batches = [(torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))] * 2
    result = prune_gradually(model, policy, inputs, train_data=batches, space=space,
                             schedule=PruningSchedule("iterative", steps=6, stages=3))
    assert result.model.blocks[0].attn.num_heads == 1
    assert [step[0] for step in result.history].count("blocks.0.attn") >= 2  # heads removed at several events
    replayed = replay_history(tiny_vit(), result.history, inputs)
    replayed.load_state_dict(result.model.state_dict())
    assert torch.allclose(replayed.eval()(inputs), result.model.eval()(inputs))


class HeadsFirst(nn.Module):
    """An attention whose qkv outputs are laid out [heads, 3, head_dim] (as timm's MaxViT does)."""

    def __init__(self, dim: int = 16, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.qkv, self.proj = num_heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.num_heads, 3, -1).permute(3, 0, 2, 1, 4).unbind(0)
        return self.proj(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


def test_an_attention_laid_out_otherwise_is_excluded_with_why() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), HeadsFirst(), nn.Flatten(), nn.Linear(16 * 5, 10)).eval()
    space = SearchSpace.from_model(model, torch.randn(2, 5, 8), round_to=1)
    assert "1" not in space.names
    assert "removing a head does not equal silencing it" in space.excluded["1"]
