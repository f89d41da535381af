"""The detectors' numba kernels compiled ahead of time, so a running ingest does not load numba and LLVM.

A process that imports numba maps LLVM (``libllvmlite.so``, 179 MB, ~130 MB of it resident) and numba's own
~150 modules: measured on ingest, 163 MB of file-backed resident memory against the 46 MB of the Node-RED peer,
for kernels whose machine code is under 1 MB. :func:`build` compiles the kernels once, with numba's ``pycc``, into
plain extension modules next to their sources; :func:`load` finds the one built from the kernel source as it is
now, and the kernel modules then use it without importing numba at all.

- **Same code, same results.** The build compiles each kernel's Python function for the one argument signature the
  detector calls it with, with the error model its JIT uses (numpy's for the baseline: a zero spread gives inf,
  not an exception) and for this machine's CPU, as the JIT does: the kernel tests, which hold each kernel bit for
  bit to its readable reference, run against the compiled module when there is one (``LIFELINE_KERNELS=jit``
  runs them against the JIT, and ``tests/models/test_kernel_aot.py`` runs both).
- **Never stale, never foreign.** A module's name carries a hash of the kernel's source file, of the numba version
  and of this CPU's feature flags (``/proc/cpuinfo``). An edited kernel, another numba or a machine with other
  instructions finds no module of its name and falls back to the JIT (with a log line saying so), which is what
  a fresh checkout without a build gets as well.
- **Built by set-up.** ``scripts/setup.sh`` runs ``python -m models.kernel_aot`` (~25 s); the modules are not in
  git (``.gitignore``). A container image built on one machine and run on another must not carry them (other CPU
  flags would make the name miss anyway): the Dockerfile keeps the JIT cache instead.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

KERNELS = ("baseline", "sensor_health")
"""The kernel modules (``models/{name}_kernel.py``) that have an ahead-of-time build."""

_MODELS = Path(__file__).resolve().parent
_ERROR_MODELS = {"baseline": "numpy", "sensor_health": "python"}
"""Each kernel's numba error model, as its ``_njit`` decorator sets it."""


