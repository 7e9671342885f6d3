"""Torch modules: the TD prediction head, and the forward hooks that hand it a module's features.

Nothing here depends on skorch. :class:`~tidal_modal.net.TiDALNetClassifier` keeps the user's
module as ``module_``, untouched but for small :class:`FeatureTap` hooks on the layers the head
reads, and the :class:`TDHead` as a second skorch module, ``td_head_``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .legacy import TiDALModule, _drop_unused_head_on_load  # noqa: F401 -- 0.1.0 pickles name them here

__all__ = ["FeatureTap", "TDHead", "attach_taps", "unwrap"]


def global_average_pool(features):
    """Reduce a feature map ``[n, channels, *spatial]`` to ``[n, channels]``; 2-D passes through."""
    if features.dim() < 2:
        raise ValueError(
            f"A TD layer must output at least 2-D features [n, d]; got shape {tuple(features.shape)}."
        )
    if features.dim() == 2:
        return features
    return features.flatten(2).mean(dim=2)


class TDHead(LazyModuleMixin, nn.Module):
    """TiDAL's TD prediction module, generalised to any number of feature maps.

    Each feature map is global-average-pooled (if it has spatial dimensions) and passed through
    its own ``Linear(-> hidden) + ReLU`` branch; the branches are concatenated and a final
    linear layer gives one logit per class. Input widths and the number of classes are
    inferred on the first forward call (a lazy module), so the head fits any backbone.

    Parameters
    ----------
    n_branches : int
        Number of feature maps the head receives.
    hidden : int, default=128
        Width of each branch (128 in the paper).

    Examples
    --------
    >>> import torch
    >>> from tidal_modal.modules import TDHead
    >>> head = TDHead(n_branches=2, hidden=8)
    >>> head([torch.randn(4, 16, 5, 5), torch.randn(4, 32)], 3).shape  # a feature map and a vector
    torch.Size([4, 3])
    """

    def __init__(self, n_branches, hidden=128):
        super().__init__()
        if n_branches < 1:
            raise ValueError(f"TDHead needs at least one branch, got n_branches={n_branches}.")
        self.hidden = hidden
        self.branches = nn.ModuleList(
            nn.Sequential(nn.LazyLinear(hidden), nn.ReLU()) for _ in range(n_branches)
        )
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def initialize_parameters(self, features, n_classes):
        """Materialise the output layer once the number of classes is known (lazy-module hook)."""
        if not self.has_uninitialized_params():
            return
        in_features = len(self.branches) * self.hidden
        with torch.no_grad():
            self.weight.materialize((n_classes, in_features))
            self.bias.materialize((n_classes,))
            # the initialisation of nn.Linear
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features, n_classes):
        """Map a list of feature maps to TD logits ``[n, n_classes]``."""
        if len(features) != len(self.branches):
            raise ValueError(
                f"TDHead has {len(self.branches)} branches but received {len(features)} feature maps."
            )
        hidden = [branch(global_average_pool(f)) for branch, f in zip(self.branches, features, strict=True)]
        hidden = hidden[0] if len(hidden) == 1 else torch.cat(hidden, dim=1)
        return F.linear(hidden, self.weight, self.bias)


def unwrap(module):
    """The module inside data-parallel and ``torch.compile`` wrappers.

    Accelerate wraps a net's modules in ``DistributedDataParallel`` while it trains on several
    processes (:mod:`tidal_modal.accelerate`), and skorch's ``compile=True`` in
    ``torch.compile``'s ``OptimizedModule``; layer names are read on the module inside.

    Parameters
    ----------
    module : torch.nn.Module
        A module, wrapped or not.

    Returns
    -------
    torch.nn.Module
        The innermost module.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from tidal_modal.modules import unwrap
    >>> module = nn.Linear(2, 2)
    >>> unwrap(torch.compile(module)) is module
    True
    """
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def is_lazy(module):
    """Whether ``module`` still has a parameter without a shape (a lazy layer that has not run)."""
    return any(isinstance(p, UninitializedParameter) for p in module.parameters())


def last_linear_name(module):
    """Name of the last ``nn.Linear`` registered in ``module`` (``None`` if it has none)."""
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    return names[-1] if names else None


class FeatureTap:
    """A forward hook that keeps one layer's features for the TD head while it is switched on.

    Registered once per initialization on a layer of the user's module (a pre-hook for the
    layer's input, a forward hook for its output); the net switches it on around its own forward
    passes (:func:`capturing`). Switched off, as during ``net.module_(x)``, ``torch.export`` or
    serving, it does nothing. A class rather than a closure: the module keeps pickling and
    deep-copying; captured features are never pickled.

    Parameters
    ----------
    layer : str
        Name of the layer in the user's module (``""`` is the module itself).
    use_input : bool
        Keep the layer's first input (its features for a last ``nn.Linear``) instead of its output.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from tidal_modal.modules import attach_taps, capturing
    >>> module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> (tap,) = attach_taps(module)  # the input of the last nn.Linear
    >>> tap
    FeatureTap('2', input)
    >>> with capturing([tap]):
    ...     _ = module(torch.randn(5, 4))
    ...     tap.features.shape
    torch.Size([5, 8])
    >>> tap.features is None  # dropped after the pass
    True
    """

    def __init__(self, layer, use_input):
        self.layer = layer
        self.use_input = use_input
        self.active = False
        self.features = None

    def __call__(self, module, args, output=None):
        if self.active:
            self.features = args[0] if self.use_input else output

    def __getstate__(self):
        return {"layer": self.layer, "use_input": self.use_input, "active": False, "features": None}

    def __repr__(self):
        return f"FeatureTap({self.layer!r}, {'input' if self.use_input else 'output'})"


def _hook_dicts(layer):
    return (layer._forward_pre_hooks, layer._forward_hooks)


def detach_taps(module):
    """Remove every :class:`FeatureTap` registered in ``module`` (also ones that a copy brought)."""
    for layer in module.modules():
        for hooks in _hook_dicts(layer):
            for key in [key for key, hook in hooks.items() if isinstance(hook, FeatureTap)]:
                del hooks[key]


def attach_taps(module, td_layers=None):
    """The taps that feed the TD head from ``module``, registered unless they already are.

    Parameters
    ----------
    module : nn.Module
        The user's module (inside any wrapper).
    td_layers : list of str or None
        Names of layers whose outputs feed the head; ``None``: the input of the last ``nn.Linear``.

    Returns
    -------
    list of FeatureTap
        One per branch of the head, in order; empty if ``td_layers`` is ``None`` and the module
        has no ``nn.Linear`` (a module with a TD head of its own may have none).

    Examples
    --------
    >>> from torch import nn
    >>> from tidal_modal.modules import attach_taps
    >>> module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> attach_taps(module, ["0", "1"])
    [FeatureTap('0', output), FeatureTap('1', output)]
    >>> attach_taps(module, ["1"])  # again: the tap of "1" is kept, the other one removed
    [FeatureTap('1', output)]
    """
    module = unwrap(module)
    if td_layers is None:
        name = last_linear_name(module)
        wanted = [] if name is None else [(name, True)]
    else:
        known = dict(module.named_modules())
        missing = [name for name in td_layers if name not in known]
        if missing or not td_layers:
            raise ValueError(
                f"td_layers={td_layers!r} must name submodules of the module; unknown: "
                f"{missing}. Available names: {[n for n in known if n]}."
            )
        wanted = [(name, False) for name in td_layers]
    existing = {}
    for name, layer in module.named_modules():
        for use_input, hooks in zip((True, False), _hook_dicts(layer), strict=True):
            for key, hook in list(hooks.items()):
                if not isinstance(hook, FeatureTap):
                    continue
                config = (name, use_input)
                if config in wanted and (hook.layer, hook.use_input) == config and config not in existing:
                    existing[config] = hook
                else:
                    del hooks[key]  # a tap of another configuration, or a copy's
    taps = []
    for name, use_input in wanted:
        tap = existing.get((name, use_input))
        if tap is None:
            tap = FeatureTap(name, use_input)
            layer = module.get_submodule(name)
            if use_input:
                layer.register_forward_pre_hook(tap)
            else:
                layer.register_forward_hook(tap)
        taps.append(tap)
    return taps


class capturing:
    """Switch taps on for the block; their features are dropped when it ends."""

    def __init__(self, taps):
        self.taps = taps

    def __enter__(self):
        for tap in self.taps:
            tap.active = True
        return self.taps

    def __exit__(self, *exc):
        for tap in self.taps:
            tap.active = False
            tap.features = None
