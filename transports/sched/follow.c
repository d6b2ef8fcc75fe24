/*
 * Following the client (devfuse follow=on).
 *
 * /dev/fuse has one request queue: the kernel wakes whichever reader waits, and the
 * scheduler runs it where it likes. With a client that waits for each reply (QD1) the
 * client's CPU is busy when the request wakes the reader, so the reader runs on the other,
 * idle CPU, and every request pays two cross-CPU wakeups (measured on 2 vCPUs: 13k IOPS
 * with the reader on the other CPU, 87k on the client's). FUSE-over-io_uring has a queue
 * per CPU for this; here the reader moves itself. Every `every` requests it counts its own
 * context switches since the last look: about one per request means it waited for each
 * request, so a client waits for each reply, and it binds itself to the CPU the requesting
 * thread last ran on (/proc/PID/stat). Far fewer means requests queue up (deep queues,
 * several clients), where two CPUs are worth more than shared caches: it gives its CPUs
 * back.
 *
 * The policy follows the same two cases. While following, the reader runs under
 * `follow_policy` (sched=; SCHED_IDLE keeps a client its reply wakes on their shared
 * CPU); while requests queue up, under `queue_policy` (SCHED_OTHER): a single reader
 * serving busy clients must preempt them when a request arrives (measured with two fio
 * jobs at QD16 each: 127k IOPS with SCHED_OTHER, 75k with SCHED_IDLE). The idle guard's
 * SCHED_BATCH stands for SCHED_IDLE until the guard ends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "follow.h"

_Static_assert(sizeof(cpu_set_t) <= sizeof(((struct rs_follow *)0)->start_mask),
	       "start_mask holds a cpu_set_t");

/* The CPU thread `pid` last ran on (field 39 of /proc/PID/stat), or -errno. */
static int rs_last_cpu(uint32_t pid)
{
	char path[48], buf[1024], *p, *save = NULL;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EINVAL;
	buf[n] = 0;
	p = strrchr(buf, ')');	/* the name may hold spaces and parentheses */
	if (!p)
		return -EINVAL;
	/* Field 3 (the state) is the first after the name. */
	for (field = 3, p = strtok_r(p + 1, " ", &save); p; p = strtok_r(NULL, " ", &save), field++)
		if (field == 39)
			return atoi(p);
	return -EINVAL;
}

static uint64_t rs_thread_switches(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru))
		return 0;
	return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

static void rs_follow_policy(struct rs_follow *f, int want)
{
	struct sched_param sp = { 0 };
	int now = sched_getscheduler(0);

	if (now < 0 || now == want || (now == SCHED_BATCH && want == SCHED_IDLE))
		return;
	if (sched_setscheduler(0, want, &sp))
		f->last_error = errno;
	else
		f->policy_changes++;
}

void rs_follow(struct rs_follow *f, uint32_t pid)
{
	uint64_t switches, waited;
	int cpu, following;

	if (!f->started) {
		f->started = 1;
		f->cpu = -1;
		f->switches = rs_thread_switches();
		if (sched_getaffinity(0, sizeof(cpu_set_t), (cpu_set_t *)f->start_mask))
			f->last_error = errno;
		return;
	}
	if (++f->count < f->every)
		return;
	f->count = 0;
	f->looks++;
	switches = rs_thread_switches();
	/* Hysteresis: start following at 3 switches per 4 requests, stop below 1 per 4
	   (several clients at depth switch ~0.2 per request, with bursts). */
	waited = (switches - f->switches) * 4;
	following = f->cpu >= 0 ? waited >= f->every : waited >= 3ull * f->every;
	if (following) {
		rs_follow_policy(f, f->follow_policy);
		cpu = rs_last_cpu(pid);
		if (cpu < 0) {
			f->last_error = -cpu;	/* the client is gone: stay */
		} else if (cpu != f->cpu) {
			cpu_set_t one;

			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			if (!CPU_ISSET(cpu, (cpu_set_t *)f->start_mask)) {
				/* not ours to run on */
			} else if (sched_setaffinity(0, sizeof(one), &one)) {
				f->last_error = errno;
			} else {
				f->cpu = cpu;
				f->moves++;
			}
		}
	} else {
		rs_follow_policy(f, f->queue_policy);
		if (f->cpu < 0) {
			/* not bound */
		} else if (sched_setaffinity(0, sizeof(cpu_set_t), (cpu_set_t *)f->start_mask)) {
			f->last_error = errno;
		} else {
			f->cpu = -1;
			f->releases++;
		}
	}
	/* After the move: a migration is a switch of its own, not a sign of waiting. */
	f->switches = rs_thread_switches();
}
