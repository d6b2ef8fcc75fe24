/*
 * The uring transport's C helpers, as Python sees them: transports/native/build.py hands
 * this file to cffi's cdef and ring.c includes it, so the two cannot disagree. Only
 * what cdef parses: no preprocessor lines other than `#define NAME number`.
 *
 * One queue is one io_uring (SQE128) on the FUSE connection with `depth` entries.
 * rs_next and rs_reply_next return a delivered request as
 *   payload_sz << RS_SIZE_SHIFT | RS_ZERO_COPY (if lent) | buffer << RS_IDX_BITS | entry
 * where `buffer` is the payload buffer holding its data: the entry's own one (per-entry
 * buffers) or the pool slot the kernel chose (pools); or one of the negative codes below.
 * With a native data path set, READ and WRITE are answered inside and never returned.
 */

#define RS_ENTRY_ERROR -1	/* an entry completed with an error: last_idx, last_res */
#define RS_WAIT_ERROR -2	/* waiting for completions failed: last_res */
#define RS_WOKEN -3		/* the wake-up eventfd fired */
#define RS_IDX_BITS 16
#define RS_BUF_BITS 15
#define RS_ZERO_COPY 0x80000000	/* the request's data pages are lent (FUSE_URING_ENT_ZERO_COPY) */
#define RS_SIZE_SHIFT 32

/* How a queue hands the kernel payload buffers. */
#define RS_BUF_PER_ENTRY 0	/* REGISTER carries each entry's payload buffer (6.14) */
#define RS_BUF_POOL 1		/* ADD_QUEUE + ADD_BUFPOOL; entries without payload (7.46) */
#define RS_BUF_POOL_FIXED 2	/* the pool also registered with io_uring: kernel pin (7.46) */

/* The fields Python reads; ring.c keeps the rest of a queue behind them. */
struct rs_queue {
	unsigned depth;
	unsigned qid;
	unsigned setup_flags;
	unsigned sq_entries;
	unsigned cq_entries;
	int fixed_file;
	int buf_mode;		/* RS_BUF_* */
	int zero_copy;		/* the queue was added with FUSE_URING_ZERO_COPY */
	unsigned slot_size;	/* pool modes: bytes per slot (the kernel's max_payload_sz) */
	unsigned slots;
	uint64_t requests;	/* completions that delivered a request */
	uint64_t commits;	/* COMMIT_AND_FETCH SQEs prepared */
	uint64_t enters;	/* io_uring_enter calls made waiting */
	/* data-carrying READ/WRITE (a READ replying data, a WRITE bringing data) */
	uint64_t zc_requests;		/* ... that arrived with FUSE_URING_ENT_ZERO_COPY */
	uint64_t zc_bytes;		/* ... bytes moved by READ_FIXED / WRITE_FIXED */
	uint64_t copied_requests;	/* ... whose data went through a payload buffer */
	uint64_t copied_bytes;
	uint64_t fixed_ios;		/* READ_FIXED / WRITE_FIXED SQEs submitted */
	unsigned slots_in_use;		/* pool slots held by requests being served */
	unsigned slots_hwm;		/* the most ever held at once */
	int last_res;
	unsigned last_idx;
	/* datapath=native: READ/WRITE served inside rs_next (transports/datapath/native.h);
	   NULL: every request goes to Python. Set before the first rs_next. */
	struct rs_native *native;
};

struct rs_queue *rs_queue_create(unsigned depth, unsigned qid, int fuse_fd, int use_fixed,
				 int wake_fd, int *err);
int rs_queue_set_entry(struct rs_queue *q, unsigned idx, void *header, size_t header_len,
		       void *payload, size_t payload_len);
int rs_queue_add_pool(struct rs_queue *q, void *pool, size_t slot_size, unsigned slots,
		      int registered, int zero_copy);
int rs_queue_register_all(struct rs_queue *q);
int rs_queue_ring_fd(struct rs_queue *q);
int rs_take_register_errors(struct rs_queue *q);
long long rs_next(struct rs_queue *q);
long long rs_reply_next(struct rs_queue *q, unsigned idx, int result);
long long rs_fixed_io(struct rs_queue *q, unsigned idx, int fd, uint64_t file_offset,
		      unsigned len, int to_file);
void rs_queue_destroy(struct rs_queue *q);

void *rs_alloc_mapped(size_t size);
void rs_free_mapped(void *p);
void *rs_alloc_locked(size_t size, int *err);
void rs_free_locked(void *p, size_t size);
void *rs_alloc_pages(size_t size, int *err);
void rs_free_pages(void *p, size_t size);
