/*
 * The native data path: READ and WRITE served in C, straight between the export's
 * backing and the transport's buffers, with Python serving every other request.
 *
 * transports/native/build.py hands this file to cffi's cdef; native.c and ring.c include
 * it. Only what cdef parses: no preprocessor lines other than `#define NAME number`.
 *
 * The native path serves a request only when it lies wholly inside the image and the
 * export is writable for a WRITE; anything else (a read crossing the end, a write that
 * would grow or be refused) is left to the export's Python methods, so the answer to
 * every edge case is written once, there. It counts what it served and what it left.
 */

#define RS_NATIVE_DEFER -1000	/* not served here: hand the request to Python */

/* The export's image as the native path reads it. The Export owns it and keeps it
   current: its size when a resize lands, `map` cleared when mapped reads end. */
struct rs_image {
	int fd;
	int writable;		/* 0 for a read-only export: its WRITEs go to Python */
	uint64_t size;
	char *map;		/* a populated read-only mapping of the whole image, or NULL: pread */
};

/* One worker's native path: the image, and what it served (one per thread, no lock). */
struct rs_native {
	struct rs_image *image;
	uint64_t reads;		/* READ requests answered here (error replies included) */
	uint64_t writes;	/* WRITE requests answered here (error replies included) */
	uint64_t read_bytes;
	uint64_t write_bytes;
	uint64_t errors;	/* of those, answered with an error (the backing's I/O failed) */
	uint64_t deferred;	/* READ/WRITE handed to Python */
};

/* Whether the native path serves a READ (write = 0) or WRITE (write = 1) of `size` bytes
   at `offset`: 1, or 0 after counting it as deferred. */
int rs_native_claim(struct rs_native *n, int write, uint64_t offset, uint32_t size);
/* Count a claimed request the caller moved itself (zero-copy): `res` bytes or -errno. */
long rs_native_count(struct rs_native *n, int write, long res);

/* READ of `size` bytes at `offset` into `out` (room: out_len). Returns the bytes read,
   -errno, or RS_NATIVE_DEFER. */
long rs_native_read(struct rs_native *n, uint64_t offset, uint32_t size, char *out,
		    size_t out_len);
/* WRITE of `size` bytes at `offset` from `data`. Returns the bytes written, -errno, or
   RS_NATIVE_DEFER. */
long rs_native_write(struct rs_native *n, uint64_t offset, uint32_t size, const char *data);

/*
 * The /dev/fuse loop's native half: read requests from `fd` into `in` and answer READ
 * and WRITE here (reply built in `out`, written to `fd`) until one needs Python.
 * With `f` (devfuse follow=on, transports/sched/follow.h; else NULL) every request read
 * is shown to the follower first.
 * Returns that request's length (it is in `in`), or -errno of a failed read(2) (Python
 * tells EINTR from ENODEV). A reply the kernel no longer waits for (ENOENT) is dropped
 * as Python drops it; a reply write failing otherwise returns its -errno.
 */
long rs_dev_serve(int fd, struct rs_native *n, struct rs_follow *f, char *in, size_t in_len,
		  char *out, size_t out_len);
