"""A search config from a request: untrusted input, checked before anything is created.

It must be the same document ``autoprune search CONFIG.yaml`` reads, minus what names this machine's files
or clusters (the server chooses those), with numbers inside ranges and only names the server knows: built-in
models, datasets and searchers and those installed packages register; ``package.module:factory`` strings only
when the server was started with ``--allow-imports``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoprune.builtins.data import DATASETS
from autoprune.builtins.models import MODELS, build_model
from autoprune.builtins.registry import SEARCHERS, registered
from autoprune.composition.config import SearchConfig, check_runnable
from autoprune.service.checkpoints import uploaded_checkpoint
from search_spaces.ground.documents import NestingError, loads_json, loads_yaml
from search_spaces.ground.errors import ConfigError, unknown_name
from search_spaces.ground.options import check_int
from search_spaces.presets import available_presets

#: Largest request body holding a config (413 past it).
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of lists and mappings a config may have.
MAX_DEPTH = 32
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
# Entries that name this machine's files or clusters: the server sets them.
SERVER_ENTRIES = ("run_dir", "data_dir")
# Entries naming weights: a request gives the id POST /checkpoints returned, the server its file.
CHECKPOINT_ENTRIES = ("checkpoint", "rewind_checkpoint")
SERVER_RAY_OPTIONS = ("address", "storage_path", "dashboard", "dashboard_host")
# (what, value getter, highest accepted): numbers a request may ask for.
MAX_TRIALS = 10_000
LIMITS: tuple[tuple[str, Any, float], ...] = (
    ("trials", lambda c: c.trials, MAX_TRIALS),
    ("train epochs", lambda c: c.train.epochs, 1_000),
    ("evaluator finetune_steps", lambda c: c.evaluator.finetune_steps, 100_000),
    ("evaluator bn_batches", lambda c: c.evaluator.bn_batches, 10_000),
    ("evaluator val_batches", lambda c: c.evaluator.val_batches or 0, 10_000),
    ("final_finetune_steps", lambda c: c.final_finetune_steps, 100_000),
    ("rescore top_k", lambda c: c.rescore.top_k, 100),
    ("rescore finetune_steps", lambda c: c.rescore.finetune_steps or 0, 100_000),
    ("batch_size", lambda c: c.batch_size or 0, 65_536),
    ("executor_options max_concurrent (workers)",
     lambda c: c.executor_options.max_concurrent or 0 if c.executor_options else 0, 256),
    ("executor_options cpus_per_trial", lambda c: c.executor_options.cpus_per_trial if c.executor_options else 0, 256),
    ("executor_options gpus_per_trial", lambda c: c.executor_options.gpus_per_trial if c.executor_options else 0, 16),
)


class UnsupportedMediaType(ConfigError):
    """The request body is neither JSON nor YAML (HTTP 415)."""


def parse_body(body: bytes, content_type: str | None, *, what: str = "the config") -> dict[str, Any]:
    """The mapping a request body holds: JSON, or YAML with a YAML content type; only what JSON can hold,
    nested at most :data:`MAX_DEPTH` deep."""
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind not in (*YAML_TYPES, "application/json"):
        raise UnsupportedMediaType(f"Content-Type {kind!r} is not accepted; send application/json or "
                                   "application/yaml")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the request body is not valid {'YAML' if kind in YAML_TYPES else 'JSON'}: {exc}") from exc
    try:
        data = loads_yaml(text, what="the request body", aliases=False) if kind in YAML_TYPES \
            else loads_json(text, what="the request body")
    except NestingError:
        raise ConfigError(f"the request body is nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping, got {type(data).__name__}")
    _check_plain(data)
    return data


def _check_plain(data: dict[str, Any]) -> None:
    """Refuse what JSON cannot hold (YAML dates, sets, binary) and nesting past :data:`MAX_DEPTH`."""
    stack: list[tuple[str, Any, int]] = [("", data, 1)]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"the request body is nested more than {MAX_DEPTH} levels deep (at {where})")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise ConfigError(f"key {key!r} at {where or 'the top'} is not a string")
                stack.append((f"{where}.{key}" if where else str(key), item, depth + 1))
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value)]
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}: a {type(value).__name__} ({value!r}) is not accepted; only what JSON "
                              "holds (quote a date to send it as text)")


def checked_resume(data: Mapping[str, Any], *, run_id: str, status: str, trials: int) -> int:
    """The trial total a resume request asks for (``{"trials": N}``, or the run's own when empty).

    Raises:
        ConfigError: an entry other than ``trials``, a total out of range, or no more trials for a done run.
    """
    unknown = sorted(set(data) - {"trials"})
    if unknown:
        raise ConfigError(f"the resume body takes only 'trials', got {unknown}")
    wanted = data.get("trials", trials)
    check_int("resume 'trials'", wanted, low=1)
    if wanted > MAX_TRIALS:
        raise ConfigError(f"trials must be at most {MAX_TRIALS:,} on this server, got {wanted!r}")
    if status == "done" and wanted <= trials:
        raise ConfigError(f"run {run_id!r} is done with {trials} trials; resume it with more trials, got {wanted}")
    return wanted


def checked_config(data: Mapping[str, Any], *, checkpoints: Path, allow_imports: bool,
                   ray_address: str | None) -> SearchConfig:
    """The :class:`SearchConfig` a request describes, as the server will run it.

    Raises:
        ConfigError: an entry is refused, out of range or names something the server does not know; the
            message names the entry, the bad value and what is accepted.
    """
    for name in SERVER_ENTRIES:
        if data.get(name) is not None:
            raise ConfigError(f"config entry {name!r} ({data[name]!r}) is chosen by the server; leave it out")
    options = data.get("executor_options")
    if isinstance(options, Mapping):
        for name in SERVER_RAY_OPTIONS:
            if name in options:
                raise ConfigError(f"executor_options {name!r} ({options[name]!r}) is chosen by the server "
                                  "(autoprune serve --ray-address); leave it out")
    config = SearchConfig.from_dict(data, source="the submitted config")
    _check_names(config, allow_imports=allow_imports)  # import strings refused before anything imports them
    check_runnable(config)
    for what, value, high in LIMITS:
        if value(config) > high:
            raise ConfigError(f"{what} must be at most {high:,} on this server, got {value(config)!r}")
    if config.preset is not None and config.preset not in available_presets():
        raise unknown_name("preset", config.preset, available_presets())
    overrides: dict[str, Any] = {name: str(uploaded_checkpoint(checkpoints, getattr(config, name), config.model,
                                                               entry=name))
                                 for name in CHECKPOINT_ENTRIES if getattr(config, name) is not None}
    if config.executor_options is not None and ray_address is not None:
        overrides["executor_options"] = replace(config.executor_options, address=ray_address)
    return config.with_overrides(**overrides)


def _check_names(config: SearchConfig, *, allow_imports: bool) -> None:
    for kind, name, builtins in (("model", config.model, MODELS), ("dataset", config.dataset, DATASETS),
                                 ("searcher", config.searcher, SEARCHERS)):
        if ":" in name:
            if not allow_imports:
                raise ConfigError(f"{kind} {name!r}: import strings from a request are refused (the server was "
                                  "not started with --allow-imports); use a built-in name or one an installed "
                                  "package registers as an entry point")
            continue
        plugins = registered(f"autoprune.{kind}s")
        if name not in builtins and name not in plugins:
            raise unknown_name(kind, name, [*builtins, *plugins])
    if config.ignore and ":" not in config.model:
        modules = dict(build_model(config.model, in_channels=1, num_classes=10).named_modules())
        unknown = sorted(set(config.ignore) - set(modules))
        if unknown:
            raise ConfigError(f"config entry 'ignore' names modules {config.model!r} does not have: {unknown}")
