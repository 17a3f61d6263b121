"""Hook context managers: read residuals and neurons, add or ablate vectors, scale neurons.

Conventions (the field's classic off-by-one, stated once):
- "residual after block l" is the output of decoder block ``l`` (0-based), which equals
  ``output_hidden_states[l + 1]`` for every block except the last (transformers applies the
  final norm to the last entry).
- "neurons of block l" are the input to block l's MLP ``down_proj`` (act(gate) * up for SwiGLU);
  neuron i writes ``act_i * down_proj.weight[:, i]`` into the residual stream.

Every context manager removes what it registered on exit, also on error. They work inside
``model.generate`` with the KV cache and with left-padded batches: positions ``"prompt"`` are
the tokens of the prefill pass, ``"generated"`` the tokens fed back while decoding.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Literal, Mapping, Sequence, Union

import torch
from torch import nn

from valuemech.errors import ValuemechError
from valuemech.models.arch import ModelArch

Positions = Union[Literal["all", "prompt", "generated"], torch.Tensor]


def _arch(obj) -> ModelArch:
    return obj if isinstance(obj, ModelArch) else obj.arch


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@contextmanager
def _registered(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def residual_callback(model, layers: Sequence[int],
                      fn: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Call ``fn(layer, hidden[b, t, d])`` with each chosen block's output on every forward."""
    arch = _arch(model)
    handles = []
    for layer in layers:
        layer = arch.check_layer(layer)

        def hook(_mod, _inp, out, layer=layer):
            fn(layer, _hidden(out))

        handles.append(arch.layers[layer].register_forward_hook(hook))
    with _registered(handles):
        yield


@contextmanager
def read_residuals(model, layers: Sequence[int] | None = None,
                   positions: int | Sequence[int] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the residual stream after each chosen block, ``{layer: [b, t, d]}`` (last forward wins).

    ``positions`` selects token positions (e.g. ``-1`` for the last token, giving ``[b, d]``).
    """
    arch = _arch(model)
    layers = list(range(arch.n_layers)) if layers is None else [arch.check_layer(l) for l in layers]
    store: dict[int, torch.Tensor] = {}

    def keep(layer: int, hidden: torch.Tensor) -> None:
        h = hidden.detach()
        store[layer] = h if positions is None else h[:, positions]

    with residual_callback(arch, layers, keep):
        yield store


@contextmanager
def read_neurons(model, layers: Sequence[int] | None = None,
                 positions: int | Sequence[int] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Capture MLP neuron activations (input to ``down_proj``), ``{layer: [b, t, d_mlp]}``."""
    arch = _arch(model)
    layers = list(range(arch.n_layers)) if layers is None else [arch.check_layer(l) for l in layers]
    store: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        def hook(_mod, args, layer=layer):
            a = args[0].detach()
            store[layer] = a if positions is None else a[:, positions]

        handles.append(arch.down_projs[layer].register_forward_pre_hook(hook))
    with _registered(handles):
        yield store


class _Phase:
    """Tracks whether the current forward is a prefill ("prompt") or a decode step ("generated")."""

    def __init__(self) -> None:
        self.prefill = True

    def __call__(self, _mod, args, kwargs) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = 0
        if cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())
        self.prefill = past == 0


def _position_mask(positions: Positions, phase: _Phase | None, hidden: torch.Tensor) -> torch.Tensor | None | bool:
    """``True`` = every position, ``False`` = none, or a ``[b, t, 1]`` mask."""
    if isinstance(positions, torch.Tensor):
        if positions.shape != hidden.shape[:2]:
            return False  # a mask for another input shape (e.g. a later decode step)
        return positions.to(hidden.device, torch.bool)[..., None]
    if positions == "all":
        return True
    assert phase is not None
    return phase.prefill if positions == "prompt" else not phase.prefill


def _check_positions(positions: Positions) -> None:
    if isinstance(positions, torch.Tensor):
        if positions.dim() != 2:
            raise ValuemechError("a positions mask must be a [batch, seq] boolean tensor")
    elif positions not in ("all", "prompt", "generated"):
        raise ValuemechError(f"positions must be 'all', 'prompt', 'generated' or a mask, not {positions!r}")


@contextmanager
def _phase_hooks(arch: ModelArch, positions: Positions) -> Iterator[tuple[_Phase | None, list]]:
    """Validate ``positions``, register the prefill/decode tracker if needed, and remove every
    handle appended to the yielded list on exit (also when registration itself fails)."""
    _check_positions(positions)
    phase = _Phase() if isinstance(positions, str) and positions != "all" else None
    handles: list = []
    try:
        if phase is not None:
            handles.append(arch.decoder.register_forward_pre_hook(phase, with_kwargs=True))
        yield phase, handles
    finally:
        for h in handles:
            h.remove()


