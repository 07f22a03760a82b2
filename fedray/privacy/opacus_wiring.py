r"""Make a registry backbone DP-SGD-trainable and wrap it with Opacus, once per hospital.

DP-SGD needs the per-record gradient :math:`g_i = \nabla_\theta \ell(f_\theta(x_i), y_i)`
of every record :math:`i` in a Poisson batch :math:`B`. Opacus' ``DPOptimizer``
then clips each to :math:`\bar g_i = g_i \min(1, C/\lVert g_i\rVert_2)`, adds noise
and averages over the *expected* batch size :math:`qn` (not :math:`|B|`, which
would leak the batch size):

.. math:: \tilde g = \frac{1}{qn}\Big(\sum_{i\in B} \bar g_i + \mathcal N(0, \sigma^2 C^2 I)\Big).

Three Opacus ``grad_sample_mode`` s compute :math:`g_i`: ``"hooks"`` (per-layer
formulas in backward hooks), ``"functorch"`` (``torch.func.vmap`` of each
layer's gradient, run from the same hooks) and ``"ew"`` (PyTorch's
ExpandedWeights, no hooks). All three match a per-record loop
(tests/privacy/test_opacus_wiring.py). The fourth, ``"ghost"`` (Opacus' fast
gradient clipping with the norm samplers of :mod:`fedray.privacy.ghost_norms`),
never forms :math:`g_i`: a first backward pass yields each
:math:`\lVert g_i\rVert_2`, a second one :math:`\sum_i \bar g_i` from the loss
:math:`\sum_i \min(1, C/\lVert g_i\rVert)\,\ell_i`; the same noise and
division by :math:`qn` follow (tests/privacy/test_ghost_clipping.py checks it
against ``"hooks"``). The fifth, ``"bookkeeping"``
(:mod:`fedray.privacy.bookkeeping`), takes the same norms from one backward
pass and forms :math:`\sum_i \bar g_i` from that pass's kept layer inputs and
output gradients, without the second pass. Their speed differs by model
(docs/benchmarks.md), so :func:`choose_grad_sample_mode` picks one per model.

The hook modes require that no forward code edits a layer's output in place
(``out += identity``, ``F.relu(x, inplace=True)``): autograd rejects in-place
edits of a hook's output view ("Output 0 of BackwardHookFunction is a view
and is being modified inplace"). :func:`fedray.models.build_model` guarantees
this; for another model, pass ``grad_sample_mode="ew"``.

The guarantee is void if a cross-record layer survives (BatchNorm: fixed
below), if the batches are not Poisson samples, or if a step is taken outside
:func:`private_step` (or the optimizer) and so escapes the accountant.
Noise is drawn with ``secure_mode=False``: floating-point attacks on the
Gaussian sampler (Jin et al. 2021) are out of scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from opacus.accountants import IAccountant
from opacus.grad_sample import (
    GradSampleModule,
    GradSampleModuleExpandedWeights,
    GradSampleModuleFastGradientClipping,
)
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.utils.module_utils import trainable_modules, trainable_parameters
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedray.errors import FedrayError
from fedray.privacy import conv_grad_samples  # noqa: F401 - registers the Conv2d grad sampler (per-record modes)
from fedray.privacy import ghost_norms  # noqa: F401 - registers the Conv2d/GroupNorm/LayerNorm norm samplers
from fedray.privacy.accounting import _accountant
from fedray.privacy.backward_roots import BackwardRoots
from fedray.privacy.bookkeeping import BookKeepingModule, bookkeeping_backward

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost", "bookkeeping")
CLIPPED_SUM_MODES = ("ghost", "bookkeeping")  # the backward leaves the clipped sum in p.grad, not per-record gradients


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every trainable layer Opacus can privatise.

    ``ModuleValidator.fix`` replaces each BatchNorm over :math:`c` channels with
    ``GroupNorm(gcd(32, c), c, affine=...)`` (Wu & He 2018; Opacus
    validators/batch_norm.py), whose statistics are per record; LSTM/GRU/MHA
    become Opacus' DP variants. Every module's ``inplace`` flag is set False.
    Only trainable layers are touched: a frozen BatchNorm stays, and must run
    in eval mode (fixed statistics; see :mod:`fedray.models.finetune`).
    Train/eval modes are kept. Anything Opacus still rejects raises
    :class:`FedrayError` naming the layer.
    """
    fixed = ModuleValidator.fix(model)
    for module in fixed.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    for name, module in trainable_modules(fixed):
        validator = ModuleValidator.VALIDATORS.get(type(module))
        errors = validator(module) if validator else []
        if errors or any(True for _ in module.buffers(recurse=False)):
            reason = errors[0] if errors else "a trainable layer with buffers"
            raise FedrayError(
                f"layer {name or '<root>'} ({type(module).__name__}) cannot be trained with DP-SGD "
                f"({str(reason)[:80]}): replace it with a per-record layer (GroupNorm, LayerNorm) "
                "or use privacy=none"
            )
    return fixed


