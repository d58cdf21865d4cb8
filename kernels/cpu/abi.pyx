# cython: language_level=3
"""The plugin C ABI (kernels/include/fastinterp/plugin.h) from the Python side.

- ``plugin_abi`` / ``plugin_contents`` read a plugin's descriptor (through
  the header's own struct definitions: nothing is re-declared in Python);
- ``call`` describes NumPy arrays as DLPack tensors and calls a kernel
  pointer with the GIL released;
- fastinterp's own CPU kernels are exported through the same ABI, as a
  descriptor table reachable from C through the capsule
  ``FI_BUILTIN_CAPSULE`` (``builtin_capsule()``) and the exported symbol
  ``fastinterp_builtin_kernels`` of this extension.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX
from libc.string cimport memset
cimport openmp
from cpython.pycapsule cimport PyCapsule_New
from cython.parallel cimport parallel, prange
cimport numpy as cnp

from _types cimport real
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan
from _lerp cimport lerp_run
from _c_entry cimport grid_sample_fwd_f32_t, grid_sample_fwd_f64_t

cnp.import_array()

cdef extern from "fastinterp/plugin.h" nogil:
    enum:
        FI_ABI_VERSION_MAJOR
        FI_ABI_VERSION_MINOR
        FI_OK
        FI_ERR_INVALID
        FI_ERR_UNSUPPORTED
        FI_ERR_NOMEM
        FI_GRID_BILINEAR
        FI_GRID_BICUBIC
        FI_PAD_ZEROS
        FI_PAD_REFLECTION
        FI_DEVICE_CPU
        FI_DTYPE_INT
        FI_DTYPE_UINT
        FI_DTYPE_FLOAT
        FI_PLUGIN_MIN_SIZE
        FI_KERNEL_MIN_SIZE
        FI_PARAMS_MIN_SIZE
        FI_MAX_ARRAYS
        FI_MAX_DIMS
        FI_MAX_PARAMS
        FI_ERRBUF_SIZE
    const char* FI_BUILTIN_CAPSULE

    ctypedef struct fi_device_t:
        int32_t device_type
        int32_t device_id

    ctypedef struct fi_dtype_t:
        uint8_t code
        uint8_t bits
        uint16_t lanes

    ctypedef struct fi_tensor_t:
        void* data
        fi_device_t device
        int32_t ndim
        fi_dtype_t dtype
        int64_t* shape
        int64_t* strides
        uint64_t byte_offset

    ctypedef struct fi_params_t:
        uint32_t struct_size
        int32_t nthreads
        int32_t n_floats
        int32_t n_ints
        const double* floats
        const int64_t* ints
        void* stream
        uint64_t readonly_inputs

    ctypedef int (*fi_kernel_fn)(const fi_tensor_t*, int32_t, const fi_tensor_t*, int32_t,
                                 const fi_params_t*, char*, size_t) noexcept nogil

    ctypedef struct fi_kernel_t:
        const char* op
        int32_t device_type
        fi_dtype_t dtype
        fi_kernel_fn fn
        const char* signature
        const char* params
        const char* doc
        uint32_t flags
        uint32_t reserved

    ctypedef struct fi_abi_t:
        uint32_t major
        uint32_t minor
        uint32_t plugin_size
        uint32_t kernel_size
        uint32_t tensor_size
        uint32_t params_size

    ctypedef struct fi_plugin_t:
        fi_abi_t abi
        const char* name
        const char* version
        const fi_kernel_t* kernels
        int64_t n_kernels
        const char* error

    ctypedef const fi_plugin_t* (*fi_plugin_entry_fn)() noexcept nogil

    int fi_error(char* errbuf, size_t errbuf_size, int status, const char* fmt, ...)
    bint fi_dtype_is(const fi_tensor_t* t, uint8_t code, uint8_t bits)
    bint fi_is_contiguous(const fi_tensor_t* t)
    void* fi_data(const fi_tensor_t* t)
    int64_t fi_stride(const fi_tensor_t* t, int32_t d)
    int64_t fi_numel(const fi_tensor_t* t)
    void fi_params_init(fi_params_t* params)

# The exported table. Its storage and the exported accessor are plain C so
# that the symbol keeps default visibility; the entries are filled below.
cdef extern from *:
    """
    static fi_plugin_t fi_builtin_table;
    FI_EXTERN_C FI_EXPORT const fi_plugin_t* fastinterp_builtin_kernels(void) {
      return &fi_builtin_table;
    }
    """
    fi_plugin_t fi_builtin_table

# The limits of plugin.h (FI_MAX_*): the stack buffers of call() are sized by them.
cdef enum:
    MAX_ARRAYS = FI_MAX_ARRAYS    # tensors per call (inputs + outputs)
    MAX_DIMS = FI_MAX_DIMS        # dimensions per tensor
    MAX_PARAMS = FI_MAX_PARAMS    # floats, and ints, per call
    ERRBUF_SIZE = FI_ERRBUF_SIZE
    READONLY_BITS = 64            # inputs a readonly_inputs mask can mark
    MAX_KERNELS = 1 << 20         # kernel entries read from one descriptor
    LERP_CHUNK = 16384            # elements per parallel job (like blend.pyx)

ABI_MAJOR = FI_ABI_VERSION_MAJOR
ABI_MINOR = FI_ABI_VERSION_MINOR
#: sizeof() of each struct in this build, and the 1.0 prefixes a loader accepts.
SIZES = {"plugin": sizeof(fi_plugin_t), "kernel": sizeof(fi_kernel_t),
         "tensor": sizeof(fi_tensor_t), "params": sizeof(fi_params_t)}
MIN_SIZES = {"plugin": FI_PLUGIN_MIN_SIZE, "kernel": FI_KERNEL_MIN_SIZE,
             "tensor": sizeof(fi_tensor_t), "params": FI_PARAMS_MIN_SIZE}
MAX_TENSORS_PER_CALL = MAX_ARRAYS
MAX_NDIM = MAX_DIMS
MAX_PARAMS_PER_KIND = MAX_PARAMS
ERROR_BUFFER_SIZE = ERRBUF_SIZE
MAX_KERNELS_PER_PLUGIN = MAX_KERNELS


cdef dict _offsets_tensor():
    cdef fi_tensor_t t
    cdef char* base = <char*>&t
    return {"data": <char*>&t.data - base, "device_type": <char*>&t.device.device_type - base,
            "device_id": <char*>&t.device.device_id - base, "ndim": <char*>&t.ndim - base,
            "dtype_code": <char*>&t.dtype.code - base, "dtype_bits": <char*>&t.dtype.bits - base,
            "dtype_lanes": <char*>&t.dtype.lanes - base, "shape": <char*>&t.shape - base,
            "strides": <char*>&t.strides - base, "byte_offset": <char*>&t.byte_offset - base}


cdef dict _offsets_params():
    cdef fi_params_t p
    cdef char* base = <char*>&p
    return {"struct_size": <char*>&p.struct_size - base, "nthreads": <char*>&p.nthreads - base,
            "n_floats": <char*>&p.n_floats - base, "n_ints": <char*>&p.n_ints - base,
            "floats": <char*>&p.floats - base, "ints": <char*>&p.ints - base,
            "stream": <char*>&p.stream - base,
            "readonly_inputs": <char*>&p.readonly_inputs - base}


cdef size_t _plugin_error_end():
    """The fi_plugin_t size that covers the 1.1 field ``error``."""
    cdef fi_plugin_t d
    return <size_t>(<char*>&d.error - <char*>&d) + sizeof(d.error)


cdef size_t PLUGIN_ERROR_END = _plugin_error_end()


#: Byte offset of every field, straight from the header (used to build the
#: numba record types in fastinterp.numba_abi).
TENSOR_OFFSETS = _offsets_tensor()
PARAMS_OFFSETS = _offsets_params()


# ---------------------------------------------------------------- reading plugins
cdef str _text(const char* s):
    return None if s == NULL else (<bytes>s).decode("utf-8", "replace")


def plugin_abi(size_t entry):
    """Call a plugin's entry point; return ``(descriptor_address, abi_dict)``.

    Only the ``fi_abi_t`` prefix is read, so any major version can be
    inspected safely. The address is 0 when the entry point returned NULL.
    """
    cdef const fi_plugin_t* desc = (<fi_plugin_entry_fn>entry)()
    if desc == NULL:
        return 0, None
    return <size_t>desc, {"major": desc.abi.major, "minor": desc.abi.minor,
                          "plugin": desc.abi.plugin_size, "kernel": desc.abi.kernel_size,
                          "tensor": desc.abi.tensor_size, "params": desc.abi.params_size}


def plugin_contents(size_t address):
    """Name, version, refusal message and kernel table of a descriptor whose ABI
    was checked.

    Reads the 1.0 prefix of each kernel entry only and steps through the table
    by the plugin's own ``abi.kernel_size`` (compatibility rule 3); reads
    ``error`` only when the plugin's ``abi.plugin_size`` covers it (a 1.0
    plugin has none). A count outside [0, MAX_KERNELS_PER_PLUGIN] reads no
    entry (the caller refuses it).
    """
    cdef const fi_plugin_t* desc = <const fi_plugin_t*>address
    cdef const char* base = <const char*>desc.kernels
    cdef const fi_kernel_t* k
    cdef int64_t i
    error = _text(desc.error) if desc.abi.plugin_size >= PLUGIN_ERROR_END else None
    kernels = []
    if base != NULL and error is None and 0 <= desc.n_kernels <= MAX_KERNELS:
        for i in range(desc.n_kernels):
            k = <const fi_kernel_t*>(base + i * desc.abi.kernel_size)
            kernels.append({
                "op": _text(k.op), "device_type": k.device_type,
                "dtype": (k.dtype.code, k.dtype.bits, k.dtype.lanes),
                "fn": <size_t>k.fn, "signature": _text(k.signature),
                "params": _text(k.params), "doc": _text(k.doc), "flags": k.flags})
    return {"name": _text(desc.name), "version": _text(desc.version), "error": error,
            "n_kernels": desc.n_kernels, "kernels_null": base == NULL, "kernels": kernels}


# ---------------------------------------------------------------- calling kernels
cdef int _dtype_of(str op, cnp.ndarray arr, fi_dtype_t* out) except -1:
    cdef int typenum = cnp.PyArray_TYPE(arr)
    if cnp.PyTypeNum_ISFLOAT(typenum):
        out.code = FI_DTYPE_FLOAT
    elif cnp.PyTypeNum_ISSIGNED(typenum):
        out.code = FI_DTYPE_INT
    elif cnp.PyTypeNum_ISUNSIGNED(typenum) or cnp.PyTypeNum_ISBOOL(typenum):
        out.code = FI_DTYPE_UINT
    else:
        raise TypeError(f"{op}: arrays must have an int, uint or float dtype; got {arr.dtype}.")
    out.bits = <uint8_t>(cnp.PyArray_ITEMSIZE(arr) * 8)
    out.lanes = 1
    return 0


cdef int _describe(str op, fi_tensor_t* t, int64_t* shape, int64_t* strides, cnp.ndarray arr,
                   cnp.ndarray like) except -1:
    """Fill ``t`` for ``arr``; with ``like``, present ``arr`` broadcast to like's shape.

    ``shape`` and ``strides`` hold MAX_DIMS entries; strides are always set
    (never NULL, DLPack >= 1.2), also for 0-d arrays.
    """
    cdef int nd = cnp.PyArray_NDIM(arr)
    cdef int d
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr)
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(arr)
    cdef cnp.npy_intp* bstrides = cnp.PyArray_STRIDES(arr)
    if nd > MAX_DIMS:
        raise ValueError(f"{op}: arrays may have at most {MAX_DIMS} dimensions; got {nd}.")
    if item <= 0:
        raise TypeError(f"{op}: arrays must have a fixed-size dtype; got {arr.dtype}.")
    if like is not None and cnp.PyArray_NDIM(like) != nd:
        raise ValueError(f"{op}: operand must have {cnp.PyArray_NDIM(like)} dimensions "
                         f"like the output; got {nd}.")
    for d in range(nd):
        if bstrides[d] % item != 0:
            raise ValueError(f"{op}: strides must be whole elements; got "
                             f"{(<object>arr).strides} for itemsize {item}.")
        shape[d] = dims[d]
        strides[d] = bstrides[d] // item
        if like is not None and dims[d] != cnp.PyArray_DIMS(like)[d]:
            if dims[d] != 1:
                raise ValueError(f"{op}: operand of shape {(<object>arr).shape} does not "
                                 f"broadcast to {(<object>like).shape}.")
            shape[d] = cnp.PyArray_DIMS(like)[d]
            strides[d] = 0
    t.data = cnp.PyArray_DATA(arr)
    t.device.device_type = FI_DEVICE_CPU
    t.device.device_id = 0
    t.ndim = nd
    _dtype_of(op, arr, &t.dtype)
    t.shape = shape
    t.strides = strides
    t.byte_offset = 0
    return 0


def call(size_t fn, tuple inputs, tuple outputs, tuple floats=(), tuple ints=(),
         int nthreads=1, cnp.ndarray broadcast_to=None, str op="plugin call"):
    """Call kernel ``fn`` on NumPy arrays with the GIL released.

    ``inputs``/``outputs`` are tuples of NumPy arrays (outputs writable, at
    most MAX_TENSORS_PER_CALL in all, each of at most MAX_NDIM dimensions);
    ``floats``/``ints`` fill the parameter block (at most MAX_PARAMS_PER_KIND
    each; ints must fit int64). Inputs that are not writable are marked in
    ``params->readonly_inputs``. With ``broadcast_to``, every input is
    presented with that array's shape, stride 0 on its size-1 axes. ``op``
    starts error messages. Returns None on success, else ``(status, message)``
    from the kernel (the message cut to ERROR_BUFFER_SIZE - 1 bytes).
    """
    cdef Py_ssize_t n_in = len(inputs), n_out = len(outputs)
    cdef Py_ssize_t nf = len(floats), ni = len(ints), i
    cdef fi_tensor_t tensors[MAX_ARRAYS]
    cdef int64_t shapes[MAX_ARRAYS * MAX_DIMS]
    cdef int64_t strides[MAX_ARRAYS * MAX_DIMS]
    cdef double fvals[MAX_PARAMS]
    cdef int64_t ivals[MAX_PARAMS]
    cdef fi_params_t params
    cdef char errbuf[ERRBUF_SIZE]
    cdef int status
    cdef uint64_t readonly = 0
    cdef fi_kernel_fn kernel = <fi_kernel_fn>fn
    cdef cnp.ndarray arr
    if fn == 0:
        raise ValueError(f"{op}: kernel pointer is NULL.")
    if n_in + n_out > MAX_ARRAYS:
        raise ValueError(f"{op}: at most {MAX_ARRAYS} arrays per call; got {n_in + n_out}.")
    if nf > MAX_PARAMS or ni > MAX_PARAMS:
        raise ValueError(f"{op}: at most {MAX_PARAMS} float and {MAX_PARAMS} int "
                         f"parameters; got {nf} and {ni}.")
    for i in range(n_in):
        arr = inputs[i]
        _describe(op, &tensors[i], &shapes[i * MAX_DIMS], &strides[i * MAX_DIMS], arr,
                  broadcast_to)
        if i < READONLY_BITS and not cnp.PyArray_ISWRITEABLE(arr):
            readonly |= (<uint64_t>1) << i
    for i in range(n_out):
        arr = outputs[i]
        if not cnp.PyArray_ISWRITEABLE(arr):
            raise ValueError(f"{op}: outputs must be writable arrays; output {i} is read-only.")
        _describe(op, &tensors[n_in + i], &shapes[(n_in + i) * MAX_DIMS],
                  &strides[(n_in + i) * MAX_DIMS], arr, None)
    for i in range(nf):
        fvals[i] = floats[i]
    for i in range(ni):
        try:
            ivals[i] = ints[i]
        except OverflowError:
            raise ValueError(f"{op}: int parameters must lie in [-2**63, 2**63 - 1]; "
                             f"int parameter {i} is {ints[i]}.") from None
    fi_params_init(&params)
    params.nthreads = nthreads if nthreads > 0 else 1
    params.n_floats = <int32_t>nf
    params.n_ints = <int32_t>ni
    params.floats = fvals
    params.ints = ivals
    params.readonly_inputs = readonly
    memset(errbuf, 0, ERRBUF_SIZE)
    with nogil:
        status = kernel(tensors, <int32_t>n_in, &tensors[n_in], <int32_t>n_out, &params,
                        errbuf, ERRBUF_SIZE)
    if status == FI_OK:
        return None
    errbuf[ERRBUF_SIZE - 1] = 0
    return status, (<bytes>errbuf).decode("utf-8", "replace")


# ---------------------------------------------------------------- built-in kernels
cdef extern from *:
    """
    #include <pthread.h>
    /* Set in a process made by fork: GNU OpenMP's threads do not survive fork, and
       a team started there would wait for the parent's threads for ever. */
    static int fi_abi_forked = 0;
    static void fi_abi_after_fork_child(void) { fi_abi_forked = 1; }
    static int fi_abi_register_fork(void) {
        return pthread_atfork(NULL, NULL, fi_abi_after_fork_child);
    }
    """
    int fi_abi_forked
    int fi_abi_register_fork() nogil


cdef int _nthreads(const fi_params_t* params) noexcept nogil:
    """params->nthreads, within [1, processors]: a C caller's huge count must not
    make OpenMP start (and per-thread buffers be sized for) that many threads. One
    thread in a process made by fork, as fastinterp's Python API there."""
    cdef int procs = openmp.omp_get_num_procs()
    if params == NULL or params.nthreads < 1 or fi_abi_forked:
        return 1
    return min(params.nthreads, max(procs, 1))


