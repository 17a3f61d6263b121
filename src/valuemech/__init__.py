"""valuemech: intrinsic vs. prompted value expression in chat LLMs, end to end.

The Python API (imported lazily, so ``import valuemech`` stays cheap)::

    import valuemech as vm
    lm = vm.load_model("smollm2-135m")            # or "tiny-llama", an HF id, a local dir
    cfg = vm.make_config("quick")                  # presets: smoke, quick, paper
    run = vm.run_pipeline(cfg, "runs/mine", lm=lm) # generate -> label -> extract -> decompose
    vv, comps = run.load_vectors(), run.load_components()
    with vm.hooks.add_vectors(lm, {15: comps.get("shared", "benevolence")[15]}, alpha=8.0):
        print(vm.chat(lm, "How should I spend my weekend?"))
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "valuemech.models.loading",
    "wrap_model": "valuemech.models.loading",
    "LoadedModel": "valuemech.models.loading",
    "make_config": "valuemech.config",
    "load_config": "valuemech.config",
    "RunConfig": "valuemech.config",
    "RunDir": "valuemech.rundir",
    "Pipeline": "valuemech.pipeline",
    "open_run": "valuemech.pipeline",
    "run_pipeline": "valuemech.pipeline",
    "ValueVectors": "valuemech.vectors",
    "extract_vectors": "valuemech.vectors",
    "Components": "valuemech.decompose",
    "decompose": "valuemech.decompose",
    "chat": "valuemech.generate",
    "read_vector_file": "valuemech.vectorfile",
    "ControlVector": "valuemech.vectorfile",
    "get_judge": "valuemech.judges",
    "VALUES": "valuemech.values",
    "ValuemechError": "valuemech.errors",
}
_MODULES = ("hooks", "values", "data", "judges", "models")


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"valuemech.{name}")
    raise AttributeError(f"module 'valuemech' has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, *_MODULES, "__version__"])
