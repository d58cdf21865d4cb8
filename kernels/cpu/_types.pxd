# Shared fused types for every CPU kernel.
ctypedef fused real:
    float
    double
