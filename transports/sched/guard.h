/*
 * The starvation guard of sched=idle (see guard.c), as Python sees it:
 * transports/native/build.py hands this file to cffi's cdef too. Only what cdef parses.
 */

/* One guarded thread; counters are written by the guard's thread only. */
struct rs_guard_thread {
	int tid;
	int boosted;		/* on the fallback policy now */
	uint64_t boosts;	/* times found starved and moved to the fallback policy */
	uint64_t restores;	/* times moved back to SCHED_IDLE after a hold */
	uint64_t boosted_ns;	/* time spent on the fallback policy (closed holds) */
	uint64_t hold_ns;	/* the hold the last boost got */
	int last_error;		/* errno of the last failed read or policy change, else 0 */
};

struct rs_guard {
	unsigned n;		/* threads watched; grows by rs_guard_add() */
	unsigned capacity;	/* entries of threads[] */
	struct rs_guard_thread *threads;
	uint64_t period_ns;	/* how often every thread is looked at */
	uint64_t hold_min_ns;	/* a boost lasts this long ... */
	uint64_t hold_max_ns;	/* ... doubled up to this while starvation keeps recurring */
	int fallback_policy;	/* SCHED_BATCH */
	uint64_t checks;	/* wake-ups of the guard's thread */
	void *priv;
};

int rs_guard_start(struct rs_guard *g);
void rs_guard_stop(struct rs_guard *g);
int rs_guard_add(struct rs_guard *g, int tid);
