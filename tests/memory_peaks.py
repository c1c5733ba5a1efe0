"""How the memory tests measure a peak: ``tracemalloc`` sees every NumPy array allocation; on the
GPU a CuPy memory hook sees every device allocation from CuPy's pool, which is where nnx's device
buffers come from."""
from __future__ import annotations

import tracemalloc


def traced_peak(action) -> int:
    """Host bytes allocated at the peak of ``action()`` beyond what existed before it."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def device_peak(action) -> int:
    """Device bytes in use at the peak of ``action()`` beyond what was in use before it: pool blocks
    handed out less those returned, as CuPy's hooks report them on this thread."""
    import cupy

    class PeakHook(cupy.cuda.MemoryHook):
        name = "nnx-test-peak"

        def __init__(self) -> None:
            self.in_use = self.peak = 0

        def malloc_postprocess(self, **kwargs) -> None:
            self.in_use += kwargs["mem_size"]
            self.peak = max(self.peak, self.in_use)

        def free_postprocess(self, **kwargs) -> None:
            self.in_use -= kwargs["mem_size"]

    cupy.cuda.Device().synchronize()
    hook = PeakHook()
    with hook:
        action()
        cupy.cuda.Device().synchronize()
    return hook.peak


def peak_bytes(backend, action) -> int:
    """The peak of ``action()`` where ``backend`` keeps its buffers: device memory for CuPy, else host."""
    return device_peak(action) if backend.name == "cupy" else traced_peak(action)


def reserved_bytes(backend) -> int:
    """What a backend's estimates hold back without allocating it (the GPU's room for cuBLAS
    workspaces and the CUDA context), left out when an estimate is judged against a peak."""
    if backend.name != "cupy":
        return 0
    from nnx.backends import cuda_plan

    return cuda_plan.HEADROOM_BYTES
