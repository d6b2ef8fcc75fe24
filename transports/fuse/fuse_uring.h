/*
 * The part of the kernel's FUSE ABI that FUSE-over-io_uring needs (include/uapi/linux/
 * fuse.h up to protocol 7.46; Debian 12's <linux/fuse.h> is 7.38 and has none of it),
 * stated once for both sides: transports/ring/ring.c includes it, and
 * transports/fuse/abi.py parses it with cffi (no compiler needed) and derives its sizes,
 * offsets, struct formats and the constants below from it. tests/test_abi_kernel.py
 * compares every one of them with the kernel's own header when one is at hand.
 *
 * Only what cffi's cdef parser reads: fixed-width types (the includer provides
 * <stdint.h>), explicit padding, no preprocessor lines other than `#define NAME number`.
 */

#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

/* INIT flags (64-bit; bits 32..63 travel in flags2) */
#define FUSE_OVER_IO_URING 0x20000000000		/* 1 << 41: the server speaks the ring */
#define FUSE_HAS_IO_URING_BUFPOOL 0x80000000000	/* 1 << 43 (7.46): the kernel takes pools */

/* fuse_open_out.open_flags (7.46): READ/WRITE of this open file may be zero-copied */
#define FOPEN_IO_URING_ZERO_COPY 0x100			/* 1 << 8 */

/* fuse_uring_ent_in_out.flags (7.46): the payload's pages are lent, not copied */
#define FUSE_URING_ENT_ZERO_COPY 0x1

/* fuse_uring_cmd_req.flags of ADD_QUEUE (7.46): zero-copy queue (CAP_SYS_ADMIN, pool) */
#define FUSE_URING_ZERO_COPY 0x1

/* The two opcodes the ring's own counters tell apart (zero-copied or copied data); the
   rest of enum fuse_opcode is in abi.py, which tests check against these. */
enum fuse_opcode {
	FUSE_READ = 15,
	FUSE_WRITE = 16,
};

struct fuse_out_header {
	uint32_t len;
	int32_t error;		/* 0 or a negative errno */
	uint64_t unique;
};

/* Per-entry state the kernel and the server exchange, after the two headers. */
struct fuse_uring_ent_in_out {
	uint64_t flags;		/* FUSE_URING_ENT_ZERO_COPY */
	uint64_t commit_id;	/* the request's unique; echoed by COMMIT_AND_FETCH */
	uint32_t payload_sz;	/* bytes in the payload buffer, in both directions */
	uint32_t offset;	/* 7.46, was padding: where the payload sits in the pool */
	uint64_t reserved;
};

/* The header buffer of one ring entry (the payload buffer is separate). */
struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ];	/* fuse_in_header / fuse_out_header */
	char op_in[FUSE_URING_OP_IN_OUT_SZ];		/* the opcode's own header */
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

/* sqe->cmd_op of an IORING_OP_URING_CMD on /dev/fuse */
enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
	FUSE_IO_URING_CMD_ADD_QUEUE = 3,	/* 7.46: flags = FUSE_URING_ZERO_COPY or 0 */
	FUSE_IO_URING_CMD_ADD_BUFPOOL = 4,	/* 7.46: bufpool = the queue's payload pool */
};

/* Lives in sqe->cmd (SQE128). */
struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
	union {		/* 7.46 */
		struct {
			uint64_t uaddr;		/* ADD_BUFPOOL: the pool's base */
			uint32_t len;		/* its length: len / max_payload_sz slots */
			uint32_t reserved;	/* must be 0 */
		} bufpool;
		/* REGISTER on a zero-copy queue: the io_uring buffer-table slot (not 0) where
		   the kernel lends the request's pages */
		uint16_t ent_zero_copy_buf_index;
	};
};
