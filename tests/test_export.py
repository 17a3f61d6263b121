"""valuemech export: llama.cpp GGUF control vectors, steering-vectors and safetensors files; read back, steered exactly."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import encode, make_source
from valuemech.cli import app
from valuemech.errors import ValuemechError
from valuemech.export import build_control_vector, export
from valuemech.models import load_model
from valuemech.rundir import RunDir
from valuemech.steering import SteeringSource, steer
from valuemech.vectorfile import ControlVector, read_vector_file, write_vector_file

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_llama, tmp_path_factory) -> RunDir:
    """A run directory of the smoke preset (tiny-llama) holding random vectors and their decomposition."""
    from valuemech.config import make_config

    rd = RunDir(tmp_path_factory.mktemp("export") / "run")
    rd.root.mkdir(parents=True)
    rd.write_config(make_config("smoke"))
    src = make_source(tiny_llama)
    src.vectors.save(rd.vectors)
    src.components.save(rd.components)
    return rd


def run_source(run: RunDir, lm):
    """The run's own vectors (float32 on disk), as every valuemech command steers with them."""
    return SteeringSource.from_run(run, lm)


def logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


def repeng_control_vector():
    """repeng 0.4.0's ControlVector, or a skip: it is installed with --no-deps (`make env`) because it pins
    numpy<2, and it names ``np.float_`` (removed in numpy 2) in annotations evaluated at import."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("repeng") is None:
        pytest.skip("repeng is not installed (make env installs repeng==0.4.0 with --no-deps)")
    added = not hasattr(np, "float_")
    if added:
        np.float_ = np.float64  # only for the import; removed again below
    try:
        from repeng import ControlModel, ControlVector as RepengVector
    finally:
        if added:
            del np.float_
    return RepengVector, ControlModel


def llama_cpp_layer_tensors(path, n_layer: int) -> dict[int, np.ndarray]:
    """What llama.cpp adds after each layer, following its source: common_control_vector_load_one puts
    direction.N (N >= 1) at buffer offset (N-1)*n_embd; llama_adapter_cvec::apply copies offset (il-1)*n_embd
    into layer il's tensor for il in 1..n_layer-1; the graph adds layer il's tensor to the output of block il."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    n_embd = int(reader.tensors[0].n_elements)
    buf = np.zeros(0, dtype=np.float32)
    for t in reader.tensors:
        n = int(t.name.split(".")[1])
        assert n >= 1
        buf = np.concatenate([buf, np.zeros(max(0, n * n_embd - len(buf)), dtype=np.float32)])
        buf[(n - 1) * n_embd: n * n_embd] += np.asarray(t.data, dtype=np.float32)
    return {il: buf[(il - 1) * n_embd: il * n_embd] for il in range(1, n_layer) if il * n_embd <= len(buf)
            and np.any(buf[(il - 1) * n_embd: il * n_embd])}


def test_gguf_is_read_by_gguf_and_repeng_at_the_blocks_llama_cpp_applies(run, tiny_llama, tmp_path):
    import gguf

    lm = tiny_llama
    out = tmp_path / "power_benevolence.gguf"
    cv = export(run, out, "gguf", "shared", "power,benevolence", [1], alpha=0.3)
    src = run_source(run, lm)
    with steer(lm, src, "shared", ["power", "benevolence"], 1, alpha=0.3) as added:
        pass
    expect = added[1].float()
    assert torch.equal(cv.directions[1], expect)
    reader = gguf.GGUFReader(str(out))
    field = lambda k: reader.get_field(k).contents()  # noqa: E731
    assert field("general.architecture") == "controlvector"
    assert field("controlvector.model_hint") == lm.model_id and field("controlvector.layer_count") == 1
    assert field("valuemech.weights_sha256") == lm.weights_sha256
    assert field("valuemech.values") == "power,benevolence" and field("valuemech.component") == "shared"
    assert "decoder block N (0-based) = valuemech block N" in field("valuemech.layer_numbering")
    assert [t.name for t in reader.tensors] == ["direction.1"]
    assert np.array_equal(np.asarray(reader.tensors[0].data), expect.numpy())
    applied = llama_cpp_layer_tensors(out, lm.n_layers)  # llama.cpp adds it after block 1, where valuemech steers
    assert list(applied) == [1] and np.array_equal(applied[1], expect.numpy())
    # several blocks of a deeper model land on the same blocks, none shifted
    deep = {b: torch.randn(8, generator=torch.Generator().manual_seed(b)) for b in (1, 2, 5)}
    write_vector_file(ControlVector(deep, {"model_id": "m"}), tmp_path / "deep.gguf", "gguf")
    applied = llama_cpp_layer_tensors(tmp_path / "deep.gguf", 8)
    assert list(applied) == [1, 2, 5] and all(np.array_equal(applied[b], deep[b].numpy()) for b in deep)
    RepengVector, _ = repeng_control_vector()
    rv = RepengVector.import_gguf(str(out))
    assert rv.model_type == lm.model_id and list(rv.directions) == [1]
    assert np.array_equal(np.asarray(rv.directions[1]), expect.numpy())


