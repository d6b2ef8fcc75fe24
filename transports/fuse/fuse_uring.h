/*
 * The part of the kernel's FUSE ABI that FUSE-over-io_uring needs (include/uapi/linux/
 * fuse.h, protocol 7.42; Debian 12's <linux/fuse.h> is 7.38 and has none of it), stated
 * once for both sides: transports/ring/ring.c includes it, and transports/fuse/abi.py parses
 * it with cffi (no compiler needed) and derives its sizes, offsets and struct formats
 * from it.
 *
 * Only what cffi's cdef parser reads: fixed-width types (the includer provides
 * <stdint.h>), explicit padding, no preprocessor lines other than `#define NAME number`.
 */

#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

struct fuse_out_header {
	uint32_t len;
	int32_t error;		/* 0 or a negative errno */
	uint64_t unique;
};

/* Per-entry state the kernel and the server exchange, after the two headers. */
struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* the request's unique; echoed by COMMIT_AND_FETCH */
	uint32_t payload_sz;	/* bytes in the payload buffer, in both directions */
	uint32_t padding;
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
};

/* Lives in sqe->cmd (SQE128). */
struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
