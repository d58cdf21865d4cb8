# Placement of an OpenMP team for one parallel region (see _team.h).
cdef extern from "_team.h" nogil:
    ctypedef struct fi_team:
        pass
    int fi_team_plan(fi_team* team, int nthreads)
    void fi_team_enter(fi_team* team)
    void fi_team_leave(fi_team* team)
    void fi_team_done(fi_team* team)
    void fi_omp_barrier() noexcept
    unsigned int fi_fp_enter() noexcept
    void fi_fp_leave(unsigned int saved) noexcept
