/*
 * monitor: prints a hotplug-agent's processor notifications through libhotplug.
 *
 *   go build -buildmode=c-shared -o libhotplug.so ./capi
 *   cc -Wall -I capi examples/c/monitor.c -L. -lhotplug -Wl,-rpath,'$ORIGIN' -o monitor
 *
 * (examples/c/stop.h, beside it, has the self-pipe main waits on until SIGINT, SIGTERM or the
 * last notification.)
 *   ./monitor [-e] [-n COUNT] [-c CLASS] [URL]
 *
 * URL is the agent's address (default http://localhost:19100), -c the interface class
 * (default processor), -e includes the existing interfaces, -n stops after COUNT notifications
 * (default: until SIGINT or SIGTERM). It unregisters, which waits for a callback in flight, and
 * exits 0.
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hotplug.h"
#include "stop.h"

struct state {
    long limit;  /* stop after this many notifications; 0: never */
    long count;  /* touched only by the callback: one registration's callbacks never overlap */
};

static int on_notification(hotplug_registration *reg, void *context, const hotplug_notification *n)
{
    (void)reg;
    struct state *st = context;
    char class_guid[HOTPLUG_GUID_STRING_SIZE];
    static const hotplug_guid processor = HOTPLUG_GUID_DEVICE_PROCESSOR;

    if (st->limit > 0 && st->count >= st->limit)
        return 0; /* main is unregistering: print no more than asked */
    printf("%-7s %-9s %s", n->action == HOTPLUG_ACTION_ARRIVAL ? "ARRIVAL" : "REMOVAL",
           n->interface_class, n->symbolic_link);
    if (hotplug_guid_equal(&n->interface_class_guid, &processor))
        printf(" cpu=%d", (int)n->cpu);
    else if (n->memory_block >= 0)
        printf(" block=%" PRId64 " phys=0x%" PRIx64 " size=%" PRIu64, n->memory_block, n->phys_start,
               n->size_bytes);
    if (n->node >= 0)
        printf(" node=%d", (int)n->node);
    printf(" seq=%" PRIu64 " id=%" PRIu64 " cause=%s class={%s}\n", n->seqnum, n->id, n->cause,
           hotplug_guid_format(&n->interface_class_guid, class_guid));
    fflush(stdout);

    st->count++;
    if (st->limit > 0 && st->count == st->limit)
        stop_wake();
    return 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-e] [-n COUNT] [-c CLASS] [URL]\n", argv0);
}

int main(int argc, char **argv)
{
    const char *url = "http://localhost:19100";
    const char *class = "processor";
    int flags = 0;
    struct state st = {0, 0};
    int opt;

    while ((opt = getopt(argc, argv, "en:c:")) != -1) {
        switch (opt) {
        case 'e':
            flags |= HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES;
            break;
        case 'n': {
            char *end;
            errno = 0;
            st.limit = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || st.limit < 0) {
                fprintf(stderr, "monitor: -n %s: want a count of 0 or more\n", optarg);
                return 2;
            }
            break;
        }
        case 'c':
            class = optarg;
            break;
        default:
            usage(argv[0]);
            return 2;
        }
    }
    if (optind < argc)
        url = argv[optind++];
    if (optind != argc) {
        usage(argv[0]);
        return 2;
    }

    if (stop_init("monitor") != 0) /* from here SIGINT and SIGTERM end stop_wait below */
        return 1;

    hotplug_registration *reg = NULL;
    int rc = hotplug_register(url, class, flags, on_notification, &st, &reg);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "monitor: register %s at %s: %s\n", class, url, hotplug_strerror(rc));
        return 1;
    }
    rc = hotplug_wait_ready(reg, 30000);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "monitor: %s: %s\n", url, hotplug_strerror(rc));
        hotplug_unregister(reg);
        return 1;
    }
    fprintf(stderr, "monitor: registered for %s at %s\n", class, url);

    stop_wait();

    rc = hotplug_unregister(reg);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "monitor: unregister: %s\n", hotplug_strerror(rc));
        return 1;
    }
    /* After hotplug_unregister no callback runs: st is ours alone again. */
    fprintf(stderr, "monitor: unregistered after %ld notifications\n", st.count);
    stop_close();
    return 0;
}
