/* Placement of one OpenMP team for the length of one parallel region.

   On small VMs (2 vCPUs) the scheduler can leave both threads of a team of 2
   on one vCPU: each then spins at the region's barriers on the CPU the other
   needs, and a step that takes 5 ms on one thread takes whole 4 ms scheduler
   ticks (~16 ms) on two. OMP_PROC_BIND=true avoids it, but it is a
   process-wide setting (every library sharing the OpenMP runtime would see it)
   and it binds the caller's thread for good.

   Instead, each fastinterp region binds its own threads, and only while it
   runs: the caller (thread 0) to the CPU it is on, thread t to the t-th other
   CPU of the caller's allowed set. Each thread restores its previous affinity
   mask before the region ends, so nothing is left changed when the kernel
   returns. With fewer allowed CPUs than threads (or more than FI_TEAM_MAX
   threads, or off Linux) nothing is bound. Cost: three system calls per
   thread per region (a few microseconds); regions only go parallel for work
   of a millisecond or more. FASTINTERP_TEAM_CONTROL=0 turns this and the
   back-off below off (the variable is read only by fastinterp).

   A team also needs its CPUs: when another process keeps one busy, a member
   of the team is descheduled for whole ticks while the others wait for it at
   the closing barrier, and one thread would have been faster. fi_team_done
   notices a region that took longer than its threads' summed CPU time (what
   one thread would have needed) and runs the next regions on one thread for
   a while before trying a team again.

   Every OpenMP region of fastinterp's CPU kernels is written this way; a
   new one should be too (tests/test_threads.py checks each op family).

   Usage (Cython):
       nthreads = fi_team_plan(&team, nthreads)  # before the region, caller's thread
       with nogil, parallel(num_threads=nthreads):
           fi_team_enter(&team)
           for i in prange(..., schedule="dynamic"): ...
           fi_team_leave(&team)                  # every thread, unconditionally
       fi_team_done(&team)                       # after the region, caller's thread

   Plan right before the region (no return in between: a planned placement
   is released by the region's fi_team_leave). Per-thread scratch indexed by
   the thread number may be sized by the requested count: the plan never
   returns more. Orphaned barriers inside the region are fine as long as
   every thread also reaches fi_team_leave.
*/
#ifndef FASTINTERP_TEAM_H
#define FASTINTERP_TEAM_H

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Subnormal numbers are computed as IEEE 754 says in every thread of a region:
   the caller's thread may run with flush-to-zero / denormals-are-zero set (an
   XLA host callback, torch.set_flush_denormal(True)) while the team's other
   threads, created elsewhere, do not, so one result held flushed and unflushed
   parts. The rounding mode likewise: a caller that set another one (fesetround,
   an interval-arithmetic library) would round its share of the work its way and
   the team's other threads to nearest, so the bits changed with the thread count.
   Each thread computes with FTZ and DAZ cleared and rounding to nearest on entering
   a region, and restores its own setting on leaving it. */
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <xmmintrin.h>
#define FI_MXCSR_NON_IEEE 0xE040u   /* FTZ (0x8000), DAZ (0x0040), rounding control (0x6000) */
static inline unsigned int fi_fp_enter(void) {
    unsigned int saved = _mm_getcsr();
    if (saved & FI_MXCSR_NON_IEEE) _mm_setcsr(saved & ~FI_MXCSR_NON_IEEE);
    return saved;
}
static inline void fi_fp_leave(unsigned int saved) {
    if (saved & FI_MXCSR_NON_IEEE) _mm_setcsr(saved);
}
#else
static inline unsigned int fi_fp_enter(void) { return 0; }
static inline void fi_fp_leave(unsigned int saved) { (void)saved; }
#endif

/* An orphaned OpenMP barrier: binds to the enclosing parallel region
   (Cython's prange inside a parallel block ends with "nowait"). */
static inline void fi_omp_barrier(void) {
#pragma omp barrier
}

#define FI_TEAM_MAX 64

#if defined(__linux__)
#include <sched.h>
#include <time.h>

static double fi_thread_cpu(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    int active;
    int timed;                    /* fi_team_done judges this region */
    int nthreads;
    double t0;                    /* region start (wall clock) */
    double cpu[FI_TEAM_MAX];      /* CPU time each thread spent on its share */
    int cpus[FI_TEAM_MAX];        /* CPU of each thread of the team */
    int bound[FI_TEAM_MAX];       /* whether thread t changed its mask */
    cpu_set_t saved[FI_TEAM_MAX]; /* thread t's mask before the region */
    unsigned int fp[FI_TEAM_MAX]; /* thread t's floating-point control before it */
} fi_team;

/* FASTINTERP_TEAM_CONTROL=0 in the environment turns placement and back-off
   off (read once): plain OpenMP regions. */
static int fi_team_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char* v = getenv("FASTINTERP_TEAM_CONTROL");
        enabled = !(v && v[0] == '0' && v[1] == '\0');
    }
    return enabled;
}

/* One bound team at a time (per extension module): concurrent callers, each
   with its own team, are left to the scheduler, which balances them better
   than fixed placements would. */
static int fi_team_busy = 0;