#: How a steering vector changes the residual stream: add it, remove the residual's projection on
#: its direction (directional ablation), or remove the projection and then add the vector.
OPERATORS = ("add", "ablate", "ablate_add")

#: One vector, or several applied together (added as their sum; ablated as their span).
VectorSpec = Union[torch.Tensor, Sequence[torch.Tensor]]


def check_operator(operator: str) -> str:
    if operator not in OPERATORS:
        raise ValuemechError(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
    return operator


def _stack(arch: ModelArch, layer: int, spec: VectorSpec, what: str) -> torch.Tensor:
    """``[k, hidden]`` float64 rows of one vector or a list of them, shape-checked."""
    if isinstance(spec, (list, tuple)):
        vecs = list(spec)
    else:
        t = torch.as_tensor(spec)
        vecs = [t] if t.dim() == 1 else list(t)
    if not vecs:
        raise ValuemechError(f"no {what} vector given for layer {layer}")
    rows = []
    for v in vecs:
        v = torch.as_tensor(v)
        if v.shape != (arch.hidden_size,):
            raise ValuemechError(f"{what} vector for layer {layer} has shape {tuple(v.shape)}, "
                                 f"model hidden size is {arch.hidden_size}")
        rows.append(v.to(torch.float64))
    return torch.stack(rows)


def orthonormal_basis(rows: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """``[r, hidden]`` orthonormal rows spanning ``rows`` (Gram-Schmidt, twice, float64); a single
    vector gives exactly ``v / |v|``. A zero or linearly dependent row adds nothing; all zero is an error."""
    basis: list[torch.Tensor] = []
    for v in rows.to(torch.float64):
        w = v.clone()
        for _ in range(2):
            for q in basis:
                w = w - (w @ q) * q
        n = w.norm()
        if n > 1e-10 * max(float(v.norm()), 1e-300):
            basis.append(w / n)
    if not basis:
        raise ValuemechError(f"cannot ablate a zero vector at layer {layer}")
    return torch.stack(basis)


@contextmanager
def _edit_residual(arch: ModelArch, ablate: Mapping[int, VectorSpec], add: Mapping[int, VectorSpec],
                   positions: Positions, alpha: float) -> Iterator[None]:
    """After block l: ``h - (h Q^T) Q`` with Q an orthonormal basis of ``ablate[l]`` (when given), then
    ``+ alpha * sum(add[l])`` (when given), at the chosen positions. One hook per block, so the
    removal always comes before the addition."""
    with _phase_hooks(arch, positions) as (phase, handles):
        plans: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        for layer in list(ablate) + [l for l in add if l not in ablate]:
            layer_ = arch.check_layer(layer)
            basis = orthonormal_basis(_stack(arch, layer_, ablate[layer], "ablation"), layer_) \
                if layer in ablate else None
            delta = alpha * _stack(arch, layer_, add[layer], "steering").sum(0) if layer in add else None
            plans[layer_] = basis, delta
        for layer, (basis, delta) in plans.items():
            cache: dict[tuple, tuple] = {}

            def hook(_mod, _inp, out, basis=basis, delta=delta, cache=cache):
                hidden = _hidden(out)
                mask = _position_mask(positions, phase, hidden)
                if mask is False:
                    return out
                key = (hidden.dtype, hidden.device)
                if key not in cache:
                    work = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 project in fp32
                    cache[key] = (None if basis is None else basis.to(hidden.device, work),
                                  None if delta is None else delta.to(hidden.device, hidden.dtype))
                q, d = cache[key]
                new = hidden
                if q is not None:
                    h = new.to(q.dtype)
                    new = (h - (h @ q.T) @ q).to(hidden.dtype)
                if d is not None:
                    new = new + d
                if mask is not True:
                    new = torch.where(mask, new, hidden)
                return _replace_hidden(out, new)

            handles.append(arch.layers[layer].register_forward_hook(hook))
        yield


@contextmanager
def add_vectors(model, vectors: Mapping[int, VectorSpec], alpha: float = 1.0,
                positions: Positions = "all") -> Iterator[None]:
    """Add ``alpha * vectors[l]`` to the residual stream after block ``l`` at the chosen positions
    (a list of vectors at a block is added as their sum, taken in float64)."""
    with _edit_residual(_arch(model), {}, vectors, positions, alpha):
        yield


@contextmanager
def ablate_vectors(model, directions: Mapping[int, VectorSpec], add: Mapping[int, VectorSpec] | None = None,
                   alpha: float = 1.0, positions: Positions = "all") -> Iterator[None]:
    """Directional ablation: after block ``l``, remove the residual's projection on ``directions[l]``
    (on the span of a list of them) at the chosen positions; then add ``alpha * add[l]`` where given."""
    with _edit_residual(_arch(model), directions, add or {}, positions, alpha):
        yield


def apply_operator(model, operator: str, directions: Mapping[int, VectorSpec], added: Mapping[int, VectorSpec],
                   positions: Positions = "all"):
    """The context manager of ``operator``: ``add`` adds ``added``; ``ablate`` removes the projection on
    ``directions``; ``ablate_add`` removes it and then adds ``added``."""
    check_operator(operator)
    if operator == "add":
        return add_vectors(model, added, positions=positions)
    return ablate_vectors(model, directions, added if operator == "ablate_add" else None, positions=positions)


def _neuron_index(arch: ModelArch, layer: int, idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``idx`` as a flat long tensor, checked against the block's MLP width."""
    idx = torch.as_tensor(idx, dtype=torch.long).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= arch.d_mlp):
        raise ValuemechError(f"neuron index out of range for layer {layer} (0..{arch.d_mlp - 1})")
    return idx


def neuron_factors(model, neurons: Mapping[int, Sequence[int] | torch.Tensor], beta: float) -> dict[int, torch.Tensor]:
    """``scale_neurons``' multiplication as factors for one batch row (``scale_per_row``):
    ``{layer: [d_mlp]}``, float64, ``beta`` at the given neurons and 1 elsewhere."""
    arch = _arch(model)
    out = {}
    for layer, idx in neurons.items():
        layer = arch.check_layer(layer)
        factor = torch.ones(arch.d_mlp, dtype=torch.float64)
        factor[_neuron_index(arch, layer, idx)] = beta
        out[layer] = factor
    return out


@contextmanager
def scale_neurons(model, neurons: Mapping[int, Sequence[int] | torch.Tensor], beta: float,
                  positions: Positions = "all") -> Iterator[None]:
    """Multiply the activations of the given neurons of each block by ``beta``."""
    arch = _arch(model)
    with _phase_hooks(arch, positions) as (phase, handles):
        for layer, idx in neurons.items():
            layer = arch.check_layer(layer)
            idx = _neuron_index(arch, layer, idx).to(_module_device(arch.down_projs[layer]))

            def hook(_mod, args, idx=idx):
                act = args[0]
                mask = _position_mask(positions, phase, act)
                if mask is False or idx.numel() == 0:
                    return None
                factor = torch.ones(act.shape[-1], dtype=act.dtype, device=act.device)
                factor[idx] = beta
                if mask is True:
                    return (act * factor, *args[1:])
                return (torch.where(mask, act * factor, act), *args[1:])

            handles.append(arch.down_projs[layer].register_forward_pre_hook(hook))
        yield


@contextmanager
def combined(*managers) -> Iterator[None]:
    """Enter several hook context managers as one."""
    with ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


@contextmanager
def add_per_row(model, rows: Sequence[Mapping[int, torch.Tensor] | None]) -> Iterator[None]:
    """A batch of different additions in one forward: row ``i`` gets ``rows[i][l]`` added after block
    ``l`` at every position (``None`` or ``{}``: nothing); the batch must have ``len(rows)`` rows."""
    arch = _arch(model)
    layers = sorted({l for r in rows if r for l in r})
    handles = []
    for layer in layers:
        module = arch.layers[layer]
        dev = _module_device(module)
        ref = next((r[layer] for r in rows if r and layer in r), None)
        table = torch.stack([r[layer].reshape(-1) if r and layer in r else torch.zeros_like(ref.reshape(-1))
                             for r in rows])

        def hook(_m, _i, output, table=table.to(dev)):
            hidden = _hidden(output)
            if hidden.shape[0] != table.shape[0]:
                raise ValueError(f"add_per_row: {table.shape[0]} rows of steering for a batch of {hidden.shape[0]}")
            return _replace_hidden(output, hidden + table[:, None, :].to(hidden.dtype))

        handles.append(module.register_forward_hook(hook))
    with _registered(handles):
        yield


@contextmanager
def scale_per_row(model, rows: Sequence[Mapping[int, torch.Tensor] | None]) -> Iterator[None]:
    """A batch of different neuron scalings in one forward: row ``i``'s MLP activations at block ``l``
    are multiplied by ``rows[i][l]`` (``[d_mlp]``, from :func:`neuron_factors`; ``None`` or ``{}``: by 1)
    before ``down_proj``, at every position; the batch must have ``len(rows)`` rows."""
    arch = _arch(model)
    layers = sorted({l for r in rows if r for l in r})
    handles = []
    for layer in layers:
        module = arch.down_projs[layer]
        ones = torch.ones(arch.d_mlp, dtype=torch.float64)
        table = torch.stack([r[layer].double() if r and layer in r else ones for r in rows])

        def hook(_m, args, table=table.to(_module_device(module))):
            act = args[0]
            if act.shape[0] != table.shape[0]:
                raise ValueError(f"scale_per_row: {table.shape[0]} rows of factors for a batch of {act.shape[0]}")
            return (act * table[:, None, :].to(act.dtype), *args[1:])

        handles.append(module.register_forward_pre_hook(hook))
    with _registered(handles):
        yield
