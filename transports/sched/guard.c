/*
 * The starvation guard of sched=idle (uring's queue threads, devfuse's readers).
 *
 * A CPU whose only runnable tasks are SCHED_IDLE counts as idle, so with SCHED_IDLE serving
 * threads the client a reply wakes stays on its CPU instead of being sent to the other,
 * idle one. The price: a SCHED_IDLE thread gets almost no CPU while anything else in its
 * scheduling group (the server's session, or its cgroup) wants that CPU, and requests then
 * wait for hundreds of milliseconds.
 *
 * The guard is a thread of its own that looks at every serving thread once a period. A
 * thread is starved when it was runnable at two looks in a row and did not run in
 * between (neither its CPU time nor its count of times scheduled moved; a running thread's
 * CPU time moves at every tick, hence a period longer than a tick), or when over the last
 * ten periods it waited on a runqueue for more than half the time and ran for less than
 * a fifth of its wait: it gets a slice now and then, far too rarely (measured with two
 * CPU hogs in its group: 3% running, 83% waiting). Sharing a CPU with a busy client is
 * not that (at QD16: 20% running, 24% waiting). Only a thread that runs SCHED_IDLE at
 * that moment is taken for starved (devfuse's follower runs its readers SCHED_OTHER while
 * requests queue up). The guard moves it to the fallback policy (SCHED_BATCH) for a hold,
 * then back to SCHED_IDLE unless the thread chose another policy meanwhile. Starvation
 * again soon after a hold ends doubles the next hold, up to hold_max: under lasting CPU
 * load a thread spends nearly all its time on the fallback policy and pays at most two
 * periods of waiting per hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"

struct rs_guard_look {
	int stat_fd;		/* /proc/TID/task/TID/stat: the state */
	int schedstat_fd;	/* /proc/TID/task/TID/schedstat: CPU time, times scheduled */
	int gone;
	char state;
	unsigned long long runtime, pcount;
	unsigned long long window_delay;	/* run delay at the start of the window */
	unsigned long long window_runtime;	/* CPU time at the start of the window */
	uint64_t window_start;
	uint64_t boosted_at, restore_at, restored_at;
};

#define RS_GUARD_WINDOW 10	/* periods over which the share of waiting is judged */

struct rs_guard_priv {
	pthread_t thread;
	int stop;
	unsigned opened;	/* threads whose files are open (the guard's thread's count) */
	struct rs_guard_look *looks;	/* g->capacity of them */
};

