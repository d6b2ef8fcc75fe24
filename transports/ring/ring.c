/*
 * The uring transport's per-queue ring, on liburing (>= 2.3).
 *
 * The per-request path is two C calls from Python (rs_reply_next, which commits one
 * reply and returns the next request, and the codec): reply headers and SQEs are
 * written here rather than field by field through cffi, which would cost far more
 * than the request itself. Blocking calls release the GIL (cffi's default for
 * API-mode calls).
 */

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <liburing.h>

#include "fuse_uring.h"
#include "ring.h"

#define RS_WAKE_TAG 0xffffffffffffffffULL

_Static_assert(sizeof(struct fuse_uring_cmd_req) == 40, "fuse_uring_cmd_req is 40 bytes");
_Static_assert(sizeof(struct fuse_uring_ent_in_out) == 32, "fuse_uring_ent_in_out is 32 bytes");
_Static_assert(sizeof(struct fuse_uring_req_header) == 288,
	       "fuse_uring_req_header is 288 bytes");

/* A queue: what Python reads (struct rs_queue, first) and what only C touches. */
struct rs_ring {
	struct rs_queue q;
	int fuse_fd;
	int wake_fd;
	int ring_up;
	char **headers;
	struct iovec *iov;	/* two per entry: header, payload */
	struct io_uring ring;
};

static struct rs_ring *rs_ring_of(struct rs_queue *q)
{
	return (struct rs_ring *)q;
}

static struct fuse_uring_ent_in_out *rs_ent(struct rs_ring *r, unsigned idx)
{
	return &((struct fuse_uring_req_header *)r->headers[idx])->ring_ent_in_out;
}

static void rs_prep_cmd(struct rs_ring *r, struct io_uring_sqe *sqe, unsigned idx,
			uint32_t cmd_op, uint64_t commit_id)
{
	struct fuse_uring_cmd_req *req;

	/* SQE128: the SQE is two 64-byte slots, its cmd area the last 80 bytes */
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	if (r->q.fixed_file) {
		sqe->flags = IOSQE_FIXED_FILE;
		sqe->fd = 0;
	} else {
		sqe->fd = r->fuse_fd;
	}
	sqe->cmd_op = cmd_op;
	sqe->user_data = idx;
	req = (struct fuse_uring_cmd_req *)sqe->cmd;
	req->commit_id = commit_id;
	req->qid = (uint16_t)r->q.qid;
}