def _note_forks():
    """Forks from now on set the flag; a child made before this module was loaded
    (fastinterp's own fork hook saw it) sets it at once."""
    global fi_abi_forked
    import importlib
    if importlib.import_module("fastinterp._config")._forked_child:
        fi_abi_forked = 1
    if fi_abi_register_fork() != 0:
        raise OSError("fastinterp: pthread_atfork failed for the exported kernels")


_note_forks()


cdef int _check_call(const char* op, const fi_tensor_t* inputs, int32_t n_in,
                     const fi_tensor_t* outputs, int32_t n_out, const fi_params_t* params,
                     char* err, size_t errsz) noexcept nogil:
    """What every exported kernel checks before touching a tensor (C callers may
    pass anything): array pointers, the parameter block and each tensor's
    ndim, shape and data."""
    cdef int32_t i
    cdef int status
    if (n_in > 0 and inputs == NULL) or (n_out > 0 and outputs == NULL):
        return fi_error(err, errsz, FI_ERR_INVALID, b"%s: inputs and outputs must not be NULL",
                        op)
    if params != NULL:
        if params.struct_size < FI_PARAMS_MIN_SIZE:
            return fi_error(err, errsz, FI_ERR_INVALID,
                            b"%s: params->struct_size must be at least %u (ABI 1.0); got %u",
                            op, <unsigned>FI_PARAMS_MIN_SIZE, <unsigned>params.struct_size)
        if params.n_floats < 0 or params.n_ints < 0 or \
                (params.n_floats > 0 and params.floats == NULL) or \
                (params.n_ints > 0 and params.ints == NULL):
            return fi_error(err, errsz, FI_ERR_INVALID,
                            b"%s: params must give n_floats, n_ints >= 0 and non-NULL arrays "
                            b"for them; got %d, %d", op, <int>params.n_floats,
                            <int>params.n_ints)
    for i in range(n_in):
        status = _check_tensor(op, b"input", i, &inputs[i], err, errsz)
        if status != FI_OK:
            return status
    for i in range(n_out):
        status = _check_tensor(op, b"output", i, &outputs[i], err, errsz)
        if status != FI_OK:
            return status
    return FI_OK


