/*
 * The kernel's FUSE ABI as Ringside uses it: the structs of include/uapi/linux/fuse.h
 * that Ringside reads or writes (protocol 7.42) and FUSE-over-io_uring's (7.42, with the
 * 7.46 additions; Debian 12's <linux/fuse.h> is 7.38 and has none of the ring), stated
 * once for C and Python, as libfuse reads requests through fuse_kernel.h:
 *   - the C (transports/builtin/uring/ring.c, transports/datapath/native.c) includes it and reads
 *     requests and writes replies through these structs' members;
 *   - transports/fuse/abi.py parses it with cffi in ABI mode (no compiler) and builds its
 *     struct formats, sizes, offsets and the constants below from it;
 *   - transports/native/build.py hands it to cffi's cdef, and cffi checks at build time
 *     that the compiler lays every struct out as it parsed them.
 * tests/test_abi_kernel.py compares every struct's size and every field's offset and size
 * with the kernel's own header: Debian 12's for the structs it has, on every host; a 7.46
 * header (RINGSIDE_KERNEL_FUSE_H) for the ring's.
 *
 * Only what cffi's cdef parser reads: fixed-width types (the includer provides
 * <stdint.h>), no implicit padding (abi.py refuses it), no preprocessor lines other than
 * `#define NAME number`. Field names are the kernel's; abi.py turns fields named padding,
 * dummy, unused* and spare into pad bytes of its struct formats.
 */

/* Reply sizes of older protocols (the kernel's FUSE_COMPAT_*): the codec answers a
   kernel of minor < 9 (attr_out, write_in), < 4 (statfs), < 5 and < 23 (init_out). */
#define FUSE_COMPAT_ATTR_OUT_SIZE 96
#define FUSE_COMPAT_WRITE_IN_SIZE 24
#define FUSE_COMPAT_STATFS_SIZE 48
#define FUSE_COMPAT_INIT_OUT_SIZE 8
#define FUSE_COMPAT_22_INIT_OUT_SIZE 24

/* -- every request and reply ---------------------------------------------------------- */

/* The two opcodes the C answers itself (the native data path) and the ring counts apart;
   the rest of enum fuse_opcode is in abi.py, which tests check against these. */
enum fuse_opcode {
	FUSE_READ = 15,
	FUSE_WRITE = 16,
};

struct fuse_in_header {
	uint32_t len;
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid;
	uint32_t gid;
	uint32_t pid;		/* the thread that made the request (devfuse follows it) */
	uint16_t total_extlen;	/* 7.36: extensions after the op header, in 8-byte units */
	uint16_t padding;
};

struct fuse_out_header {
	uint32_t len;
	int32_t error;		/* 0 or a negative errno */
	uint64_t unique;
};

/* -- the op headers (fuse_in_header, then one of these, then any payload) -------------- */

struct fuse_init_in {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint32_t flags2;	/* 7.36: INIT flags 32..63, with FUSE_INIT_EXT */
	uint32_t unused[11];
};

struct fuse_init_out {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t max_write;
	uint32_t time_gran;
	uint16_t max_pages;
	uint16_t map_alignment;
	uint32_t flags2;
	uint32_t max_stack_depth;	/* 7.40 */
	uint32_t unused[6];	/* the kernel's request_timeout (7.42) and unused[11]: we send 0 */
};

struct fuse_attr {
	uint64_t ino;
	uint64_t size;
	uint64_t blocks;
	uint64_t atime;
	uint64_t mtime;
	uint64_t ctime;
	uint32_t atimensec;
	uint32_t mtimensec;
	uint32_t ctimensec;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint32_t rdev;
	uint32_t blksize;
	uint32_t flags;
};

struct fuse_attr_out {
	uint64_t attr_valid;
	uint32_t attr_valid_nsec;
	uint32_t dummy;
	struct fuse_attr attr;
};

struct fuse_getattr_in {
	uint32_t getattr_flags;
	uint32_t dummy;
	uint64_t fh;
};

struct fuse_setattr_in {
	uint32_t valid;		/* FATTR_* */
	uint32_t padding;
	uint64_t fh;
	uint64_t size;
	uint64_t lock_owner;
	uint64_t atime;
	uint64_t mtime;
	uint64_t ctime;
	uint32_t atimensec;
	uint32_t mtimensec;
	uint32_t ctimensec;
	uint32_t mode;
	uint32_t unused4;
	uint32_t uid;
	uint32_t gid;
	uint32_t unused5;
};

struct fuse_open_in {
	uint32_t flags;
	uint32_t open_flags;
};

struct fuse_open_out {
	uint64_t fh;
	uint32_t open_flags;	/* FOPEN_* */
	int32_t backing_id;	/* 7.40 (passthrough); was padding */
};

struct fuse_read_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t size;
	uint32_t read_flags;
	uint64_t lock_owner;
	uint32_t flags;
	uint32_t padding;
};

/* Before 7.9 only its first FUSE_COMPAT_WRITE_IN_SIZE bytes; the data follows it. */
struct fuse_write_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t size;
	uint32_t write_flags;
	uint64_t lock_owner;
	uint32_t flags;
	uint32_t padding;
};

struct fuse_write_out {
	uint32_t size;
	uint32_t padding;
};

struct fuse_flush_in {
	uint64_t fh;
	uint32_t unused;
	uint32_t padding;
	uint64_t lock_owner;
};

struct fuse_release_in {
	uint64_t fh;
	uint32_t flags;
	uint32_t release_flags;
	uint64_t lock_owner;
};

struct fuse_fsync_in {
	uint64_t fh;
	uint32_t fsync_flags;
	uint32_t padding;
};

struct fuse_fallocate_in {
	uint64_t fh;
	uint64_t offset;
	uint64_t length;
	uint32_t mode;
	uint32_t padding;
};

struct fuse_lseek_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t whence;
	uint32_t padding;
};

struct fuse_lseek_out {
	uint64_t offset;
};

/* STATFS's reply (fuse_statfs_out holds nothing else) */
struct fuse_kstatfs {
	uint64_t blocks;
	uint64_t bfree;
	uint64_t bavail;
	uint64_t files;
	uint64_t ffree;
	uint32_t bsize;
	uint32_t namelen;
	uint32_t frsize;
	uint32_t padding;
	uint32_t spare[6];
};

struct fuse_interrupt_in {
	uint64_t unique;
};

struct fuse_forget_in {
	uint64_t nlookup;
};

/* BATCH_FORGET: fuse_batch_forget_in, then `count` of these */
struct fuse_forget_one {
	uint64_t nodeid;
	uint64_t nlookup;
};

struct fuse_batch_forget_in {
	uint32_t count;
	uint32_t dummy;
};

/* -- FUSE-over-io_uring (7.42; 7.46 where marked) --------------------------------------- */

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
