/*
 * stamp: the program the latency benchmark has both the agent's exec callback and
 * systemd-udevd's RUN+= rule start. Its first act is to read CLOCK_MONOTONIC; it then sends
 * "<seqnum> <nanoseconds>" to the Unix datagram socket named by argv[1] and exits. The seqnum
 * is the kernel's SEQNUM: HOTPLUG_SEQNUM in the agent's exec environment, SEQNUM in udevd's.
 *
 * Built static (no dynamic loader, no libc start-up beyond the minimum) so that what the
 * benchmark measures is the time to get a program running, not this program's own start-up:
 *   cc -O2 -static -o stamp stamp.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (argc < 2)
		return 2;
	const char *seq = getenv("HOTPLUG_SEQNUM");
	if (seq == NULL)
		seq = getenv("SEQNUM");
	if (seq == NULL)
		seq = "0";

	char msg[64];
	int n = snprintf(msg, sizeof msg, "%s %lld", seq,
			 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(argv[1]) >= sizeof sa.sun_path)
		return 2;
	strcpy(sa.sun_path, argv[1]);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1;
	if (sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&sa, sizeof sa) != n)
		return 1;
	return 0;
}