def test_repeng_applies_the_exported_file_where_valuemech_steers(run, tiny_llama, tmp_path):
    """An independent implementation: repeng adds directions[N] to the output of model.layers[N]."""
    RepengVector, ControlModel = repeng_control_vector()
    out = tmp_path / "shared_power.gguf"
    export(run, out, "gguf", "shared", "power", [1], alpha=0.5)
    ids, _ = encode(tiny_llama, ["Should I speak up?"])
    with steer(tiny_llama, run_source(run, tiny_llama), "shared", "power", 1, alpha=0.5):
        ours = logits(tiny_llama, ids)
    fresh = load_model("tiny-llama")  # repeng wraps the layers in place
    controlled = ControlModel(fresh.model, [1])
    controlled.set_control(RepengVector.import_gguf(str(out)), coeff=1.0)
    with torch.no_grad():
        theirs = controlled(input_ids=ids).logits
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("fmt", ["gguf", "safetensors", "steering-vectors"])
def test_import_back_steers_exactly_like_the_original(run, tiny_llama, tmp_path, fmt):
    lm = tiny_llama
    out = tmp_path / f"v.{fmt}"
    export(run, out, fmt, "prompted_unique", ["security", "tradition"], [1], alpha=0.4)
    src = run_source(run, lm)
    ids, mask = encode(lm, ["What should I value most?", "Hi"])
    with steer(lm, src, "prompted_unique", ["security", "tradition"], 1, alpha=0.4):
        original = lm.model(input_ids=ids, attention_mask=mask).logits.detach()
    with steer(lm, src.with_file(out, lm), "file", None, 1, alpha=1.0, relative=False):
        imported = lm.model(input_ids=ids, attention_mask=mask).logits.detach()
    assert torch.equal(original, imported)
    cv = read_vector_file(out)
    assert cv.metadata["weights_sha256"] == lm.weights_sha256 and cv.blocks == [1]


def test_steering_vectors_library_applies_the_file_like_valuemech(run, tiny_llama, tmp_path):
    sv = pytest.importorskip("steering_vectors", reason="steering-vectors is installed by `make bench-env`")
    from safetensors import safe_open

    out = tmp_path / "v.safetensors"
    export(run, out, "steering-vectors", "mean_delta", None, [1], alpha=0.2)
    with safe_open(str(out), framework="pt") as fh:  # as a steering-vectors user would load it
        acts = {int(k.split(".")[1]): fh.get_tensor(k) for k in fh.keys()}
        layer_type = fh.metadata()["layer_type"]
    ids, _ = encode(tiny_llama, ["Is money important?"])
    with steer(tiny_llama, run_source(run, tiny_llama), "mean_delta", None, 1, alpha=0.2):
        ours = logits(tiny_llama, ids)
    vec = sv.SteeringVector(acts, layer_type)
    with vec.apply(tiny_llama.model):
        theirs = logits(tiny_llama, ids)
    assert torch.equal(ours, theirs)


