r"""Several hospitals' local training in one pass (``torch.func``): the fast path for small models.

A process that runs m hospitals of a round one after another pays m times the
per-step overhead of a small model (Python, autograd, Opacus' hooks), while the
arithmetic of a step is tiny. Here the m hospitals train in lockstep instead:
their parameters are stacked, :math:`\Theta = [\theta_1, \dots, \theta_m]`, step
t's batches too (padded to the largest with a mask :math:`M_{k,i}`), and one
``vmap`` over hospitals of ``torch.func.grad`` of ``functional_call`` gives every
hospital's gradient at once:

- without DP, the batch mean :math:`g_k = \nabla_{\theta_k}\frac{1}{|B_k|}\sum_{i\in B_k}\ell(f_{\theta_k}(x_i), y_i)`;
- under DP-SGD, per-record gradients (a ``vmap`` over records inside the one
  over hospitals), clipped as Opacus clips them,
  :math:`\bar g_{k,i} = g_{k,i}\min\big(1, C/(\lVert g_{k,i}\rVert_2 + 10^{-6})\big)`,
  then :math:`\tilde g_k = \big(\sum_{i\in B_k}\bar g_{k,i} + \mathcal N(0,\sigma^2C^2I)\big)/(q_kn_k)`,
  the noise drawn from hospital k's own generator, parameter after parameter in
  Opacus' order, and each step counted by hospital k's own accountant.

The stacked optimizer (SGD or Adam, the hospital's class and settings) acts
element by element, so it is m optimizers side by side. Hospitals may take
different numbers of steps (their shards differ): all start at step 1
together, and one that has taken all its steps keeps its parameters and
optimizer state from then on (restored after each later step), so Adam's step
count is right for every hospital still training.

Equivalence. Every random draw (batch order, Poisson masks, augmentation,
Gaussian noise) comes from the hospital's own generators, in the order
:meth:`LocalTrainer.fit <fedray.training.local.LocalTrainer.fit>` draws it;
only the order of floating-point sums differs. So the result equals training
the hospitals one after another to float tolerance
(``tests/training/test_together.py``), each hospital's accountant counts the
same steps, and what a hospital releases is unchanged.

Gradient hooks (:mod:`fedray.training.hooks`; an audit's gradient insertions)
join each hospital's step as they join its step alone: once its gradient is
final (noised and divided by :math:`q_kn_k` under DP-SGD, the batch mean
without), each hook of hospital k adds its term to a view of hospital k's
slice of the stacked gradient, told the weight one record has there
(:math:`1/(q_kn_k)`, or :math:`1/|B_k|`), and reads it back for its report.
The hooks draw from their own streams, so the order of hospitals does not
change what they draw.

Assumptions, checked by :func:`why_not_together`: the model's training-mode
forward is a function of its parameters and one record alone (no dropout,
which would draw from torch's one global generator in another order; no
BatchNorm in train mode, which mixes records and updates buffers), no
gradient hook reads the parameters (FedProx's term reads :math:`w - w_t` from
the trainer's own model, which lockstep training leaves untouched), no bf16
autocast, and every hospital holds the same architecture. Memory holds the
per-record gradients of all m hospitals' batches at once (m·B·P floats
under DP-SGD): this is for tabular models, small CNNs and heads on cached
features, not for backbones.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils.rnn import pad_sequence
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from fedray.errors import FedrayError
from fedray.models import set_frozen_eval
from fedray.training.local import LocalTrainer, Params, scheduled_lr

CLIP_EPSILON = 1e-6  # Opacus' DPOptimizer.clip_and_accumulate: C / (norm + 1e-6)


@dataclass(frozen=True)
class NoisedClippedSum:
    """How one hospital's DP-SGD step turns per-record gradients into its update (the Opacus optimizer's settings).

    ``noise_order``: the model's parameter names in the order Opacus draws their noise; ``count_step``: the
    hospital's accountant counts one step.
    """

    max_grad_norm: float
    noise_std: float
    expected_batch_size: int
    generator: torch.Generator | None
    noise_order: list[str]
    count_step: Callable[[], None]


def why_not_together(model: nn.Module, trainer: LocalTrainer | None = None) -> str | None:
    """Why ``model`` (and ``trainer``'s set-up) cannot train together with others, in a phrase; None if it can."""
    model.train()
    set_frozen_eval(model)
    for name, module in model.named_modules():
        if isinstance(module, _DropoutNd) and module.p > 0 and module.training:
            return f"layer {name} is a dropout, which draws from torch's global generator"
        if isinstance(module, _BatchNorm) and module.training:
            return f"layer {name} is a BatchNorm in train mode, which mixes a batch's records"
    if trainer is not None and any(hook.reads_parameters for hook in trainer.gradient_hooks):
        return "a gradient hook that reads the parameters (FedProx's proximal term) joins each step"
    if trainer is not None and trainer.autocast:
        return "it trains under bf16 autocast"
    return None


def check_train_together(cfg, model: nn.Module | None) -> None:
    """Refuse, before any actor starts, ``fl.train_together`` > 1 where ``model`` (None: a tree) or the strategy
    cannot train in lockstep."""
    if cfg.fl.train_together == 1:
        return
    from fedray.strategies import client_settings

    reason = "a tree is fitted once, not in steps" if model is None else why_not_together(model)
    if reason is None and any(client_settings(cfg.strategy).values()):
        reason = "the strategy adds a term to each local step (FedProx's proximal term)"
    if reason is not None:
        raise FedrayError(f"fl.train_together={cfg.fl.train_together}: {reason}: set fl.train_together=1")


def fit_together(trainers: list[LocalTrainer], starts: list[Params], *, epochs: int,
                 round_idx: int) -> list[tuple[Params, dict]]:
    """Each trainer's ``fit(starts[k], epochs=epochs, round_idx=round_idx)``, computed in lockstep: the same values
    to float tolerance (the trainers' own models are not touched: every turn loads its start anyway)."""
    start = time.perf_counter()
    template = trainers[0].model
    for trainer in trainers:
        reason = why_not_together(trainer.model, trainer)
        if reason is not None:
            raise ValueError(f"these hospitals cannot train together: {reason}; set fl.train_together=1")
    names = [name for name, p in template.named_parameters() if p.requires_grad]
    full_names = _full_names(trainers[0])
    trainable, fixed = _stacked_state(starts, names, full_names, trainers[0].device)
    if {tuple(p.shape[1:]) for p in trainable.values()} != {tuple(p.shape) for p in template.parameters()
                                                          if p.requires_grad}:
        raise ValueError("these hospitals hold different architectures; set fl.train_together=1")
    lr = scheduled_lr(trainers[0].train_cfg, round_idx, trainers[0].rounds)
    optimizer = _stacked_optimizer(trainers[0], list(trainable.values()), lr)
    # Each hospital's whole round of (x, y), drawn now in fit's order: batches and augmentation interleaved. Under
    # DP-SGD this also sets the round's noise generator that noised_clipped_sum hands out.
    schedules = [_prepared_steps(trainer, trainer.round_randomness(round_idx), epochs) for trainer in trainers]
    privates = [trainer.noised_clipped_sum() for trainer in trainers]
    private = privates[0] is not None
    template = _without_hooks(template)
    gradient = _private_gradients(template, trainers[0].loss_fn, privates[0].max_grad_norm) if private else \
        _mean_gradients(template, trainers[0].loss_fn)
    tally = _Tally(len(trainers), device=trainable[names[0]].device)
    hooked = any(trainer.gradient_hooks for trainer in trainers)
    for trainer in trainers:
        for hook in trainer.gradient_hooks:
            hook.start_round(round_idx)
    for step in range(max(len(s) for s in schedules)):
        active = [step < len(s) for s in schedules]
        x, y, mask = _padded([s[step] if a else None for s, a in zip(schedules, active)], schedules[0][0])
        grads, losses, logits = gradient(trainable, fixed, x, y, mask)
        if private:
            grads = _noised(grads, privates, active)
        if hooked:
            weights = [1.0 / p.expected_batch_size for p in privates] if private else \
                (1.0 / mask.sum(1).clamp(min=1)).tolist()  # one record's weight in each hospital's gradient
            _run_hooks(trainers, names, grads, weights, active)
        for name, p in trainable.items():
            p.grad = grads[name]
        _step_active(optimizer, trainable, active)
        tally.add(losses, logits, y, mask, active)
    seconds = (time.perf_counter() - start) / len(trainers)  # each hospital's share of the shared time
    outcomes = []
    for k, trainer in enumerate(trainers):  # what export() gives after fit: every entry, the trained ones new
        trained = {full_names[name]: value[k].detach().cpu().numpy() for name, value in trainable.items()}
        params = {name: np.array(trained.get(name, value), copy=True) for name, value in starts[k].items()}
        outcomes.append((params, trainer.round_metrics(**tally.totals(k), seconds=seconds)))
    return outcomes


# -- the stacked state ------------------------------------------------------------------------------------------
def _full_names(trainer: LocalTrainer) -> dict[str, str]:
    """The exported (full model's) name of each entry of the trained module's state: the same names, except for a
    head on cached features, a part of the full model."""
    full = {id(t): name for name, t in trainer.full_model.state_dict(keep_vars=True).items()}
    return {name: full[id(t)] for name, t in trainer.model.state_dict(keep_vars=True).items()}


def _stacked_state(starts: list[Params], names: list[str], full_names: dict[str, str],
                   device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainable parameters, everything else of the module's state), each stacked over hospitals from their
    start parameters."""
    stacked = {name: torch.stack([torch.tensor(params[full]) for params in starts]).to(device)
               for name, full in full_names.items()}
    return ({name: stacked[name] for name in names},
            {name: value for name, value in stacked.items() if name not in names})


def _stacked_optimizer(trainer: LocalTrainer, parameters: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """The hospital's optimizer class and settings over the stacked parameters, at this round's learning rate."""
    inner = getattr(trainer.optimizer, "original_optimizer", trainer.optimizer)  # Opacus wraps the hospital's own
    settings = {key: value for key, value in inner.param_groups[0].items() if key not in ("params", "initial_lr")}
    return type(inner)(parameters, **{**settings, "lr": lr})


def _prepared_steps(trainer: LocalTrainer, generator: torch.Generator, epochs: int) -> list[tuple]:
    return [trainer.prepare(batch, generator) for _ in range(epochs) for batch in trainer.batches(generator)]


def _padded(steps: list[tuple | None], example: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step t's batches of every hospital as [m, b, ...] (b the largest batch, at least 1) and the mask of real
    records; a hospital that has finished contributes an empty batch."""
    x_like, y_like = example
    xs = [s[0] if s is not None else x_like[:0] for s in steps]
    ys = [s[1] if s is not None else y_like[:0] for s in steps]
    lengths = torch.tensor([len(v) for v in ys], device=y_like.device)
    if int(lengths.max()) == 0:  # every batch empty: one masked slot keeps the shapes non-empty
        xs[0], ys[0] = x_like.new_zeros((1, *x_like.shape[1:])), y_like.new_zeros(1)
    x = pad_sequence(xs, batch_first=True)
    y = pad_sequence(ys, batch_first=True)
    mask = (torch.arange(y.shape[1], device=y.device) < lengths[:, None]).to(x.dtype if x.is_floating_point()
                                                                             else torch.float32)
    return x, y, mask


# -- gradients ----------------------------------------------------------------------------------------------------
def _record_losses(loss_fn: nn.Module) -> Callable:
    """Per-record losses of scores [b, ...] from a batch-mean loss: the mean over a batch of one is the record's."""
    return vmap(lambda scores, label: loss_fn(scores[None], label[None]))


def _mean_gradients(model: nn.Module, loss_fn: nn.Module) -> Callable:
    """Every hospital's gradient of its batch-mean loss (masked records left out), its loss and its scores."""
    per_record = _record_losses(loss_fn)

    def batch_loss(trainable, fixed, x, y, mask):
        scores = functional_call(model, {**trainable, **fixed}, (x,))
        loss = (per_record(scores.float(), y) * mask).sum() / mask.sum().clamp(min=1)
        return loss, (loss.detach(), scores.detach())

    hospitals = vmap(grad(batch_loss, has_aux=True))

    def gradients(trainable, fixed, x, y, mask):
        grads, (losses, scores) = hospitals(trainable, fixed, x, y, mask)
        return grads, losses, scores
    return gradients


def _private_gradients(model: nn.Module, loss_fn: nn.Module, max_grad_norm: float) -> Callable:
    """Every hospital's clipped per-record gradient sum (masked records weigh 0), its mean loss and its scores."""
    def record_loss(trainable, fixed, x, y):
        scores = functional_call(model, {**trainable, **fixed}, (x[None],))
        loss = loss_fn(scores.float(), y[None])
        return loss, (loss.detach(), scores[0].detach())

    per_record = vmap(vmap(grad(record_loss, has_aux=True), in_dims=(None, None, 0, 0)))

    def gradients(trainable, fixed, x, y, mask):
        grads, (losses, scores) = per_record(trainable, fixed, x, y)  # [m, b, ...]
        norms = torch.stack([g.flatten(2).norm(2, dim=-1) for g in grads.values()], dim=-1).norm(2, dim=-1)
        factor = (max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0) * mask
        summed = {name: torch.einsum("kb,kb...->k...", factor, g) for name, g in grads.items()}
        mean_loss = (losses * mask).sum(1) / mask.sum(1).clamp(min=1)
        return summed, mean_loss, scores
    return gradients


def _noised(summed: dict[str, torch.Tensor], privates: list[NoisedClippedSum], active: list[bool]) -> dict:
    """Each active hospital's clipped sum plus its own Gaussian noise, over its expected batch size; its
    accountant counts the step. A finished hospital draws nothing (it takes no step; its gradient is unused)."""
    noise = {name: [] for name in summed}
    for k, private in enumerate(privates):
        for name in private.noise_order:  # Opacus' order: the hospital's generator draws parameter after parameter
            shape, device = summed[name].shape[1:], summed[name].device
            noise[name].append(torch.normal(0.0, private.noise_std, size=shape, device=device,
                                            generator=private.generator)
                               if active[k] and private.noise_std else torch.zeros(shape, device=device))
        if active[k]:
            private.count_step()
    first = next(iter(summed.values()))
    denominators = torch.tensor([float(p.expected_batch_size) for p in privates], dtype=first.dtype,
                                device=first.device)
    return {name: (value + torch.stack(noise[name])) / denominators.view(-1, *[1] * (value.dim() - 1))
            for name, value in summed.items()}


def _run_hooks(trainers: list[LocalTrainer], names: list[str], grads: dict[str, torch.Tensor], weights: list[float],
               active: list[bool]) -> None:
    """Each active hospital's gradient hooks, on its own parameters whose ``grad`` is, for the call, a view of its
    slice of the stacked gradient: what they add lands in it, and what they read back is the hospital's gradient."""
    for k, trainer in enumerate(trainers):
        if not (active[k] and trainer.gradient_hooks):
            continue
        parameters = dict(trainer.model.named_parameters())
        for name in names:
            parameters[name].grad = grads[name][k]
        for hook in trainer.gradient_hooks:
            hook.on_gradient(weights[k])
        for name in names:
            parameters[name].grad = None


def _without_hooks(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without forward or backward hooks: Opacus' per-record hooks wrap each layer in an
    autograd function that torch.func cannot transform, and torch.func computes the per-record gradients here."""
    if not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules()):
        return model
    clean = copy.deepcopy(model)
    for module in clean.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                      module._backward_pre_hooks, module._forward_hooks_with_kwargs,
                      module._forward_hooks_always_called, module._forward_pre_hooks_with_kwargs):
            hooks.clear()
    return clean


def _step_active(optimizer: torch.optim.Optimizer, trainable: dict[str, torch.Tensor], active: list[bool]) -> None:
    """One optimizer step for the hospitals still training; the others keep their parameters and state."""
    idle = torch.tensor([not a for a in active], device=next(iter(trainable.values())).device)
    if not idle.any():
        optimizer.step()
        return
    kept = [(p, p.detach()[idle].clone(), {key: value[idle].clone() for key, value in optimizer.state[p].items()
                                           if torch.is_tensor(value) and value.dim() > 0})
            for p in trainable.values()]
    optimizer.step()
    with torch.no_grad():
        for p, values, state in kept:
            p[idle] = values
            for key, value in state.items():
                optimizer.state[p][key][idle] = value


class _Tally:
    """Each hospital's round totals, kept as vectors over hospitals: loss summed over the records it saw, correct
    predictions, records, steps (an empty Poisson batch is a noise-only step that sees nothing)."""

    def __init__(self, hospitals: int, device: torch.device):
        self.loss_sum = torch.zeros(hospitals, dtype=torch.float64, device=device)
        self.correct = torch.zeros(hospitals, dtype=torch.long, device=device)
        self.seen = torch.zeros(hospitals, dtype=torch.long, device=device)
        self.steps = torch.zeros(hospitals, dtype=torch.long)

    def add(self, losses: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
            active: list[bool]) -> None:
        if scores.dim() == 4:  # train.augmult: a record's k views vote together
            scores = scores.mean(2)
        real = mask.bool()
        counts = real.sum(1)
        self.loss_sum += losses.detach().double() * counts
        self.correct += ((scores.argmax(-1) == labels) & real).sum(1)
        self.seen += counts
        self.steps += torch.tensor(active, dtype=torch.long)

    def totals(self, k: int) -> dict:
        return {"loss_sum": float(self.loss_sum[k]), "correct": int(self.correct[k]), "seen": int(self.seen[k]),
                "steps": int(self.steps[k])}