cdef int _check_tensor(const char* op, const char* kind, int32_t i, const fi_tensor_t* t,
                       char* err, size_t errsz) noexcept nogil:
    """ndim in [0, MAX_DIMS], a shape when ndim > 0, sizes >= 0 whose product
    fits int64, and data when the tensor has elements. (NULL strides are read
    as compact, as DLPack < 1.2 producers meant them.)"""
    cdef int32_t d
    cdef int64_t n = 1
    cdef bint empty = False
    if t.ndim < 0 or t.ndim > MAX_DIMS:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"%s: %s %d must have 0 to %d dimensions; got %d", op, kind, <int>i,
                        <int>MAX_DIMS, <int>t.ndim)
    if t.ndim > 0 and t.shape == NULL:
        return fi_error(err, errsz, FI_ERR_INVALID, b"%s: %s %d has %d dimensions and a NULL "
                        b"shape", op, kind, <int>i, <int>t.ndim)
    for d in range(t.ndim):
        if t.shape[d] < 0:
            return fi_error(err, errsz, FI_ERR_INVALID, b"%s: %s %d has size %lld on axis %d; "
                            b"sizes must be >= 0", op, kind, <int>i, <long long>t.shape[d],
                            <int>d)
        empty = empty or t.shape[d] == 0
    if not empty:
        for d in range(t.ndim):
            if n > INT64_MAX // t.shape[d]:
                return fi_error(err, errsz, FI_ERR_INVALID,
                                b"%s: %s %d has more than 2**63 - 1 elements", op, kind, <int>i)
            n = n * t.shape[d]
        if t.data == NULL:
            return fi_error(err, errsz, FI_ERR_INVALID, b"%s: %s %d has elements and NULL data",
                            op, kind, <int>i)
    return FI_OK


