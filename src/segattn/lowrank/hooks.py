"""Per-optimiser-step hooks (interfaces.md: "Step hooks")."""

from __future__ import annotations

from torch import nn


def call_step_hooks(model: nn.Module) -> int:
    """Call ``after_optimizer_step()`` once on every submodule of ``model`` (itself included) that has it.

    The training engine calls this once after every ``optimizer.step()``; EMANet's bases apply their
    moving average there (``segattn.lowrank.EMMapper``). Returns the number of hooks called.
    """
    called = 0
    for module in model.modules():
        hook = getattr(module, "after_optimizer_step", None)
        if callable(hook):
            hook()
            called += 1
    return called
