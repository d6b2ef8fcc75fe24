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

#include "fuse_abi.h"
#include "follow.h"	/* native.h names struct rs_follow */
#include "native.h"
#include "ring.h"

#define RS_WAKE_TAG 0xffffffffffffffffULL
#define RS_FIXED_TAG (1ULL << 62)	/* | entry: a READ_FIXED / WRITE_FIXED of that entry */
#define RS_POOL_INDEX 0		/* io_uring buffer-table slot of a registered pool */
#define RS_STRAY (-100)		/* internal: a completion nobody waits for any more */

_Static_assert(sizeof(struct fuse_uring_cmd_req) == 40, "fuse_uring_cmd_req is 40 bytes");
_Static_assert(sizeof(struct fuse_uring_ent_in_out) == 32, "fuse_uring_ent_in_out is 32 bytes");
_Static_assert(sizeof(struct fuse_uring_req_header) == 288,
	       "fuse_uring_req_header is 288 bytes");

/* A completion rs_fixed_io took off the ring while waiting for its own, kept for rs_next. */
struct rs_cqe {
	uint64_t tag;
	int res;
};

/* A queue: what Python reads (struct rs_queue, first) and what only C touches. */
struct rs_ring {
	struct rs_queue q;
	int fuse_fd;
	int wake_fd;
	int ring_up;
	char **headers;
	struct iovec *iov;	/* two per entry: header, payload */
	char *pool;		/* pool modes: the queue's payload pool */
	uint8_t *ent_op;	/* per entry: FUSE_READ / FUSE_WRITE / 0 of the request it holds */
	uint8_t *ent_zc;	/* per entry: the request's pages are lent */
	uint8_t *ent_slot;	/* per entry: the request holds a pool slot */
	struct rs_cqe *stash;	/* completions set aside by rs_fixed_io (at most depth + 1) */
	unsigned stash_head, stash_len;
	struct io_uring ring;
};

static struct rs_ring *rs_ring_of(struct rs_queue *q)
{
	return (struct rs_ring *)q;
}

/* Entry idx's header buffer (page aligned: HEADER_BUFFER in queue.py). */
static struct fuse_uring_req_header *rs_req(struct rs_ring *r, unsigned idx)
{
	return (struct fuse_uring_req_header *)r->headers[idx];
}

static struct fuse_uring_ent_in_out *rs_ent(struct rs_ring *r, unsigned idx)
{
	return &rs_req(r, idx)->ring_ent_in_out;
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
	if (r->q.buf_mode == RS_BUF_POOL_FIXED) {
		/* every command of a queue whose pool is registered names it (else -EINVAL) */
		sqe->uring_cmd_flags = IORING_URING_CMD_FIXED;
		sqe->buf_index = RS_POOL_INDEX;
	}
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
	r->ent_op = calloc(depth, 1);
	r->ent_zc = calloc(depth, 1);
	r->ent_slot = calloc(depth, 1);
	r->stash = calloc(depth + 2, sizeof(*r->stash));
	if (!r->headers || !r->iov || !r->ent_op || !r->ent_zc || !r->ent_slot || !r->stash) {
		*err = -ENOMEM;
		goto fail;
	}
	r->q.depth = depth;
	r->q.qid = qid;
	r->fuse_fd = fuse_fd;
	r->wake_fd = wake_fd;

