"""nnx's fused kernels, installed as ``nnx.kernels``.

Numba ``@njit`` CPU kernels live in the ``cpu_*`` modules and CUDA C sources in
``*.cu`` files compiled lazily through CuPy. No Python orchestration lives here:
a kernel takes arrays and sizes and does one fused thing. Importing this
package imports neither numba nor cupy; each kernel module does so itself.
"""
