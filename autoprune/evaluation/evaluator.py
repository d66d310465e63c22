"""Evaluator: policy → Score (copy, prune, recalibrate BatchNorm, finetune, validate)."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from autoprune.prune.channels import IMPORTANCES, PruneResult, prune
from autoprune.trial import EvaluationError, Score
from search_spaces.budget import Budget, Cost
from search_spaces.cost import CostModel
from search_spaces.ground.errors import AutopruneError, ConfigError, DataError, unknown_name
from search_spaces.ground.inputs import as_tuple
from search_spaces.ground.options import check_batches, check_int, check_number, check_seed, from_mapping
from search_spaces.measure import count_flops, count_nonzeros, count_params, count_sparse_bytes
from search_spaces.policy import Policy

KD_TEMPERATURE, KD_ALPHA = 4.0, 0.5  # distillation: softening temperature; weight of the plain cross-entropy


#: Exceptions a pruned candidate itself can cause (divergence, shape/index errors, out of memory): such a
#: trial fails and the search goes on. Anything else is a bug or bad input and stops the search.
CANDIDATE_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, IndexError, ValueError, ArithmeticError,
                                                       MemoryError)


@dataclass(frozen=True)
class EvaluatorConfig:
    """How each candidate is recovered and scored.

    Attributes:
        bn_batches: training batches used to re-estimate BatchNorm statistics after pruning (0: skip).
        finetune_steps: SGD steps of finetuning per candidate (the fidelity; 0: the adaptive-BN score,
            BatchNorm recalibration only). Default 30: of the proxies in bench/fidelity.py, the cheapest whose
            rank correlation with the final model is within 0.05 of the best (docs/benchmarks.md).
        distill: finetune by knowledge distillation from the unpruned model (see :func:`recovery_loss`)
            instead of plain cross-entropy.
        lr: finetuning learning rate (SGD, momentum 0.9).
        weight_decay: finetuning weight decay.
        val_batches: validation batches scored per candidate (default 4; None: all of them).
        importance: channel importance: l1, l2, bn_scale, taylor or random.
        seed: seed for data order and any randomness, per evaluation.
        device: where candidates are recovered and scored: ``cpu`` or ``cuda`` (``cuda:N``); pruning
            itself (tracing) happens on the CPU.
    """

    bn_batches: int = 5
    finetune_steps: int = 30
    distill: bool = False
    lr: float = 0.01
    weight_decay: float = 0.0
    val_batches: int | None = 4
    importance: str = "l1"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_int("evaluator bn_batches", self.bn_batches, low=0)
        check_int("evaluator finetune_steps", self.finetune_steps, low=0)
        check_seed("evaluator seed", self.seed)
        if not isinstance(self.distill, bool):
            raise ConfigError(f"evaluator distill must be true or false, got {self.distill!r}")
        if self.val_batches is not None:
            check_int("evaluator val_batches", self.val_batches, low=1)
        check_number("evaluator lr", self.lr, low=0)
        check_number("evaluator weight_decay", self.weight_decay, low=0)
        if self.importance not in IMPORTANCES:
            raise unknown_name("importance", self.importance, list(IMPORTANCES))
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"evaluator device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"evaluator device {self.device!r} was asked for but CUDA is not available here")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | EvaluatorConfig | None) -> EvaluatorConfig:
        """Build from a mapping (config file / keyword options), rejecting unknown keys."""
        return from_mapping(cls, data, what="evaluator options")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _moved(data: Iterable, device: str) -> Iterator:
    """``(inputs, targets)`` batches of ``data`` on ``device``."""
    for inputs, targets in data:
        yield inputs.to(device), targets.to(device)


def _cycle(data: Iterable, device: str = "cpu") -> Iterator:
    while True:
        empty = True
        for batch in _moved(data, device):
            empty = False
            yield batch
        if empty:
            raise DataError("the training data yielded no batches")


def recalibrate_batchnorm(model: nn.Module, data: Iterable, batches: int, *, device: str = "cpu") -> None:
    """Re-estimate BatchNorm running statistics from ``batches`` training batches (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches == 0:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for inputs, _ in itertools.islice(_cycle(data, device), batches):
            model(inputs)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def recovery_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None, *,
                  temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA) -> torch.Tensor:
    """Cross-entropy, or with a teacher (knowledge distillation, Hinton et al.) ``alpha`` x cross-entropy plus
    ``(1 - alpha) x T^2`` x the KL divergence to the teacher's softened outputs."""
    loss = nn.functional.cross_entropy(logits, targets)
    if teacher_logits is None:
        return loss
    soft = nn.functional.softmax(teacher_logits / temperature, dim=1)
    kl = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
    return alpha * loss + (1 - alpha) * temperature**2 * kl


