"""cffi API-mode builder for the uring transport's binding to liburing (>= 2.3).

Compiled at install time (setup.py `cffi_modules`) into `transports._uring_cffi`.
The per-request path is two C calls (`rs_reply_next`, which commits one reply and
returns the next request, and the codec): header and SQE bytes are written here in C
rather than attribute by attribute through cffi, which would cost far more than the
request itself. Blocking calls release the GIL (cffi's default for API-mode calls).

Layouts follow include/uapi/linux/fuse.h (protocol 7.42+); Debian 12's header is
older, so the few structs the ring needs are declared here.
"""

from __future__ import annotations

import shlex
import subprocess

from cffi import FFI

CDEF = """
#define RS_HEADER_SIZE ...
#define RS_ENT_IN_OUT_OFFSET ...
#define RS_OP_IN_OFFSET ...
#define RS_ENTRY_ERROR ...
#define RS_WAIT_ERROR ...
#define RS_WOKEN ...
#define RS_IDX_BITS ...

struct rs_queue {
    unsigned depth;
    unsigned qid;
    unsigned setup_flags;
    unsigned sq_entries;
    unsigned cq_entries;
    int fixed_file;
    uint64_t requests;
    uint64_t commits;
    uint64_t enters;
    int last_res;
    unsigned last_idx;
    ...;
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

unsigned rs_sqe_size(void);
unsigned rs_cmd_req_size(void);
"""

