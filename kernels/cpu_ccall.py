"""Calls from compiled kernels into C-callable ones (``numba.cfunc``) through their address.

The training kernels call the optimiser step, the minibatch gather and the
one-hidden-layer chunk kernels this way: those are compiled on their own, on
first use and for what a fit uses, and the calling kernel compiles only the call
itself. A call to a compiled (``njit``) function instead links the callee's code
into the caller, where LLVM optimises and emits it all over again.

``c_call(address, args)`` (no result) and ``c_call_float`` (a float64 result) call the
function at ``address`` with the values of the tuple ``args``: an array is passed as the
pointer to its first element (arrays must be contiguous), an int64 as ``int64_t``,
a float64 as ``double``. The callee must have exactly that C signature (``c_signature``).
"""
from __future__ import annotations

import os

from llvmlite import ir
from numba import cfunc, types
from numba.core import sigutils
from numba.core.ccallback import CFunc
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

from .cpu_math import CACHE, FASTMATH


def c_signature(restype, *argtypes):
    """The cfunc signature ``c_call`` matches for numba types ``argtypes`` (arrays as pointers)."""
    return restype(*(types.CPointer(t.dtype) if isinstance(t, types.Array) else t for t in argtypes))


def _passable(t) -> bool:
    return (isinstance(t, types.Array) and t.layout == "C") or t in (types.int64, types.float64)


def _lower(context, builder, tuple_type, tuple_value, restype):
    values, llvm_types = [], []
    for i, t in enumerate(tuple_type.types):
        v = builder.extract_value(tuple_value, i)
        if isinstance(t, types.Array):
            v = context.make_array(t)(context, builder, v).data
        values.append(v)
        llvm_types.append(v.type)
    return ir.FunctionType(restype, llvm_types), values


def _returning(restype, llvm_restype, name: str):
    """The intrinsic ``name``: call the C function at ``address`` with the values of ``args``,
    returning ``restype``."""
    def call(typingctx, address, args):
        if address != types.int64 or not isinstance(args, types.BaseTuple) or not all(map(_passable, args.types)):
            return None  # a typing error, never a call with the wrong argument types

        def codegen(context, builder, sig, llargs):
            fnty, values = _lower(context, builder, sig.args[1], llargs[1], llvm_restype)
            result = builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)
            return context.get_dummy_value() if restype is types.void else result
        return restype(address, args), codegen
    call.__name__ = call.__qualname__ = name
    return intrinsic(call)


c_call = _returning(types.void, ir.VoidType(), "c_call")
c_call_float = _returning(types.float64, ir.DoubleType(), "c_call_float")


# The kernels' dtypes, by the names nnx uses.
DTYPES = {"float32": types.float32, "float64": types.float64}
# C-callable kernels made in this process, by (Python source, signature).
_MADE: dict = {}
_KERNEL_OPTIONS = dict(fastmath=FASTMATH, error_model="numpy")


def c_kernel(source, signature, *, cached_only: bool = False):
    """``source`` as a C-callable kernel (``numba.cfunc``, the training kernels' fast-math flags)
    for ``signature``: compiled on first use, then loaded from the disk cache; its ``.address``
    is what ``c_call``/``c_call_float`` take. With ``cached_only``, only whether it is made or
    on disk, found without compiling (Numba's cache lookup, which ``cfunc`` makes first)."""
    key = (source, str(signature))
    made = _MADE.get(key)
    if cached_only:
        if made is not None:
            return True
        probe = CFunc(source, sigutils.normalize_signature(signature), locals={}, options=_KERNEL_OPTIONS)
        probe.enable_caching()
        if not os.path.exists(probe._cache._cache_file._index_path):
            # nothing cached for this kernel: said without the lookup, which first sets up Numba's
            # target (a third of a second in a fresh process, on a cold start's critical path)
            return False
        with global_compiler_lock:  # the lookup refreshes Numba's target: never beside a compile in another thread
            return probe._cache.load_overload(probe._sig, probe._targetdescr.target_context) is not None
    if made is None:
        made = _MADE[key] = cfunc(signature, cache=CACHE, **_KERNEL_OPTIONS)(source)
    return made
