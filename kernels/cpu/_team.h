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
   of a millisecond or more. FASTINTERP_TEAM_BIND=0 turns it off (it is read
   only by fastinterp).

   Usage (Cython):
       fi_team_plan(&team, nthreads)            # before the region, caller's thread
       with nogil, parallel(num_threads=nthreads):
           fi_team_enter(&team)
           for i in prange(..., schedule="dynamic"): ...
           fi_team_leave(&team)                  # every thread, unconditionally
*/
#ifndef FASTINTERP_TEAM_H
#define FASTINTERP_TEAM_H

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define FI_TEAM_MAX 64

#if defined(__linux__)
#include <sched.h>

typedef struct {
    int active;
    int cpus[FI_TEAM_MAX];        /* CPU of each thread of the team */
    int bound[FI_TEAM_MAX];       /* whether thread t changed its mask */
    cpu_set_t saved[FI_TEAM_MAX]; /* thread t's mask before the region */
} fi_team;

/* FASTINTERP_TEAM_BIND=0 in the environment turns the placement off (read once). */
static int fi_team_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char* v = getenv("FASTINTERP_TEAM_BIND");
        enabled = !(v && v[0] == '0' && v[1] == '\0');
    }
    return enabled;
}

/* One bound team at a time (per extension module): concurrent callers, each
   with its own team, are left to the scheduler, which balances them better
   than fixed placements would. */
static int fi_team_busy = 0;

static void fi_team_plan(fi_team* team, int nthreads) {
    cpu_set_t allowed;
    int here, n = 0, t = 1;
    team->active = 0;
    if (nthreads < 2 || nthreads > FI_TEAM_MAX || !fi_team_enabled()) return;
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

static void fi_team_enter(fi_team* team) {
    int t = omp_get_thread_num();
    cpu_set_t one;
    if (!team->active || t >= FI_TEAM_MAX) return;
    if (sched_getaffinity(0, sizeof(cpu_set_t), &team->saved[t]) != 0) return;
    CPU_ZERO(&one);
    CPU_SET(team->cpus[t], &one);
    team->bound[t] = sched_setaffinity(0, sizeof(one), &one) == 0;
}

static void fi_team_leave(fi_team* team) {
    int t = omp_get_thread_num();
    if (!team->active || t >= FI_TEAM_MAX) return;
    if (team->bound[t]) {
        sched_setaffinity(0, sizeof(cpu_set_t), &team->saved[t]);
        team->bound[t] = 0;
    }
    if (t == 0)  /* the caller's thread runs every region once: the team is done */
        __atomic_store_n(&fi_team_busy, 0, __ATOMIC_RELEASE);
}

#else  /* not Linux: no placement */

typedef struct { int active; } fi_team;
static void fi_team_plan(fi_team* team, int nthreads) { (void)nthreads; team->active = 0; }
static void fi_team_enter(fi_team* team) { (void)team; }
static void fi_team_leave(fi_team* team) { (void)team; }

#endif
#endif  /* FASTINTERP_TEAM_H */
