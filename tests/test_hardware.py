"""valuemech.hardware: what `dtype: auto` resolves to from given CPU flags, and runs that keep their recorded dtype."""

from __future__ import annotations

import torch

from valuemech import hardware
from valuemech.config import make_config

CPUINFO = """processor\t: 0
model name\t: Example EPYC 9999
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


def test_flags_and_model_from_cpuinfo_text():
    flags = hardware.cpu_flags(CPUINFO.format(extra="avx512_bf16"))
    assert {"avx2", "avx512f", "avx512_bf16"} <= flags
    assert hardware.cpu_model(CPUINFO.format(extra="")) == "Example EPYC 9999"
    assert hardware.cpu_flags("no flags here") == set()


def test_auto_is_float32_without_native_bf16_and_bf16_with_it(monkeypatch):
    plain = hardware.cpu_flags(CPUINFO.format(extra=""))
    assert hardware.auto_dtype("cpu", plain) == "float32"
    for flag in ("avx512_bf16", "amx_bf16"):
        flags = hardware.cpu_flags(CPUINFO.format(extra=flag))
        assert hardware.auto_dtype("cpu", flags, confirm=False) == "bfloat16"
        # flags that lie (an emulating VM): the timed check decides
        monkeypatch.setattr(hardware, "bf16_confirmed", lambda: False)
        assert hardware.auto_dtype("cpu", flags) == "float32"
        monkeypatch.setattr(hardware, "bf16_confirmed", lambda: True)
        assert hardware.auto_dtype("cpu", flags) == "bfloat16"
    assert hardware.auto_dtype("mps", flags) == "float32"


def test_tiny_models_stay_float32_under_auto():
    from valuemech.models import load_model

    lm = load_model("tiny-llama")  # ModelConfig's default dtype is auto
    assert next(lm.model.parameters()).dtype == torch.float32


def test_a_run_records_the_resolved_dtype_and_a_resume_keeps_it(tmp_path, monkeypatch):
    from valuemech.pipeline import open_run

    cfg = make_config("quick", {"data": {"n_queries": 2}})
    assert cfg.model.dtype == "auto"
    monkeypatch.setattr(hardware, "auto_dtype", lambda device="cpu", flags=None, confirm=True: "bfloat16")
    run, stored = open_run(tmp_path / "run", cfg)
    assert stored.model.dtype == "bfloat16" and run.load_config().model.dtype == "bfloat16"
    # the same run opened on a machine whose auto means float32: the recorded dtype is kept, and said
    monkeypatch.setattr(hardware, "auto_dtype", lambda device="cpu", flags=None, confirm=True: "float32")
    said: list[str] = []
    _, again = open_run(tmp_path / "run", cfg, log=said.append)
    assert again.model.dtype == "bfloat16" and run.load_config().model.dtype == "bfloat16"
    assert said == ["dtype: keeping the run's recorded bfloat16 (this machine would choose float32 for auto)"]
    # an explicit other dtype changes what is computed: refused
    import pytest

    from valuemech.errors import ValuemechError

    (tmp_path / "run" / "labels.jsonl").write_text("{}\n")  # once it holds an artifact (an empty run may be corrected)
    with pytest.raises(ValuemechError, match="model.dtype"):
        open_run(tmp_path / "run", make_config("quick", {"data": {"n_queries": 2}, "model": {"dtype": "float32"}}))


def test_option_probability_evaluations_score_in_float32_in_a_bfloat16_cpu_run(tmp_path, monkeypatch):
    from dataclasses import replace

    from valuemech.config import ModelConfig
    from valuemech.evals import registry
    from valuemech.pipeline import Pipeline
    from valuemech.rundir import RunDir

    bf16 = ModelConfig(name="smollm2-135m", dtype="bfloat16")
    for name in ("pvq", "value_portrait", "dilemmas"):
        assert registry.get_eval(name).model_config(bf16).dtype == "float32"
        assert registry.get_eval(name).model_config(replace(bf16, device="cuda")).dtype == "bfloat16"
    assert registry.get_eval("diversity").model_config(bf16).dtype == "bfloat16"
    assert registry.get_eval("pvq").model_config(replace(bf16, dtype="float32")).dtype == "float32"
    # the pipeline loads one float32 copy, and only when it is the same weights
    loaded = []

    class Fake:
        def __init__(self, cfg, sha):
            self.cfg, self.weights_sha256 = cfg, sha

    def fake_load(cfg, sha="w"):
        loaded.append(cfg.dtype)
        return Fake(cfg, sha)

    import valuemech.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_model", fake_load)
    cfg = make_config("quick", {"model": {"dtype": "bfloat16"}})
    pipe = Pipeline(RunDir(tmp_path), cfg, log=lambda s: None)
    assert pipe.model_for(registry.get_eval("pvq")).cfg.dtype == "float32"
    assert pipe.model_for(registry.get_eval("dilemmas")).cfg.dtype == "float32"
    assert pipe.model_for(registry.get_eval("diversity")).cfg.dtype == "bfloat16"
    assert sorted(loaded) == ["bfloat16", "float32"]
    monkeypatch.setattr(pipeline, "load_model", lambda c: fake_load(c, "other" if c.dtype == "float32" else "w"))
    pipe = Pipeline(RunDir(tmp_path), cfg, log=lambda s: None)
    assert pipe.model_for(registry.get_eval("pvq")).cfg.dtype == "bfloat16"  # a copy that hashes differently is not used
