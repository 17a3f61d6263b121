"""Class 2, disk faults: ``--out`` on a read-only or full file system or through a file, and writes
that fail mid-way, end in one ``error:`` line naming the path and the cause, with nothing partial
left that a later stage would read as complete, and a resume after the fault is exact.

Real file systems where the machine allows: a read-only tmpfs and a small full tmpfs (``mount``
needs root; without it the read-only case uses ``chmod``, which root ignores, and the full-disk
cases are skipped with the reason). The same faults are also injected into ``os.write`` /
``os.replace`` so that every machine runs them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_cli_error, cli, tree_hashes
from valuemech import io as vio
from valuemech.errors import ValuemechError

SMOKE = ("run", "--preset", "smoke", "--quiet", "--evals", "none")


def mount_tmpfs(where: Path, size: str, readonly: bool = False) -> str | None:
    """Mount a tmpfs of ``size`` at ``where``; the reason it cannot, or None."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root and mount(8)"
    opts = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def remount(where: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(where)], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """``make(size, readonly=False) -> Path`` of a fresh tmpfs mount, unmounted after the test."""
    mounted: list[Path] = []

    def make(size: str, readonly: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        why = mount_tmpfs(where, size, readonly)
        if why:
            pytest.skip(f"no real small file system here: {why}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def whole_lines(path: Path) -> list[dict]:
    """Every line of a JSONL file parsed; the file ends with a newline (no partial last line)."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob(".*.tmp")], "temp files of a failed write were left"


def valid_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


# --------------------------------------------------------------------------------------------------
# --out through a file, on a read-only file system, on a full one
# --------------------------------------------------------------------------------------------------

def test_out_naming_a_file_or_a_path_through_one(tmp_path, no_model):
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    confdir = tmp_path / "confdir"
    (confdir / "config.yaml").mkdir(parents=True)
    cases = [(afile, f"{afile}: cannot create the directory ({afile} is not a directory)"),
             (afile / "sub" / "run", f"({afile} is not a directory)"),
             (confdir, f"{confdir / 'config.yaml'}: cannot read")]
    for out, needle in cases:
        before = tree_hashes(tmp_path)
        assert_cli_error(cli(*SMOKE, "--out", out), needle)
        assert tree_hashes(tmp_path) == before


def test_out_on_a_read_only_file_system(tmp_path, tmpfs, no_model):
    ro = tmpfs("1m", readonly=True)
    assert_cli_error(cli(*SMOKE, "--out", ro / "run"), f"{ro / 'run'}: cannot create the directory (read-only file system)")
    assert not (ro / "run").exists()


def test_out_on_a_read_only_directory_without_root(tmp_path, no_model):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions (the read-only tmpfs test covers this as root)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_cli_error(cli(*SMOKE, "--out", ro / "run"), "permission denied")
    finally:
        ro.chmod(0o755)


def test_a_finished_run_on_a_read_only_file_system(smoke_dir, tmp_path, tmpfs):
    """Readers work; a command that writes fails in one line and changes nothing."""
    fs = tmpfs("4m")
    root = fs / "run"
    shutil.copytree(smoke_dir, root)
    remount(fs, "ro")
    before = tree_hashes(root)
    assert cli("summary", root).exit_code == 0
    assert_cli_error(cli("report", root, "--n-boot", "20"), "(read-only file system)", str(root))
    assert_cli_error(cli("decompose", "--run", root, "--force", "--quiet"), "(read-only file system)", str(root), logged=True)
    assert tree_hashes(root) == before


def test_the_llm_judge_answer_cache_on_a_read_only_file_system(tmpfs):
    from valuemech.judges.llm import LLMJudge

    ro = tmpfs("1m", readonly=True)
    with pytest.raises(ValuemechError, match=f"^{ro / 'cache.sqlite'}: cannot open the answer cache "):
        LLMJudge(base_url="http://127.0.0.1:9/v1", api_key_env=None, cache=str(ro / "cache.sqlite"))


def test_generate_on_a_full_file_system_leaves_whole_lines_and_resumes_exactly(smoke_dir, tmpfs):
    fs = tmpfs("64k")  # room for the config and a few batches of responses, not for all 48
    root = fs / "run"
    assert_cli_error(cli(*SMOKE, "--out", root), f"{root / 'responses.jsonl'}: cannot write (no space left on the device)",
                     logged=True)
    kept = whole_lines(root / "responses.jsonl")
    assert 0 < len(kept) < 48 and len(kept) % 8 == 0  # whole batches only
    no_temp_files(root)
    remount(fs, "size=16m")
    result = cli(*SMOKE, "--out", root)
    assert result.exit_code == 0, result.output
    for name in ("responses.jsonl", "labels.jsonl", "decompose.json", "neurons.json"):
        assert (root / name).read_bytes() == (smoke_dir / name).read_bytes(), name


def test_report_on_a_full_file_system_writes_no_truncated_figure(smoke_dir, tmpfs):
    fs = tmpfs("16m")
    root = fs / "run"
    shutil.copytree(smoke_dir, root)
    shutil.rmtree(root / "figures", ignore_errors=True)
    (root / "report.html").unlink(missing_ok=True)
    st_ = os.statvfs(fs)
    used_kib = (st_.f_blocks - st_.f_bfree) * st_.f_frsize // 1024
    remount(fs, f"size={used_kib + 48}k")  # room for a figure or two, not for all of them
    before = tree_hashes(root)
    assert_cli_error(cli("report", root, "--n-boot", "20"), "(no space left on the device)")
    no_temp_files(root)
    assert not (root / "report.html").exists()
    figures = sorted((root / "figures").glob("*.png"))
    assert all(valid_png(f) for f in figures)
    assert {k: v for k, v in tree_hashes(root).items() if not k.startswith("figures/")} == before


# --------------------------------------------------------------------------------------------------
# The same faults injected: every machine runs these
# --------------------------------------------------------------------------------------------------

def failing_write(after_bytes: int, err: int = errno.ENOSPC):
    """An ``os.write`` that writes ``after_bytes`` bytes in all, then fails with ``err``."""
    real = os.write
    left = [after_bytes]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(err, os.strerror(err))
        n = real(fd, bytes(data)[: left[0]])
        left[0] -= n
        return n

    return write


RECORDS = st.lists(st.dictionaries(st.sampled_from(["id", "text", "n"]), st.text(max_size=30) | st.integers()),
                   min_size=1, max_size=5)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(first=RECORDS, second=RECORDS, cut=st.integers(0, 400),
       err=st.sampled_from([errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG]))
def test_an_append_that_fails_part_way_leaves_the_file_as_it_was(first, second, cut, err, tmp_path_factory):
    path = tmp_path_factory.mktemp("append") / "out.jsonl"
    vio.append_jsonl(path, first)
    before = path.read_bytes()
    real = os.write
    os.write = failing_write(cut, err)
    try:
        vio.append_jsonl(path, second)
        payload_fit = True
    except ValuemechError as exc:
        payload_fit = False
        assert str(exc).startswith(f"{path}: cannot write (") and vio.CAUSES[err] in str(exc)
    finally:
        os.write = real
    after = path.read_bytes()
    assert after == before or (payload_fit and after.startswith(before) and after.endswith(b"\n"))
    assert vio.read_jsonl(path)[: len(first)] == [json.loads(json.dumps(r)) for r in first]


@pytest.mark.parametrize("err,cause", [(errno.ENOSPC, "no space left on the device"),
                                       (errno.EROFS, "read-only file system"),
                                       (errno.EACCES, "permission denied"),
                                       (errno.EIO, "input/output error")])
def test_an_atomic_write_that_fails_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, err, cause):
    target = tmp_path / "result.json"
    vio.atomic_write_json(target, {"old": True})
    before = target.read_bytes()

    def fail(*_args, **_kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ValuemechError, match=f"^{target}: cannot write \\({cause}\\)$"):
        vio.atomic_write_json(target, {"new": True})
    assert target.read_bytes() == before
    no_temp_files(tmp_path)


def test_a_figure_that_cannot_be_written_leaves_no_file(tmp_path, monkeypatch):
    from valuemech.plots import plt, save

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the PNG's bytes are written, then the disk is full
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with pytest.raises(ValuemechError, match="no space left on the device"):
        save(fig, tmp_path / "figures" / "f.png")
    assert not list((tmp_path / "figures").iterdir())


def test_generate_with_an_injected_full_disk_resumes_exactly(smoke_dir, tmp_path, monkeypatch):
    """The portable twin of the tmpfs test: the third append of responses fails after 1000 of its bytes."""
    root = tmp_path / "run"
    real = os.write
    appends = []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("responses.jsonl"):
            appends.append(len(data))
            if len(appends) >= 3:
                return failing_write(1000 if len(appends) == 3 else 0)(fd, data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert_cli_error(cli(*SMOKE, "--out", root), "responses.jsonl: cannot write (no space left on the device)", logged=True)
    monkeypatch.setattr(os, "write", real)
    assert len(whole_lines(root / "responses.jsonl")) == 16  # two whole batches, nothing of the third
    no_temp_files(root)
    result = cli(*SMOKE, "--out", root)
    assert result.exit_code == 0, result.output
    for name in ("responses.jsonl", "labels.jsonl", "decompose.json", "neurons.json"):
        assert (root / name).read_bytes() == (smoke_dir / name).read_bytes(), name
