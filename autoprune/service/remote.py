"""A search config from a request: untrusted input, checked before anything is created.

It must be the same document ``autoprune search CONFIG.yaml`` reads, minus what names this machine's files
or clusters (the server chooses those), with numbers inside ranges and only names the server knows: built-in
models, datasets and searchers and those installed packages register; ``package.module:factory`` strings only
when the server was started with ``--allow-imports``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from autoprune.config import SearchConfig
from autoprune.data import DATASETS
from autoprune.models import MODELS
from autoprune.registry import SEARCHERS, registered
from search_spaces.errors import ConfigError, unknown_name
from search_spaces.presets import available_presets

#: Largest request body holding a config.
MAX_CONFIG_BYTES = 1 << 20
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
CHECKPOINT_ID = re.compile(r"^[0-9a-f]{64}$")
# Entries that name this machine's files or clusters: the server sets them.
SERVER_ENTRIES = ("run_dir", "data_dir")
SERVER_RAY_OPTIONS = ("address", "storage_path", "dashboard", "dashboard_host")
# (what, value getter, highest accepted): numbers a request may ask for.
LIMITS: tuple[tuple[str, Any, float], ...] = (
    ("trials", lambda c: c.trials, 10_000),
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


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The mapping a request body holds: JSON, or YAML with a YAML content type."""
    if len(body) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is {len(body):,} bytes; at most {MAX_CONFIG_BYTES:,} are accepted")
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if kind in YAML_TYPES:
            data = yaml.safe_load(text)
        elif kind == "application/json":
            data = json.loads(text)
        else:
            raise ConfigError(f"Content-Type {kind!r} is not accepted; send application/json or application/yaml")
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"the request body is not valid {'YAML' if kind in YAML_TYPES else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping, got {type(data).__name__}")
    return data


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
    config.budget.check_granularity(config.granularity)
    for what, value, high in LIMITS:
        if value(config) > high:
            raise ConfigError(f"{what} must be at most {high:,} on this server, got {value(config)!r}")
    _check_names(config, allow_imports=allow_imports)
    if config.preset is not None and config.preset not in available_presets():
        raise unknown_name("preset", config.preset, available_presets())
    overrides: dict[str, Any] = {}
    if config.checkpoint is not None:
        overrides["checkpoint"] = str(_checkpoint_path(config.checkpoint, checkpoints))
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


def _checkpoint_path(checkpoint: str, checkpoints: Path) -> Path:
    """An uploaded checkpoint's file, named by the digest POST /checkpoints returned."""
    if not CHECKPOINT_ID.match(checkpoint):
        raise ConfigError(f"config entry 'checkpoint' must be the id (sha256) of a checkpoint uploaded with "
                          f"POST /checkpoints, got {checkpoint!r}")
    path = checkpoints / f"{checkpoint}.pt"
    if not path.is_file():
        raise ConfigError(f"checkpoint {checkpoint!r} was not uploaded to this server (POST /checkpoints)")
    return path