cdef int _check_lerp(const fi_tensor_t* inputs, int32_t n_in, const fi_tensor_t* outputs,
                     int32_t n_out, const fi_params_t* params, uint8_t bits, char* err,
                     size_t errsz) noexcept nogil:
    """The lerp contract: inputs a, b, t and one output, all of the output's shape
    and dtype on the CPU; the output compact; broadcasting as stride 0."""
    cdef int32_t i, d
    cdef const fi_tensor_t* out
    cdef const char* names = b"abt"
    cdef int status
    if n_in != 3 or n_out != 1:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"lerp: expects 3 inputs (a, b, t) and 1 output; got %d and %d",
                        <int>n_in, <int>n_out)
    status = _check_call(b"lerp", inputs, n_in, outputs, n_out, params, err, errsz)
    if status != FI_OK:
        return status
    out = &outputs[0]
    if out.device.device_type != FI_DEVICE_CPU or not fi_dtype_is(out, FI_DTYPE_FLOAT, bits):
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"lerp: out must be a CPU float%d tensor", <int>bits)
    if not fi_is_contiguous(out):
        return fi_error(err, errsz, FI_ERR_INVALID, b"lerp: out must be contiguous")
    for i in range(3):
        if inputs[i].device.device_type != FI_DEVICE_CPU or not fi_dtype_is(&inputs[i], FI_DTYPE_FLOAT, bits):
            return fi_error(err, errsz, FI_ERR_INVALID,
                            b"lerp: %c must be a CPU float%d tensor", names[i], <int>bits)
        if inputs[i].ndim != out.ndim:
            return fi_error(err, errsz, FI_ERR_INVALID,
                            b"lerp: %c must have %d dimensions like out; got %d",
                            names[i], <int>out.ndim, <int>inputs[i].ndim)
        for d in range(out.ndim):
            if inputs[i].shape[d] != out.shape[d]:
                return fi_error(err, errsz, FI_ERR_INVALID,
                                b"lerp: %c must have out's shape (stride 0 to broadcast); "
                                b"axis %d has size %lld, out %lld", names[i], <int>d,
                                <long long>inputs[i].shape[d], <long long>out.shape[d])
    return FI_OK


