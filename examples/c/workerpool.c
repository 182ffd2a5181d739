/*
 * workerpool: keeps one worker thread per processor that hotplug-agent reports online, through
 * libhotplug. It registers for processors with the existing ones included, starts a worker at
 * each arrival and stops one at each removal, so that a hot-added CPU is put to work and a CPU
 * taken away leaves no thread competing for the others.
 *
 *   make examples        (bin/hotplug-workerpool-c, linked to bin/libhotplug.so)
 *   ./workerpool [-n COUNT] [URL]
 *
 * URL is the agent's address (default http://localhost:19100); -n stops after COUNT
 * notifications beyond the existing processors (default: until SIGINT or SIGTERM). Each resize is
 * one line on standard output:
 *
 *   removal cpu1 (uevent): 2 -> 1 workers
 *
 * (examples/c/stop.h, beside it, has the self-pipe main waits on until SIGINT, SIGTERM or the
 * last notification.)
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hotplug.h"
#include "stop.h"

#define MAX_WORKERS 4096

/* The pool: worker i runs while i < target. */
struct pool {
    pthread_mutex_t mu;
    int target;                     /* the number of workers wanted */
    int running;                    /* threads started and not joined: workers 0..running-1 */
    pthread_t threads[MAX_WORKERS];
    unsigned long long jobs;        /* jobs done, under mu */
};

struct worker_arg {
    struct pool *pool;
    int index;
};

static void *worker(void *p)
{
    struct worker_arg *arg = p;
    struct pool *pool = arg->pool;
    int index = arg->index;
    free(arg);
    volatile uint64_t h = (uint64_t)index;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        int stop = index >= pool->target;
        if (!stop)
            pool->jobs++;
        pthread_mutex_unlock(&pool->mu);
        if (stop)
            return NULL;
        for (int i = 0; i < 100000; i++) /* one job: some arithmetic */
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
    }
}

/* pool_resize sets the number of workers to n: it starts the missing ones and joins those beyond
 * n. It returns the number there were, or -1 if a thread could not start. */
static int pool_resize(struct pool *pool, int n)
{
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    pthread_mutex_lock(&pool->mu);
    int was = pool->running;
    pool->target = n;
    pthread_mutex_unlock(&pool->mu);
    while (pool->running > n) /* those beyond n see the target and return */
        pthread_join(pool->threads[--pool->running], NULL);
    while (pool->running < n) {
        struct worker_arg *arg = malloc(sizeof *arg);
        if (arg == NULL)
            return -1;
        arg->pool = pool;
        arg->index = pool->running;
        if (pthread_create(&pool->threads[pool->running], NULL, worker, arg) != 0) {
            free(arg);
            return -1;
        }
        pool->running++;
    }
    return was;
}

struct state {
    struct pool pool;
    unsigned char online[MAX_WORKERS]; /* touched only by the callback: its calls never overlap */
    int count_online;
    long limit; /* stop after this many notifications beyond the existing ones; 0: never */
    long seen;
};

static int on_processor(hotplug_registration *reg, void *context, const hotplug_notification *n)
{
    (void)reg;
    struct state *st = context;
    int cpu = n->cpu;
    if (cpu < 0 || cpu >= MAX_WORKERS)
        return 0;
    int arrival = n->action == HOTPLUG_ACTION_ARRIVAL;
    if (arrival && !st->online[cpu]) {
        st->online[cpu] = 1;
        st->count_online++;
    } else if (!arrival && st->online[cpu]) {
        st->online[cpu] = 0;
        st->count_online--;
    }
    int was = pool_resize(&st->pool, st->count_online);
    if (was < 0) {
        fprintf(stderr, "workerpool: cannot start a worker\n");
        return 1;
    }
    printf("%s cpu%d (%s): %d -> %d workers\n", arrival ? "arrival" : "removal", cpu, n->cause, was,
           st->count_online);
    fflush(stdout);
    if (strcmp(n->cause, "existing") != 0 && st->limit > 0 && ++st->seen == st->limit)
        stop_wake();
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = "http://localhost:19100";
    static struct state st; /* large: not on the stack */
    int opt;

    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt != 'n') {
            fprintf(stderr, "usage: %s [-n COUNT] [URL]\n", argv[0]);
            return 2;
        }
        char *end;
        errno = 0;
        st.limit = strtol(optarg, &end, 10);
        if (errno != 0 || *end != '\0' || st.limit < 0) {
            fprintf(stderr, "workerpool: -n %s: want a count of 0 or more\n", optarg);
            return 2;
        }
    }
    if (optind < argc)
        url = argv[optind++];
    if (optind != argc) {
        fprintf(stderr, "usage: %s [-n COUNT] [URL]\n", argv[0]);
        return 2;
    }
    pthread_mutex_init(&st.pool.mu, NULL);

    if (stop_init("workerpool") != 0) /* from here SIGINT and SIGTERM end stop_wait below */
        return 1;

    hotplug_registration *reg = NULL;
    int rc = hotplug_register(url, "processor", HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES, on_processor,
                              &st, &reg);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "workerpool: register processor at %s: %s\n", url, hotplug_strerror(rc));
        return 1;
    }
    rc = hotplug_wait_ready(reg, 30000);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "workerpool: %s: %s\n", url, hotplug_strerror(rc));
        hotplug_unregister(reg);
        return 1;
    }
    fprintf(stderr, "workerpool: registered for processor at %s\n", url);

    stop_wait();

    rc = hotplug_unregister(reg);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "workerpool: unregister: %s\n", hotplug_strerror(rc));
        return 1;
    }
    /* After hotplug_unregister no callback runs: the pool is ours alone again. */
    int size = st.pool.running;
    pool_resize(&st.pool, 0);
    fprintf(stderr, "workerpool: unregistered after %ld notifications; %d workers ran %llu jobs\n", st.seen,
            size, st.pool.jobs);
    stop_close();
    pthread_mutex_destroy(&st.pool.mu);
    return 0;
}
