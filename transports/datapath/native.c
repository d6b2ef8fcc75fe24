/*
 * The native data path (see native.h): the export's READ and WRITE in C.
 *
 * It answers exactly as Export.read_into and Export.write do for a request inside the
 * image (full length, data from the mapping when the export keeps one, else pread) and
 * leaves every other case to them. Reads and writes loop over short transfers and
 * EINTR, as os.preadv/os.pwrite callers would see the full count from a regular file.
 */

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fuse_uring.h"
#include "follow.h"
#include "native.h"

#define RS_IN_HEADER 40		/* struct fuse_in_header */
#define RS_IN_PID 32		/* its pid: the thread that made the request */
#define RS_RW_IN 40		/* struct fuse_read_in, struct fuse_write_in (minor >= 9) */
#define RS_OUT_HEADER 16	/* struct fuse_out_header */
#define RS_WRITE_OUT 8		/* struct fuse_write_out */

int rs_native_claim(struct rs_native *n, int write, uint64_t offset, uint32_t size)
{
	struct rs_image *img = n->image;
	uint64_t image_size = img->size;

	if ((write && !img->writable) || offset > image_size || size > image_size - offset) {
		n->deferred++;
		return 0;
	}
	return 1;
}

long rs_native_count(struct rs_native *n, int write, long res)
{
	if (write)
		n->writes++;
	else
		n->reads++;
	if (res < 0)
		n->errors++;
	else if (write)
		n->write_bytes += (uint64_t)res;
	else
		n->read_bytes += (uint64_t)res;
	return res;
}

long rs_native_read(struct rs_native *n, uint64_t offset, uint32_t size, char *out,
		    size_t out_len)
{
	struct rs_image *img = n->image;
	char *map = img->map;
	size_t done = 0;

	if (size > out_len) {
		n->deferred++;	/* cannot happen with max_read <= the buffer; the codec clamps */
		return RS_NATIVE_DEFER;
	}
	if (!rs_native_claim(n, 0, offset, size))
		return RS_NATIVE_DEFER;
	if (map) {
		memcpy(out, map + offset, size);
		done = size;
	}
	while (done < size) {
		ssize_t got = pread(img->fd, out + done, size - done, (off_t)(offset + done));

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return rs_native_count(n, 0, -errno);
		if (got == 0)
			break;	/* shrunk under us: a short read, as pread gives Python */
		done += (size_t)got;
	}
	return rs_native_count(n, 0, (long)done);
}

long rs_native_write(struct rs_native *n, uint64_t offset, uint32_t size, const char *data)
{
	int fd = n->image->fd;
	size_t done = 0;

	if (!rs_native_claim(n, 1, offset, size))
		return RS_NATIVE_DEFER;
	while (done < size) {
		ssize_t put = pwrite(fd, data + done, size - done, (off_t)(offset + done));

		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0)
			return rs_native_count(n, 1, -errno);
		done += (size_t)put;
	}
	return rs_native_count(n, 1, (long)done);
}

static uint32_t rs_u32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t rs_u64(const char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* Serve one /dev/fuse READ or WRITE of `len` bytes in `in`: the reply's data length
   (data at out + RS_OUT_HEADER), -errno, or RS_NATIVE_DEFER. */
static long rs_dev_one(struct rs_native *n, const char *in, size_t len, char *out,
		       size_t out_len)
{
	uint32_t opcode = rs_u32(in + 4);
	uint64_t offset;
	uint32_t size;
	long res;

	if ((opcode != FUSE_READ && opcode != FUSE_WRITE) || len < RS_IN_HEADER + RS_RW_IN)
		return RS_NATIVE_DEFER;
	offset = rs_u64(in + RS_IN_HEADER + 8);
	size = rs_u32(in + RS_IN_HEADER + 16);
	if (opcode == FUSE_READ)
		return rs_native_read(n, offset, size, out + RS_OUT_HEADER,
				      out_len - RS_OUT_HEADER);
	if (size > len - RS_IN_HEADER - RS_RW_IN)
		return RS_NATIVE_DEFER;	/* malformed: the codec answers it */
	res = rs_native_write(n, offset, size, in + RS_IN_HEADER + RS_RW_IN);
	if (res < 0)
		return res;
	memset(out + RS_OUT_HEADER, 0, RS_WRITE_OUT);
	memcpy(out + RS_OUT_HEADER, &(uint32_t){ (uint32_t)res }, sizeof(uint32_t));
	return RS_WRITE_OUT;
}

long rs_dev_serve(int fd, struct rs_native *n, struct rs_follow *f, char *in, size_t in_len,
		  char *out, size_t out_len)
{
	for (;;) {
		ssize_t len = read(fd, in, in_len);
		struct fuse_out_header oh;
		long res;

		if (len < 0)
			return -errno;
		if (f && len >= RS_IN_HEADER)
			rs_follow(f, rs_u32(in + RS_IN_PID));
		res = len < RS_IN_HEADER ? RS_NATIVE_DEFER :
		      rs_dev_one(n, in, (size_t)len, out, out_len);
		if (res == RS_NATIVE_DEFER)
			return (long)len;
		oh.unique = rs_u64(in + 8);
		oh.error = res < 0 ? (int32_t)res : 0;
		oh.len = RS_OUT_HEADER + (res < 0 ? 0 : (uint32_t)res);
		memcpy(out, &oh, sizeof(oh));
		while (write(fd, out, oh.len) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (errno == ENOENT)
				break;	/* interrupted: nobody waits for this reply */
			return -errno;
		}
	}
}
