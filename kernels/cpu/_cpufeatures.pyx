# cython: language_level=3
"""Which x86-64 feature level the running CPU (and its OS) supports.

Built once, for the baseline x86-64 target (it must run on any CPU): the
kernel variants are chosen from its answer (kernels/cpu/__init__.py).
``__builtin_cpu_supports`` reads CPUID and also checks that the OS saves the
wide registers (XGETBV), so a feature reported here is usable.
"""

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    #define FI_HAVE_CPU_PROBE 1
    #if defined(__clang__) || __GNUC__ < 12
    /* Older compilers do not know every name below: probe the core set. */
    #define FI_PROBE_FULL 0
    #else
    #define FI_PROBE_FULL 1
    #endif
    #define FI_CPU(name) __builtin_cpu_supports(name)
    #else
    #define FI_HAVE_CPU_PROBE 0
    #define FI_PROBE_FULL 0
    #define FI_CPU(name) 0
    #endif

    /* Names of the features reported, in the order of fi_cpu_probe's flags. */
    static const char* const fi_cpu_feature_names[] = {
        "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt",
        "avx", "avx2", "bmi", "bmi2", "fma", "f16c", "lzcnt", "movbe",
        "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"};
    #define FI_CPU_N_FEATURES 18

    /* flags[i] = 1 when feature i is usable, -1 when it could not be probed. */
    static void fi_cpu_probe(int* flags) {
    #if FI_HAVE_CPU_PROBE
        __builtin_cpu_init();
    #endif
        flags[0] = FI_CPU("sse3") != 0;
        flags[1] = FI_CPU("ssse3") != 0;
        flags[2] = FI_CPU("sse4.1") != 0;
        flags[3] = FI_CPU("sse4.2") != 0;
        flags[4] = FI_CPU("popcnt") != 0;
        flags[5] = FI_CPU("avx") != 0;
        flags[6] = FI_CPU("avx2") != 0;
        flags[7] = FI_CPU("bmi") != 0;
        flags[8] = FI_CPU("bmi2") != 0;
        flags[9] = FI_CPU("fma") != 0;
    #if FI_PROBE_FULL
        flags[10] = FI_CPU("f16c") != 0;
        flags[11] = FI_CPU("lzcnt") != 0;
        flags[12] = FI_CPU("movbe") != 0;
    #else
        flags[10] = flags[11] = flags[12] = -1;
    #endif
        flags[13] = FI_CPU("avx512f") != 0;
        flags[14] = FI_CPU("avx512bw") != 0;
        flags[15] = FI_CPU("avx512cd") != 0;
        flags[16] = FI_CPU("avx512dq") != 0;
        flags[17] = FI_CPU("avx512vl") != 0;
    }
    """
    int FI_HAVE_CPU_PROBE
    int FI_CPU_N_FEATURES
    const char* const* fi_cpu_feature_names
    void fi_cpu_probe(int* flags) noexcept nogil

#: The features each x86-64 level (the psABI's microarchitecture levels) adds.
LEVELS = {
    2: ("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"),
    3: ("avx", "avx2", "bmi", "bmi2", "fma", "f16c", "lzcnt", "movbe"),
    4: ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}


def features():
    """``{name: bool}`` for the probed x86 features; empty on other CPUs.

    A feature the compiler could not probe is left out.
    """
    cdef int flags[32]
    if not FI_HAVE_CPU_PROBE:
        return {}
    fi_cpu_probe(flags)
    return {fi_cpu_feature_names[i].decode(): bool(flags[i])
            for i in range(FI_CPU_N_FEATURES) if flags[i] >= 0}


def x86_level():
    """The highest x86-64 level (1-4) whose features are all usable; 0 when not x86."""
    found = features()
    if not found:
        return 0
    level = 1
    for lvl in (2, 3, 4):
        if not all(found.get(name, True) for name in LEVELS[lvl]):
            break
        level = lvl
    return level
