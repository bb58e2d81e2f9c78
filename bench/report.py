"""Results as sections of tables and target checks, printed as text and written as Markdown, with the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.measure import MiB

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [self.headers, ["---"] * len(self.headers), *self.rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)

    def text(self) -> str:
        widths = [max(len(row[column]) for row in [self.headers, *self.rows]) for column in range(len(self.headers))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [self.headers, *self.rows]
        )


@dataclass(frozen=True)
class Check:
    """One figure, with the issue's target where it sets one (`passed` None: reported, not judged)."""

    what: str
    value: str
    target: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: ""}[self.passed]


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (caption, table)
    checks: list[Check] = field(default_factory=list)

    def checks_table(self) -> Table:
        return Table(
            ["figure", "value", "target", "verdict"],
            [[check.what, check.value, check.target, check.verdict] for check in self.checks],
        )

    def text(self) -> str:
        parts = [f"== {self.title}", *self.notes]
        parts += [f"{caption}\n{table.text()}" for caption, table in self.tables]
        if self.checks:
            parts.append(self.checks_table().text())
        return "\n\n".join(parts)

    def markdown(self) -> str:
        parts = [f"## {self.title}", *self.notes]
        parts += [f"{caption}\n\n{table.markdown()}" for caption, table in self.tables]
        if self.checks:
            parts.append(self.checks_table().markdown())
        return "\n\n".join(parts)


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def mib(value: float) -> str:
    return f"{value / MiB:.0f} MiB"


def machine(report: Path | None = None) -> list[str]:
    """What the figures depend on, one Markdown list item each; `report`, the file being written, does not
    count as a change to the commit measured."""
    allowed = len(os.sched_getaffinity(0))
    return [
        f"Machine: {_cpu_model()}, {os.cpu_count()} CPUs ({allowed} allowed to this run; cgroup CPU limit: "
        f"{cgroup_cpu_limit() or 'none'}), {_memory_gib():.1f} GiB RAM, "
        f"GPU: {'present, unused (Demucs runs on CPU)' if Path('/dev/nvidia0').exists() else 'none'}",
        f"Software: {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {version('torch')}, demucs {version('demucs')}; commit {_commit(report)}",
    ]


def cgroup_cpu_limit() -> str | None:
    """The CPU quota of this process's cgroup (what a Kubernetes CPU limit becomes), if there is one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else f"{int(quota) / int(period):g} CPUs"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def _commit(report: Path | None) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    inside = report is not None and report.resolve().is_relative_to(ROOT)
    skip = [f":(exclude){report.resolve().relative_to(ROOT)}"] if inside else []
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *skip)
    return f"{commit} with uncommitted changes" if changed else commit
