"""Every CUDA kernel source compiles for sm_90 (H100/H200) and defines every named instance.

Runs wherever ``nvcc`` is installed (the project's CPU machines have CUDA 13);
no GPU is needed. The compiled text is exactly what CuPy hands to NVRTC
(``CudaSource.code()``, local includes inlined), with ``static_assert``s that
each instance's signature is the one ``cuda_sources`` declares, so a kernel
that does not compile, or whose arguments drifted from the Python side,
cannot land.
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

NVCC = shutil.which("nvcc") or next((str(p) for p in Path("/usr/local").glob("cuda*/bin/nvcc")), None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not installed on this machine")
ARCH = "sm_90"
CODE = {"float": "f", "double": "d"}


def _compile_unit(source: src.CudaSource) -> str:
    checks = ["#include <type_traits>"]
    for kernel in source.kernels:
        for ctype in src.ELEMENT_TYPES.values():
            inst = kernel.instance(ctype)
            checks.append(f"static_assert(std::is_same<decltype(&{inst}), {kernel.signature(ctype)}>::value, "
                          f'"{inst}: signature differs from cuda_sources");')
    refs = ", ".join(f"(void*)&{name}" for name in source.name_expressions())
    checks.append(f"void* const nnx_instances[] = {{{refs}}};")
    return source.code() + "\n" + "\n".join(checks) + "\n"


@needs_nvcc
@pytest.mark.parametrize("source", src.SOURCES, ids=lambda s: s.filename)
def test_source_compiles_to_ptx_with_every_instance(source: src.CudaSource, tmp_path: Path) -> None:
    unit = tmp_path / source.filename
    unit.write_text(_compile_unit(source))
    ptx = tmp_path / "out.ptx"
    run = subprocess.run([NVCC, "-std=c++17", f"-arch={ARCH}", "-ptx", str(unit), "-o", str(ptx)],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"nvcc failed on {source.filename}:\n{run.stderr}"
    entries = re.findall(r"\.entry\s+(\w+)\(", ptx.read_text())
    for kernel in source.kernels:
        for ctype, code in CODE.items():
            prefix = f"_Z{len(kernel.name)}{kernel.name}I{code}E"
            assert any(e.startswith(prefix) for e in entries), f"{kernel.instance(ctype)} missing from the PTX"
    assert len(entries) == len(source.name_expressions())


def test_every_cu_file_is_listed_with_every_kernel() -> None:
    files = {p.name for p in resources.files("nnx.kernels").iterdir() if p.name.endswith(".cu")}
    assert files == {s.filename for s in src.SOURCES}
    for source in src.SOURCES:
        defined = set(re.findall(r"__global__\s+void\s+(\w+)\s*\(", source.code()))
        assert defined == {k.name for k in source.kernels}, source.filename


def test_header_codes_match_the_network_codes() -> None:
    defines = src.header_defines()
    for name, code in ACTIVATION_CODES.items():
        assert defines[f"NNX_ACT_{name.upper()}"] == code
    for name, code in HEAD_CODES.items():
        assert defines[f"NNX_HEAD_{name.upper()}"] == code
    assert (defines["NNX_MODE_DELTA"], defines["NNX_MODE_OUTPUT"], defines["NNX_MODE_LOSS"]) == (
        src.MODE_DELTA, src.MODE_OUTPUT, src.MODE_LOSS)
    assert defines["NNX_TINY_MAX_WIDTH"] == src.TINY_MAX_WIDTH == cuda_plan.TINY_MAX_WIDTH


def test_code_inlines_the_shared_header() -> None:
    for source in src.SOURCES:
        code = source.code()
        assert '#include "' not in code and "nnx_head_row" in code