CLIPPED_SUM_FROM_PARAMETERS = 1_000_000


def choose_grad_sample_mode(model: nn.Module) -> str:
    """``"bookkeeping"`` for a model with at least a million trainable parameters, else ``"hooks"``.

    Rule from the CPU step timings in docs/benchmarks.md (batch 32, 64 px, one thread): the per-record
    gradients of ``"hooks"``/``"functorch"`` cost B times the parameters, which ghost clipping and
    book-keeping never form; ghost clipping pays a second backward pass instead, book-keeping one weight
    gradient per layer. So book-keeping wins on resnet18 (11 M parameters: 1.7x the non-private step,
    against 2.2x under ghost and 5.6x under hooks), mobilenet_v3_large (4.2 M: 2.0x, against 2.5x and 2.9x)
    and vgg19 (2.5x against 3.2x under ghost at 32 px, the same peak memory), and loses on small_cnn (24 k:
    1.8x against 1.4x under hooks). The threshold lies between measured models, not at a measured crossover.
    Below it, hooks beats functorch on depthwise convolutions too since their per-record gradients take the
    grouped route (:mod:`fedray.privacy.conv_grad_samples`): mobilenet_v3_large 2.9x against 4.1x.
    """
    if sum(p.numel() for _, p in trainable_parameters(model)) >= CLIPPED_SUM_FROM_PARAMETERS:
        return "bookkeeping"
    return "hooks"


@dataclass
class PrivateParts:
    """One hospital's DP-SGD state, built once for the whole run.

    ``module`` shares its parameters with the model given to :func:`wrap_private`:
    load and read weights through that model, run forward through ``module``.
    ``accountant.history`` holds the (sigma, q, steps) actually taken.
    """

    module: AbstractGradSampleModule
    optimizer: DPOptimizer
    accountant: IAccountant
    grad_sample_mode: str
    roots: BackwardRoots | None  # the parameters a backward must reach (None: all of them, ew and ghost)


def wrap_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    expected_batch_size: int,
    accountant: str = "rdp",
    generator: torch.Generator | None = None,
    grad_sample_mode: str | None = None,
) -> PrivateParts:
    r"""Wrap a :func:`make_dp_compatible` model and its optimizer for DP-SGD.

    ``noise_multiplier`` :math:`\sigma` = noise std / :math:`C`; ``max_grad_norm``
    :math:`C`; ``sample_rate`` :math:`q` of the Poisson sampler; ``expected_batch_size``
    :math:`qn` (the averaging denominator). ``sigma = 0`` clips without noise
    (epsilon is then infinite). ``grad_sample_mode=None`` uses
    :func:`choose_grad_sample_mode`. Each optimizer step appends (sigma, q) to
    the returned accountant. ``optimizer`` must hold ``model``'s trainable
    parameters. Call once per hospital per run: hooks attach to ``model`` and
    cannot be attached twice. Take steps with :func:`private_step` only: in
    the per-record modes the hooks expect the backward of the batch's summed
    loss, which it runs.
    """
    mode = grad_sample_mode or choose_grad_sample_mode(model)
    if mode not in GRAD_SAMPLE_MODES:
        raise FedrayError(f"grad_sample_mode={mode!r} is unknown: use one of {GRAD_SAMPLE_MODES}")
    if mode == "ew":
        module = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
    elif mode == "bookkeeping":
        module = BookKeepingModule(model, max_grad_norm=max_grad_norm)
    elif mode == "ghost":
        module = GradSampleModuleFastGradientClipping(
            model, batch_first=True, loss_reduction="mean", strict=True, max_grad_norm=max_grad_norm,
            use_ghost_clipping=True,
        )
    else:
        # "sum": the backward below runs on the batch's summed loss, so each layer's output gradient is already
        # per record, and Opacus' hooks skip rescaling every one of them by the batch size.
        module = GradSampleModule(
            model,
            batch_first=True,
            loss_reduction="sum",
            strict=True,
            force_functorch=mode == "functorch",
        )
    dp_optimizer = (DPOptimizerFastGradientClipping if mode in CLIPPED_SUM_MODES else DPOptimizer)(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=generator,
    )
    acc = _accountant(accountant)
    dp_optimizer.attach_step_hook(acc.get_optimizer_hook_fn(sample_rate=sample_rate))
    roots = None if mode in ("ew", "ghost") else BackwardRoots(model)
    return PrivateParts(module=module, optimizer=dp_optimizer, accountant=acc, grad_sample_mode=mode, roots=roots)