cdef void _lerp_tensors(const fi_tensor_t* inputs, const fi_tensor_t* out, real* po,
                        int nthreads) noexcept nogil:
    """Rows of the output (all axes but the last) in parallel, ``lerp_run`` along each."""
    cdef const fi_tensor_t* ta = &inputs[0]
    cdef const fi_tensor_t* tb = &inputs[1]
    cdef const fi_tensor_t* tt = &inputs[2]
    cdef int32_t nd = out.ndim, d
    cdef int64_t inner = out.shape[nd - 1] if nd > 0 else 1
    cdef int64_t rows = 1, nchunks, job, row, rem, c0, n, idx, oa, ob, ot
    cdef int64_t la = fi_stride(ta, nd - 1) if nd > 0 else 0
    cdef int64_t lb = fi_stride(tb, nd - 1) if nd > 0 else 0
    cdef int64_t lt = fi_stride(tt, nd - 1) if nd > 0 else 0
    cdef const real* pa = <const real*>fi_data(ta)
    cdef const real* pb = <const real*>fi_data(tb)
    cdef const real* pt = <const real*>fi_data(tt)
    for d in range(nd - 1):
        rows *= out.shape[d]
    if rows * inner == 0:
        return
    nchunks = (inner + LERP_CHUNK - 1) // LERP_CHUNK
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for job in prange(rows * nchunks, schedule="static"):
            row = job // nchunks
            c0 = (job % nchunks) * LERP_CHUNK
            n = min(<int64_t>LERP_CHUNK, inner - c0)
            oa = c0 * la
            ob = c0 * lb
            ot = c0 * lt
            rem = row
            for d in range(nd - 2, -1, -1):
                idx = rem % out.shape[d]
                rem = rem // out.shape[d]
                oa = oa + idx * fi_stride(ta, d)
                ob = ob + idx * fi_stride(tb, d)
                ot = ot + idx * fi_stride(tt, d)
            lerp_run(pa + oa, pb + ob, pt + ot, po + row * inner + c0, n, la, lb, lt)
        fi_team_leave(&team)
    fi_team_done(&team)


