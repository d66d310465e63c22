"""The search config file (YAML) and the run it describes: model + data + checkpoint → search()."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from autoprune.builtins.data import DataBundle, load_dataset
from autoprune.builtins.models import build_model
from autoprune.composition.options import RunOptions
from autoprune.composition.search import SearchResult, search
from autoprune.composition.time_budget import parse_duration
from autoprune.evaluation.evaluator import EvaluatorConfig
from autoprune.evaluation.rungs import SchedulerConfig, check_schedulable, split_legacy_options
from autoprune.evaluation.training import TrainConfig, load_checkpoint, trained_model
from autoprune.executors import EXECUTORS, RayOptions
from autoprune.final.finalize import FinalConfig
from autoprune.final.recovery import RECOVERIES
from autoprune.final.rescore import RescoreConfig
from autoprune.final.schedule import PruningSchedule
from autoprune.prune.export import check_formats
from autoprune.report.sparsity_tables import load_state
from autoprune.searcher import searcher_type
from autoprune.study.rundir import check_can_start
from autoprune.study.study import Progress
from autoprune.study.tracking import check_tracking
from search_spaces.budget import Budget
from search_spaces.ground.documents import loads_yaml
from search_spaces.ground.errors import ConfigError, unknown_name
from search_spaces.ground.io import read_text
from search_spaces.ground.options import check_fraction, check_int, check_seed, check_str, from_mapping
from search_spaces.groups import GRANULARITIES
from search_spaces.presets import default_preset
from search_spaces.space_options import SpaceOptions

_TYPED = ("train", "budget", "evaluator", "executor_options", "scheduler", "rescore", "final_schedule")


@dataclass(frozen=True)
class SearchConfig:
    """Everything ``autoprune search CONFIG.yaml`` needs. Every field has a default.

    The YAML file's mappings (``train``, ``budget``, ``evaluator``, ``executor_options``) become typed
    values here; :meth:`to_dict` gives the file's layout back.

    Attributes:
        model: built-in model (small_cnn, resnet20, resnet56, mobilenet_v2, resnet18) or ``package.module:factory``.
        dataset: built-in dataset (digits, fashion-mnist, cifar10) or ``package.module:factory``.
        data_dir: dataset directory (fashion-mnist: the IDX files; default the Debian package's).
        batch_size: training batch size (default: the dataset's).
        checkpoint: trained weights (a state dict file); default: train the baseline and cache it.
        train: baseline training recipe when no checkpoint is given (YAML: epochs, lr, weight_decay, seed).
        budget: YAML ``{flops: 0.5}``, ``{params: 0.3}`` or ``{latency: 0.5, batch: 1, threads: 1}`` (fraction of
            the unpruned model kept at most; ``{metric: latency, absolute: 2.0}`` for milliseconds).
        searcher: searcher name or ``package.module:Class``.
        searcher_options: keyword options for the searcher (each searcher checks its own).
        trials: evaluations to run.
        seed: seed for data order, searcher and evaluations.
        evaluator: per-candidate recovery; entries left out take :class:`EvaluatorConfig`'s defaults.
        final_finetune_steps: finetune steps for the best policy before the final report.
        final_schedule: how the best policy is reached: ``one_shot`` (default), ``iterative``, ``agp``,
            ``constant``, or a mapping like ``{kind: agp, frequency: 10, initial_sparsity: 0}``
            (:class:`autoprune.PruningSchedule`).
        final_recovery: ``finetune`` (default), ``lr_rewind``, ``weight_rewind`` or ``scratch``.
        final_distill: the final training distills from the unpruned model (knowledge distillation; default
            true, ``false`` for plain finetuning).
        rewind_checkpoint: an early checkpoint of the model (a ``.pt`` state dict), for ``weight_rewind``.
        granularity: ``channel`` (default) or ``element`` (one sparsity per weight tensor; with a ``nonzeros``
            or ``size`` budget).
        executor: ``local`` or ``ray``; executor_options: the Ray executor's :class:`RayOptions`
            (YAML e.g. ``{address: auto, cpus_per_trial: 1}``), None for ``local``.
        scheduler: multi-fidelity on either executor: ``none`` (default), ``asha`` or ``cascade``, or
            ``{kind: asha, grace_period: 5, reduction_factor: 3}`` / ``{kind: cascade, promote: 0.25}``
            (:class:`SchedulerConfig`).
        rescore: the best candidates scored again before one is exported: ``{top_k: 3, finetune_steps: ...,
            val_batches: ...}`` or a count (:class:`RescoreConfig`).
        run_dir: output directory (default ``runs/<model>-<dataset>-<time>``).
        preset, ignore, round_to, max_ratio: search-space options (see ``SearchSpace.from_model``; ``round_to:
            auto`` measures the multiple: :class:`autoprune.SpaceOptions`).
        time_budget: wall-clock limit on the trials: seconds or ``2h``, ``90m``, ``1h30m`` (None: no limit).
        export: the forms the final model is written in under ``RUN_DIR/model/`` (``eager``, ``export``,
            ``compile``, ``onnx``; see ``autoprune.export_model``), each timed against the unpruned model in its
            runtime (never slower).
        tracking: experiment trackers, ``[tensorboard, mlflow]`` or either (see :mod:`autoprune.study.tracking`).
    """

    model: str = "small_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    batch_size: int | None = None
    checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: Budget = field(default_factory=lambda: Budget.flops(0.5))
    searcher: str = "random"
    searcher_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 40
    seed: int = 0
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    final_finetune_steps: int = 300
    final_schedule: PruningSchedule = field(default_factory=PruningSchedule)
    final_recovery: str = "finetune"
    final_distill: bool = True
    rewind_checkpoint: str | None = None
    granularity: str = "channel"
    executor: str = "local"
    executor_options: RayOptions | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    rescore: RescoreConfig = field(default_factory=RescoreConfig)
    run_dir: str | None = None
    preset: str | None = None
    ignore: list[str] = field(default_factory=list)
    round_to: int | str | None = None
    max_ratio: float | None = None
    time_budget: float | str | None = None
    tracking: list[str] = field(default_factory=list)
    export: list[str] = field(default_factory=lambda: ["eager"])

    def __post_init__(self) -> None:
        if isinstance(self.executor_options, Mapping):  # older configs chose the scheduler among Ray's options
            options, legacy = split_legacy_options(self.executor_options)
            object.__setattr__(self, "executor_options", options)
            if legacy is not None and SchedulerConfig.from_value(self.scheduler) == SchedulerConfig():
                object.__setattr__(self, "scheduler", legacy)
        for name in _TYPED:  # mappings (from YAML or keyword arguments) become typed values
            object.__setattr__(self, name, _typed(name, getattr(self, name), self.executor))
        if not isinstance(self.searcher_options, Mapping):
            raise ConfigError(f"config entry 'searcher_options' must be a mapping, got {self.searcher_options!r}")
        for name in ("model", "dataset", "searcher", "executor"):
            check_str(f"config entry {name!r}", getattr(self, name))
        if self.executor not in EXECUTORS:
            raise unknown_name("executor", self.executor, list(EXECUTORS))
        if self.final_recovery not in RECOVERIES:
            raise unknown_name("final_recovery", self.final_recovery, list(RECOVERIES))
        if self.granularity not in GRANULARITIES:
            raise unknown_name("granularity", self.granularity, list(GRANULARITIES))
        object.__setattr__(self, "export", list(check_formats(self.export)))
        for name in ("data_dir", "checkpoint", "run_dir", "preset", "rewind_checkpoint"):
            if getattr(self, name) is not None:
                check_str(f"config entry {name!r}", getattr(self, name))
        check_int("config entry 'trials'", self.trials, low=1)
        check_seed("config entry 'seed'", self.seed)
        check_int("config entry 'final_finetune_steps'", self.final_finetune_steps, low=0)
        if not isinstance(self.final_distill, bool):
            raise ConfigError(f"config entry 'final_distill' must be true or false, got {self.final_distill!r}")
        if self.batch_size is not None:
            check_int("config entry 'batch_size'", self.batch_size, low=1)
        if self.round_to is not None and self.round_to != "auto":
            check_int("config entry 'round_to' (or 'auto')", self.round_to, low=1)
        if self.max_ratio is not None:
            check_fraction("config entry 'max_ratio'", self.max_ratio, low_inclusive=False, high_inclusive=False)
        if not isinstance(self.ignore, list) or not all(isinstance(n, str) for n in self.ignore):
            raise ConfigError(f"config entry 'ignore' must be a list of module names, got {self.ignore!r}")
        check_schedulable(self.scheduler, self.evaluator.finetune_steps)
        if self.time_budget is not None:
            parse_duration(self.time_budget, name="config entry 'time_budget'")
        if not isinstance(self.tracking, list):
            raise ConfigError(f"config entry 'tracking' must be a list (e.g. [tensorboard, mlflow]), got "
                              f"{self.tracking!r}")
        check_tracking(self.tracking, self.run_dir or "runs")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> SearchConfig:
        """A config from a mapping; errors name ``source`` (the file it came from)."""
        try:
            return from_mapping(cls, data, what=f"entries of {source}")
        except ConfigError as exc:
            if source == "config" or source in str(exc):
                raise
            raise type(exc)(f"{source}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = loads_yaml(read_text(path, what="config file"), what=f"config file {str(path)!r}") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
        return cls.from_dict(data, source=f"config file {str(path)!r}")

    def with_overrides(self, **overrides: Any) -> SearchConfig:
        """A copy with the given (non-None) fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The config file's layout (mappings for the typed entries)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["budget"] = self.budget.to_dict()
        data["executor_options"] = {} if self.executor_options is None else asdict(self.executor_options)
        data["scheduler"], data["rescore"] = self.scheduler.to_dict(), self.rescore.to_dict()
        data["final_schedule"] = asdict(self.final_schedule)
        data["train"], data["evaluator"] = asdict(self.train), self.evaluator.to_dict()
        data["searcher_options"], data["ignore"] = dict(self.searcher_options), list(self.ignore)
        return data

    def space_options(self) -> SpaceOptions:
        """How the model is traced (the preset defaults to the model's own)."""
        return SpaceOptions(preset=self.preset or default_preset(self.model), ignore=tuple(self.ignore),
                            round_to=self.round_to, max_ratio=self.max_ratio, granularity=self.granularity)

    def final_config(self) -> FinalConfig:
        """How the best policy becomes the exported model."""
        rewind = None if self.rewind_checkpoint is None else load_state(self.rewind_checkpoint)
        return FinalConfig(steps=self.final_finetune_steps, schedule=self.final_schedule, recovery=self.final_recovery,
                           rescore=self.rescore, rewind_state=rewind, export=tuple(self.export),
                           distill=self.final_distill)

    def executor_value(self) -> str | RayOptions:
        """``local``, or the Ray executor's options."""
        return self.executor_options or RayOptions() if self.executor == "ray" else self.executor

    def run_options(self, run_dir: str, *, resume: bool, progress: Callable[[Progress], None] | None,
                    checkpoint: str) -> RunOptions:
        """The run: its directory, the scheduler, the limits, and what config.json records of this file."""
        return RunOptions(dir=run_dir, resume=resume, scheduler=self.scheduler, time_budget=self.time_budget,
                          tracking=tuple(self.tracking), progress=progress,
                          record={"config": {**self.to_dict(), "run_dir": run_dir}, "checkpoint": checkpoint})

    def default_run_dir(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return str(Path("runs") / f"{self.model}-{self.dataset}-{stamp}".replace(":", "_"))


def _typed(name: str, value: Any, executor: str) -> Any:
    """A config entry as its typed value (a mapping is converted; a typed value is kept)."""
    if name == "scheduler":
        return SchedulerConfig.from_value(value)
    if name == "rescore":
        return RescoreConfig.from_value(value)
    if name == "final_schedule":
        return PruningSchedule.from_value(value)
    if name == "budget":
        return value if isinstance(value, Budget) else Budget.from_dict(value)
    if name == "train":
        return from_mapping(TrainConfig, value, what="train options")
    if name == "evaluator":
        return EvaluatorConfig.from_dict(value)
    if executor != "ray":
        if value:
            raise ConfigError(f"executor_options apply to the ray executor only; executor is {executor!r}, "
                              f"options {value!r}")
        return None
    return value if isinstance(value, RayOptions) else from_mapping(RayOptions, value, what="ray executor options")


def check_runnable(config: SearchConfig) -> None:
    """Every check the search of ``config`` makes before it loads its data or model (the service makes them when
    a config is submitted, so that what it accepts runs).

    Raises:
        ConfigError: the searcher or its options, the budget for the granularity, or the space options are
            refused.
    """
    searcher_type(config.searcher, config.searcher_options)
    config.budget.check_granularity(config.granularity)
    config.space_options()


def demo_config(**overrides: Any) -> SearchConfig:
    """The ``autoprune demo`` search: small CNN on digits, random search, 50% FLOPs (docs/examples/demo.yaml)."""
    return SearchConfig(
        model="small_cnn", dataset="digits", budget=Budget.flops(0.5), searcher="random", trials=40,
        evaluator=EvaluatorConfig(bn_batches=5, finetune_steps=20), final_finetune_steps=300,
    ).with_overrides(**overrides)


def load_model_and_data(
    config: SearchConfig, *, on_epoch: Callable[[int, float], None] | None = None
) -> tuple[torch.nn.Module, DataBundle, dict[str, Any]]:
    """Build the dataset and the trained model (from ``checkpoint`` or the training cache)."""
    data = load_dataset(config.dataset, batch_size=config.batch_size, seed=config.seed, data_dir=config.data_dir)
    model = build_model(config.model, in_channels=data.in_channels, num_classes=data.num_classes,
                        seed=config.train.seed)
    if config.checkpoint is not None:
        load_checkpoint(model, config.checkpoint, name=f"model {config.model!r}")
        info = {"checkpoint": config.checkpoint, "trained_now": False}
    else:
        model, path, trained = trained_model(config.model, model, data, config.train, on_epoch=on_epoch)
        info = {"checkpoint": str(path), "trained_now": trained}
    return model, data, info


def run_search(
    config: SearchConfig,
    *,
    resume: bool = False,
    progress: Callable[[Progress], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Run the search a config describes, writing its run directory.

    Every check that needs no model (the names, the run directory) comes before the data and the model are
    loaded or the baseline is trained.
    """
    check_runnable(config)
    run_dir = config.run_dir or config.default_run_dir()
    check_can_start(run_dir, resume=resume)
    model, data, info = load_model_and_data(config, on_epoch=on_epoch)
    return search(
        model, data.example_inputs(), budget=config.budget, train_data=data.train, val_data=data.val,
        test_data=data.test, searcher=config.searcher, searcher_options=config.searcher_options,
        trials=config.trials, seed=config.seed, evaluator=config.evaluator, executor=config.executor_value(),
        space=config.space_options(), final=config.final_config(),
        run=config.run_options(run_dir, resume=resume, progress=progress, checkpoint=info["checkpoint"]),
    )
