/* The library's side of a registration handle: private to libhotplug, not installed. */
#ifndef HOTPLUG_REGISTRATION_H
#define HOTPLUG_REGISTRATION_H

#include "hotplug.h"

struct hotplug_registration {
    hotplug_callback cb;
    void *context;
};

/* So that the prototypes cgo generates for the exported functions say const char * as
 * hotplug.h does, and the compiler checks the two against each other. */
typedef const char hotplug_const_char;

#endif
