"""Torch modules: the TD prediction head and the wrapper that attaches it to any backbone.

Nothing here depends on skorch; :class:`~tidal_modal.net.TiDALNetClassifier` builds a
:class:`TiDALModule` around the user's module in ``initialize_module``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

__all__ = ["TDHead", "TiDALModule", "unwrap_parallel"]


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


def unwrap_parallel(module):
    """The module inside data-parallel wrappers (``DistributedDataParallel``, ``DataParallel``).

    Accelerate wraps a net's ``module_`` in ``DistributedDataParallel`` while it trains on
    several processes (:mod:`tidal_modal.accelerate`); the attributes of the
    :class:`TiDALModule` (its backbone, TD head, input dtype) are read through the wrapper.
    """
    while isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return module


def last_linear_name(module):
    """Name of the last ``nn.Linear`` registered in ``module`` (``None`` if it has none)."""
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    return names[-1] if names else None


class TiDALModule(nn.Module):
    """A backbone with a TD head attached by forward hooks.

    ``forward`` returns ``(logits, td_logits)``. The hooks are registered for the duration of
    each forward call only, so the module pickles like any other and its features keep their
    autograd graph: the TD loss trains the backbone too, as in the reference code.

    If the backbone itself returns a tuple, it is taken to be ``(logits, td_logits)`` from the
    user's own head; the built-in head is then dropped and ``td_layers`` is not used.

    Parameters
    ----------
    backbone : nn.Module
        Any classifier returning class logits ``[n, n_classes]``.
    td_layers : list of str or None, default=None
        Names (as in ``backbone.named_modules()``) of the submodules whose *outputs* feed the
        TD head. ``None`` uses the *input* of the backbone's last ``nn.Linear``, that is its
        penultimate features.
    td_hidden : int, default=128
        Width of each TD-head branch.
    """

    def __init__(self, backbone, td_layers=None, td_hidden=128):
        super().__init__()
        # the wrapper's own attributes first: once the backbone is set, a name that the backbone
        # has and the wrapper has not is set on the backbone (see __setattr__)
        # integer input to an embedding are indices, not values to cast (decided once, not per batch)
        self.embeds_input = any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in backbone.modules())
        if td_layers is None:
            self.td_layers = None
            default = last_linear_name(backbone)
            n_branches = 1
        else:
            if isinstance(td_layers, str):
                td_layers = [td_layers]
            self.td_layers = list(td_layers)
            known = dict(backbone.named_modules())
            missing = [name for name in self.td_layers if name not in known]
            if missing or not self.td_layers:
                raise ValueError(
                    f"td_layers={td_layers!r} must name submodules of the module; unknown: "
                    f"{missing}. Available names: {[n for n in known if n]}."
                )
            default = None
            n_branches = len(self.td_layers)
        self.default_td_layer = default
        self.register_load_state_dict_pre_hook(_drop_unused_head_on_load)
        self._input_dtype = None
        self.backbone = backbone
        # registered after the backbone, as in the state dicts of earlier releases; past our
        # __setattr__, which would give a name that the backbone has too to the backbone
        super().__setattr__("td_head", TDHead(n_branches, td_hidden))

    def __getattr__(self, name):
        """Attributes of the wrapper, else of the backbone: ``net.module_.fc`` is the user's layer."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            backbone = self.__dict__.get("_modules", {}).get("backbone")
            if backbone is None or name.startswith("__") or not hasattr(backbone, name):
                raise
        return getattr(backbone, name)

    def __setattr__(self, name, value):
        """Set an attribute that only the backbone has on the backbone (``net.module_.fc = nn.Linear(...)``
        replaces the user's layer), any other on the wrapper."""
        backbone = self.__dict__.get("_modules", {}).get("backbone")
        if backbone is not None and not self._has_own(name) and hasattr(backbone, name):
            setattr(backbone, name, value)
        else:
            super().__setattr__(name, value)

    def _has_own(self, name):
        return (
            name in self.__dict__
            or any(name in self.__dict__.get(store, ()) for store in ("_parameters", "_buffers", "_modules"))
            or hasattr(type(self), name)
        )

    @property
    def input_dtype(self):
        """dtype of the module's first parameter, which input values are cast to.

        Cached: walking the module tree for it on every batch costs more than a small layer.
        Casts and moves (``.double()``, ``.to(...)``) all go through ``_apply``, which resets it.
        """
        if getattr(self, "_input_dtype", None) is None:  # also modules pickled before the cache
            self._input_dtype = next(self.parameters()).dtype
        return self._input_dtype

    def _apply(self, fn, *args, **kwargs):
        self._input_dtype = None
        return super()._apply(fn, *args, **kwargs)

    def _register_hooks(self, features):
        if self.td_layers is None:
            if self.default_td_layer is None:
                return []
            layer = self.backbone.get_submodule(self.default_td_layer)

            def take_input(module, args):
                features[0] = args[0]

            return [layer.register_forward_pre_hook(take_input)]

        handles = []
        for position, name in enumerate(self.td_layers):

            def take_output(module, args, output, position=position):
                features[position] = output

            handles.append(self.backbone.get_submodule(name).register_forward_hook(take_output))
        return handles

    def forward(self, *args, **kwargs):
        features = {}
        handles = self._register_hooks(features)
        try:
            out = self.backbone(*args, **kwargs)  # skorch passes a dict of inputs as keywords
        finally:
            for handle in handles:
                handle.remove()
        if isinstance(out, (tuple, list)):
            if len(out) < 2:
                raise ValueError("A module that returns a tuple must return (logits, td_logits).")
            if self.td_head is not None:
                self.td_head = None  # the user's own head replaces ours
            return tuple(out[:2])
        if self.td_head is None:
            raise RuntimeError("This module returned (logits, td_logits) before; it now returns logits only.")
        if not features:
            raise ValueError(
                "Could not find the features for the TD head: the module has no nn.Linear layer "
                "(or it did not run). Pass td_layers=[...] with the names of the layers whose "
                f"outputs should feed the TD head; available: "
                f"{[n for n, _ in self.backbone.named_modules() if n]}."
            )
        n_branches = len(self.td_head.branches)
        if len(features) != n_branches:
            raise RuntimeError(
                f"Only {len(features)} of the {n_branches} td_layers ran in the forward pass; "
                "every layer named in td_layers must be used by the module's forward."
            )
        return out, self.td_head([features[k] for k in range(n_branches)], out.shape[1])


def _drop_unused_head_on_load(module, state_dict, prefix, *args):
    # A model whose backbone returns its own TD logits was saved without our head.
    if module.td_head is not None and not any(k.startswith(prefix + "td_head.") for k in state_dict):
        module.td_head = None