	/*
	 * One SQE per entry, the wake-up poll and a zero-copy READ_FIXED / WRITE_FIXED;
	 * twice as many CQEs so none overflow.
	 */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 2 * (depth + 2);
	ret = io_uring_queue_init_params(depth + 2, &r->ring, &p);
	if (ret == -EINVAL) {
		/* kernels before 5.18 lack SUBMIT_ALL; SQE128 itself is not optional */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
		p.cq_entries = 2 * (depth + 2);
		ret = io_uring_queue_init_params(depth + 2, &r->ring, &p);
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

/* Submit one SQE and take its completion, which the kernel posts during the submit. */
static int rs_sync_cmd(struct rs_ring *r, struct io_uring_sqe *sqe)
{
	struct io_uring_cqe *cqe;
	int ret;

	ret = io_uring_submit_and_wait(&r->ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_peek_cqe(&r->ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&r->ring, cqe);
	(void)sqe;
	return ret;
}

/*
 * Protocol 7.46: make this queue take its payload from a pool of `slots` buffers of
 * `slot_size` bytes at `pool` (ADD_QUEUE, then ADD_BUFPOOL), before any REGISTER.
 * registered: the pool goes into this ring's buffer table at RS_POOL_INDEX (io_uring
 * pins it long-term) and every command carries IORING_URING_CMD_FIXED and that index.
 * zero_copy: the queue is added with FUSE_URING_ZERO_COPY and entry i gets table slot
 * i + 1 for the client's pages (the table is sparse: the kernel fills those slots).
 * Returns 0 or -errno, and which step failed in last_idx (0 table, 1 ADD_QUEUE,
 * 2 ADD_BUFPOOL).
 */
int rs_queue_add_pool(struct rs_queue *q, void *pool, size_t slot_size, unsigned slots,
		      int registered, int zero_copy)
{
	struct rs_ring *r = rs_ring_of(q);
	struct fuse_uring_cmd_req *req;
	struct io_uring_sqe *sqe;
	struct iovec iov;
	size_t len = slot_size * (size_t)slots;
	int ret;

	if (!pool || slots == 0 || slots >= (1u << RS_BUF_BITS) || len > UINT32_MAX ||
	    slot_size > UINT32_MAX)
		return -EINVAL;
	q->last_idx = 0;
	if (registered || zero_copy) {
		ret = io_uring_register_buffers_sparse(&r->ring, q->depth + 1);
		if (ret < 0)
			return ret;
	}
	if (registered) {
		iov.iov_base = pool;
		iov.iov_len = len;
		ret = io_uring_register_buffers_update_tag(&r->ring, RS_POOL_INDEX, &iov, NULL, 1);
		if (ret < 0)
			return ret;
		if (ret != 1)
			return -EIO;
	}

	q->last_idx = 1;
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		return -EBUSY;
	rs_prep_cmd(r, sqe, 0, FUSE_IO_URING_CMD_ADD_QUEUE, 0);
	sqe->uring_cmd_flags = 0;	/* ADD_QUEUE names no buffer */
	sqe->buf_index = 0;
	req = (struct fuse_uring_cmd_req *)sqe->cmd;
	req->flags = zero_copy ? FUSE_URING_ZERO_COPY : 0;
	ret = rs_sync_cmd(r, sqe);
	if (ret < 0)
		return ret;

	q->last_idx = 2;
	sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		return -EBUSY;
	rs_prep_cmd(r, sqe, 0, FUSE_IO_URING_CMD_ADD_BUFPOOL, 0);
	if (registered) {
		sqe->uring_cmd_flags = IORING_URING_CMD_FIXED;
		sqe->buf_index = RS_POOL_INDEX;
	} else {
		sqe->uring_cmd_flags = 0;
		sqe->buf_index = 0;
	}
	req = (struct fuse_uring_cmd_req *)sqe->cmd;
	req->bufpool.uaddr = (uint64_t)(uintptr_t)pool;
	req->bufpool.len = (uint32_t)len;
	ret = rs_sync_cmd(r, sqe);
	if (ret < 0)
		return ret;

	r->pool = pool;
	q->buf_mode = registered ? RS_BUF_POOL_FIXED : RS_BUF_POOL;
	q->zero_copy = zero_copy;
	q->slot_size = (unsigned)slot_size;
	q->slots = slots;
	return 0;
}

int rs_queue_ring_fd(struct rs_queue *q)
{
	return rs_ring_of(q)->ring.ring_fd;
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
		if (q->buf_mode != RS_BUF_PER_ENTRY) {
			/* the payload comes from the pool: the entry brings none */
			r->iov[2 * i + 1].iov_base = NULL;
			r->iov[2 * i + 1].iov_len = 0;
		}
		if (q->zero_copy)
			((struct fuse_uring_cmd_req *)sqe->cmd)->ent_zero_copy_buf_index =
				(uint16_t)(i + 1);
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
 * Note what a delivered request is (for the counters) and encode it for Python:
 * payload_sz << RS_SIZE_SHIFT | RS_ZERO_COPY if its pages are lent | buffer << RS_IDX_BITS
 * | idx, where buffer is the payload buffer its data is in (the entry's own, or the pool
 * slot at `offset`).
 */
static long long rs_delivered(struct rs_ring *r, unsigned idx)
{
	struct rs_queue *q = &r->q;
	struct fuse_uring_ent_in_out *eio = rs_ent(r, idx);
	uint32_t opcode = ((const struct fuse_in_header *)rs_req(r, idx)->in_out)->opcode;
	uint32_t size = eio->payload_sz;
	int zc = (eio->flags & FUSE_URING_ENT_ZERO_COPY) != 0;
	unsigned buf = idx;
	int op = opcode == FUSE_READ || opcode == FUSE_WRITE ? (int)opcode : 0;

	q->requests++;
	r->ent_op[idx] = (uint8_t)op;
	r->ent_zc[idx] = (uint8_t)zc;
	if (zc && op)
		q->zc_requests++;
	else if (op == FUSE_WRITE && size > 0) {
		q->copied_requests++;
		q->copied_bytes += size;
	}
	if (q->buf_mode != RS_BUF_PER_ENTRY) {
		buf = eio->offset / q->slot_size;
		/*
		 * The kernel reports offset 0 both for slot 0 and for "no slot", so slot 0
		 * counts as held only when it brings request data.
		 */
		r->ent_slot[idx] = eio->offset != 0 || (size > 0 && !zc);
		if (r->ent_slot[idx] && ++q->slots_in_use > q->slots_hwm)
			q->slots_hwm = q->slots_in_use;
		if (buf >= q->slots) {
			q->last_res = -EBADMSG;
			q->last_idx = idx;
			return RS_ENTRY_ERROR;
		}
	}
	return ((long long)size << RS_SIZE_SHIFT) | (zc ? RS_ZERO_COPY : 0) |
	       ((long long)buf << RS_IDX_BITS) | (long long)idx;
}

/*
 * One completion (tag, res). A delivered request returns rs_delivered's code; an entry
 * that completed with an error returns RS_ENTRY_ERROR with last_idx and last_res set;
 * the wake-up poll returns RS_WOKEN.
 */
static long long rs_take_tag(struct rs_ring *r, uint64_t tag, int res)
{
	if (tag == RS_WAKE_TAG)
		return RS_WOKEN;
	if (tag & RS_FIXED_TAG)
		return RS_STRAY;	/* a transfer rs_fixed_io gave up waiting for: done now */
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
	return rs_delivered(r, (unsigned)tag);
}

static long long rs_take(struct rs_ring *r, struct io_uring_cqe *cqe)
{
	uint64_t tag = cqe->user_data;
	int res = cqe->res;

	io_uring_cqe_seen(&r->ring, cqe);
	return rs_take_tag(r, tag, res);
}

static long long rs_commit(struct rs_ring *r, unsigned idx, long result);

/*
 * datapath=native: answer a delivered READ or WRITE here, as the export would in
 * Python (transports/datapath/native.c), and queue its commit. Returns 1 when it did
 * (0 when the request goes to Python), or RS_WAIT_ERROR when the commit could not be
 * queued.
 */
static long long rs_serve_native(struct rs_ring *r, long long v)
{
	struct rs_queue *q = &r->q;
	struct rs_native *n = q->native;
	unsigned idx = (unsigned)(v & ((1 << RS_IDX_BITS) - 1));
	unsigned buf = (unsigned)(v >> RS_IDX_BITS & ((1 << RS_BUF_BITS) - 1));
	uint32_t payload_sz = (uint32_t)(v >> RS_SIZE_SHIFT);
	int write = r->ent_op[idx] == FUSE_WRITE;
	const char *op_in = rs_req(r, idx)->op_in;
	char *payload;
	size_t payload_len;
	uint64_t offset;
	uint32_t size;
	long res;

	if (!r->ent_op[idx])
		return 0;
	if (write) {
		const struct fuse_write_in *wi = (const struct fuse_write_in *)op_in;

		offset = wi->offset;
		size = wi->size;
	} else {
		const struct fuse_read_in *ri = (const struct fuse_read_in *)op_in;

		offset = ri->offset;
		size = ri->size;
	}
	if (q->buf_mode == RS_BUF_PER_ENTRY) {
		payload = r->iov[2 * idx + 1].iov_base;
		payload_len = r->iov[2 * idx + 1].iov_len;
	} else {
		payload = r->pool + (size_t)buf * q->slot_size;
		payload_len = q->slot_size;
	}
	if (r->ent_zc[idx]) {
		/* the client's pages are lent: READ_FIXED / WRITE_FIXED move the data */
		if (!rs_native_claim(n, write, offset, size))
			return 0;
		res = rs_native_count(n, write,
				      (long)rs_fixed_io(q, idx, n->image->fd, offset, size, write));
	} else if (write) {
		if (size > payload_sz) {
			n->deferred++;	/* malformed: the codec answers it */
			return 0;
		}
		res = rs_native_write(n, offset, size, payload);
	} else {
		res = rs_native_read(n, offset, size, payload, payload_len);
	}
	if (res == RS_NATIVE_DEFER)
		return 0;
	if (write && res >= 0) {
		struct fuse_write_out wo = { .size = (uint32_t)res };

		memcpy(payload, &wo, sizeof(wo));
		res = sizeof(wo);
	}
	return rs_commit(r, idx, res) < 0 ? RS_WAIT_ERROR : 1;
}

/*
 * Next completion. Replies prepared since the last call are submitted only when no
 * completion is waiting, so a burst is answered with one io_uring_enter, and at QD1
 * the reply and the wait for the next request are the same syscall. With a native data
 * path, READ and WRITE are answered here and the loop goes on.
 */
long long rs_next(struct rs_queue *q)
{
	struct rs_ring *r = rs_ring_of(q);
	struct io_uring_cqe *cqe;
	long long v, served;
	int ret;

	for (;;) {
		if (r->stash_len) {
			/* completions rs_fixed_io set aside come first */
			struct rs_cqe c = r->stash[r->stash_head];

			r->stash_head = (r->stash_head + 1) % (q->depth + 2);
			r->stash_len--;
			v = rs_take_tag(r, c.tag, c.res);
		} else {
			cqe = NULL;
			if (io_uring_peek_cqe(&r->ring, &cqe) != 0 || !cqe) {
				ret = io_uring_submit_and_wait(&r->ring, 1);
				q->enters++;
				if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -ETIME) {
					q->last_res = ret;
					return RS_WAIT_ERROR;
				}
				continue;
			}
			v = rs_take(r, cqe);
		}
		if (v == RS_STRAY)
			continue;
		if (v < 0 || !q->native)
			return v;
		served = rs_serve_native(r, v);
		if (served < 0)
			return served;
		if (served == 0)
			return v;
	}
}

static long long rs_commit(struct rs_ring *r, unsigned idx, long result)
{
	struct rs_queue *q = &r->q;
	struct fuse_uring_ent_in_out *eio = rs_ent(r, idx);
	struct fuse_out_header *oh = (struct fuse_out_header *)rs_req(r, idx)->in_out;
	uint64_t unique = eio->commit_id;
	struct io_uring_sqe *sqe;

	if (result < 0) {
		oh->error = (int32_t)result;
		eio->payload_sz = 0;
		oh->len = sizeof(*oh);
	} else {
		oh->error = 0;
		eio->payload_sz = (uint32_t)result;
		oh->len = sizeof(*oh) + (uint32_t)result;
	}
	oh->unique = unique;
	if (r->ent_op[idx] == FUSE_READ && !r->ent_zc[idx] && result > 0) {
		q->copied_requests++;
		q->copied_bytes += (uint64_t)result;
	}
	if (r->ent_slot[idx]) {
		r->ent_slot[idx] = 0;
		q->slots_in_use--;
	}

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
	return 0;
}

/*
 * Answer the request in entry idx and fetch the next one into it: write the
 * fuse_out_header (result < 0: an errno reply; else the reply data length, data
 * already in the payload buffer), set payload_sz, queue COMMIT_AND_FETCH with
 * commit_id = the request's unique, and return the next completion as rs_next does.
 */
long long rs_reply_next(struct rs_queue *q, unsigned idx, int result)
{
	long long ret = rs_commit(rs_ring_of(q), idx, result);

	return ret < 0 ? ret : rs_next(q);
}

/*
 * Zero-copy: move `len` bytes between `fd` at `file_offset` and the client's pages the
 * kernel lent to entry idx (its buffer-table slot idx + 1, addressed from 0): READ_FIXED
 * into them (to_file = 0, answering a READ) or WRITE_FIXED out of them (to_file = 1,
 * serving a WRITE). Waits for the transfer, continuing short ones; completions of other
 * entries that arrive meanwhile are kept for rs_next. Returns the bytes moved or -errno.
 */
long long rs_fixed_io(struct rs_queue *q, unsigned idx, int fd, uint64_t file_offset,
		      unsigned len, int to_file)
{
	struct rs_ring *r = rs_ring_of(q);
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	uint64_t want = RS_FIXED_TAG | idx;
	unsigned done = 0;
	int ret;

	if (idx >= q->depth || !q->zero_copy || !r->ent_zc[idx])
		return -EINVAL;
	while (done < len) {
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe) {
			io_uring_submit(&r->ring);
			sqe = io_uring_get_sqe(&r->ring);
			if (!sqe)
				return -EBUSY;
		}
		/* a plain 64-byte SQE in a 128-byte slot: clear the whole slot */
		memset(sqe, 0, 128);
		if (to_file)
			io_uring_prep_write_fixed(sqe, fd, (void *)(uintptr_t)done, len - done,
						  file_offset + done, (int)(idx + 1));
		else
			io_uring_prep_read_fixed(sqe, fd, (void *)(uintptr_t)done, len - done,
						 file_offset + done, (int)(idx + 1));
		sqe->user_data = want;
		q->fixed_ios++;
		for (;;) {
			ret = io_uring_submit_and_wait(&r->ring, 1);
			q->enters++;
			if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -ETIME)
				return ret;
			cqe = NULL;
			if (io_uring_peek_cqe(&r->ring, &cqe) != 0 || !cqe)
				continue;
			if (cqe->user_data == want)
				break;
			if (r->stash_len >= q->depth + 2)
				return -EOVERFLOW;	/* cannot happen: one completion per entry */
			r->stash[(r->stash_head + r->stash_len) % (q->depth + 2)] =
				(struct rs_cqe){ cqe->user_data, cqe->res };
			r->stash_len++;
			io_uring_cqe_seen(&r->ring, cqe);
		}
		ret = cqe->res;
		io_uring_cqe_seen(&r->ring, cqe);
		if (ret < 0)
			return ret;
		if (ret == 0)
			break;	/* end of file */
		done += (unsigned)ret;
	}
	q->zc_bytes += done;
	return done;
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
	free(r->ent_op);
	free(r->ent_zc);
	free(r->ent_slot);
	free(r->stash);
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

/* buffers=mlock: page-aligned, populated up front and locked in RAM by user space
 * (mlock; "pinned" is the kernel's long-term pin of a pool, 7.46); NULL with *err = -errno. */
void *rs_alloc_locked(size_t size, int *err)
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

void rs_free_locked(void *p, size_t size)
{
	munlock(p, size);
	munmap(p, size);
}

/* Page-aligned anonymous memory, populated up front but not locked (a pool). */
void *rs_alloc_pages(size_t size, int *err)
{
	void *p;

	*err = 0;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED) {
		*err = -errno;
		return NULL;
	}
	return p;
}

void rs_free_pages(void *p, size_t size)
{
	munmap(p, size);
}
