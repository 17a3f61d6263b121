"""``valuemech export``: a run's steering vector as a file other tools steer with.

Formats (:mod:`valuemech.vectorfile`): ``gguf`` (llama.cpp's control-vector format, also read by
repeng, Ollama and other llama.cpp front ends), ``steering-vectors`` (safetensors of
``layer_activations.<block>`` for ``steering_vectors.SteeringVector``), ``safetensors`` (``direction.<block>``).

Block numbering: ``direction.N`` in the file is valuemech block N, the output of decoder block N
(0-based), which is what llama.cpp adds ``direction.N`` to (see :mod:`valuemech.vectorfile` for the
reading of llama.cpp's source); block 0 cannot be exported to GGUF (llama.cpp rejects direction.0).

Strength: what is stored at block l is what ``valuemech steer`` adds there: with relative α (the
default), ``α · R_l · unit(v_l)`` (R_l = the run's mean residual norm at block l); with ``raw``,
``α · v_l``. Several values are summed, each scaled on its own. With the default α = 1 (relative),
llama.cpp's scale is valuemech's relative α: ``--control-vector-scaled FILE 0.2`` steers like
``valuemech steer --alpha 0.2``; with α baked in, use ``--control-vector FILE`` (scale 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from valuemech.artifacts import ROW_CONVENTION
from valuemech.errors import ValuemechError
from valuemech.rundir import RunDir
from valuemech.steering import VALUE_AGNOSTIC, SteeringSource, steering_vectors, value_list
from valuemech.values import parse_values
from valuemech.vectorfile import FORMATS, LAYER_NUMBERING, ControlVector, write_vector_file

IDENTITY_KEYS = ("model_id", "weights_sha256", "n_layers", "hidden_size", "library")


def build_control_vector(run: RunDir | Path | str, component: str = "shared",
                         values: str | Sequence[str] | None = None, layers: Sequence[int] | None = None,
                         alpha: float = 1.0, relative: bool = True) -> ControlVector:
    """The vector ``valuemech steer`` would add at each of ``layers`` (default: the middle block)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    values = parse_values(values) if isinstance(values, str) else values
    source = SteeringSource.from_run(run)
    n_layers = source.n_layers
    layers = [n_layers // 2] if not layers else list(layers)
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise ValuemechError(f"block {bad[0]} out of range 0..{n_layers - 1}")
    layers = sorted(set(layers))
    _, added = steering_vectors(source, component, values, layers, alpha, relative)
    names = [None] if component in VALUE_AGNOSTIC else value_list(values)
    meta = {k: source.vectors.metadata[k] for k in IDENTITY_KEYS if k in source.vectors.metadata}
    meta |= {
        "rows": ROW_CONVENTION, "layer_numbering": LAYER_NUMBERING, "blocks": ",".join(map(str, layers)),
        "component": component, "values": ",".join(v for v in names if v) or "none",
        "alpha": repr(float(alpha)), "relative": str(bool(relative)).lower(),
        "strength": ("alpha * R_l * unit(v_l) per value, summed (R_l: mean residual norm at block l)" if relative
                     else "alpha * v_l per value, summed"),
        "run": str(run.root),
    }
    return ControlVector({l: added[l].float() for l in layers}, meta)


def export(run: RunDir | Path | str, out: Path, fmt: str = "gguf", component: str = "shared",
           values: str | Sequence[str] | None = None, layers: Sequence[int] | None = None,
           alpha: float = 1.0, relative: bool = True) -> ControlVector:
    """Build the control vector (:func:`build_control_vector`) and write it to ``out`` as ``fmt``."""
    if fmt not in FORMATS:
        raise ValuemechError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    cv = build_control_vector(run, component, values, layers, alpha, relative)
    write_vector_file(cv, Path(out), fmt)
    return cv


def llama_cpp_hint(cv: ControlVector, out: Path) -> str:
    """The llama.cpp flags that apply the exported file as ``valuemech steer`` would."""
    if cv.metadata.get("relative") == "true" and float(cv.metadata["alpha"]) == 1.0:
        return f"--control-vector-scaled {out} 0.2   (the scale is valuemech's relative alpha)"
    return f"--control-vector {out}   (alpha {cv.metadata['alpha']} is baked in)"
