/*
 * fastinterp/plugin.h -- the fastinterp plugin ABI.
 *
 * A plugin is a shared library that exports one function,
 *
 *     const fi_plugin_t* fastinterp_plugin(void);     (FI_PLUGIN_SYMBOL)
 *
 * returning a descriptor: the plugin's name and version, the ABI version and
 * struct sizes it was compiled with, and a table of kernels, each keyed by
 * (op name, device, dtype). `fastinterp.plugins.load(path)` checks the
 * descriptor and registers the kernels in fastinterp's dispatcher, where they
 * either add a new op (`fastinterp.ops.<name>`) or replace a built-in kernel.
 *
 * The same descriptor type also describes fastinterp's own CPU kernels, so C
 * code can call them without Python in the loop: the capsule
 * FI_BUILTIN_CAPSULE (`fastinterp.plugins.builtin_capsule()`) and the symbol
 * FI_BUILTIN_SYMBOL of the extension `fastinterp._cpu.abi` both give the
 * table; fi_find_kernel() below looks a kernel up in it.
 *
 * Arrays cross the ABI as fi_tensor_t, which has exactly the memory layout of
 * DLPack's DLTensor, and the device and dtype codes below are DLPack's. The
 * two are distinct C types: convert a pointer with an explicit cast,
 * `(const fi_tensor_t*)dl_tensor` (passing a `DLTensor*` where an
 * `fi_tensor_t*` is expected is an incompatible-pointer-types diagnostic, an
 * error since GCC 14). Strides count elements, not bytes, and are never NULL
 * when ndim > 0 (the rule of DLPack 1.2 and later): fastinterp always passes
 * them, and a C caller must too.
 *
 * This header is self-contained C99 (and C++): it includes only the C
 * standard library headers below.
 *
 * ------------------------------------------------------------------------
 * Compatibility policy
 * ------------------------------------------------------------------------
 * FI_ABI_VERSION_MAJOR.FI_ABI_VERSION_MINOR names the ABI this header
 * describes (versioned like DLPack's DLPACK_MAJOR_VERSION/MINOR_VERSION).
 *
 * History:
 *   1.0  the first ABI.
 *   1.1  fi_plugin_t.error: the entry point can say why a plugin refuses to
 *        load (fi_plugin_refuse); fi_params_t.readonly_inputs: which inputs
 *        are read-only memory; strides are never NULL when ndim > 0.
 *
 *  1. A minor bump only appends: new fields at the END of fi_plugin_t,
 *     fi_kernel_t and fi_params_t, new status, device and dtype codes, new
 *     flags, new ops with a published calling convention. Existing fields
 *     never move, change type or change meaning. Every struct therefore keeps
 *     a stable prefix. Initialise structs with the macros FI_PLUGIN_INIT and
     fi_params_init() (or designated initialisers), so that rebuilding
     against a later minor zero-fills the appended fields without
     -Wmissing-field-initializers warnings.
 *  2. A major bump may break anything. fastinterp refuses a plugin whose
 *     major version differs from its own, and registers nothing from it.
 *  3. Structs a plugin hands to fastinterp (fi_plugin_t, fi_kernel_t) carry
 *     the sizes the plugin was compiled with in fi_abi_t. fastinterp reads
 *     only the fields it knows and steps through the kernel table by the
 *     plugin's sizeof(fi_kernel_t), so a plugin built against a newer minor
 *     loads into an older fastinterp of the same major, and the reverse.
 *     A size smaller than the 1.0 prefix (FI_*_MIN_SIZE) is refused.
 *  4. Structs fastinterp hands to a kernel (fi_params_t) start with their
 *     size: a kernel reads a field appended in a later minor only when
 *     `params->struct_size` covers it.
 *  5. fi_tensor_t is DLPack's DLTensor and never changes within a major.
 *  6. A NULL pointer in an optional slot means "absent / not supported",
 *     never a crash: a kernel entry whose `fn` is NULL is skipped, NULL
 *     `signature`, `params`, `doc` and `error` mean "none". A field beyond
 *     the struct size its producer declared is absent too. Strides are not
 *     an optional slot: they are never NULL when ndim > 0 (DLPack >= 1.2);
 *     the helpers below still read NULL strides as compact row-major, as
 *     DLPack < 1.2 producers meant them.
 *  7. Kernels report failure by returning a non-zero status (FI_ERR_*) and
 *     writing a NUL-terminated message into the caller's error buffer; they
 *     never print, abort or throw across the ABI.
 * ------------------------------------------------------------------------
 */