SOURCE = r"""
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <liburing.h>

#define RS_HEADER_SIZE 288
#define RS_ENT_IN_OUT_OFFSET 256
#define RS_OP_IN_OFFSET 128
#define RS_ENTRY_ERROR -1
#define RS_WAIT_ERROR -2
#define RS_WOKEN -3
#define RS_IDX_BITS 16
#define RS_WAKE_TAG 0xffffffffffffffffULL

/* enum fuse_uring_cmd */
#define RS_CMD_REGISTER 1
#define RS_CMD_COMMIT_AND_FETCH 2

struct rs_cmd_req {          /* struct fuse_uring_cmd_req, lives in sqe->cmd */
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

struct rs_ent_in_out {       /* struct fuse_uring_ent_in_out */
    uint64_t flags;
    uint64_t commit_id;
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};

struct rs_out_header {       /* struct fuse_out_header */
    uint32_t len;
    int32_t error;
    uint64_t unique;
};

_Static_assert(sizeof(struct rs_cmd_req) == 24, "fuse_uring_cmd_req is 24 bytes");
_Static_assert(sizeof(struct rs_ent_in_out) == 32, "fuse_uring_ent_in_out is 32 bytes");
_Static_assert(RS_ENT_IN_OUT_OFFSET + sizeof(struct rs_ent_in_out) == RS_HEADER_SIZE,
               "fuse_uring_req_header is 288 bytes");

struct rs_queue {
    unsigned depth;
    unsigned qid;
    unsigned setup_flags;
    unsigned sq_entries;
    unsigned cq_entries;
    int fixed_file;
    uint64_t requests;       /* completions that delivered a request */
    uint64_t commits;        /* COMMIT_AND_FETCH SQEs prepared */
    uint64_t enters;         /* io_uring_enter calls made waiting */
    int last_res;
    unsigned last_idx;
    int fuse_fd;
    int wake_fd;
    int ring_up;
    char **headers;
    struct iovec *iov;       /* two per entry: header, payload */
    struct io_uring ring;
};

static void rs_prep_cmd(struct rs_queue *q, struct io_uring_sqe *sqe, unsigned idx,
                        uint32_t cmd_op, uint64_t commit_id)
{
    struct rs_cmd_req *req;

    /* SQE128: the SQE is two 64-byte slots, its cmd area the last 80 bytes */
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    if (q->fixed_file) {
        sqe->flags = IOSQE_FIXED_FILE;
        sqe->fd = 0;
    } else {
        sqe->fd = q->fuse_fd;
    }
    sqe->cmd_op = cmd_op;
    sqe->user_data = idx;
    req = (struct rs_cmd_req *)sqe->cmd;
    req->commit_id = commit_id;
    req->qid = (uint16_t)q->qid;
}

struct rs_queue *rs_queue_create(unsigned depth, unsigned qid, int fuse_fd, int use_fixed,
                                 int wake_fd, int *err)
{
    struct io_uring_params p;
    struct rs_queue *q;
    int ret;

    *err = 0;
    if (depth == 0 || depth >= (1u << RS_IDX_BITS)) {
        *err = -EINVAL;
        return NULL;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        *err = -ENOMEM;
        return NULL;
    }
    q->headers = calloc(depth, sizeof(*q->headers));
    q->iov = calloc(2 * (size_t)depth, sizeof(*q->iov));
    if (!q->headers || !q->iov) {
        *err = -ENOMEM;
        goto fail;
    }
    q->depth = depth;
    q->qid = qid;
    q->fuse_fd = fuse_fd;
    q->wake_fd = wake_fd;

    /* one SQE per entry plus the wake-up poll; twice as many CQEs so none overflow */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
    p.cq_entries = 2 * (depth + 1);
    ret = io_uring_queue_init_params(depth + 1, &q->ring, &p);
    if (ret == -EINVAL) {
        /* kernels before 5.18 lack SUBMIT_ALL; SQE128 itself is not optional */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
        p.cq_entries = 2 * (depth + 1);
        ret = io_uring_queue_init_params(depth + 1, &q->ring, &p);
    }
    if (ret < 0) {
        *err = ret;
        goto fail;
    }
    q->ring_up = 1;
    q->setup_flags = p.flags;
    q->sq_entries = p.sq_entries;
    q->cq_entries = p.cq_entries;

    if (use_fixed) {
        ret = io_uring_register_files(&q->ring, &fuse_fd, 1);
        if (ret < 0) {
            *err = ret;
            goto fail;
        }
        q->fixed_file = 1;
    }
    return q;

fail:
    rs_queue_destroy(q);
    return NULL;
}

int rs_queue_set_entry(struct rs_queue *q, unsigned idx, void *header, size_t header_len,
                       void *payload, size_t payload_len)
{
    if (idx >= q->depth || header_len < RS_HEADER_SIZE)
        return -EINVAL;
    q->headers[idx] = header;
    q->iov[2 * idx].iov_base = header;
    q->iov[2 * idx].iov_len = header_len;
    q->iov[2 * idx + 1].iov_base = payload;
    q->iov[2 * idx + 1].iov_len = payload_len;
    return 0;
}

/* Queue REGISTER for every entry and the wake-up poll, then submit them all. */
int rs_queue_register_all(struct rs_queue *q)
{
    struct io_uring_sqe *sqe;
    unsigned i;

    for (i = 0; i < q->depth; i++) {
        if (!q->headers[i])
            return -EINVAL;
        sqe = io_uring_get_sqe(&q->ring);
        if (!sqe)
            return -EBUSY;
        rs_prep_cmd(q, sqe, i, RS_CMD_REGISTER, 0);
        sqe->addr = (uint64_t)(uintptr_t)&q->iov[2 * i];
        sqe->len = 2;
    }
    if (q->wake_fd >= 0) {
        sqe = io_uring_get_sqe(&q->ring);
        if (!sqe)
            return -EBUSY;
        io_uring_prep_poll_add(sqe, q->wake_fd, POLLIN);
        sqe->user_data = RS_WAKE_TAG;
    }
    return io_uring_submit(&q->ring);
}

/*
 * A REGISTER the kernel refuses completes during the submit itself, so its CQE is
 * already there when io_uring_submit returns; a delivered request arrives later, via
 * task work. Consume the leading error completions (the count is returned, the first
 * error and its entry are in last_res/last_idx) and leave anything else for rs_next.
 */
int rs_take_register_errors(struct rs_queue *q)
{
    struct io_uring_cqe *cqe;
    int failed = 0;

    for (;;) {
        cqe = NULL;
        if (io_uring_peek_cqe(&q->ring, &cqe) != 0 || !cqe)
            return failed;
        if (cqe->res >= 0 || cqe->user_data >= q->depth)
            return failed;
        if (failed == 0) {
            q->last_res = cqe->res;
            q->last_idx = (unsigned)cqe->user_data;
        }
        failed++;
        io_uring_cqe_seen(&q->ring, cqe);
    }
}

/*
 * Consume one CQE. A delivered request returns (payload_sz << RS_IDX_BITS) | idx;
 * an entry that completed with an error returns RS_ENTRY_ERROR with last_idx and
 * last_res set; the wake-up poll returns RS_WOKEN.
 */
static long long rs_take(struct rs_queue *q, struct io_uring_cqe *cqe)
{
    uint64_t tag = cqe->user_data;
    int res = cqe->res;
    struct rs_ent_in_out *eio;

    io_uring_cqe_seen(&q->ring, cqe);
    if (tag == RS_WAKE_TAG)
        return RS_WOKEN;
    if (tag >= q->depth) {
        q->last_res = -EBADMSG;
        q->last_idx = (unsigned)tag;
        return RS_WAIT_ERROR;
    }
    if (res != 0) {
        q->last_res = res;
        q->last_idx = (unsigned)tag;
        return RS_ENTRY_ERROR;
    }
    eio = (struct rs_ent_in_out *)(q->headers[tag] + RS_ENT_IN_OUT_OFFSET);
    q->requests++;
    return ((long long)eio->payload_sz << RS_IDX_BITS) | (long long)tag;
}

/*
 * Next completion. Replies prepared since the last call are submitted only when no
 * completion is waiting, so a burst is answered with one io_uring_enter, and at QD1
 * the reply and the wait for the next request are the same syscall.
 */
long long rs_next(struct rs_queue *q)
{
    struct io_uring_cqe *cqe;
    int ret;

    for (;;) {
        cqe = NULL;
        if (io_uring_peek_cqe(&q->ring, &cqe) == 0 && cqe)
            return rs_take(q, cqe);
        ret = io_uring_submit_and_wait(&q->ring, 1);
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
    char *h = q->headers[idx];
    struct rs_ent_in_out *eio = (struct rs_ent_in_out *)(h + RS_ENT_IN_OUT_OFFSET);
    struct rs_out_header *oh = (struct rs_out_header *)h;
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

    sqe = io_uring_get_sqe(&q->ring);
    if (!sqe) {
        /* cannot happen: one SQE slot per entry; flush and retry all the same */
        io_uring_submit(&q->ring);
        sqe = io_uring_get_sqe(&q->ring);
        if (!sqe) {
            q->last_res = -EBUSY;
            q->last_idx = idx;
            return RS_WAIT_ERROR;
        }
    }
    rs_prep_cmd(q, sqe, idx, RS_CMD_COMMIT_AND_FETCH, unique);
    q->commits++;
    return rs_next(q);
}

void rs_queue_destroy(struct rs_queue *q)
{
    if (!q)
        return;
    if (q->ring_up)
        io_uring_queue_exit(&q->ring);
    free(q->headers);
    free(q->iov);
    free(q);
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

unsigned rs_sqe_size(void)
{
    return sizeof(struct io_uring_sqe);
}

unsigned rs_cmd_req_size(void)
{
    return sizeof(struct rs_cmd_req);
}
"""


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "liburing"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out)


def _build() -> FFI:
    libs = [a[2:] for a in _pkg_config("--libs-only-l")] or ["uring"]
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "transports._uring_cffi",
        SOURCE,
        libraries=libs,
        include_dirs=[a[2:] for a in _pkg_config("--cflags-only-I")],
        library_dirs=[a[2:] for a in _pkg_config("--libs-only-L")],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    )
    return ffi


ffibuilder = _build()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
