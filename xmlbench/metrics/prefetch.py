"""``prefetch(array, i)``: a cache hint for ``array[i]`` inside numba kernels (LLVM's ``llvm.prefetch``).

Why: the propensity-scored metrics read one weight per true label, at random places in a megabytes-long
array. Read when needed, each read stalls the row loop for a trip to memory; hinted a few dozen rows
ahead, the reads travel while the loop does its other work. A prefetch is only a hint: it never faults
(any index is safe, in bounds or not), changes no value, and retires without waiting for the data.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_READ = 0
_KEEP_IN_ALL_LEVELS = 3
_DATA_CACHE = 1


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` (1-D; contiguous, or the hint lands elsewhere) into the cache."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and isinstance(index, types.Integer)):
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type, _ = signature.args
        data = context.make_array(array_type)(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        # Named from the pointer type (llvm.prefetch.p0i8): right for LLVM's typed pointers, and
        # remangled by LLVM where pointers are opaque.
        hint = builder.module.declare_intrinsic(
            "llvm.prefetch", [address.type], ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
        )
        builder.call(hint, [address, i32(_READ), i32(_KEEP_IN_ALL_LEVELS), i32(_DATA_CACHE)])
        return context.get_dummy_value()

    return sig, codegen
