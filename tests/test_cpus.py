"""cpu_count(): affinity and cgroup v1/v2 quotas, read from a fake /sys/fs/cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import corepool
from corepool import cpus


def test_cpu_count_is_the_affinity_here() -> None:
    assert corepool.cpu_count() == min(len(os.sched_getaffinity(0)), cpus.cpu_report().usable)
    assert 1 <= corepool.cpu_count() <= (os.cpu_count() or 1)


def test_parse_proc_cgroup() -> None:
    text = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n0::/user.slice/x\n"
    assert cpus.parse_proc_cgroup(text) == ("/user.slice/x", "/docker/abc")


def _fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc_cgroup: str) -> None:
    monkeypatch.setattr(cpus, "_CGROUP_ROOT", tmp_path)
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        if str(self) == "/proc/self/cgroup":
            return proc_cgroup
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(cpus, "_affinity", lambda: 8)


def test_cgroup_v2_quota_rounds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory")
    own = tmp_path / "app.slice"
    own.mkdir()
    (own / "cpu.max").write_text("150000 100000\n")
    _fake(tmp_path, monkeypatch, "0::/app.slice\n")
    report = cpus.cpu_report()
    assert report.cgroup_quota == 1.5 and report.usable == 2
    assert any("quota" in line for line in report.reasons())


def test_cgroup_v2_parent_limit_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu")
    parent = tmp_path / "outer"
    child = parent / "inner"
    child.mkdir(parents=True)
    (parent / "cpu.max").write_text("100000 100000\n")
    (child / "cpu.max").write_text("max 100000\n")
    _fake(tmp_path, monkeypatch, "0::/outer/inner\n")
    assert cpus.cpu_report().usable == 1


def test_cgroup_v2_without_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    _fake(tmp_path, monkeypatch, "0::/\n")
    report = cpus.cpu_report()
    assert report.cgroup_quota is None and report.usable == 8


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    base.mkdir(parents=True)
    (base / "cpu.cfs_quota_us").write_text("300000\n")
    (base / "cpu.cfs_period_us").write_text("100000\n")
    _fake(tmp_path, monkeypatch, "4:cpu,cpuacct:/docker/abc\n")
    assert cpus.cpu_report().usable == 3


def test_cgroup_v1_unlimited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "cpu,cpuacct"
    base.mkdir()
    (base / "cpu.cfs_quota_us").write_text("-1\n")
    (base / "cpu.cfs_period_us").write_text("100000\n")
    _fake(tmp_path, monkeypatch, "4:cpu,cpuacct:/\n")
    assert cpus.cpu_report().usable == 8


def test_pool_defaults_to_cpu_count() -> None:
    with corepool.Pool() as pool:
        assert len(pool.pids()) == corepool.cpu_count()