#ifndef FASTINTERP_PLUGIN_H_
#define FASTINTERP_PLUGIN_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FI_ABI_VERSION_MAJOR 1
#define FI_ABI_VERSION_MINOR 1

/* The symbol every plugin exports (a function, see FI_PLUGIN_ENTRY). */
#define FI_PLUGIN_SYMBOL "fastinterp_plugin"
/* fastinterp's built-in kernel table: capsule name and exported symbol. */
#define FI_BUILTIN_CAPSULE "fastinterp.builtin_kernels"
#define FI_BUILTIN_SYMBOL "fastinterp_builtin_kernels"

#ifdef __cplusplus
#define FI_EXTERN_C extern "C"
extern "C" {
#else
#define FI_EXTERN_C
#endif

#if defined(_WIN32)
#define FI_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define FI_EXPORT __attribute__((visibility("default")))
#else
#define FI_EXPORT
#endif

/* ---- limits of fastinterp's Python-side caller ------------------------- */
/* fastinterp.plugins passes at most FI_MAX_ARRAYS tensors per call (inputs
 * and outputs together), each of at most FI_MAX_DIMS dimensions, at most
 * FI_MAX_PARAMS float and FI_MAX_PARAMS int parameters, and an error buffer
 * of FI_ERRBUF_SIZE bytes (longer messages are cut). C callers of a kernel
 * are not bound by these, but fastinterp's own kernels refuse more than
 * FI_MAX_DIMS dimensions. */
#define FI_MAX_ARRAYS 16
#define FI_MAX_DIMS 32
#define FI_MAX_PARAMS 16
#define FI_ERRBUF_SIZE 512

/* ---- status codes returned by kernels --------------------------------- */
#define FI_OK 0
#define FI_ERR_INVALID 1     /* a bad argument: count, shape, dtype, device  */
#define FI_ERR_UNSUPPORTED 2 /* valid, but not handled by this kernel        */
#define FI_ERR_NOMEM 3       /* an allocation failed                         */
#define FI_ERR_INTERNAL 4    /* anything else                                */

/* ---- DLPack-compatible descriptors ------------------------------------ */
/* Device types (DLDeviceType). */
#define FI_DEVICE_CPU 1
#define FI_DEVICE_CUDA 2

/* Type codes (DLDataTypeCode). */
#define FI_DTYPE_INT 0
#define FI_DTYPE_UINT 1
#define FI_DTYPE_FLOAT 2

/* DLDevice. */
typedef struct fi_device {
  int32_t device_type; /* FI_DEVICE_* */
  int32_t device_id;
} fi_device_t;

/* DLDataType: float32 is {FI_DTYPE_FLOAT, 32, 1}. */
typedef struct fi_dtype {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} fi_dtype_t;

/* DLTensor. The element at index (i0, ..., ik) lives at
 * (char*)data + byte_offset + (i0*strides[0] + ... + ik*strides[k]) * bits/8. */
typedef struct fi_tensor {
  void* data;
  fi_device_t device;
  int32_t ndim;
  fi_dtype_t dtype;
  int64_t* shape;   /* ndim sizes, each >= 0                                 */
  int64_t* strides; /* ndim strides in ELEMENTS (may be 0 or negative); never
                       NULL when ndim > 0 (DLPack >= 1.2)                    */
  uint64_t byte_offset;
} fi_tensor_t;

/* ---- calling conventions of built-in ops ------------------------------- */
/* A plugin kernel replacing a built-in op, and the same op in fastinterp's
 * exported table, take these arrays and parameters.
 *
 * lerp: inputs a, b, t, each with the output's shape (broadcast axes have
 * stride 0; a scalar t has stride 0 on every axis), one compact output;
 * out = a + t * (b - a), exact at t = 0 and t = 1 (PyTorch's formula).
 *
 * grid_sample: inputs x (N, C, H, W) and grid (N, H_out, W_out, 2), output
 * (N, C, H_out, W_out); with channels_last, x is (N, H, W, C) and the output
 * (N, H_out, W_out, C). All compact. params->ints = {mode, padding,
 * align_corners, channels_last}; missing trailing ints take the defaults
 * {FI_GRID_BILINEAR, FI_PAD_ZEROS, 0, 0}. Semantics are PyTorch's.       */
#define FI_GRID_NEAREST 0
#define FI_GRID_BILINEAR 1
#define FI_GRID_BICUBIC 2
#define FI_PAD_ZEROS 0
#define FI_PAD_BORDER 1
#define FI_PAD_REFLECTION 2

/* ---- the parameter block fastinterp passes to every kernel ------------ */
typedef struct fi_params {
  uint32_t struct_size; /* sizeof(fi_params_t) as the caller was built   */
  int32_t nthreads;     /* CPU threads the kernel may use (>= 1)         */
  int32_t n_floats;     /* number of entries in `floats`                 */
  int32_t n_ints;       /* number of entries in `ints`                   */
  const double* floats; /* the op's float parameters, in declared order  */
  const int64_t* ints;  /* the op's int parameters, in declared order    */
  void* stream;         /* CUDA: the cudaStream_t to use; NULL on CPU    */
  /* ---- 1.1 (read only when struct_size covers it: FI_PARAMS_HAS) ---- */
  /* Bit i set: inputs[i] is read-only memory (a read-only NumPy array, a
   * DLPack tensor flagged read-only). Inputs are `const` whatever the bit
   * says: a kernel never writes them; the bit is what a kernel that hands a
   * tensor on (e.g. as a DLPack 1.x DLManagedTensorVersioned, flag
   * DLPACK_FLAG_BITMASK_READ_ONLY) must report. Inputs past the 64th are
   * unmarked. Outputs are always writable.                              */
  uint64_t readonly_inputs;
} fi_params_t;

/* True if `params` (whose producer declared params->struct_size) has `field`. */
#define FI_PARAMS_HAS(params, field)                                       \
  ((params) != NULL &&                                                     \
   (params)->struct_size >= offsetof(fi_params_t, field) + sizeof((params)->field))

/* ---- the kernel signature --------------------------------------------- */
/* Inputs are read-only (never written, whatever params->readonly_inputs
 * says); outputs are preallocated by the caller. Returns FI_OK
 * or an FI_ERR_* code after writing a NUL-terminated message of at most
 * errbuf_size bytes into errbuf (errbuf may be NULL when errbuf_size is 0).
 * A kernel must be safe to call from several threads at once on different
 * outputs unless its entry sets FI_KERNEL_SERIAL. */
typedef int (*fi_kernel_fn)(const fi_tensor_t* inputs, int32_t n_inputs,
                            const fi_tensor_t* outputs, int32_t n_outputs,
                            const fi_params_t* params, char* errbuf,
                            size_t errbuf_size);

/* Kernel flags. */
#define FI_KERNEL_SERIAL 0x1u /* not reentrant: fastinterp serialises calls */

/* One kernel of a table. */
typedef struct fi_kernel {
  const char* op;      /* op name, [a-z][a-z0-9_]*                         */
  int32_t device_type; /* FI_DEVICE_*                                      */
  fi_dtype_t dtype;    /* the dtype of the op's arrays                     */
  fi_kernel_fn fn;     /* NULL: not supported (the entry is skipped)       */
  /* A new op's array signature, e.g. "x(...), y(...) -> out(...)" or
   * "a(m,k), b(k,n) -> c(m,n)": names bind sizes, "..." is a batch shape
   * shared by all operands that use it. NULL: callers must pass out=.
   * Ignored for a built-in op (its calling convention is fixed).         */
  const char* signature;
  /* The op's scalar parameters, e.g. "alpha: float = 1, k: int": floats
   * reach the kernel in params->floats, ints in params->ints, each in the
   * order declared here. NULL: none.                                     */
  const char* params;
  const char* doc;     /* one line shown in help(); NULL: none             */
  uint32_t flags;      /* FI_KERNEL_*                                      */
  uint32_t reserved;   /* 0                                                */
} fi_kernel_t;

/* The ABI a descriptor was compiled against. */
typedef struct fi_abi {
  uint32_t major;       /* FI_ABI_VERSION_MAJOR */
  uint32_t minor;       /* FI_ABI_VERSION_MINOR */
  uint32_t plugin_size; /* sizeof(fi_plugin_t)  */
  uint32_t kernel_size; /* sizeof(fi_kernel_t)  */
  uint32_t tensor_size; /* sizeof(fi_tensor_t)  */
  uint32_t params_size; /* sizeof(fi_params_t)  */
} fi_abi_t;

/* The plugin descriptor. */
typedef struct fi_plugin {
  fi_abi_t abi;               /* first, always: FI_ABI_INIT              */
  const char* name;           /* unique, [A-Za-z0-9_.-]+                 */
  const char* version;        /* the plugin's own version, free text     */
  const fi_kernel_t* kernels; /* n_kernels entries, abi.kernel_size apart */
  int64_t n_kernels;
  /* ---- 1.1 ---- */
  /* NULL: the plugin loads. Otherwise why it refuses to load here (e.g.
   * "needs AVX2"): fastinterp registers nothing and raises PluginError with
   * this text. It must stay valid until the entry point is called again;
   * fastinterp copies it at once. Set it with fi_plugin_refuse(), which also
   * empties the kernel table so that a 1.0 loader, which cannot read this
   * field, registers nothing either.                                     */
  const char* error;
} fi_plugin_t;

/* Initialiser for fi_plugin_t.abi with this header's version and sizes. */
#define FI_ABI_INIT                                                         \
  {                                                                         \
    FI_ABI_VERSION_MAJOR, FI_ABI_VERSION_MINOR,                             \
        (uint32_t)sizeof(fi_plugin_t), (uint32_t)sizeof(fi_kernel_t),       \
        (uint32_t)sizeof(fi_tensor_t), (uint32_t)sizeof(fi_params_t)        \
  }

/* Initialiser of a whole fi_plugin_t (every field of this minor):
 *     static fi_plugin_t plugin = FI_PLUGIN_INIT("mine", "1.0", kernels, 3); */
#define FI_PLUGIN_INIT(name, version, kernels, n_kernels) \
  { FI_ABI_INIT, (name), (version), (kernels), (int64_t)(n_kernels), NULL }

/* Size of each struct's 1.0 prefix: the smallest size any 1.x loader accepts. */
#define FI_PLUGIN_MIN_SIZE \
  ((uint32_t)(offsetof(fi_plugin_t, n_kernels) + sizeof(int64_t)))
#define FI_KERNEL_MIN_SIZE \
  ((uint32_t)(offsetof(fi_kernel_t, reserved) + sizeof(uint32_t)))
#define FI_PARAMS_MIN_SIZE \
  ((uint32_t)(offsetof(fi_params_t, stream) + sizeof(void*)))

/* The entry point's type, and the line that defines it in a plugin:
 *     FI_PLUGIN_ENTRY { return &my_plugin; }
 * It is called once per fastinterp.plugins.load(), under fastinterp's lock.
 * To refuse loading, return fi_plugin_refuse(&my_plugin, "why") (ABI 1.1);
 * returning NULL refuses too, but gives no reason.                       */
typedef const fi_plugin_t* (*fi_plugin_entry_fn)(void);
#define FI_PLUGIN_ENTRY FI_EXTERN_C FI_EXPORT const fi_plugin_t* fastinterp_plugin(void)

/* ---- helpers for kernel writers and C callers ------------------------- */
#if defined(__GNUC__)
#define FI_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define FI_PRINTF_LIKE(f, a)
#endif

/* Write a message into the error buffer and return `status`:
 *     return fi_error(errbuf, errbuf_size, FI_ERR_INVALID, "x has %d dims", n); */
static inline int fi_error(char* errbuf, size_t errbuf_size, int status,
                           const char* fmt, ...) FI_PRINTF_LIKE(4, 5);
static inline int fi_error(char* errbuf, size_t errbuf_size, int status,
                           const char* fmt, ...) {
  va_list args;
  if (errbuf != NULL && errbuf_size > 0) {
    va_start(args, fmt);
    vsnprintf(errbuf, errbuf_size, fmt, args);
    va_end(args);
  }
  return status;
}

/* Make `plugin` refuse to load with `message` (ABI 1.1) and return it:
 *     if (!cpu_has_avx2()) return fi_plugin_refuse(&plugin, "needs AVX2");
 * The kernel table is emptied so that a 1.0 loader registers nothing. */
static inline const fi_plugin_t* fi_plugin_refuse(fi_plugin_t* plugin,
                                                  const char* message) {
  plugin->kernels = NULL;
  plugin->n_kernels = 0;
  plugin->error = message != NULL ? message : "refused (no reason given)";
  return plugin;
}

/* A parameter block with every field of this minor: struct_size set,
 * nthreads 1, no parameters, no read-only inputs. C callers start from it:
 *     fi_params_t p; fi_params_init(&p); p.nthreads = 4; ...            */
static inline void fi_params_init(fi_params_t* params) {
  memset(params, 0, sizeof(*params));
  params->struct_size = (uint32_t)sizeof(*params);
  params->nthreads = 1;
}

/* 1 if the caller marked inputs[i] read-only, 0 if it marked it writable,
 * -1 if it cannot say (a 1.0 caller, or i outside 0..63). */
static inline int fi_input_readonly(const fi_params_t* params, int32_t i) {
  if (!FI_PARAMS_HAS(params, readonly_inputs) || i < 0 || i >= 64) return -1;
  return (int)((params->readonly_inputs >> i) & 1u);
}

/* True if `t` has dtype {code, bits, 1}. */
static inline int fi_dtype_is(const fi_tensor_t* t, uint8_t code, uint8_t bits) {
  return t->dtype.code == code && t->dtype.bits == bits && t->dtype.lanes == 1;
}

/* Number of elements of `t`. */
static inline int64_t fi_numel(const fi_tensor_t* t) {
  int64_t n = 1;
  int32_t d;
  for (d = 0; d < t->ndim; ++d) n *= t->shape[d];
  return n;
}

/* Stride of axis `d` in elements (compact row-major when strides is NULL,
 * which only a DLPack < 1.2 producer passes). */
static inline int64_t fi_stride(const fi_tensor_t* t, int32_t d) {
  int64_t s = 1;
  int32_t k;
  if (t->strides != NULL) return t->strides[d];
  for (k = t->ndim - 1; k > d; --k) s *= t->shape[k];
  return s;
}

/* True if `t` is compact row-major (axes of size 1 may have any stride, and
 * so may every axis of a tensor without elements). */
static inline int fi_is_contiguous(const fi_tensor_t* t) {
  int64_t expected = 1;
  int32_t d;
  if (t->strides == NULL || fi_numel(t) == 0) return 1;
  for (d = t->ndim - 1; d >= 0; --d) {
    if (t->shape[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->shape[d];
  }
  return 1;
}

/* Pointer to the first element of `t` (data + byte_offset). */
static inline void* fi_data(const fi_tensor_t* t) {
  return (void*)((char*)t->data + t->byte_offset);
}

/* The kernel of `table` for (op, device_type, dtype {code, bits, 1}), or NULL.
 * Walks the table by its own kernel size (policy rule 3). */
static inline const fi_kernel_t* fi_find_kernel(const fi_plugin_t* table,
                                                const char* op,
                                                int32_t device_type,
                                                uint8_t code, uint8_t bits) {
  int64_t i;
  const char* base;
  if (table == NULL || table->abi.major != FI_ABI_VERSION_MAJOR ||
      table->abi.kernel_size < FI_KERNEL_MIN_SIZE)
    return NULL;
  base = (const char*)table->kernels;
  for (i = 0; i < table->n_kernels; ++i) {
    const fi_kernel_t* k =
        (const fi_kernel_t*)(base + (size_t)i * table->abi.kernel_size);
    if (k->fn != NULL && k->op != NULL && strcmp(k->op, op) == 0 &&
        k->device_type == device_type && k->dtype.code == code &&
        k->dtype.bits == bits && k->dtype.lanes == 1)
      return k;
  }
  return NULL;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FASTINTERP_PLUGIN_H_ */
