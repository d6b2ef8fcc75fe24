/*
 * The uring transport's C helpers, as Python sees them: transports/ring/build.py hands
 * this file to cffi's cdef and ring.c includes it, so the two cannot disagree. Only
 * what cdef parses: no preprocessor lines other than `#define NAME number`.
 *
 * One queue is one io_uring (SQE128) on the FUSE connection with `depth` entries.
 * rs_next and rs_reply_next return a delivered request as
 * (payload_sz << RS_IDX_BITS) | entry, or one of the negative codes below.
 */

#define RS_ENTRY_ERROR -1	/* an entry completed with an error: last_idx, last_res */
#define RS_WAIT_ERROR -2	/* waiting for completions failed: last_res */
#define RS_WOKEN -3		/* the wake-up eventfd fired */
#define RS_IDX_BITS 16

/* The fields Python reads; ring.c keeps the rest of a queue behind them. */
struct rs_queue {
	unsigned depth;
	unsigned qid;
	unsigned setup_flags;
	unsigned sq_entries;
	unsigned cq_entries;
	int fixed_file;
	uint64_t requests;	/* completions that delivered a request */
	uint64_t commits;	/* COMMIT_AND_FETCH SQEs prepared */
	uint64_t enters;	/* io_uring_enter calls made waiting */
	int last_res;
	unsigned last_idx;
};

struct rs_queue *rs_queue_create(unsigned depth, unsigned qid, int fuse_fd, int use_fixed,
				 int wake_fd, int *err);
int rs_queue_set_entry(struct rs_queue *q, unsigned idx, void *header, size_t header_len,
		       void *payload, size_t payload_len);
int rs_queue_register_all(struct rs_queue *q);
int rs_take_register_errors(struct rs_queue *q);
long long rs_next(struct rs_queue *q);
long long rs_reply_next(struct rs_queue *q, unsigned idx, int result);
void rs_queue_destroy(struct rs_queue *q);

void *rs_alloc_mapped(size_t size);
void rs_free_mapped(void *p);
void *rs_alloc_pinned(size_t size, int *err);
void rs_free_pinned(void *p, size_t size);
