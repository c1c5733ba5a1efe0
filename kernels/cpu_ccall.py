"""Calls from compiled kernels into C-callable ones (``numba.cfunc``) through their address.

The training kernels call the optimiser step and the minibatch gather this way:
those are compiled on their own, on first use and for what a fit uses, and the
calling kernel compiles only the call itself (no first-class function
machinery, no copy of their code), so its compile time barely moves.

``c_call(address, args)`` and ``c_call_int(address, args)`` call the function at
``address`` with the values of the tuple ``args``: an array is passed as the
pointer to its first element (arrays must be contiguous), an int64 as ``int64_t``,
a float64 as ``double``. The callee must have exactly that C signature (``c_signature``).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


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


@intrinsic
def c_call(typingctx, address, args):
    """Call the C function at ``address`` with the values of ``args``; returns nothing."""
    if address != types.int64 or not isinstance(args, types.BaseTuple) or not all(map(_passable, args.types)):
        return None  # a typing error, never a call with the wrong argument types

    def codegen(context, builder, sig, llargs):
        fnty, values = _lower(context, builder, sig.args[1], llargs[1], ir.VoidType())
        builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)
        return context.get_dummy_value()
    return types.void(address, args), codegen


@intrinsic
def c_call_int(typingctx, address, args):
    """``c_call`` of a function returning an int64."""
    if address != types.int64 or not isinstance(args, types.BaseTuple) or not all(map(_passable, args.types)):
        return None

    def codegen(context, builder, sig, llargs):
        fnty, values = _lower(context, builder, sig.args[1], llargs[1], ir.IntType(64))
        return builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)
    return types.int64(address, args), codegen