cdef uint8_t _float_bits(const fi_tensor_t* outputs, int32_t n_out) noexcept nogil:
    """64 for a float64 first output, else 32: one kernel body serves both dtypes
    (the argument checks then hold every tensor to that dtype)."""
    if n_out >= 1 and outputs != NULL and outputs[0].dtype.code == FI_DTYPE_FLOAT and outputs[0].dtype.bits == 64:
        return 64
    return 32


cdef int lerp_kernel(const fi_tensor_t* inputs, int32_t n_in, const fi_tensor_t* outputs,
                     int32_t n_out, const fi_params_t* params, char* err,
                     size_t errsz) noexcept nogil:
    """The exported lerp (float32 and float64 entries)."""
    cdef uint8_t bits = _float_bits(outputs, n_out)
    cdef int status = _check_lerp(inputs, n_in, outputs, n_out, params, bits, err, errsz)
    if status != FI_OK:
        return status
    if bits == 32:
        _lerp_tensors(inputs, &outputs[0], <float*>fi_data(&outputs[0]), _nthreads(params))
    else:
        _lerp_tensors(inputs, &outputs[0], <double*>fi_data(&outputs[0]), _nthreads(params))
    return FI_OK


# The grid_sample forward of fastinterp._cpu.sample, reached through the
# addresses that module hands out (NULL when it is not built).
cdef grid_sample_fwd_f32_t _grid_sample_f32 = NULL
cdef grid_sample_fwd_f64_t _grid_sample_f64 = NULL


cdef inline bint _compact_4d(const fi_tensor_t* t, uint8_t bits) noexcept nogil:
    return (t.device.device_type == FI_DEVICE_CPU and fi_dtype_is(t, FI_DTYPE_FLOAT, bits)
            and t.ndim == 4 and fi_is_contiguous(t))


