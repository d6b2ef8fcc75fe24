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

#include "fuse_abi.h"
#include "follow.h"
#include "native.h"

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

/*
 * Serve one /dev/fuse READ or WRITE: `ih` is its header, `op` the `op_len` bytes after it
 * (op header, then a WRITE's data; unaligned, hence the copies). Returns the reply's data
 * length (data after the fuse_out_header in `out`), -errno, or RS_NATIVE_DEFER.
 */
static long rs_dev_one(struct rs_native *n, const struct fuse_in_header *ih, const char *op,
		       size_t op_len, char *out, size_t out_len)
{
	char *reply = out + sizeof(struct fuse_out_header);
	size_t reply_len = out_len - sizeof(struct fuse_out_header);
	struct fuse_write_out wo = { 0 };
	struct fuse_write_in wi;
	struct fuse_read_in ri;
	long res;

	if (ih->opcode == FUSE_READ) {
		if (op_len < sizeof(ri))
			return RS_NATIVE_DEFER;
		memcpy(&ri, op, sizeof(ri));
		return rs_native_read(n, ri.offset, ri.size, reply, reply_len);
	}
	if (ih->opcode != FUSE_WRITE || op_len < sizeof(wi))
		return RS_NATIVE_DEFER;
	memcpy(&wi, op, sizeof(wi));
	if (wi.size > op_len - sizeof(wi))
		return RS_NATIVE_DEFER;	/* malformed: the codec answers it */
	res = rs_native_write(n, wi.offset, wi.size, op + sizeof(wi));
	if (res < 0)
		return res;
	wo.size = (uint32_t)res;
	memcpy(reply, &wo, sizeof(wo));
	return sizeof(wo);
}

long rs_dev_serve(int fd, struct rs_native *n, struct rs_follow *f, char *in, size_t in_len,
		  char *out, size_t out_len)
{
	for (;;) {
		ssize_t len = read(fd, in, in_len);
		struct fuse_in_header ih;
		struct fuse_out_header oh;
		long res;

		if (len < 0)
			return -errno;
		if ((size_t)len < sizeof(ih))
			return (long)len;	/* malformed: the codec answers it */
		memcpy(&ih, in, sizeof(ih));	/* `in` need not be aligned */
		if (f)
			rs_follow(f, ih.pid);
		res = rs_dev_one(n, &ih, in + sizeof(ih), (size_t)len - sizeof(ih), out, out_len);
		if (res == RS_NATIVE_DEFER)
			return (long)len;
		oh.unique = ih.unique;
		oh.error = res < 0 ? (int32_t)res : 0;
		oh.len = sizeof(oh) + (res < 0 ? 0 : (uint32_t)res);
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
