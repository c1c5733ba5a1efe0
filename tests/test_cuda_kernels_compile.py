"""Every CUDA kernel source compiles for sm_90 (H100/H200) and defines every named instance.

Runs wherever ``nvcc`` is installed (the project's CPU machines have CUDA 13);
no GPU is needed. The compiled text is exactly what CuPy hands to NVRTC
(``CudaSource.code()``, local includes inlined), with ``static_assert``s that
each instance's signature is the one ``cuda_sources`` declares, so a kernel
that does not compile, or whose arguments drifted from the Python side,
cannot land. ptxas's resource report then shows that no kernel keeps a stack
frame (local memory), that the single-block kernel's registers allow the
threads the planner gives it, and that the sliced kernels of narrow networks
leave room for several blocks per SM.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from nnx.backends import cuda_plan
from nnx.kernels import cuda_sources as src
from nnx.network import ACTIVATION_CODES, HEAD_CODES
from nnx.optim import Adam, RMSprop

NVCC = shutil.which("nvcc") or next((str(p) for p in Path("/usr/local").glob("cuda*/bin/nvcc")), None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not installed on this machine")
ARCH = "sm_90"
CODE = {"float": "f", "double": "d"}
SM_REGISTERS = 65536  # 32-bit registers per SM (and per block) on sm_70 to sm_90


def _compile_unit(source: src.CudaSource) -> str:
    checks = ["#include <type_traits>"]
    for kernel in source.kernels:
        for ctype in src.ELEMENT_TYPES.values():
            for inst in kernel.instances(ctype):
                checks.append(f"static_assert(std::is_same<decltype(&{inst}), {kernel.signature(ctype)}>::value, "
                              f'"{inst}: signature differs from cuda_sources");')
    for width in src.TINY_WIDTHS:
        checks.append(f"static_assert(NNX_ONE_BLOCK_THREADS({width}) == {src.one_block_threads(width)}, "
                      f'"one_block_threads({width}) differs from the header");')
    for ctype, itemsize in (("float", 4), ("double", 8)):
        checks.append(f"static_assert(sizeof(NnxOptimizer<{ctype}>) <= NNX_OPTIMIZER_BYTES && "
                      f"sizeof({ctype}) == {itemsize}, \"the single-block kernel's shared layout\");")
    refs = ", ".join(f"(void*)&{name}" for name in source.name_expressions())
    checks.append(f"void* const nnx_instances[] = {{{refs}}};")
    return source.code() + "\n" + "\n".join(checks) + "\n"


def _mangled_prefix(kernel: src.Kernel, code: str, width: int | None) -> str:
    args = code if width is None else f"{code}Li{width}E"
    return f"_Z{len(kernel.name)}{kernel.name}I{args}E"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Per source: the PTX and ptxas's resource report, from one nvcc run (``--keep`` keeps the PTX)."""
    out = {}
    for source in src.SOURCES:
        tmp = tmp_path_factory.mktemp(source.filename.replace(".", "_"))
        unit = tmp / source.filename
        unit.write_text(_compile_unit(source))
        run = subprocess.run([NVCC, "-std=c++17", f"-arch={ARCH}", "-cubin", "-Xptxas", "-v", "--keep",
                              f"--keep-dir={tmp}", "-o", str(tmp / "out.cubin"), str(unit)],
                             capture_output=True, text=True)
        assert run.returncode == 0, f"nvcc failed on {source.filename}:\n{run.stderr}"
        (ptx,) = tmp.glob("*.ptx")
        out[source.filename] = (ptx.read_text(), run.stderr)
    return out


@needs_nvcc
@pytest.mark.parametrize("source", src.SOURCES, ids=lambda s: s.filename)
def test_source_compiles_to_ptx_with_every_instance(source: src.CudaSource, compiled) -> None:
    entries = re.findall(r"\.entry\s+(\w+)\(", compiled[source.filename][0])
    for kernel in source.kernels:
        for ctype, code in CODE.items():
            for width in kernel.widths or (None,):
                prefix = _mangled_prefix(kernel, code, width)
                assert any(e.startswith(prefix) for e in entries), \
                    f"{kernel.instance(ctype, width)} missing from the PTX"
    assert len(entries) == len(source.name_expressions())


def _resources(report: str, expected: int) -> dict[str, tuple[int, int, int]]:
    """ptxas's report per entry: (stack frame bytes, spill store bytes, registers)."""
    found = re.findall(r"entry function '(\w+)'.*?\n.*?\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores"
                       r".*?\n.*?Used (\d+) registers", report)
    assert len(found) == expected, report
    return {name: (int(stack), int(spill), int(regs)) for name, stack, spill, regs in found}


@needs_nvcc
@pytest.mark.parametrize("source", src.SOURCES, ids=lambda s: s.filename)
def test_no_kernel_uses_local_memory_and_registers_fit_the_launches(source: src.CudaSource, compiled) -> None:
    resources = _resources(compiled[source.filename][1], len(source.name_expressions()))
    for entry, (stack, spill, regs) in resources.items():
        assert stack == 0 and spill == 0, f"{entry}: {stack} bytes stack frame, {spill} bytes spilled"
    for kernel in source.kernels:
        for code in CODE.values():
            for width in kernel.widths or (None,):
                prefix = _mangled_prefix(kernel, code, width)
                regs = next(r for e, (_, _, r) in resources.items() if e.startswith(prefix))
                if kernel.name == "nnx_tiny_train":
                    assert regs * src.one_block_threads(width) <= SM_REGISTERS, (prefix, regs)
                elif width == 2:  # the tutorials' and moons' sliced kernels: at least 4 blocks of 256 per SM
                    assert regs * cuda_plan.THREADS * 4 <= SM_REGISTERS, (prefix, regs)


def test_every_cu_file_is_listed_with_every_kernel() -> None:
    files = {p.name for p in resources.files("nnx.kernels").iterdir() if p.name.endswith(".cu")}
    assert files == {s.filename for s in src.SOURCES}
    for source in src.SOURCES:
        defined = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s+)?(\w+)\s*\(",
                                 source.code()))
        assert defined == {k.name for k in source.kernels}, source.filename


def test_the_prelude_defines_the_python_tables() -> None:
    defines = src.defines(src.prelude())
    for name, code in ACTIVATION_CODES.items():
        assert defines[f"NNX_ACT_{name.upper()}"] == code
    for name, code in HEAD_CODES.items():
        assert defines[f"NNX_HEAD_{name.upper()}"] == code
    for cls in src.COMPILED_OPTIMIZERS:
        assert defines[f"NNX_OPT_{cls.kind.upper()}"] == cls.code
    assert (defines["NNX_MODE_DELTA"], defines["NNX_MODE_OUTPUT"], defines["NNX_MODE_LOSS"]) == (
        src.MODE_DELTA, src.MODE_OUTPUT, src.MODE_LOSS)
    assert defines["NNX_TINY_MAX_WIDTH"] == src.TINY_MAX_WIDTH == cuda_plan.TINY_MAX_WIDTH
    assert defines["NNX_SLOTS_MAX"] == src.SLOTS_MAX >= max(
        len(cls().slots()) for cls in (Adam, RMSprop)) and len(RMSprop(momentum=0.5, centered=True).slots()) == 3


def test_code_inlines_the_shared_header() -> None:
    for source in src.SOURCES:
        code = source.code()
        assert '#include "' not in code and "nnx_head_row" in code
