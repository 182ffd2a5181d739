/*
 * devices: registers with libhotplug for whole memory devices, the ones already present
 * included, against the agent at argv[1]; prints the first notification and exits 0, or exits 1
 * when none came within 30 s.
 */
#define _XOPEN_SOURCE 700

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hotplug.h"

static volatile int done;
static char line[512];

static int first(hotplug_registration *reg, void *ctx, const hotplug_notification *n)
{
    (void)reg, (void)ctx;
    if (done)
        return 0;
    if (n->struct_size < sizeof(hotplug_notification)) {
        snprintf(line, sizeof line, "the library's notification has no memory_device");
    } else {
        snprintf(line, sizeof line, "%s %s device=%s blocks=%s memory_block=%lld size=%llu cause=%s",
                 n->action == HOTPLUG_ACTION_ARRIVAL ? "ARRIVAL" : "REMOVAL", n->symbolic_link,
                 n->memory_device, n->memory_blocks, (long long)n->memory_block,
                 (unsigned long long)n->size_bytes, n->cause);
    }
    done = 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: devices URL\n");
        return 2;
    }
    hotplug_registration *reg = NULL;
    int rc = hotplug_register(argv[1], "memory",
                              HOTPLUG_FLAG_MEMORY_DEVICES | HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES, first, NULL, &reg);
    if (rc != HOTPLUG_OK) {
        fprintf(stderr, "devices: register: %s\n", hotplug_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 3000 && !done; i++) {
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    hotplug_unregister(reg);
    if (!done) {
        fprintf(stderr, "devices: no notification within 30 s\n");
        return 1;
    }
    printf("%s\n", line);
    return 0;
}
