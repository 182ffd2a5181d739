/*
 * stop.h: how the C examples stop. main blocks in stop_wait on a self-pipe until SIGINT, SIGTERM
 * or the example's own callback (after its -n COUNT notifications) writes to it with stop_wake.
 * Included by monitor.c and workerpool.c, which define _XOPEN_SOURCE 700 first (sigaction and
 * SA_ONSTACK under -std=c11); every function here is used by both, so -Wall has no unused one.
 */
#ifndef HOTPLUG_EXAMPLE_STOP_H
#define HOTPLUG_EXAMPLE_STOP_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The self-pipe: the signal handler and the callback wake main through it. */
static int wake_pipe[2] = {-1, -1};

/* stop_wake makes stop_wait return. It is async-signal-safe, and safe from a callback. */
static void stop_wake(void)
{
    char b = 1;
    ssize_t r = write(wake_pipe[1], &b, 1); /* async-signal-safe */
    (void)r;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_wake();
}

/* stop_init makes the pipe and has SIGINT and SIGTERM call stop_wake. On an error it prints it,
 * after the program's name, and returns -1; otherwise 0. */
static int stop_init(const char *name)
{
    if (pipe(wake_pipe) != 0) {
        fprintf(stderr, "%s: pipe: %s\n", name, strerror(errno));
        return -1;
    }
    /* SA_ONSTACK: the signal may arrive on a thread of the library's Go runtime. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "%s: sigaction: %s\n", name, strerror(errno));
        return -1;
    }
    return 0;
}

/* stop_wait blocks until stop_wake has been called. */
static void stop_wait(void)
{
    struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
}

/* stop_close closes the pipe, once no callback can run (after hotplug_unregister). */
static void stop_close(void)
{
    close(wake_pipe[0]);
    close(wake_pipe[1]);
}

#endif