def _cpu_flags() -> str:
    """This CPU's feature flags (the first ``flags`` line of ``/proc/cpuinfo``); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def module_name(kernel: str, *, source: Path | None = None) -> str | None:
    """The name of the compiled module for *kernel* as its source is now, on this machine; None: no build here
    (not Linux, or numba not installed)."""
    flags = _cpu_flags()
    if not flags:
        return None
    try:
        numba_version = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = source or _MODELS / f"{kernel}_kernel.py"
    digest = hashlib.sha256()
    for part in (path.read_bytes(), numba_version.encode(), flags.encode(), sys.version.encode()):
        digest.update(hashlib.sha256(part).digest())
    return f"_{kernel}_aot_{digest.hexdigest()[:16]}"


def load(kernel: str) -> ModuleType | None:
    """The compiled module of *kernel* if one was built from its current source on this machine, else None.

    ``LIFELINE_KERNELS=jit`` always answers None (the JIT is used; the tests compare the two).
    """
    if os.environ.get("LIFELINE_KERNELS", "auto") == "jit":
        return None
    name = module_name(kernel)
    if name is None:
        return None
    try:
        return importlib.import_module(f"models.{name}")
    except ImportError:
        log.info("no ahead-of-time build of the %s kernel for its current source: numba compiles it", kernel)
        return None


def compile_jit(namespace: dict[str, Any], entry_points: dict[str, tuple[Any, ...]]) -> float:
    """Compile (or load from numba's cache) each JIT entry point of a kernel module, found by name in its
    *namespace*, for its argument types; return the seconds it took (0 if all were compiled in this process)."""
    began = time.perf_counter()
    done = False
    for name, types in entry_points.items():
        jitted: Any = namespace[name]
        if not jitted.signatures:
            jitted.compile(types)
            done = True
    return time.perf_counter() - began if done else 0.0


def _signature(dispatcher: Any, arg_types: tuple[Any, ...]) -> Any:
    """The full signature (arguments and inferred return type) the JIT compiles *dispatcher* to."""
    dispatcher.compile(arg_types)
    return dispatcher.overloads[tuple(arg_types)].signature


def build(kernel: str, *, output_dir: Path = _MODELS) -> Path:
    """Compile *kernel*'s entry points into ``models/{module_name}.so``; return its path.

    Runs in a process where the kernel module was imported with the JIT (``LIFELINE_KERNELS=jit``): its Python
    functions, and the inlined helpers they call, are what ``pycc`` compiles.
    """
    # numba's pycc and compiler modules are untyped: handled as Any.
    llvm: Any = importlib.import_module("llvmlite.binding")
    pycc_compiler: Any = importlib.import_module("numba.pycc.compiler")
    compiler: Any = importlib.import_module("numba.core.compiler")
    pycc: Any = importlib.import_module("numba.pycc")

    name = module_name(kernel)
    if name is None:
        raise RuntimeError("ahead-of-time kernels need Linux (/proc/cpuinfo) and numba")
    module = importlib.import_module(f"models.{kernel}_kernel")
    if getattr(module, "AOT", None) is not None:
        raise RuntimeError("build with LIFELINE_KERNELS=jit: the kernel module was loaded from a compiled build")
    error_model = _ERROR_MODELS[kernel]

    def _flags_init(self: Any, *args: Any, **kwargs: Any) -> None:
        # pycc has no error-model option and uses the default flags (the Python error model); the JIT of this
        # kernel may use numpy's, and the compiled module must behave as the JIT does.
        compiler.Flags.__init__(self, *args, **kwargs)
        self.error_model = error_model

    kernel_flags = type("KernelFlags", (compiler.Flags,), {"__init__": _flags_init})

    cc = pycc.CC(name)
    cc.output_dir = str(output_dir)
    # The JIT compiles for this CPU; so does the build (a generic target gives other floating-point results in
    # places, which the bit-for-bit tests catch).
    cc.target_cpu = llvm.get_host_cpu_name()
    cc.verbose = False
    for entry, arg_types in module.entry_points().items():
        dispatcher = getattr(module, entry)
        cc.export(entry, _signature(dispatcher, arg_types))(dispatcher.py_func)
    saved = pycc_compiler.Flags
    pycc_compiler.Flags = kernel_flags
    try:
        cc.compile()
    finally:
        pycc_compiler.Flags = saved
    built = sorted(output_dir.glob(f"{name}.*"))
    if not built:
        raise RuntimeError(f"pycc wrote no module {name} into {output_dir}")
    return built[0]


def remove_stale(output_dir: Path = _MODELS) -> list[Path]:
    """Delete compiled kernel modules that no longer match their source (or this machine); return them."""
    current = {module_name(k) for k in KERNELS}
    stale = [p for p in output_dir.glob("_*_aot_*") if p.name.split(".")[0] not in current]
    for path in stale:
        path.unlink()
    return stale


def main() -> None:
    """Build every kernel (``python -m models.kernel_aot``), in a child process with the JIT selected."""
    if os.environ.get("LIFELINE_KERNELS") != "jit":
        import subprocess

        env = {**os.environ, "LIFELINE_KERNELS": "jit"}
        raise SystemExit(subprocess.call([sys.executable, "-m", "models.kernel_aot"], env=env))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in remove_stale():
        log.info("removed stale %s", path.name)
    for kernel in KERNELS:
        name = module_name(kernel)
        if name is not None and any(_MODELS.glob(f"{name}.*")):
            log.info("%s kernel: %s is current", kernel, name)
            continue
        began = time.perf_counter()
        path = build(kernel)
        log.info("%s kernel: built %s in %.1f s", kernel, path.name, time.perf_counter() - began)


if __name__ == "__main__":
    main()
