/*
 * devfuse's client following (follow=on; follow.c says why and how), as Python sees it:
 * transports/native/build.py hands this file to cffi's cdef. Only what cdef parses.
 */

/* One /dev/fuse reader's following; written by its thread only. */
struct rs_follow {
	unsigned every;		/* look every this many requests */
	unsigned count;
	int cpu;		/* the CPU the thread is bound to now, or -1: its CPUs at start */
	uint64_t switches;	/* the thread's context switches at the last look */
	uint64_t looks;
	uint64_t moves;		/* times bound to a client's CPU */
	uint64_t releases;	/* times its CPUs were given back: requests queued up */
	int follow_policy;	/* scheduling policy while following a client (sched=) */
	int queue_policy;	/* ... and while requests queue up (SCHED_OTHER) */
	uint64_t policy_changes;
	int last_error;		/* errno of the last failed look or move, else 0 */
	int started;
	unsigned char start_mask[128];	/* the thread's CPUs at its first request */
};

/* Called with the pid (thread id) of each request the reader takes. */
void rs_follow(struct rs_follow *f, uint32_t pid);
