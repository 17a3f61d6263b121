"""Class 4, upstream changed: a stage that reads an artifact which is damaged, or no longer matches what
was built from it, says so and names the stage to rerun; it never computes on a subset.

The mechanism: each stage lists the stages that must be complete before it runs (``pipeline.STAGE_TABLE``:
every planned response present once, labels one to one with the responses by id and text digest,
derived artifacts matching the fingerprints of the inputs they recorded), and the run directory's
readers refuse a derived artifact whose inputs changed (``rundir.LINEAGE``). The table damages a
copy of a finished smoke run one way at a time and runs the commands that read it; each ends in exit
2, one ``error:`` line naming the file and the stage to rerun, and the run directory unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from conftest import assert_cli_error, cli, tree_hashes
from valuemech.errors import ValuemechError


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n")


def edit_record(path: Path, index: int, change: Callable[[dict], None]) -> None:
    rows = lines(path)
    rec = json.loads(rows[index])
    change(rec)
    rows[index] = json.dumps(rec, ensure_ascii=False)
    write_lines(path, rows)


def nudge_safetensors(path: Path) -> None:
    """Another valid file of the same kind (one number changed, metadata kept): as if its stage reran on other input."""
    data = path.read_bytes()
    tensors = st_load(data)
    meta = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    key = sorted(k for k in tensors if k != "stats.residual_norm")[0]
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0] += 1.0
    path.write_bytes(st_save(tensors, metadata=meta))


def flip_a_label(path: Path) -> None:
    def flip(rec: dict) -> None:
        rec["expressed"]["power"] = not rec["expressed"]["power"]

    edit_record(path, 2, flip)


# (case id, damage(root), command (RUN is the run directory), what the error line must hold)
CASES: list[tuple[str, Callable[[Path], None], list[str], tuple[str, ...]]] = [
    ("responses truncated: extract", lambda r: write_lines(r / "responses.jsonl", lines(r / "responses.jsonl")[:45]),
     ["extract", "--run", "RUN"], ("responses.jsonl holds 45 of 48 planned responses", "run the generate stage first")),
    ("responses truncated: label", lambda r: write_lines(r / "responses.jsonl", lines(r / "responses.jsonl")[:45]),
     ["label", "--run", "RUN"], ("holds 45 of 48 planned responses", "valuemech generate --run")),
    ("responses truncated: summary", lambda r: write_lines(r / "responses.jsonl", lines(r / "responses.jsonl")[:45]),
     ["summary", "RUN"], ("vectors.safetensors was computed from another", "responses.jsonl (it changed since)",
                          "rerun the extract stage")),
    ("partial last line: decompose",
     lambda r: (r / "responses.jsonl").write_bytes((r / "responses.jsonl").read_bytes()[:-200]),
     ["decompose", "--run", "RUN"], ("holds 47 of 48 planned responses", "run the generate stage first")),
    ("response text edited: extract",
     lambda r: edit_record(r / "responses.jsonl", 5, lambda x: x.update(response=x["response"] + " (edited)")),
     ["extract", "--run", "RUN"], ("1 responses changed after", "labels.jsonl labelled them", "run the label stage first")),
    ("response tokens edited: decompose",
     lambda r: edit_record(r / "responses.jsonl", 5, lambda x: x.update(response_token_ids=x["response_token_ids"][:-1])),
     ["decompose", "--run", "RUN"], ("vectors.safetensors was computed from another", "run the extract stage first")),
    ("response tokens edited: report",
     lambda r: edit_record(r / "responses.jsonl", 5, lambda x: x.update(response_token_ids=x["response_token_ids"][:-1])),
     ["report", "RUN", "--n-boot", "20"], ("vectors.safetensors was computed from another", "rerun the extract stage")),
    ("duplicate response: extract", lambda r: write_lines(r / "responses.jsonl", lines(r / "responses.jsonl") +
                                                            lines(r / "responses.jsonl")[:1]),
     ["extract", "--run", "RUN"], ("twice", "run the generate stage first")),
    ("label missing: extract", lambda r: write_lines(r / "labels.jsonl", lines(r / "labels.jsonl")[:-1]),
     ["extract", "--run", "RUN"], ("labels.jsonl labels 47 of 48 responses", "run the label stage first")),
    ("label of another response: extract",
     lambda r: edit_record(r / "labels.jsonl", 0, lambda x: x.update(response_id="q9999/intrinsic/0")),
     ["extract", "--run", "RUN"], ("labels 1 responses that the responses file does not hold (first: q9999/intrinsic/0)",
                                   "run the label stage first")),
    ("label edited: decompose", lambda r: flip_a_label(r / "labels.jsonl"),
     ["decompose", "--run", "RUN"], ("vectors.safetensors was computed from another", "labels.jsonl",
                                     "run the extract stage first")),
    ("label edited: summary", lambda r: flip_a_label(r / "labels.jsonl"),
     ["summary", "RUN"], ("labels.jsonl (it changed since)", "rerun the extract stage (valuemech extract --run")),
    ("vectors remade: neurons", lambda r: nudge_safetensors(r / "vectors.safetensors"),
     ["neurons", "--run", "RUN"], ("components.safetensors was computed from another", "vectors.safetensors",
                                   "run the decompose stage first")),
    ("vectors remade: circumplex", lambda r: nudge_safetensors(r / "vectors.safetensors"),
     ["eval", "circumplex", "--run", "RUN"], ("components.safetensors was computed from another", "vectors.safetensors",
                                              "rerun the decompose stage")),
    ("components remade: report", lambda r: nudge_safetensors(r / "components.safetensors"),
     ["report", "RUN", "--n-boot", "20"], ("neurons.json was computed from another", "components.safetensors",
                                           "rerun the neurons stage")),
    ("vectors missing: decompose", lambda r: (r / "vectors.safetensors").unlink(),
     ["decompose", "--run", "RUN"], ("vectors.safetensors is missing", "run the extract stage first")),
    ("labels missing: summary", lambda r: (r / "labels.jsonl").unlink(),
     ["summary", "RUN"], ("labels.jsonl, which is missing", "rerun the extract stage")),
]


@pytest.mark.parametrize("case,damage,args,needles", CASES, ids=[c[0] for c in CASES])
def test_a_stage_refuses_an_upstream_that_changed(case, damage, args, needles, smoke_dir, tmp_path, no_model):
    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    damage(root)
    before = tree_hashes(root)
    assert_cli_error(cli(*[root if a == "RUN" else a for a in args]), *needles)
    assert tree_hashes(root) == before


def test_a_stage_that_cannot_repair_its_artifact_says_what_to_do(smoke_dir, tmp_path):
    """Running the named stage again is not always enough: the error then says what is."""
    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    write_lines(root / "responses.jsonl", lines(root / "responses.jsonl") + lines(root / "responses.jsonl")[:1])
    assert_cli_error(cli("generate", "--run", root, "--quiet"), "twice, after the generate stage ran",
                     "use a new run directory", logged=True)
    shutil.rmtree(root)
    shutil.copytree(smoke_dir, root)
    edit_record(root / "labels.jsonl", 0, lambda x: x.update(response_id="q9999/intrinsic/0"))
    assert_cli_error(cli("label", "--run", root, "--quiet"), "after the label stage ran",
                     f"relabel every response with --force (valuemech label --run {root} --force)", logged=True)
    result = cli("label", "--run", root, "--quiet", "--force")
    assert result.exit_code == 0, result.output
    assert (root / "labels.jsonl").read_bytes() == (smoke_dir / "labels.jsonl").read_bytes()


def test_rerunning_after_a_change_recomputes_exactly_what_changed(smoke_dir, tmp_path):
    """`valuemech run` after a truncation regenerates the lost responses (byte-identical); after an edited
    response it labels that response again and recomputes the vectors from the new labels."""
    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    write_lines(root / "responses.jsonl", lines(root / "responses.jsonl")[:40])
    result = cli("run", "--preset", "smoke", "--out", root, "--quiet", "--evals", "none")
    assert result.exit_code == 0, result.output
    for name in ("responses.jsonl", "labels.jsonl", "decompose.json", "neurons.json"):
        assert (root / name).read_bytes() == (smoke_dir / name).read_bytes(), name
    edit_record(root / "responses.jsonl", 5, lambda x: x.update(response=x["response"] + " (edited)"))
    result = cli("run", "--preset", "smoke", "--out", root, "--quiet", "--evals", "none")
    assert result.exit_code == 0, result.output
    assert "[generate] already complete" in result.stderr and "[label] done" in result.stderr
    assert "[extract] done" in result.stderr
    assert len(lines(root / "labels.jsonl")) == 49  # the edited response labelled again (the newest line counts)
    assert cli("summary", root).exit_code == 0


# --------------------------------------------------------------------------------------------------
# Property: any change to responses.jsonl stops the stages downstream, naming it
# --------------------------------------------------------------------------------------------------

@st.composite
def changed_responses(draw, original: bytes) -> bytes:
    rows = original.decode().splitlines()
    how = draw(st.sampled_from(["drop", "duplicate", "swap", "text", "tokens", "cut", "field"]))
    i = draw(st.integers(0, len(rows) - 1))
    j = draw(st.integers(0, len(rows) - 1).filter(lambda k: rows[k] != rows[i]))
    rec = json.loads(rows[i])
    if how == "drop":
        del rows[i]
    elif how == "duplicate":
        rows.insert(j, rows[i])
    elif how == "swap":
        rows[i], rows[j] = rows[j], rows[i]
    elif how == "text":
        rec["response"] = draw(st.text(min_size=1, max_size=20).filter(lambda t: t != rec["response"]))
        rows[i] = json.dumps(rec)
    elif how == "tokens":
        rec["response_token_ids"] = draw(st.lists(st.integers(0, 100), max_size=5)
                                         .filter(lambda t: t != rec["response_token_ids"]))
        rows[i] = json.dumps(rec)
    elif how == "field":
        rec["finish_reason"] = draw(st.sampled_from(["edited", "?"]))
        rows[i] = json.dumps(rec)
    else:
        text = "\n".join(rows) + "\n"
        return text.encode()[: draw(st.integers(0, len(text.encode()) - 2))]
    return ("\n".join(rows) + "\n").encode()


def test_any_change_to_the_responses_stops_the_stages_that_read_them(smoke_dir, tmp_path):
    from valuemech.pipeline import Pipeline, open_run

    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    original = (root / "responses.jsonl").read_bytes()

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(content=changed_responses(original))
    def check(content: bytes) -> None:
        (root / "responses.jsonl").write_bytes(content)
        before = tree_hashes(root)
        run, cfg = open_run(root)
        for stage in ("decompose", "neurons", "evaluate"):
            with pytest.raises(ValuemechError) as info:
                Pipeline(run, cfg, progress=False, log=lambda _m: None).run_stage(stage)
            msg = str(info.value)
            assert "\n" not in msg and (str(root / "responses.jsonl") in msg or str(root / "labels.jsonl") in msg), msg
            assert "stage first" in msg, msg
        assert tree_hashes(root) == before

    try:
        check()
    finally:
        (root / "responses.jsonl").write_bytes(original)