def finetune_stages(
    model: nn.Module, data: Iterable, *, steps: int, lr: float, weight_decay: float = 0.0,
    stops: Sequence[int] = (), device: str = "cpu", teacher: nn.Module | None = None,
) -> Iterator[int]:
    """SGD (momentum 0.9, one cosine schedule over ``steps``) on cross-entropy (distilled from ``teacher`` when
    given, see :func:`recovery_loss`), pausing at each stop.

    Yields the step count at every stop (and at ``steps``) with the model in eval mode, so callers can
    score intermediate fidelities of the same run; a stop at 0 pauses before the first step.
    """
    pauses = sorted({s for s in stops if 0 <= s < steps} | {steps})
    if steps == 0:
        model.eval()
        yield 0
        return
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    batches = _cycle(data, device)
    done = 0
    for pause in pauses:
        model.train()
        for inputs, targets in itertools.islice(batches, pause - done):
            with torch.no_grad():
                taught = teacher(inputs) if teacher is not None else None
            loss = recovery_loss(model(inputs), targets, taught)
            if not torch.isfinite(loss):
                raise EvaluationError(f"finetuning diverged: loss {loss.item()} at step {done}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
        model.eval()
        yield done


def finetune(
    model: nn.Module, data: Iterable, *, steps: int, lr: float, weight_decay: float = 0.0, device: str = "cpu",
    teacher: nn.Module | None = None,
) -> None:
    """SGD (momentum 0.9, cosine-decayed learning rate) for ``steps`` batches of cross-entropy (distilled from
    ``teacher`` when given)."""
    for _ in finetune_stages(model, data, steps=steps, lr=lr, weight_decay=weight_decay, device=device,
                             teacher=teacher):
        pass


def validate(
    model: nn.Module, data: Iterable, *, batches: int | None = None, device: str = "cpu"
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy over ``batches`` batches of ``data`` (all if None).

    The model is scored in eval mode and left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for inputs, targets in itertools.islice(_moved(data, device), batches):
            logits = model(inputs)
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(dim=1) == targets).sum().item()
            total += targets.numel()
    model.train(was_training)
    if total == 0:
        raise DataError("the validation data yielded no samples")
    loss = loss_sum / total
    if not math.isfinite(loss):
        raise EvaluationError(f"validation loss is {loss}")
    return correct / total, loss


@contextlib.contextmanager
def _randomness_kept(*datasets: Iterable) -> Iterator[None]:
    """Torch's global RNG and each loader's own shuffling generator as they were before the block."""
    generators = [g for g in (getattr(d, "generator", None) for d in datasets) if isinstance(g, torch.Generator)]
    states = [g.get_state() for g in generators]
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            for generator, state in zip(generators, states, strict=True):
                generator.set_state(state)


def _first_batch(name: str, data: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``(inputs, targets)`` batch of ``data`` as tensors; a :class:`DataError` naming ``name`` else."""
    try:
        batch = next(iter(data), None)
    except Exception as exc:  # a loader that fails on its first batch
        raise DataError(f"{name} fails on its first batch: {type(exc).__name__}: {exc}") from exc
    if batch is None:
        raise DataError(f"{name} yielded no samples (not one batch)")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not all(isinstance(t, torch.Tensor) for t in batch):
        raise DataError(f"{name} must yield (inputs, targets) pairs of tensors; its first batch is "
                        f"{type(batch).__name__}")
    return batch[0], batch[1]


def _check_targets(name: str, inputs: torch.Tensor, targets: torch.Tensor, *, classes: int) -> None:
    """Refuse targets that are not one class index (0 to ``classes - 1``) per input."""
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise DataError(f"{name}'s targets must be integer class indices, got {targets.dtype} on its first batch")
    if targets.dim() != 1 or len(targets) != len(inputs):
        raise DataError(f"{name}'s targets must be one class index per input (shape [{len(inputs)}]), got shape "
                        f"{list(targets.shape)} on its first batch")
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise DataError(f"{name}'s targets must be class indices from 0 to {classes - 1} (the model outputs "
                        f"{classes} classes), got {int(targets.min())} to {int(targets.max())} on its first batch")


class Evaluator:
    """Scores policies on one model and dataset; knows nothing about searchers.

    Args:
        model: the trained, unpruned model (never modified).
        example_inputs: inputs used for tracing and FLOPs counting.
        train_data: iterable of ``(inputs, targets)`` batches for BN recalibration and finetuning.
        val_data: iterable of ``(inputs, targets)`` batches; use a fixed (unshuffled) loader.
        budget: the budget a score is checked against.
        cost_model: the space's cost model (its base cost is the budget's reference).
        config: recovery and scoring options.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        train_data: Iterable,
        val_data: Iterable,
        budget: Budget,
        cost_model: CostModel,
        config: EvaluatorConfig | None = None,
    ) -> None:
        check_batches("train_data", train_data)
        check_batches("val_data", val_data)
        self.model = model
        self.example_inputs = example_inputs
        self.train_data = train_data
        self.val_data = val_data
        self.budget = budget
        self.cost_model = cost_model
        self.config = config or EvaluatorConfig()
        self._teachers: dict[str, nn.Module] = {}

    def teacher(self) -> nn.Module | None:
        """The unpruned model in eval mode on the evaluator's device when distilling (a copy, made once)."""
        if not self.config.distill:
            return None
        device = self.config.device
        if device not in self._teachers:
            self._teachers[device] = copy.deepcopy(self.model).eval().to(device)
        return self._teachers[device]

    def chance_accuracy(self) -> float:
        """The accuracy of a guess: 1 / the unpruned model's number of classes (dimension 1 of its output, as
        :func:`validate` reads it); 0 when the output is not a tensor of at least 2 classes."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(*as_tuple(self.example_inputs))
        finally:
            self.model.train(was_training)
        classes = logits.shape[1] if isinstance(logits, torch.Tensor) and logits.dim() >= 2 else 0
        return 1 / classes if classes >= 2 else 0.0

    def check_first_batch(self) -> None:
        """Run the unpruned model on the first batch of ``val_data`` and look at the first batch of each data set,
        so that a model or data set that cannot be scored fails once, naming itself, before any trial.

        Raises:
            DataError: a data set yields no batch, no ``(inputs, targets)`` pair, or targets that are not class
                indices (integers from 0 to the number of classes the model outputs, one per input).
            ConfigError: the model fails on the batch, or does not return one row of class scores per input.
        """
        model_name = type(self.model).__name__
        with _randomness_kept(self.val_data, self.train_data):  # looking must not change what the search draws
            batches = {name: _first_batch(name, data) for name, data in (("val_data", self.val_data),
                                                                           ("train_data", self.train_data))}
        inputs = batches["val_data"][0]
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(inputs.to(device))
        except Exception as exc:  # whatever the model raises: named once, before any trial
            raise ConfigError(f"model {model_name} fails on the first batch of val_data (inputs of shape "
                              f"{list(inputs.shape)}): {type(exc).__name__}: {exc}") from exc
        finally:
            self.model.train(was_training)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(inputs):
            shown = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"model {model_name} must return one row of class scores per input (a tensor of "
                              f"shape [{len(inputs)}, classes]) on the first batch of val_data; it returned {shown}")
        for name, (batch_inputs, batch_targets) in batches.items():
            _check_targets(name, batch_inputs, batch_targets, classes=logits.shape[1])

    def with_config(self, config: EvaluatorConfig) -> Evaluator:
        """The same model, data, budget and cost model, scored with another recipe."""
        return Evaluator(self.model, self.example_inputs, train_data=self.train_data, val_data=self.val_data,
                         budget=self.budget, cost_model=self.cost_model, config=config)

    def prune(self, policy: Policy) -> PruneResult:
        """Prune a copy of the model (the same surgery ``evaluate`` does); returns a PruneResult."""
        return prune(
            self.model,
            policy,
            self.example_inputs,
            importance=self.config.importance,
            data=self.train_data,
            space=self.cost_model.space,  # already traced: no second trace per evaluation
        )

    def evaluate(self, policy: Policy, *, fidelity: int | None = None) -> Score:
        """Prune a copy by ``policy``, recover it, and score it. Exceptions propagate to the caller."""
        steps = self.config.finetune_steps if fidelity is None else fidelity
        *_, last = self.evaluate_rungs(policy, steps=steps)
        return last

    def evaluate_rungs(self, policy: Policy, *, steps: int | None = None, rungs: Sequence[int] = ()) -> Iterator[Score]:
        """Like :meth:`evaluate`, but also score after ``rungs`` finetune steps of the same run (multi-fidelity).

        Yields one Score per rung below ``steps`` and one at ``steps``; each Score's ``fidelity`` is the
        steps done. Scheduling is that of the full run, so the last Score equals :meth:`evaluate`'s.
        """
        steps = self.config.finetune_steps if steps is None else steps
        start = time.perf_counter()
        self._seed()
        device = self.config.device
        pruned = self.prune(policy).model
        flops, params = count_flops(pruned, self.example_inputs), count_params(pruned)
        latency_ms = math.nan
        if self.budget.exact:
            measured = Cost(flops, params, None, count_nonzeros(pruned), count_sparse_bytes(pruned))
            feasible = self.budget.allows(measured, self.cost_model.base)
        else:  # latency: feasible as the table predicts it (what the searcher saw); measured for the record
            feasible = self.cost_model.feasible(policy, self.budget)
            latency_ms = self.budget.measure(pruned, self.example_inputs)
        pruned.to(device)
        pruned_at = time.perf_counter()
        recalibrate_batchnorm(pruned, self.train_data, self.config.bn_batches, device=device)
        recalibrated_at = lap = time.perf_counter()
        finetuning = validating = 0.0
        first = math.nan
        stages = finetune_stages(pruned, self.train_data, steps=steps, lr=self.config.lr,
                                 weight_decay=self.config.weight_decay, stops=rungs, device=device,
                                 teacher=self.teacher())
        for rung, done in enumerate(stages):
            finetuning += time.perf_counter() - lap
            lap = time.perf_counter()
            with torch.random.fork_rng(devices=[]):  # scoring a rung must not change the rest of the run
                accuracy, loss = validate(pruned, self.val_data, batches=self.config.val_batches, device=device)
            validating += time.perf_counter() - lap
            lap = time.perf_counter()
            first = accuracy if rung == 0 else first
            yield Score(accuracy=accuracy, loss=loss, flops=flops, params=params, feasible=feasible,
                        fidelity=done, seconds=lap - start, rung=rung, first_accuracy=first, latency_ms=latency_ms,
                        prune_seconds=pruned_at - start, recalibrate_seconds=recalibrated_at - pruned_at,
                        finetune_seconds=finetuning, validate_seconds=validating)
            lap = time.perf_counter()  # time the caller spent between rungs is not ours

    def _seed(self) -> None:
        """Fix every source of randomness: torch's global RNG and a loader's own shuffling generator."""
        torch.manual_seed(self.config.seed)
        for data in (self.train_data, self.val_data):
            generator = getattr(data, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(self.config.seed)

    def evaluate_safely(self, policy: Policy, *, fidelity: int | None = None) -> Score:
        """Like :meth:`evaluate`, but a candidate-caused failure becomes a failed Score and the search goes on.

        Candidate-caused: divergence, shape or index errors in the pruned model, running out of memory
        (:data:`CANDIDATE_FAILURES`). An :class:`AutopruneError` (bad data, policy or options) is raised: no
        trial could succeed; any other exception is a bug and is raised with its traceback.
        """
        start = time.perf_counter()
        try:
            return self.evaluate(policy, fidelity=fidelity)
        except AutopruneError:
            raise
        except CANDIDATE_FAILURES as exc:
            steps = self.config.finetune_steps if fidelity is None else fidelity
            return Score.failed(exc, fidelity=steps, seconds=time.perf_counter() - start)
