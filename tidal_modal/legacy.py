"""What nets and files written by tidal_modal 0.1.0 need in order to load today.

In 0.1.0 ``net.module_`` was a ``TiDALModule``: a wrapper whose ``backbone`` was the user's module
and whose ``td_head`` the TD head. Since 0.2.0 ``module_`` is the user's module itself and the head
is a second skorch module, ``td_head_``. Pickles of 0.1.0 name the wrapper's class and a
state-dict hook of it by their import paths, so both still exist (as shells that hold what was
pickled, nothing more); :func:`split_legacy_module` and :func:`split_legacy_state_dict` turn what
they hold into today's layout.
"""

from torch import nn

__all__ = ["TiDALModule", "is_legacy_state_dict", "split_legacy_module", "split_legacy_state_dict"]


class TiDALModule(nn.Module):
    """The 0.1.0 wrapper, kept so that its pickles load; see :func:`split_legacy_module`."""


def _drop_unused_head_on_load(module, state_dict, prefix, *args):
    """A load-state-dict hook that 0.1.0 pickles name; the wrapper it served is converted on load."""


def split_legacy_module(module):
    """``(backbone, td_head, td_layers)`` of an unpickled 0.1.0 wrapper; ``td_head`` is ``None``
    if the user's module had a TD head of its own."""
    return module.backbone, module._modules.get("td_head"), module.__dict__.get("td_layers")


def is_legacy_state_dict(state_dict):
    """Whether a ``save_params(f_params=...)`` state dict was written by 0.1.0 (the wrapper's keys)."""
    return bool(state_dict) and all(key.startswith(("backbone.", "td_head.")) for key in state_dict)


def split_legacy_state_dict(state_dict):
    """The user's module's and the TD head's state dicts in a 0.1.0 ``f_params`` file."""
    module = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    head = {k.removeprefix("td_head."): v for k, v in state_dict.items() if k.startswith("td_head.")}
    return module, head