static uint64_t rs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int rs_read_proc(int fd, char *buf, size_t len)
{
	ssize_t n = pread(fd, buf, len - 1, 0);

	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

static int rs_look(struct rs_guard_look *l, char *state, unsigned long long *runtime,
		   unsigned long long *delay, unsigned long long *pcount)
{
	char buf[1024], *p;
	int err = rs_read_proc(l->stat_fd, buf, sizeof(buf));

	if (err)
		return err;
	p = strrchr(buf, ')');	/* the thread's name may hold spaces and parentheses */
	if (!p || p[1] != ' ' || !p[2])
		return -EINVAL;
	*state = p[2];
	err = rs_read_proc(l->schedstat_fd, buf, sizeof(buf));
	if (err)
		return err;
	/* CPU time, time waiting on a runqueue (both ns), times scheduled */
	if (sscanf(buf, "%llu %llu %llu", runtime, delay, pcount) != 3)
		return -EINVAL;
	return 0;
}

static int rs_set_policy(int tid, int policy)
{
	struct sched_param sp = { 0 };

	return sched_setscheduler(tid, policy, &sp) ? -errno : 0;
}

static void rs_guard_check(struct rs_guard *g, struct rs_guard_thread *t,
			   struct rs_guard_look *l, uint64_t now)
{
	unsigned long long runtime, delay, pcount;
	int err, window_over;
	char state;

	if (l->gone)
		return;
	err = rs_look(l, &state, &runtime, &delay, &pcount);
	window_over = l->window_start && now - l->window_start >= RS_GUARD_WINDOW * g->period_ns;
	if (err == -ESRCH || err == -ENOENT) {
		/* The thread ended. Its files were opened while it lived: a TID reused by
		   another thread is never looked at, nor changed. */
		l->gone = 1;
		return;
	}
	if (err) {
		t->last_error = -err;
		return;
	}
	if (t->boosted) {
		if (now >= l->restore_at) {
			/* Back to SCHED_IDLE only from the fallback we set: a thread that chose
			   another policy meanwhile (devfuse's follower) keeps it. */
			err = sched_getscheduler(t->tid) == g->fallback_policy ?
			      rs_set_policy(t->tid, SCHED_IDLE) : 0;
			if (err) {
				t->last_error = -err;
			} else {
				t->boosted = 0;
				t->restores++;
				t->boosted_ns += now - l->boosted_at;
				l->restored_at = now;
			}
		}
	} else if (((state == 'R' && l->state == 'R' && runtime == l->runtime &&
		     pcount == l->pcount) ||
		    (window_over && delay - l->window_delay >= (now - l->window_start) / 2 &&
		     (runtime - l->window_runtime) * 5 < delay - l->window_delay)) &&
		   sched_getscheduler(t->tid) == SCHED_IDLE) {	/* only SCHED_IDLE starves so */
		uint64_t hold = g->hold_min_ns;

		if (l->restored_at && now - l->restored_at < 2 * t->hold_ns)
			hold = t->hold_ns * 2 < g->hold_max_ns ? t->hold_ns * 2 : g->hold_max_ns;
		/* It was alive at this look: its TID is still its own. */
		err = rs_set_policy(t->tid, g->fallback_policy);
		if (err) {
			t->last_error = -err;
		} else {
			t->boosted = 1;
			t->boosts++;
			t->hold_ns = hold;
			l->boosted_at = now;
			l->restore_at = now + hold;
		}
	}
	if (!l->window_start || window_over || t->boosted) {
		l->window_start = now;
		l->window_delay = delay;
		l->window_runtime = runtime;
	}
	l->state = state;
	l->runtime = runtime;
	l->pcount = pcount;
}

static int rs_guard_open(struct rs_guard *g, unsigned n);

static void *rs_guard_main(void *arg)
{
	struct rs_guard *g = arg;
	struct rs_guard_priv *pv = g->priv;
	struct timespec period = {
		.tv_sec = g->period_ns / 1000000000u,
		.tv_nsec = g->period_ns % 1000000000u,
	};

	while (!__atomic_load_n(&pv->stop, __ATOMIC_ACQUIRE)) {
		uint64_t now;
		unsigned i;

		unsigned n;

		nanosleep(&period, NULL);
		n = __atomic_load_n(&g->n, __ATOMIC_ACQUIRE);
		rs_guard_open(g, n);
		now = rs_now_ns();
		g->checks++;
		for (i = 0; i < n; i++)
			rs_guard_check(g, &g->threads[i], &pv->looks[i], now);
	}
	return NULL;
}

static void rs_guard_free(struct rs_guard *g)
{
	struct rs_guard_priv *pv = g->priv;
	unsigned i;

	if (!pv)
		return;
	for (i = 0; i < pv->opened; i++) {
		if (pv->looks[i].stat_fd >= 0)
			close(pv->looks[i].stat_fd);
		if (pv->looks[i].schedstat_fd >= 0)
			close(pv->looks[i].schedstat_fd);
	}
	free(pv->looks);
	free(pv);
	g->priv = NULL;
}

static int rs_open_task_file(int tid, const char *name)
{
	char path[64];

	/* By TID alone: the thread may belong to another process (a peer server). */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/%s", tid, tid, name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Open the files of threads [pv->opened, n): one that has already ended is gone. The files
   are opened while the thread lives, so a reused TID is never looked at. */
static int rs_guard_open(struct rs_guard *g, unsigned n)
{
	struct rs_guard_priv *pv = g->priv;
	int err = 0;

	for (; pv->opened < n; pv->opened++) {
		struct rs_guard_look *l = &pv->looks[pv->opened];
		int tid = g->threads[pv->opened].tid;

		l->stat_fd = rs_open_task_file(tid, "stat");
		l->schedstat_fd = rs_open_task_file(tid, "schedstat");
		if (l->stat_fd < 0 || l->schedstat_fd < 0) {
			err = -errno;
			l->gone = 1;
		}
	}
	return err;
}

int rs_guard_add(struct rs_guard *g, int tid)
{
	unsigned n = __atomic_load_n(&g->n, __ATOMIC_ACQUIRE);

	if (n >= g->capacity)
		return -ENOSPC;
	memset(&g->threads[n], 0, sizeof(g->threads[n]));
	g->threads[n].tid = tid;
	/* Only this caller adds, and the guard reads threads[n] only after it sees n + 1. */
	__atomic_store_n(&g->n, n + 1, __ATOMIC_RELEASE);
	return 0;
}

int rs_guard_start(struct rs_guard *g)
{
	struct rs_guard_priv *pv;
	unsigned i;
	int err;

	if (g->priv || !g->period_ns || !g->hold_min_ns || g->hold_max_ns < g->hold_min_ns)
		return -EINVAL;
	pv = calloc(1, sizeof(*pv));
	if (!pv)
		return -ENOMEM;
	g->priv = pv;
	if (g->capacity < g->n)
		g->capacity = g->n;
	pv->looks = calloc(g->capacity ? g->capacity : 1, sizeof(*pv->looks));
	if (!pv->looks) {
		free(pv);
		g->priv = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < g->capacity; i++)
		pv->looks[i].stat_fd = pv->looks[i].schedstat_fd = -1;
	/* The threads given at start must all be there: a missing one is a caller's error. */
	err = rs_guard_open(g, g->n);
	if (err) {
		rs_guard_free(g);
		return err;
	}
	/* SCHED_OTHER whatever the creating thread runs under: a guard that inherited
	   SCHED_IDLE would starve with the threads it is there to rescue. */
	pthread_attr_t attr;
	struct sched_param sp = { .sched_priority = 0 };

	pthread_attr_init(&attr);
	pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
	pthread_attr_setschedparam(&attr, &sp);
	err = pthread_create(&pv->thread, &attr, rs_guard_main, g);
	pthread_attr_destroy(&attr);
	if (err) {
		rs_guard_free(g);
		return -err;
	}
	pthread_setname_np(pv->thread, "sched-guard");
	return 0;
}

void rs_guard_stop(struct rs_guard *g)
{
	struct rs_guard_priv *pv = g->priv;
	uint64_t now;
	unsigned i;

	if (!pv)
		return;
	__atomic_store_n(&pv->stop, 1, __ATOMIC_RELEASE);
	pthread_join(pv->thread, NULL);
	now = rs_now_ns();
	for (i = 0; i < pv->opened; i++)
		if (g->threads[i].boosted)
			g->threads[i].boosted_ns += now - pv->looks[i].boosted_at;
	rs_guard_free(g);
}
