"""Which real-world architectures prune? torchvision and timm classifiers, random weights, 64x64 inputs.

For each model of the zoo: trace it into a search space (with the trace-time group check), ask for the
uniform policy that just meets 60% of the FLOPs, prune a copy for real and count its FLOPs independently
(``torch.utils.flop_counter`` on the pruned model). A model either prunes within budget with the analytic
FLOPs equal to the count, or is refused at trace time (``TraceError`` / ``BudgetError``) with a message.
Writes ``bench/results/zoo.json`` and ``docs/zoo.md``. For the transformer families it also counts the
attention modules whose heads prune (and says why the others do not), and exports the pruned model with
``torch.export`` and to ONNX (run in ONNX Runtime), comparing both outputs with the eager ones.

Each model gets ``--limit`` CPU seconds (default 120) for tracing plus the group check (``SearchSpace.from_model``'s
``time_limit``: past it, a TraceError, so the model is refused) and as many again for pruning and counting, so
a whole run takes at most about 45 x 2 x limit.

    python bench/zoo.py [--only resnet18 mixnet_s ...] [--size 64] [--budget 0.6] [--limit 120] [--resume] [--render]

``zoo.json`` and ``docs/zoo.md`` are rewritten after every model, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import DOCS, RESULTS, changed_settings, write_result

from autoprune.prune.channels import prune
from search_spaces.attention import head_layout
from search_spaces.budget import Budget
from search_spaces.cost import CostModel, uniform_ratios
from search_spaces.ground.errors import BudgetError, TraceError
from search_spaces.ground.time_limit import TimeUp, interrupt_after
from search_spaces.measure import count_flops
from search_spaces.space import SearchSpace
from search_spaces.trace import TRACE_TIME_LIMIT

SIZE = 64
BUDGET = 0.6
STATUSES = ("pruned", "refused", "failed")
# Terminal colour codes some exporters put in their messages.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Largest difference between an exported model's outputs and the eager ones that counts as matching.
EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ZooModel:
    """One architecture of the zoo: where it comes from, the family it stands for, extra constructor options."""

    name: str
    source: str
    family: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """A fresh model with random weights (10 classes; nothing is downloaded)."""
        if self.source == "timm":
            return timm.create_model(self.name, pretrained=False, num_classes=10, **self.options)
        return torchvision.models.get_model(self.name, weights=None, num_classes=10, **self.options)


# The architecture families the zoo covers (the docs/zoo.md table groups by them).
PLAIN_RESIDUAL_CNN = "plain / residual CNN"
CONCAT = "concat (Inception, DenseNet, SqueezeNet, DLA, VoVNet)"
DEPTHWISE_INVERTED_RESIDUAL_SE = "depthwise / inverted residual / SE"
GROUPED_CONVOLUTIONS = "grouped convolutions (ResNeXt, RegNet)"
SPLIT_ATTENTION = "split attention (ResNeSt, SKNet)"
MIXED_KERNEL_DEPTHWISE = "mixed-kernel depthwise (MixNet)"
RES2NET_SPLITS = "Res2Net splits"
CSP_BLOCKS = "CSP blocks"
CHANNEL_PADDING_RESIDUAL_SLICING = "channel-padding residual / slicing (ReXNet, GhostNet, DPN)"
CHANNEL_SHUFFLE = "channel shuffle (ShuffleNetV2)"
LAYER_SCALE_TOKEN_MIXING = "layer scale / token mixing (ConvNeXt, PoolFormer, MLP-Mixer)"
VISION_TRANSFORMER = "vision transformer (ViT, DeiT, DeiT III, CaiT, EVA)"
WINDOWED_TRANSFORMER = "windowed / hierarchical attention (Swin, Swin V2, NesT, MViTv2)"
HYBRID_TRANSFORMER = "hybrid convolution + attention (MobileViT, LeViT, CoaT, ConViT)"
TRANSFORMERS = (VISION_TRANSFORMER, WINDOWED_TRANSFORMER, HYBRID_TRANSFORMER)

ZOO: tuple[ZooModel, ...] = (
    ZooModel("resnet18", "torchvision", PLAIN_RESIDUAL_CNN),
    ZooModel("resnet50", "torchvision", PLAIN_RESIDUAL_CNN),
    ZooModel("resnet10t", "timm", PLAIN_RESIDUAL_CNN),
    ZooModel("repvgg_a0", "timm", PLAIN_RESIDUAL_CNN),
    ZooModel("squeezenet1_1", "torchvision", CONCAT),
    ZooModel("googlenet", "torchvision", CONCAT,
             {"aux_logits": False, "init_weights": True}),
    ZooModel("densenet121", "torchvision", CONCAT),
    ZooModel("dla34", "timm", CONCAT),
    ZooModel("ese_vovnet19b_dw", "timm", CONCAT),
    ZooModel("mobilenet_v2", "torchvision", DEPTHWISE_INVERTED_RESIDUAL_SE),
    ZooModel("mobilenet_v3_small", "torchvision", DEPTHWISE_INVERTED_RESIDUAL_SE),
    ZooModel("mnasnet0_5", "torchvision", DEPTHWISE_INVERTED_RESIDUAL_SE),
    ZooModel("efficientnet_b0", "torchvision", DEPTHWISE_INVERTED_RESIDUAL_SE),
    ZooModel("lcnet_050", "timm", DEPTHWISE_INVERTED_RESIDUAL_SE),
    ZooModel("resnext50_32x4d", "torchvision", GROUPED_CONVOLUTIONS),
    ZooModel("regnet_x_400mf", "torchvision", GROUPED_CONVOLUTIONS),
    ZooModel("regnet_y_400mf", "torchvision", GROUPED_CONVOLUTIONS),
    ZooModel("regnetx_002", "timm", GROUPED_CONVOLUTIONS),
    ZooModel("resnest14d", "timm", SPLIT_ATTENTION),
    ZooModel("skresnet18", "timm", SPLIT_ATTENTION),
    ZooModel("mixnet_s", "timm", MIXED_KERNEL_DEPTHWISE),
    ZooModel("res2net50_14w_8s", "timm", RES2NET_SPLITS),
    ZooModel("cspresnet50", "timm", CSP_BLOCKS),
    ZooModel("cs3darknet_s", "timm", CSP_BLOCKS),
    ZooModel("rexnet_100", "timm", CHANNEL_PADDING_RESIDUAL_SLICING),
    ZooModel("ghostnet_100", "timm", CHANNEL_PADDING_RESIDUAL_SLICING),
    ZooModel("dpn68", "timm", CHANNEL_PADDING_RESIDUAL_SLICING),
    ZooModel("shufflenet_v2_x0_5", "torchvision", CHANNEL_SHUFFLE),
    ZooModel("convnext_atto", "timm", LAYER_SCALE_TOKEN_MIXING),
    ZooModel("poolformer_s12", "timm", LAYER_SCALE_TOKEN_MIXING),
    ZooModel("mixer_s32_224", "timm", LAYER_SCALE_TOKEN_MIXING,
             {"img_size": SIZE}),
    ZooModel("vit_tiny_patch16_224", "timm", VISION_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("deit_tiny_distilled_patch16_224", "timm", VISION_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("deit3_small_patch16_224", "timm", VISION_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("cait_xxs24_224", "timm", VISION_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("eva02_tiny_patch14_224", "timm", VISION_TRANSFORMER, {"img_size": 56}),
    ZooModel("swin_tiny_patch4_window7_224", "timm", WINDOWED_TRANSFORMER, {"img_size": SIZE, "window_size": 4}),
    ZooModel("swinv2_tiny_window8_256", "timm", WINDOWED_TRANSFORMER, {"img_size": SIZE, "window_size": 4}),
    ZooModel("nest_tiny", "timm", WINDOWED_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("mvitv2_tiny", "timm", WINDOWED_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("mobilevit_xxs", "timm", HYBRID_TRANSFORMER),
    ZooModel("levit_128s", "timm", HYBRID_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("coat_lite_tiny", "timm", HYBRID_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("convit_tiny", "timm", HYBRID_TRANSFORMER, {"img_size": SIZE}),
    ZooModel("coatnet_nano_rw_224", "timm", HYBRID_TRANSFORMER, {"img_size": SIZE}),
)


def run_one(entry: ZooModel, *, size: int = SIZE, budget: float = BUDGET, limit: float = TRACE_TIME_LIMIT
            ) -> dict[str, Any]:
    """Trace, check, prune uniformly to ``budget`` of the FLOPs and count: one row of ``zoo.json``. Tracing plus
    checking, and pruning plus counting, may take ``limit`` seconds each."""
    torch.manual_seed(0)
    size = entry.options.get("img_size", size)
    model, inputs = entry.build().eval(), torch.randn(1, 3, size, size)
    row: dict[str, Any] = {"model": entry.name, "source": entry.source, "family": entry.family}
    start, cpu = time.perf_counter(), time.process_time()
    try:
        space = SearchSpace.from_model(model, inputs, time_limit=limit)
        row.update(trace_seconds=time.perf_counter() - start, trace_cpu_seconds=time.process_time() - cpu)
        row.update(groups=len(space), excluded=space.excluded)
        if entry.family in TRANSFORMERS:
            row.update(attention_facts(model, space))
        cost_model = CostModel(space)
        cost_model.check_reachable(Budget.flops(budget))
    except (TraceError, BudgetError) as exc:
        row.setdefault("trace_seconds", time.perf_counter() - start)
        row.setdefault("trace_cpu_seconds", time.process_time() - cpu)
        return {**row, "status": "refused", "message": str(exc)}
    policy = space.policy(uniform_ratios(cost_model, Budget.flops(budget)))
    predicted = cost_model.cost(policy).flops
    start = time.perf_counter()
    try:
        with interrupt_after(limit):
            pruned = prune(model, policy, inputs, space=space).model
            counted = count_flops(pruned, inputs)
            same_shape = pruned(inputs).shape == model(inputs).shape
    except TimeUp:
        return {**row, "status": "failed", "message": f"pruning and counting took more than {limit:g} CPU s"}
    except Exception as exc:  # a model that breaks here is exactly what the zoo looks for
        return {**row, "status": "failed", "message": f"{type(exc).__name__}: {exc}"}
    ok = counted == predicted and Budget.flops(budget).meets(counted, cost_model.base) and same_shape
    row["prune_seconds"] = time.perf_counter() - start
    if ok and entry.family in TRANSFORMERS:
        row["export"] = export_check(pruned, inputs)
    return {**row, "status": "pruned" if ok else "failed", "base_flops": space.base_flops, "predicted_flops": predicted,
            "counted_flops": counted, "flops_ratio": counted / space.base_flops,
            "coverage": "partially" if space.excluded else "fully",
            "message": "" if ok else f"predicted {predicted} FLOPs, counted {counted}, same output shape: {same_shape}"}


def attention_modules(model: nn.Module) -> list[str]:
    """The attention modules of ``model``: those with a ``num_heads`` count and no attention module inside."""
    heads = [n for n, m in model.named_modules() if isinstance(getattr(m, "num_heads", None), int)]
    return [n for n in heads if not any(other.startswith(f"{n}.") for other in heads)]


def attention_facts(model: nn.Module, space: SearchSpace) -> dict[str, Any]:
    """How many attention modules the model has, which of them prune by whole heads, and why the others do not."""
    found = attention_modules(model)
    pruned = [g.name for g in space if g.unit == "head"]
    left = {}
    for name in found:
        if name in pruned:
            continue
        if name in space.excluded:
            left[name] = space.excluded[name]
        elif head_layout(model.get_submodule(name)) is None:
            left[name] = "not a multi-head attention with a fused qkv and an output projection"
        else:
            left[name] = "its qkv projection runs functionally, not as a module: Torch-Pruning cannot follow it"
    return {"attention": len(found), "attention_pruned": len(pruned), "attention_left": left}


def export_check(model: nn.Module, inputs: torch.Tensor) -> dict[str, str]:
    """Export the pruned ``model`` with ``torch.export`` and to ONNX (run in ONNX Runtime): per form, "match" when
    its outputs are within EXPORT_TOLERANCE of the eager ones, else what went wrong."""
    import onnxruntime

    with torch.no_grad():
        expected = model(inputs)
    result = {}
    try:
        program = torch.export.export(model, (inputs,))
        with torch.no_grad():
            difference = float((program.module()(inputs) - expected).abs().max())
        result["torch.export"] = "match" if difference <= EXPORT_TOLERANCE else f"differs by {difference:.2g}"
    except Exception as exc:  # any exporter failure is what this column reports
        result["torch.export"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/model.onnx"
            torch.onnx.export(model, (inputs,), dynamo=True, verbose=False).save(path)
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            (output,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
        difference = float((torch.from_numpy(output) - expected).abs().max())
        result["onnx"] = "match" if difference <= EXPORT_TOLERANCE else f"differs by {difference:.2g}"
    except Exception as exc:  # any exporter or runtime failure is what this column reports
        result["onnx"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return result


def coverage(row: dict[str, Any]) -> str:
    """How much of a model prunes: fully (every group), partially (some groups excluded), not at all."""
    return row.get("coverage", "not at all") if row["status"] == "pruned" else "not at all"


def render(result: dict[str, Any]) -> str:
    """docs/zoo.md from the rows of ``zoo.json``."""
    rows = result["rows"]
    pruned = sum(r["status"] == "pruned" for r in rows)
    worst = max(rows, key=lambda r: r["trace_cpu_seconds"])
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    lines = [
        "# Model zoo: which architectures prune",
        "",
        "Generated by `python bench/zoo.py` from `bench/results/zoo.json` (do not edit by hand).",
        "",
        f"{len(rows)} torchvision and timm classifiers with random weights, input "
        f"1x3x{result['size']}x{result['size']}, "
        f"uniform policy at {result['budget']:.0%} of the FLOPs. Every group is checked at trace time (pruned by a "
        "small ratio and by its max_ratio, all together first and alone when that fails, run, and put back); "
        "groups that break are excluded with a reason (`space.excluded`). A model either prunes within budget "
        "with the analytic FLOPs equal to the FLOPs counted on the pruned model (`torch.utils.flop_counter`), or "
        "is refused at trace time with a message. Coverage: *fully* = every group prunable, *partially* = some "
        "groups excluded, *not at all* = refused. Times are CPU seconds of one thread (what they take on an idle "
        "machine whatever else runs; wall-clock seconds are in `zoo.json`); every model "
        f"had {result['limit']:g} CPU s for tracing + check and as many for pruning + counting.",
        "",
        *([f"- **partial run: {len(rows)} of {len(ZOO)} models** (`python bench/zoo.py --resume` runs the others)"]
          if not result.get("complete", True) else []),
        f"- pruned within budget: **{pruned} of {len(rows)}** ({pruned / len(rows):.0%}); "
        f"refused: {sum(r['status'] == 'refused' for r in rows)}; failed: {sum(r['status'] == 'failed' for r in rows)}",
        f"- trace + group check: max **{worst['trace_cpu_seconds']:.1f} CPU s** ({worst['model']}), total "
        f"{sum(r['trace_cpu_seconds'] for r in rows):.0f} CPU s",
        "",
        "## By family",
        "",
        "| family | fully | partially | not at all |",
        "|---|---|---|---|",
    ]
    for family, members in families.items():
        cells = [", ".join(r["model"] for r in members if coverage(r) == c) or "-"
                 for c in ("fully", "partially", "not at all")]
        lines.append(f"| {family} | {' | '.join(cells)} |")
    lines += ["", "## By model", "",
              "| model | source | status | groups | excluded | FLOPs kept | trace + check (CPU s) | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = f"{r['flops_ratio']:.1%}" if "flops_ratio" in r else "-"
        excluded = r.get("excluded", {})
        note = r.get("message", "") or "; ".join(f"{n}: {why}" for n, why in list(excluded.items())[:2])
        lines.append(f"| {r['model']} | {r['source']} | {r['status']} | {r.get('groups', '-')} | {len(excluded)} | "
                     f"{kept} | {r['trace_cpu_seconds']:.1f} | {note[:160].replace('|', '/')} |")
    lines += _transformer_lines(rows)
    lines += ["", f"Machine and versions: `bench/results/zoo.json` ({result['machine']['date']}).", ""]
    return "\n".join(lines)


def _transformer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The transformer table: attention modules, how many prune by whole heads, why the others do not, exports."""
    rows = [r for r in rows if r["family"] in TRANSFORMERS]
    if not rows:
        return []
    lines = ["", "## Transformers: attention heads", "",
             "An attention module with a fused qkv projection and an output projection is one group of whole heads "
             "(`search_spaces/attention.py`): its ratio is a fraction of its heads, removed from qkv, the output "
             "projection and every per-head tensor (relative position biases, logit scales), with the module's "
             "`num_heads` kept true. The attention matmuls are in the cost model (`torch.utils.flop_counter`, "
             "with attention's CPU kernel counted as its CUDA kernels are). *Exports*: the pruned model through "
             "`torch.export` and ONNX (ONNX Runtime), outputs compared with eager ones (tolerance "
             f"{EXPORT_TOLERANCE:g}). Inputs are 64x64 except where a model's patch size asks otherwise (EVA-02: "
             "56x56); Swin models use 4x4 windows (their 7x7 or 8x8 windows do not tile a 16x16 token grid).", "",
             "| model | family | status | attention modules | heads prune | FLOPs kept | exports "
             "| why attention is left |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = f"{r['flops_ratio']:.1%}" if "flops_ratio" in r else "-"
        exports = ", ".join(f"{form}: {ANSI.sub('', what)}" for form, what in r.get("export", {}).items()) or "-"
        left = list(r.get("attention_left", {}).values())
        why = f"{len(left)} left, e.g. {left[0][:110]}" if left else ""
        why = why or (r.get("message", "")[:140] if r["status"] != "pruned" else "")
        lines.append(f"| {r['model']} | {r['family'].split(' (')[0]} | {r['status']} | {r.get('attention', '-')} | "
                     f"{r.get('attention_pruned', '-')} | {kept} | {exports[:120].replace('|', '/')} | "
                     f"{why.replace('|', '/')} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only these models (nothing is written)")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--budget", type=float, default=BUDGET)
    parser.add_argument("--limit", type=float, default=TRACE_TIME_LIMIT,
                        help="CPU seconds per model for tracing + check, and again for pruning + counting")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/zoo.md from bench/results/zoo.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the models bench/results/zoo.json has (same settings) and run the others")
    args = parser.parse_args(argv)
    if args.render:
        (DOCS / "zoo.md").write_text(render(json.loads((RESULTS / "zoo.json").read_text())))
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    settings = {"size": args.size, "budget": args.budget, "limit": args.limit}
    rows = _resumed_rows(settings) if args.resume else []
    done = {r["model"] for r in rows}
    for entry in ZOO:
        if (args.only and entry.name not in args.only) or entry.name in done:
            continue
        row = run_one(entry, size=args.size, budget=args.budget, limit=args.limit)
        brief = {k: v for k, v in row.items() if k != "excluded"} | {"excluded": len(row.get("excluded", {}))}
        print(json.dumps(brief), flush=True)
        rows.append(row)
        if not args.only:  # written after every model: an interrupted run keeps what it measured
            path = write_result("zoo", {**settings, "complete": len(rows) == len(ZOO), "rows": rows})
            (DOCS / "zoo.md").write_text(render(json.loads(path.read_text())))
    if rows and not args.only:
        print(f"{sum(r['status'] == 'pruned' for r in rows)} of {len(rows)} pruned; max trace + check "
              f"{max(r['trace_cpu_seconds'] for r in rows):.1f} CPU s -> {RESULTS / 'zoo.json'}, {DOCS / 'zoo.md'}")


def _resumed_rows(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier run with the same settings (``--resume``), in zoo order."""
    earlier = json.loads((RESULTS / "zoo.json").read_text())
    changed = changed_settings(earlier, settings)
    if changed:
        raise SystemExit(f"bench/results/zoo.json was run with other settings {changed}; run without --resume")
    order = [entry.name for entry in ZOO]
    return sorted((r for r in earlier["rows"] if r["model"] in order), key=lambda r: order.index(r["model"]))

if __name__ == "__main__":
    main()
