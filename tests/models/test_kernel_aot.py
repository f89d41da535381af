"""The kernels compiled ahead of time: used when built from the current source, never when stale, and the kernel
tests pass against both builds (the compiled module here, the JIT in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import baseline_kernel, kernel_aot, sensor_health_kernel

ROOT = Path(__file__).resolve().parents[2]
KERNEL_TESTS = ["tests/models/test_sensor_health_kernel.py", "tests/models/test_baseline_kernel.py"]


def _built(kernel: str) -> bool:
    name = kernel_aot.module_name(kernel)
    return name is not None and any((ROOT / "models").glob(f"{name}.*"))


def test_a_changed_source_gets_another_module_name(tmp_path: Path) -> None:
    source = ROOT / "models" / "baseline_kernel.py"
    copy = tmp_path / "baseline_kernel.py"
    copy.write_bytes(source.read_bytes())
    same = kernel_aot.module_name("baseline", source=copy)
    assert same == kernel_aot.module_name("baseline")
    copy.write_bytes(source.read_bytes() + b"\n# edited\n")
    assert kernel_aot.module_name("baseline", source=copy) != same


@pytest.mark.skipif(not (_built("baseline") and _built("sensor_health")), reason="no build: scripts/setup.sh makes it")
def test_the_built_modules_are_used_and_numba_is_not_loaded() -> None:
    assert baseline_kernel.AOT is not None and sensor_health_kernel.AOT is not None
    assert baseline_kernel.compile_kernels() == 0.0
    code = (
        "import sys, models.sensor_health, models.baseline, ingest.service\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'llvmlite'}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "LIFELINE_KERNELS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_jit_is_chosen_by_the_environment() -> None:
    code = "from models import baseline_kernel as b; print(b.AOT is None, type(b.run_batch).__name__)"
    env = {**os.environ, "LIFELINE_KERNELS": "jit"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "CPUDispatcher"]


@pytest.mark.skipif(os.environ.get("LIFELINE_KERNELS") == "jit", reason="this run already uses the JIT")
def test_the_kernel_tests_pass_with_the_jit_as_well() -> None:
    env = {**os.environ, "LIFELINE_KERNELS": "jit"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]