def test_a_file_made_elsewhere_is_a_steering_source(run, tiny_llama, tmp_path):
    RepengVector, _ = repeng_control_vector()
    lm = tiny_llama
    d = np.random.default_rng(0).standard_normal(lm.hidden_size).astype(np.float32)
    path = tmp_path / "repeng.gguf"
    RepengVector(model_type="llama", directions={1: d}).export_gguf(str(path))
    cv = read_vector_file(path)
    assert cv.blocks == [1] and np.array_equal(cv.directions[1].numpy(), d) and cv.metadata == {"model_hint": "llama"}
    ids, _ = encode(lm, ["Plan my day"])
    from valuemech import hooks

    with hooks.add_vectors(lm, {1: torch.from_numpy(d)}, alpha=2.0):
        direct = logits(lm, ids)
    with steer(lm, run_source(run, lm).with_file(path, lm), "file", None, 1, alpha=2.0, relative=False):
        assert torch.equal(logits(lm, ids), direct)


def test_evaluations_steer_with_a_vector_file(run, tiny_llama, tmp_path):
    from valuemech.evals.common import build_conditions
    from valuemech.evals.registry import make_options

    lm = tiny_llama
    out = tmp_path / "v.gguf"
    export(run, out, "gguf", "shared", "power", [1])
    opts = make_options({"components": ["shared"], "alpha": 0.3, "vector_file": str(out)})
    conditions, settings = build_conditions(lm, run_source(run, lm), opts)
    assert settings["file"]["layer"] == 1 and "file" in conditions and "random control" in conditions
    ids, _ = encode(lm, ["Should I stay?"])
    with conditions["file"]("tradition"):
        got = logits(lm, ids)
    with steer(lm, run_source(run, lm).with_file(out), "file", None, 1, alpha=0.3):
        assert torch.equal(logits(lm, ids), got)


def test_bad_exports_and_files_are_one_line_errors(run, tiny_llama, tmp_path):
    with pytest.raises(ValuemechError, match="rejects direction.0"):
        export(run, tmp_path / "a.gguf", "gguf", "shared", "power", [0])
    with pytest.raises(ValuemechError, match="unknown format"):
        export(run, tmp_path / "a.bin", "onnx", "shared", "power", [1])
    with pytest.raises(ValuemechError, match="out of range"):
        build_control_vector(run, "shared", "power", [7])
    with pytest.raises(ValuemechError, match="needs a value"):
        build_control_vector(run, "shared", None, [1])
    wrong = tmp_path / "wrong.safetensors"
    write_vector_file(ControlVector({1: torch.ones(3)}), wrong, "safetensors")
    with pytest.raises(ValuemechError, match="3-d directions"):
        run_source(run, tiny_llama).with_file(wrong, tiny_llama)
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ValuemechError, match="not a readable control-vector file"):
        read_vector_file(tmp_path / "junk.gguf")
    other = load_model("tiny-qwen2")
    export(run, tmp_path / "ok.gguf", "gguf", "shared", "power", [1])
    with pytest.raises(ValuemechError, match="not from the loaded model|hidden"):
        read_vector_file(tmp_path / "ok.gguf").check_model(other)
    with pytest.raises(ValuemechError, match="no direction for block 0"):
        with steer(tiny_llama, run_source(run, tiny_llama).with_file(tmp_path / "ok.gguf"), "file", None, 0, 1.0):
            pass


def test_cli_export_and_steer_with_the_file(run, tmp_path):
    out = tmp_path / "cli.gguf"
    r = runner.invoke(app, ["export", "--run", str(run.root), "--value", "power,benevolence", "--layers", "1",
                            "--format", "gguf", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "--control-vector-scaled" in r.stdout and out.exists()
    r = runner.invoke(app, ["steer", "--run", str(run.root), "--vector-file", str(out), "--alpha", "0.2",
                            "--max-tokens", "4", "hi"])
    assert r.exit_code == 0, r.output
    assert "random control" in r.stdout
    r = runner.invoke(app, ["export", "--run", str(run.root), "--value", "power", "--layers", "0",
                            "--out", str(tmp_path / "x.gguf")])
    assert r.exit_code == 2 and "direction.0" in r.stderr and len(r.stderr.strip().splitlines()) == 1