static void fi_team_bind_plan(fi_team* team, int nthreads) {
    cpu_set_t allowed;
    int here, n = 0, t = 1;
    if (nthreads > FI_TEAM_MAX) return;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
    if (CPU_COUNT(&allowed) < nthreads) return;
    here = sched_getcpu();
    if (here < 0 || here >= CPU_SETSIZE || !CPU_ISSET(here, &allowed)) return;
    team->cpus[0] = here;
    for (n = 0; n < CPU_SETSIZE && t < nthreads; n++)
        if (n != here && CPU_ISSET(n, &allowed)) team->cpus[t++] = n;
    if (t < nthreads) return;
    if (__atomic_exchange_n(&fi_team_busy, 1, __ATOMIC_ACQ_REL)) return;
    memset(team->bound, 0, sizeof(team->bound));
    team->active = 1;
}

/* Until this time (omp_get_wtime seconds) regions run on one thread. */
static double fi_team_retry_at = 0.0;

/* Before the region, on the caller's thread: the team size to use (1 while
   backing off after a stalled team, see fi_team_done) and the placement. */
static int fi_team_plan(fi_team* team, int nthreads) {
    double retry_at;
    team->active = 0;
    team->timed = 0;
    if (nthreads < 2) return nthreads < 1 ? 1 : nthreads;
    if (!fi_team_enabled()) return nthreads;
    team->t0 = omp_get_wtime();
    __atomic_load(&fi_team_retry_at, &retry_at, __ATOMIC_RELAXED);
    if (team->t0 < retry_at) return 1;         /* backing off: one thread */
    if (nthreads > FI_TEAM_MAX) return nthreads;
    team->timed = 1;
    team->nthreads = nthreads;
    memset(team->cpu, 0, sizeof(team->cpu));
    fi_team_bind_plan(team, nthreads);
    return nthreads;
}

static void fi_team_enter(fi_team* team) {
    int t = omp_get_thread_num();
    cpu_set_t one;
    if (t < FI_TEAM_MAX) team->fp[t] = fi_fp_enter();
    if (team->timed && t < FI_TEAM_MAX) team->cpu[t] = -fi_thread_cpu();
    if (!team->active || t >= FI_TEAM_MAX) return;
    if (sched_getaffinity(0, sizeof(cpu_set_t), &team->saved[t]) != 0) return;
    CPU_ZERO(&one);
    CPU_SET(team->cpus[t], &one);
    team->bound[t] = sched_setaffinity(0, sizeof(one), &one) == 0;
}

static void fi_team_leave(fi_team* team) {
    int t = omp_get_thread_num();
    if (t < FI_TEAM_MAX) fi_fp_leave(team->fp[t]);
    if (team->timed && t < FI_TEAM_MAX) team->cpu[t] += fi_thread_cpu();
    if (!team->active || t >= FI_TEAM_MAX) return;
    if (team->bound[t]) {
        sched_setaffinity(0, sizeof(cpu_set_t), &team->saved[t]);
        team->bound[t] = 0;
    }
    if (t == 0)  /* the caller's thread runs every region once: the team is done */
        __atomic_store_n(&fi_team_busy, 0, __ATOMIC_RELEASE);
}

/* After the region, on the caller's thread. The threads' CPU times add up to
   about what one thread would have taken; if the region's wall time was
   longer than that, the team was slower than one thread: a member was
   not running (other processes keep the CPUs busy) and the others waited for
   it at the closing barrier. After two such regions in a row (one alone may
   be a one-off, such as the page faults of freshly allocated state), the next
   regions of this module run on one thread for a while (8 times the CPU time
   of the region, at least 20 ms; twice and four times that after further slow
   teams in a row) before a team is tried again. Results do not depend on it:
   every kernel is bit-identical for any thread count. */
static int fi_team_strikes = 0;

static void fi_team_done(fi_team* team) {
    double end, wall, cpu = 0.0, pause, retry_at;
    int t;
    if (!team->timed) return;
    end = omp_get_wtime();
    wall = end - team->t0;
    for (t = 0; t < team->nthreads; t++) cpu += team->cpu[t] > 0 ? team->cpu[t] : 0.0;
    if (wall < 1e-3 || wall <= cpu) {
        __atomic_store_n(&fi_team_strikes, 0, __ATOMIC_RELAXED);
        return;
    }
    t = __atomic_add_fetch(&fi_team_strikes, 1, __ATOMIC_RELAXED);
    if (t < 2) return;
    pause = 8.0 * cpu;
    pause = (pause > 0.02 ? pause : 0.02) * (double)(1 << (t - 2 < 2 ? t - 2 : 2));
    retry_at = end + pause;
    __atomic_store(&fi_team_retry_at, &retry_at, __ATOMIC_RELAXED);
}

#else  /* not Linux: no placement */

typedef struct { int active; unsigned int fp[FI_TEAM_MAX]; } fi_team;
static int fi_team_plan(fi_team* team, int nthreads) {
    team->active = 0;
    return nthreads < 1 ? 1 : nthreads;
}
static void fi_team_enter(fi_team* team) {
    int t = omp_get_thread_num();
    if (t < FI_TEAM_MAX) team->fp[t] = fi_fp_enter();
}
static void fi_team_leave(fi_team* team) {
    int t = omp_get_thread_num();
    if (t < FI_TEAM_MAX) fi_fp_leave(team->fp[t]);
}
static void fi_team_done(fi_team* team) { (void)team; }

#endif
#endif  /* FASTINTERP_TEAM_H */