cdef const char* _grid_int_name(int i) noexcept nogil:
    """The name of grid_sample's int parameter ``i`` (for its errors)."""
    if i == 0:
        return b"mode"
    if i == 1:
        return b"padding"
    return b"align_corners" if i == 2 else b"channels_last"


cdef int _check_grid_sample(const fi_tensor_t* inputs, int32_t n_in, const fi_tensor_t* outputs,
                            int32_t n_out, const fi_params_t* params, uint8_t bits,
                            int64_t* dims, int* opts, char* err, size_t errsz) noexcept nogil:
    """The grid_sample contract (plugin.h): fills dims (N, C, H, W, Ho, Wo) and opts
    (mode, padding, align_corners, channels_last)."""
    cdef const fi_tensor_t* x
    cdef const fi_tensor_t* g
    cdef const fi_tensor_t* o
    cdef int32_t i
    cdef int cl, status
    opts[0] = FI_GRID_BILINEAR
    opts[1] = FI_PAD_ZEROS
    opts[2] = 0
    opts[3] = 0
    if n_in != 2 or n_out != 1:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: expects 2 inputs (x, grid) and 1 output; got %d and %d",
                        <int>n_in, <int>n_out)
    status = _check_call(b"grid_sample", inputs, n_in, outputs, n_out, params, err, errsz)
    if status != FI_OK:
        return status
    if params != NULL:
        if params.n_ints > 4:
            return fi_error(err, errsz, FI_ERR_INVALID,
                            b"grid_sample: expects at most 4 int parameters; got %d",
                            <int>params.n_ints)
        for i in range(params.n_ints):
            # mode and padding take 0-2, the flags align_corners and channels_last 0 or 1
            # (no int truncation below)
            if params.ints[i] < 0 or params.ints[i] > (2 if i < 2 else 1):
                return fi_error(err, errsz, FI_ERR_INVALID,
                                b"grid_sample: int parameter %d (%s) must be %s; got %lld",
                                <int>i, _grid_int_name(i),
                                <const char*>(b"0, 1 or 2" if i < 2 else b"0 or 1"),
                                <long long>params.ints[i])
            opts[i] = <int>params.ints[i]
    if opts[0] < 0 or opts[0] > FI_GRID_BICUBIC or opts[1] < 0 or opts[1] > FI_PAD_REFLECTION:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: mode must be 0-2 and padding 0-2; got %d and %d",
                        opts[0], opts[1])
    opts[2] = opts[2] != 0
    cl = opts[3] = opts[3] != 0
    x, g, o = &inputs[0], &inputs[1], &outputs[0]
    if not _compact_4d(x, bits):
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: x must be a compact 4-d CPU float%d tensor", <int>bits)
    if not _compact_4d(g, bits):
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: grid must be a compact 4-d CPU float%d tensor", <int>bits)
    if not _compact_4d(o, bits):
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: out must be a compact 4-d CPU float%d tensor", <int>bits)
    dims[0] = x.shape[0]
    dims[1] = x.shape[3] if cl else x.shape[1]
    dims[2] = x.shape[1] if cl else x.shape[2]
    dims[3] = x.shape[2] if cl else x.shape[3]
    dims[4] = g.shape[1]
    dims[5] = g.shape[2]
    if g.shape[0] != dims[0] or g.shape[3] != 2:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: grid must have shape (N, H_out, W_out, 2) with N = %lld",
                        <long long>dims[0])
    if o.shape[0] != dims[0] or o.shape[1 if not cl else 3] != dims[1] or \
            o.shape[2 if not cl else 1] != dims[4] or o.shape[3 if not cl else 2] != dims[5]:
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: out must have shape %s = (%lld, %lld, %lld, %lld)",
                        <const char*>(b"(N, H_out, W_out, C)" if cl else b"(N, C, H_out, W_out)"),
                        <long long>dims[0], <long long>(dims[4] if cl else dims[1]),
                        <long long>(dims[5] if cl else dims[4]),
                        <long long>(dims[1] if cl else dims[5]))
    if fi_numel(o) > 0 and (dims[2] < 1 or dims[3] < 1):
        return fi_error(err, errsz, FI_ERR_INVALID,
                        b"grid_sample: x must have H, W >= 1; got %lld, %lld",
                        <long long>dims[2], <long long>dims[3])
    return FI_OK


