/*
 * load: a program that only loads libhotplug (whose Go runtime starts when it is loaded) and
 * calls one function. The capi tests run it under valgrind first, to learn whether valgrind can
 * execute the Go runtime on this CPU at all.
 */
#include <stdio.h>

#include "hotplug.h"

int main(void)
{
    return hotplug_strerror(HOTPLUG_OK) == NULL;
}
