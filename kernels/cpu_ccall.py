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

``c_kernel`` makes such a kernel, and ``load_overload`` loads an ``njit`` entry point, from
the disk cache without setting up Numba's compiler (``load_cached``).
"""
from __future__ import annotations

import os

from llvmlite import ir
from numba import cfunc, types
from numba.core import sigutils
from numba.core.ccallback import CFunc
from numba.core.compiler_lock import global_compiler_lock
from numba.core.runtime import rtsys
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


def value_types(dtype: str) -> tuple:
    """(scalar, 1-D array, 2-D array) types of ``dtype`` as kernels pass parameters and buffers
    (C-contiguous): what a callee is compiled for ahead of the kernel that calls it."""
    f = DTYPES[dtype]
    return f, types.Array(f, 1, "C"), types.Array(f, 2, "C")


# C-callable kernels made in this process, by (Python source, signature, fast math).
_MADE: dict = {}


def has_cache_index(cache) -> bool:
    """Whether a function's disk ``cache`` has an index (without one, nothing of it is cached)."""
    return os.path.exists(cache._cache_file._index_path)


def load_cached(cache, signature, context):
    """The compile result for ``signature`` in a function's disk ``cache``, or None.

    Numba's own lookup first sets up its whole compiler (every typing and lowering registry: a
    fifth of a second or more in a fresh process), which running cached machine code does not
    need. Here only the runtime that cached code links against (NRT) is set up, so a start from
    the cache loads its kernels without that set-up; a later compile still makes it as usual."""
    if not has_cache_index(cache):
        return None
    with global_compiler_lock:  # never beside a compile in another thread
        rtsys.initialize(context)
        try:
            return cache._load_overload(signature, context)
        except OSError:  # unreadable cache files (a concurrent writer on some platforms): not there
            return None


def load_overload(dispatcher, signature) -> bool:
    """Whether ``dispatcher`` (an ``njit`` function) runs ``signature`` without compiling: compiled
    in this process, or now loaded from the disk cache (``load_cached``), as its call would."""
    if signature in dispatcher.overloads:
        return True
    compiled = load_cached(dispatcher._cache, signature, dispatcher.targetctx)
    if compiled is None:
        return False
    with global_compiler_lock:
        if signature not in dispatcher.overloads:  # another thread may have loaded it meanwhile
            dispatcher._cache_hits[signature] += 1
            dispatcher.targetctx.insert_user_function(compiled.entry_point, compiled.fndesc, [compiled.library])
            dispatcher.add_overload(compiled)
    return True


def _from_cache(source, signature, options: dict):
    """The C-callable kernel from the disk cache (``load_cached``), or None; set up as
    ``CFunc.compile`` sets up a cached one."""
    kernel = CFunc(source, sigutils.normalize_signature(signature), locals={}, options=options)
    kernel.enable_caching()
    compiled = load_cached(kernel._cache, kernel._sig, kernel._targetdescr.target_context)
    if compiled is None:
        return None
    kernel._cache_hits += 1
    kernel._library = compiled.library
    kernel._wrapper_name = compiled.fndesc.llvm_cfunc_wrapper_name
    kernel._wrapper_address = kernel._library.get_pointer_to_function(kernel._wrapper_name)
    return kernel


def c_kernel(source, signature, *, fastmath=FASTMATH, cached_only: bool = False):
    """``source`` as a C-callable kernel (``numba.cfunc``, by default with the training kernels'
    fast-math flags) for ``signature``: loaded from the disk cache, else compiled (and cached);
    its ``.address`` is what ``c_call``/``c_call_float`` take. With ``cached_only``, only whether
    it is made or on disk (then loaded), found without compiling."""
    key = (source, str(signature), str(fastmath))
    made = _MADE.get(key)
    if made is None:
        options = dict(fastmath=fastmath, error_model="numpy")
        try:
            made = _from_cache(source, signature, options) if CACHE else None
        except (AttributeError, TypeError):  # Numba's internals moved: its own lookup, in cfunc, below
            made = None
        if made is None:
            if cached_only:
                return False
            made = cfunc(signature, cache=CACHE, **options)(source)
        _MADE[key] = made
    return True if cached_only else made