cdef int grid_sample_kernel(const fi_tensor_t* inputs, int32_t n_in,
                            const fi_tensor_t* outputs, int32_t n_out,
                            const fi_params_t* params, char* err, size_t errsz) noexcept nogil:
    """The exported grid_sample forward (float32 and float64 entries)."""
    cdef uint8_t bits = _float_bits(outputs, n_out)
    cdef int64_t dims[6]
    cdef int opts[4]
    cdef int status
    memset(dims, 0, sizeof(dims))
    status = _check_grid_sample(inputs, n_in, outputs, n_out, params, bits, dims,
                                         opts, err, errsz)
    if status != FI_OK or fi_numel(&outputs[0]) == 0:
        return status
    if (bits == 32 and _grid_sample_f32 == NULL) or (bits == 64 and _grid_sample_f64 == NULL):
        return fi_error(err, errsz, FI_ERR_UNSUPPORTED, b"grid_sample: not built")
    if bits == 32:
        status = _grid_sample_f32(<float*>fi_data(&outputs[0]), <const float*>fi_data(&inputs[0]),
                         <const float*>fi_data(&inputs[1]), dims[0], dims[1], dims[2], dims[3],
                         dims[4], dims[5], opts[3], opts[0], opts[1], opts[2], _nthreads(params))
    else:
        status = _grid_sample_f64(<double*>fi_data(&outputs[0]), <const double*>fi_data(&inputs[0]),
                         <const double*>fi_data(&inputs[1]), dims[0], dims[1], dims[2], dims[3],
                         dims[4], dims[5], opts[3], opts[0], opts[1], opts[2], _nthreads(params))
    if status == FI_ERR_NOMEM:
        return fi_error(err, errsz, status, b"grid_sample: out of memory for the plan buffers")
    if status != FI_OK:
        return fi_error(err, errsz, status, b"grid_sample: invalid sizes or codes")
    return FI_OK


cdef enum:
    MAX_BUILTIN = 4

cdef fi_kernel_t _builtin_kernels[MAX_BUILTIN]


cdef void _set_kernel(fi_kernel_t* k, const char* op, uint8_t bits, fi_kernel_fn fn,
                      const char* doc) noexcept:
    memset(k, 0, sizeof(fi_kernel_t))
    k.op = op
    k.device_type = FI_DEVICE_CPU
    k.dtype.code = FI_DTYPE_FLOAT
    k.dtype.bits = bits
    k.dtype.lanes = 1
    k.fn = fn
    k.doc = doc


cdef void _init_builtin_table() except *:
    global _grid_sample_f32, _grid_sample_f64
    cdef int n = 0
    cdef const char* lerp_doc = b"out = lerp(a, b, t); inputs of out's shape, stride 0 to broadcast"
    cdef const char* gs_doc = (b"out = grid_sample(x, grid); ints {mode, padding, "
                               b"align_corners, channels_last}")
    _set_kernel(&_builtin_kernels[n], b"lerp", 32, lerp_kernel, lerp_doc)
    _set_kernel(&_builtin_kernels[n + 1], b"lerp", 64, lerp_kernel, lerp_doc)
    n += 2
    try:
        from fastinterp._cpu import sample
        entry = sample.c_entry_points()
    except (ImportError, AttributeError):  # grid_sample not built: list what exists
        entry = None
    if entry is not None:
        _grid_sample_f32 = <grid_sample_fwd_f32_t><size_t>entry["grid_sample_fwd_f32"]
        _grid_sample_f64 = <grid_sample_fwd_f64_t><size_t>entry["grid_sample_fwd_f64"]
        _set_kernel(&_builtin_kernels[n], b"grid_sample", 32, grid_sample_kernel, gs_doc)
        _set_kernel(&_builtin_kernels[n + 1], b"grid_sample", 64, grid_sample_kernel, gs_doc)
        n += 2
    fi_builtin_table.abi.major = FI_ABI_VERSION_MAJOR
    fi_builtin_table.abi.minor = FI_ABI_VERSION_MINOR
    fi_builtin_table.abi.plugin_size = sizeof(fi_plugin_t)
    fi_builtin_table.abi.kernel_size = sizeof(fi_kernel_t)
    fi_builtin_table.abi.tensor_size = sizeof(fi_tensor_t)
    fi_builtin_table.abi.params_size = sizeof(fi_params_t)
    fi_builtin_table.name = b"fastinterp"
    fi_builtin_table.version = b"builtin"
    fi_builtin_table.kernels = _builtin_kernels
    fi_builtin_table.n_kernels = n


_init_builtin_table()


def builtin_capsule():
    """A PyCapsule named ``FI_BUILTIN_CAPSULE`` holding the built-in ``fi_plugin_t*``."""
    return PyCapsule_New(<void*>&fi_builtin_table, FI_BUILTIN_CAPSULE, NULL)


def builtin_address():
    """The address of the built-in ``fi_plugin_t`` table (what the capsule holds)."""
    return <size_t>&fi_builtin_table
