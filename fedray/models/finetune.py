"""Which parameters train: freezing for ``finetune=head|last_n``, and keeping frozen parts frozen.

A backbone is seen as ``blocks`` (its feature extractor, input to output; one
block is a tuple of submodule names that train together, e.g. ``("conv1",
"bn1")`` or ``("layer4",)``) followed by a ``head`` (the final Linear):

* ``all``    every parameter trains;
* ``head``   only the head trains;
* ``last_n`` the last ``n`` blocks and the head train.

Freezing means ``requires_grad=False``. Two consequences for DP-SGD:

* Opacus computes per-sample gradients only for trainable layers, so a frozen
  feature extractor costs no per-sample memory, and its BatchNorm layers pass
  Opacus' validation (it checks trainable modules only).
* A frozen BatchNorm in train mode still updates its running statistics from
  the private batch, and normalises each sample with statistics of the whole
  batch, which couples samples and voids per-sample clipping. So frozen
  modules must run in eval mode: :func:`set_frozen_eval`.
"""

from collections.abc import Sequence

from torch import nn

from fedray.errors import FedrayError

FINETUNE_MODES = ("all", "head", "last_n")

Block = tuple[str, ...]


def freeze_for_finetune(model: nn.Module, *, mode: str, head: str, blocks: Sequence[Block], last_n: int) -> None:
    """Set ``requires_grad`` in place for ``mode`` (see the module docstring); ``last_n`` is read for ``last_n`` only."""
    if mode not in FINETUNE_MODES:
        raise FedrayError(f"unknown model.finetune {mode!r}: set it to one of {', '.join(FINETUNE_MODES)}")
    if mode == "all":
        return
    trainable = [head]
    if mode == "last_n":
        if not 1 <= last_n <= len(blocks):
            raise FedrayError(
                f"model.finetune_last_n={last_n} is out of range for this backbone: set it between 1 and {len(blocks)}"
            )
        trainable += [name for block in blocks[-last_n:] for name in block]
    model.requires_grad_(False)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters with ``requires_grad``."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def set_frozen_eval(model: nn.Module) -> None:
    """Put every frozen submodule into eval mode; call it after every ``model.train()``.

    A submodule is frozen when it has parameters and none of them requires
    grad. The outermost frozen submodules get ``.eval()``, so their BatchNorm
    running statistics never update from private data and their dropout is
    off; trainable submodules and parameter-free ones outside frozen parts
    (e.g. the dropout before a trainable head) keep their mode. With
    ``finetune=all`` nothing is frozen and nothing changes.
    """
    for _, module in _outermost_frozen(model):
        module.eval()


def last_layer_bias(model: nn.Module) -> str:
    """The state-dict name of the bias of ``model``'s last ``nn.Linear`` (its classifier), which must be trained."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1][1].bias is None or not linears[-1][1].bias.requires_grad:
        raise FedrayError(f"{type(model).__name__} has no trained classifier bias to calibrate: set "
                          "train.bias_calibration_rounds=0")
    return f"{linears[-1][0]}.bias"


def frozen_state_names(model: nn.Module) -> set[str]:
    """The state-dict entries of the frozen submodules: parameters and buffers that local training never changes
    (frozen parameters take no step, and :func:`set_frozen_eval` keeps their running statistics fixed)."""
    prefixes = [f"{name}." for name, _ in _outermost_frozen(model) if name]
    return {name for name in model.state_dict() if any(name.startswith(prefix) for prefix in prefixes)}


def _outermost_frozen(model: nn.Module):
    """(name, module) of each outermost submodule that has parameters, none of which requires grad."""
    frozen_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in frozen_prefixes):
            continue  # inside an enclosing frozen module
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            frozen_prefixes.append(f"{name}." if name else "")
            yield name, module
