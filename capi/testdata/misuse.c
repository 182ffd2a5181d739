/*
 * misuse: a program that breaks the rule "the notification is valid only during the callback":
 * it keeps the pointer and reads the symbolic link after the callback returned. Under valgrind
 * this must be reported: it shows that the suppressions for Go's runtime hide nothing of the C
 * side's use of the library's memory.
 */
#define _XOPEN_SOURCE 700

#include <stdio.h>
#include <unistd.h>

#include "hotplug.h"

static const hotplug_notification *volatile kept;
static int pipefd[2];

static int keep(hotplug_registration *reg, void *ctx, const hotplug_notification *n)
{
    (void)reg, (void)ctx;
    if (kept == NULL) {
        kept = n; /* wrong: n is freed when the callback returns */
        char b = 1;
        if (write(pipefd[1], &b, 1) != 1)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2 || pipe(pipefd) != 0)
        return 2;
    hotplug_registration *reg;
    if (hotplug_register(argv[1], "processor", HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES, keep, NULL, &reg) != HOTPLUG_OK)
        return 2;
    char b;
    if (read(pipefd[0], &b, 1) != 1)
        return 2;
    hotplug_unregister(reg); /* the callback has returned: kept points to freed memory */
    printf("kept link starts with %c\n", kept->symbolic_link[0]);
    return 0;
}