def private_step(
    parts: PrivateParts, x: torch.Tensor, y: torch.Tensor, loss_fn, hooks: Sequence = (),
    passes: Sequence[slice] | None = None) -> tuple[float, torch.Tensor | None]:
    r"""One DP-SGD step on the Poisson batch ``(x, y)``; returns the batch's mean loss and detached logits.

    ``loss_fn`` must average over the batch (``reduction="mean"``). An empty
    batch (:math:`|B| = 0`, probability :math:`(1-q)^n`) still takes a step:
    the per-record gradients are an empty ``[0, *p.shape]`` tensor, so the
    update is pure noise :math:`\mathcal N(0, \sigma^2C^2)/(qn)` and the
    accountant counts it, exactly as Opacus' ``DPDataLoader`` path. Skipping
    it would make the number of steps depend on the data. Returns (NaN, None) then.
    Each of ``hooks`` (:mod:`fedray.training.hooks`) then adds its term to the
    noised gradient before the optimizer steps, told that one record weighs
    :math:`1/(qn)` there.
    A (frozen) BatchNorm left in train mode mixes the batch's records and
    voids the clipping bound: that raises ``RuntimeError``. In ``"ghost"`` mode
    ``loss_fn`` must also honour ``reduction="none"`` (``nn.CrossEntropyLoss``,
    :class:`~fedray.training.objective.MulticlassHinge`): the clipping weights
    each record's loss.

    ``passes`` (consecutive record ranges covering the batch; default one
    pass, :func:`fedray.training.local.physical_passes`) splits it into
    forward/backward passes, Opacus' ``BatchMemoryManager`` scheme: each pass's
    records are clipped into the running sum with the step skipped
    (``signal_skip_step``), and only the last pass adds the noise, divides by
    :math:`qn` and is counted by the accountant. Clipping is per record and the
    sum is linear, so the step equals the one-pass step (a test checks it);
    memory holds one pass.
    """
    coupled = [n for n, m in parts.module.named_modules() if isinstance(m, _BatchNorm) and m.training]
    if coupled:
        raise RuntimeError(f"BatchNorm {coupled[0]} is in train mode during DP-SGD: call set_frozen_eval(model)")
    passes = passes or [slice(0, len(x))]
    losses, outputs = [], []
    for i, part in enumerate(passes):
        # After a taken step this clears the clipped sum; after a skipped pass it keeps it (Opacus' accumulation).
        parts.optimizer.zero_grad(set_to_none=True)
        loss, logits = _clipped_pass(parts, x[part], y[part], loss_fn)
        losses.append(loss * (part.stop - part.start))
        outputs.append(logits)
        if i < len(passes) - 1:  # clip this pass's records into the sum; no noise, no step, not counted
            parts.optimizer.signal_skip_step(do_skip=True)
            parts.optimizer.pre_step()
    loss, logits = (float("nan"), None) if len(x) == 0 else (sum(losses) / len(x), torch.cat(outputs))
    # Opacus' step is pre_step (clip, noise, scale, accountant) then the wrapped optimizer's step. The hooks
    # add their terms between the two, seen by momentum or Adam like the data gradient.
    if parts.optimizer.pre_step():
        for hook in hooks:
            hook.on_gradient(1.0 / parts.optimizer.expected_batch_size)
        parts.optimizer.original_optimizer.step()
    return loss, logits


def _clipped_pass(parts: PrivateParts, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[float, torch.Tensor | None]:
    """One forward/backward pass leaving its records' clipping inputs for ``pre_step``: per-record gradients, or
    under ghost clipping or book-keeping their clipped sum in ``p.grad``. No records: what clipping leaves of none."""
    mode = parts.grad_sample_mode
    if len(x) == 0:
        for p in parts.optimizer.params:
            if mode in CLIPPED_SUM_MODES:
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        return float("nan"), None
    logits = parts.module(x)
    roots = parts.roots.take() if parts.roots is not None else None
    if mode in CLIPPED_SUM_MODES:
        out = _per_record_loss(parts, loss_fn, logits, y)
        if mode == "bookkeeping":
            bookkeeping_backward(parts.module, parts.optimizer, out.loss_per_sample, roots)
        else:
            out.backward()  # Opacus' two passes: norms, then the clipped sum into p.grad
    else:
        out = loss_fn(logits, y)
        if mode == "ew":
            out.backward()
        else:  # the summed loss (see wrap_private); the hooks still see every layer, p.grad (unclipped) is never read
            (out * len(x)).backward(inputs=roots)
    return out.item(), logits.detach()


def _per_record_loss(parts: PrivateParts, loss_fn, logits: torch.Tensor, y: torch.Tensor):
    """The batch's loss as Opacus' fast-gradient-clipping wrapper, which keeps one loss per record."""
    mode = parts.grad_sample_mode
    if getattr(loss_fn, "reduction", None) != "mean":
        raise FedrayError(f"grad_sample_mode={mode!r} needs a loss module with reduction='mean', not {loss_fn!r}: "
                          "use nn.CrossEntropyLoss() or another mode")
    out = DPLossFastGradientClipping(parts.module, parts.optimizer, loss_fn, loss_reduction="mean")(logits, y)
    if out.loss_per_sample.shape != (len(y),):
        raise FedrayError(f"grad_sample_mode={mode!r} needs one loss per record from {loss_fn!r} with "
                          f"reduction='none', got shape {tuple(out.loss_per_sample.shape)}: use another mode")
    return out