struct rs_queue *rs_queue_create(unsigned depth, unsigned qid, int fuse_fd, int use_fixed,
				 int wake_fd, int *err)
{
	struct io_uring_params p;
	struct rs_ring *r;
	int ret;

	*err = 0;
	if (depth == 0 || depth >= (1u << RS_IDX_BITS)) {
		*err = -EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	r->headers = calloc(depth, sizeof(*r->headers));
	r->iov = calloc(2 * (size_t)depth, sizeof(*r->iov));
	if (!r->headers || !r->iov) {
		*err = -ENOMEM;
		goto fail;
	}
	r->q.depth = depth;
	r->q.qid = qid;
	r->fuse_fd = fuse_fd;
	r->wake_fd = wake_fd;

	/* one SQE per entry plus the wake-up poll; twice as many CQEs so none overflow */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 2 * (depth + 1);
	ret = io_uring_queue_init_params(depth + 1, &r->ring, &p);
	if (ret == -EINVAL) {
		/* kernels before 5.18 lack SUBMIT_ALL; SQE128 itself is not optional */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
		p.cq_entries = 2 * (depth + 1);
		ret = io_uring_queue_init_params(depth + 1, &r->ring, &p);
	}
	if (ret < 0) {
		*err = ret;
		goto fail;
	}
	r->ring_up = 1;
	r->q.setup_flags = p.flags;
	r->q.sq_entries = p.sq_entries;
	r->q.cq_entries = p.cq_entries;

	if (use_fixed) {
		ret = io_uring_register_files(&r->ring, &fuse_fd, 1);
		if (ret < 0) {
			*err = ret;
			goto fail;
		}
		r->q.fixed_file = 1;
	}
	return &r->q;

fail:
	rs_queue_destroy(&r->q);
	return NULL;
}

int rs_queue_set_entry(struct rs_queue *q, unsigned idx, void *header, size_t header_len,
		       void *payload, size_t payload_len)
{
	struct rs_ring *r = rs_ring_of(q);

	if (idx >= q->depth || header_len < sizeof(struct fuse_uring_req_header))
		return -EINVAL;
	r->headers[idx] = header;
	r->iov[2 * idx].iov_base = header;
	r->iov[2 * idx].iov_len = header_len;
	r->iov[2 * idx + 1].iov_base = payload;
	r->iov[2 * idx + 1].iov_len = payload_len;
	return 0;
}

/* Queue REGISTER for every entry and the wake-up poll, then submit them all. */
int rs_queue_register_all(struct rs_queue *q)
{
	struct rs_ring *r = rs_ring_of(q);
	struct io_uring_sqe *sqe;
	unsigned i;

	for (i = 0; i < q->depth; i++) {
		if (!r->headers[i])
			return -EINVAL;
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			return -EBUSY;
		rs_prep_cmd(r, sqe, i, FUSE_IO_URING_CMD_REGISTER, 0);
		sqe->addr = (uint64_t)(uintptr_t)&r->iov[2 * i];
		sqe->len = 2;
	}
	if (r->wake_fd >= 0) {
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_poll_add(sqe, r->wake_fd, POLLIN);
		sqe->user_data = RS_WAKE_TAG;
	}
	return io_uring_submit(&r->ring);
}

/*
 * A REGISTER the kernel refuses completes during the submit itself, so its CQE is
 * already there when io_uring_submit returns; a delivered request arrives later, via
 * task work. Consume the leading error completions (the count is returned, the first
 * error and its entry are in last_res/last_idx) and leave anything else for rs_next.
 */
int rs_take_register_errors(struct rs_queue *q)
{
	struct rs_ring *r = rs_ring_of(q);
	struct io_uring_cqe *cqe;
	int failed = 0;

	for (;;) {
		cqe = NULL;
		if (io_uring_peek_cqe(&r->ring, &cqe) != 0 || !cqe)
			return failed;
		if (cqe->res >= 0 || cqe->user_data >= q->depth)
			return failed;
		if (failed == 0) {
			q->last_res = cqe->res;
			q->last_idx = (unsigned)cqe->user_data;
		}
		failed++;
		io_uring_cqe_seen(&r->ring, cqe);
	}
}

/*
 * Consume one CQE. A delivered request returns (payload_sz << RS_IDX_BITS) | idx;
 * an entry that completed with an error returns RS_ENTRY_ERROR with last_idx and
 * last_res set; the wake-up poll returns RS_WOKEN.
 */
static long long rs_take(struct rs_ring *r, struct io_uring_cqe *cqe)
{
	uint64_t tag = cqe->user_data;
	int res = cqe->res;

	io_uring_cqe_seen(&r->ring, cqe);
	if (tag == RS_WAKE_TAG)
		return RS_WOKEN;
	if (tag >= r->q.depth) {
		r->q.last_res = -EBADMSG;
		r->q.last_idx = (unsigned)tag;
		return RS_WAIT_ERROR;
	}
	if (res != 0) {
		r->q.last_res = res;
		r->q.last_idx = (unsigned)tag;
		return RS_ENTRY_ERROR;
	}
	r->q.requests++;
	return ((long long)rs_ent(r, (unsigned)tag)->payload_sz << RS_IDX_BITS) | (long long)tag;
}

/*
 * Next completion. Replies prepared since the last call are submitted only when no
 * completion is waiting, so a burst is answered with one io_uring_enter, and at QD1
 * the reply and the wait for the next request are the same syscall.
 */
long long rs_next(struct rs_queue *q)
{
	struct rs_ring *r = rs_ring_of(q);
	struct io_uring_cqe *cqe;
	int ret;

	for (;;) {
		cqe = NULL;
		if (io_uring_peek_cqe(&r->ring, &cqe) == 0 && cqe)
			return rs_take(r, cqe);
		ret = io_uring_submit_and_wait(&r->ring, 1);
		q->enters++;
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -ETIME) {
			q->last_res = ret;
			return RS_WAIT_ERROR;
		}
	}
}

/*
 * Answer the request in entry idx and fetch the next one into it: write the
 * fuse_out_header (result < 0: an errno reply; else the reply data length, data
 * already in the payload buffer), set payload_sz, queue COMMIT_AND_FETCH with
 * commit_id = the request's unique, and return the next completion as rs_next does.
 */
long long rs_reply_next(struct rs_queue *q, unsigned idx, int result)
{
	struct rs_ring *r = rs_ring_of(q);
	struct fuse_uring_ent_in_out *eio = rs_ent(r, idx);
	struct fuse_out_header *oh = (struct fuse_out_header *)r->headers[idx];
	uint64_t unique = eio->commit_id;
	struct io_uring_sqe *sqe;

	if (result < 0) {
		oh->error = result;
		eio->payload_sz = 0;
		oh->len = sizeof(*oh);
	} else {
		oh->error = 0;
		eio->payload_sz = (uint32_t)result;
		oh->len = sizeof(*oh) + (uint32_t)result;
	}
	oh->unique = unique;

	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		/* cannot happen: one SQE slot per entry; flush and retry all the same */
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe) {
			q->last_res = -EBUSY;
			q->last_idx = idx;
			return RS_WAIT_ERROR;
		}
	}
	rs_prep_cmd(r, sqe, idx, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, unique);
	q->commits++;
	return rs_next(q);
}

void rs_queue_destroy(struct rs_queue *q)
{
	struct rs_ring *r = rs_ring_of(q);

	if (!q)
		return;
	if (r->ring_up)
		io_uring_queue_exit(&r->ring);
	free(r->headers);
	free(r->iov);
	free(r);
}

void *rs_alloc_mapped(size_t size)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, size) != 0)
		return NULL;
	return p;
}

void rs_free_mapped(void *p)
{
	free(p);
}

/* Page-aligned, populated up front and locked in RAM; NULL with *err = -errno. */
void *rs_alloc_pinned(size_t size, int *err)
{
	void *p;

	*err = 0;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED) {
		*err = -errno;
		return NULL;
	}
	if (mlock(p, size) != 0) {
		*err = -errno;
		munmap(p, size);
		return NULL;
	}
	return p;
}

void rs_free_pinned(void *p, size_t size)
{
	munlock(p, size);
	munmap(p, size);
}
