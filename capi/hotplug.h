/*
 * hotplug.h: the C interface of hotplug-agent's client library (libhotplug.so).
 *
 * A program registers a callback for the CPU or memory device interfaces of a running
 * hotplug-agent, as CM_Register_Notification does on Windows, and receives arrivals and
 * removals with the Windows GUIDs and the Linux details. The library follows the agent's
 * /events stream, reconnects with backoff, resumes after the last notification it received and
 * reconciles after an agent restart: per interface, arrivals and removals alternate, none is
 * delivered twice, and the view ends equal to the agent's.
 *
 * Build the library:  go build -buildmode=c-shared -o libhotplug.so ./capi
 * Build a program:    cc -I capi prog.c -L. -lhotplug -o prog   (and -Wl,-rpath or LD_LIBRARY_PATH)
 *
 * Threads: callbacks run on threads of the library's Go runtime, never on the thread that
 * registered. The callbacks of one registration are called one at a time and in order; those of
 * different registrations may run at the same time. Every function here is safe to call from any
 * thread, and from inside a callback.
 *
 * This header is written by hand (the header `go build` generates beside the library names Go's
 * types, not these; it is not needed).
 */
#ifndef HOTPLUG_H
#define HOTPLUG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this interface; hotplug_notification.version is the notification's. */
#define HOTPLUG_API_VERSION 1

/*
 * A GUID in the Windows layout (the GUID struct of guiddef.h): data1..data3 are numbers in the
 * machine's byte order, data4 is bytes, so {0x97fadb10, 0x4e33, 0x40ae, {0x35, 0x9c, ...}} is
 * 97fadb10-4e33-40ae-359c-8bef029dbdd0. Compare with hotplug_guid_equal or memcmp.
 */
typedef struct hotplug_guid {
    uint32_t data1;
    uint16_t data2;
    uint16_t data3;
    uint8_t data4[8];
} hotplug_guid;

/* Initializers of the GUIDs of the Windows model, with their Windows values. */
#define HOTPLUG_GUID_DEVICE_PROCESSOR \
    {0x97fadb10, 0x4e33, 0x40ae, {0x35, 0x9c, 0x8b, 0xef, 0x02, 0x9d, 0xbd, 0xd0}}
#define HOTPLUG_GUID_DEVICE_MEMORY \
    {0x3fd0f03d, 0x92e0, 0x45fb, {0xb7, 0x5c, 0x5e, 0xd8, 0xff, 0xb0, 0x10, 0x21}}
#define HOTPLUG_GUID_DEVICE_INTERFACE_ARRIVAL \
    {0xcb3a4004, 0x46f0, 0x11d0, {0xb0, 0x8f, 0x00, 0x60, 0x97, 0x13, 0x05, 0x3f}}
#define HOTPLUG_GUID_DEVICE_INTERFACE_REMOVAL \
    {0xcb3a4005, 0x46f0, 0x11d0, {0xb0, 0x8f, 0x00, 0x60, 0x97, 0x13, 0x05, 0x3f}}

/* hotplug_guid_equal returns 1 when a and b are the same GUID, 0 otherwise. */
static inline int hotplug_guid_equal(const hotplug_guid *a, const hotplug_guid *b)
{
    if (a->data1 != b->data1 || a->data2 != b->data2 || a->data3 != b->data3)
        return 0;
    for (int i = 0; i < 8; i++)
        if (a->data4[i] != b->data4[i])
            return 0;
    return 1;
}

/* HOTPLUG_GUID_STRING_SIZE is the size of a GUID's canonical text with its NUL. */
#define HOTPLUG_GUID_STRING_SIZE 37

/* hotplug_guid_format writes g's canonical text (lower case, no braces) to out and returns out. */
static inline char *hotplug_guid_format(const hotplug_guid *g, char out[HOTPLUG_GUID_STRING_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    int k = 0;
    for (int i = 3; i >= 0; i--)
        b[k++] = (uint8_t)(g->data1 >> (8 * i));
    b[k++] = (uint8_t)(g->data2 >> 8);
    b[k++] = (uint8_t)g->data2;
    b[k++] = (uint8_t)(g->data3 >> 8);
    b[k++] = (uint8_t)g->data3;
    for (int i = 0; i < 8; i++)
        b[k++] = g->data4[i];
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
    return out;
}

/* The results of the functions (like CONFIGRET: 0 is success). hotplug_strerror names them. */
enum {
    HOTPLUG_OK = 0,
    HOTPLUG_E_INVALID_ARGUMENT = 1, /* a NULL url, callback or out pointer */
    HOTPLUG_E_INVALID_URL = 2,      /* not http://host:port or https://host:port */
    HOTPLUG_E_INVALID_CLASS = 3,    /* not NULL, "processor", "memory" or a GUID; or not memory
                                       (or NULL) with HOTPLUG_FLAG_MEMORY_DEVICES */
    HOTPLUG_E_INVALID_FLAGS = 4,    /* a flag other than the HOTPLUG_FLAG_ ones */
    HOTPLUG_E_NOT_REGISTERED = 5,   /* the registration was already unregistered, or is not one */
    HOTPLUG_E_TIMEOUT = 6,          /* hotplug_wait_ready: the agent was not reached in time */
    HOTPLUG_E_INTERNAL = 7
};

/* hotplug_strerror returns a static description of a result code. */
const char *hotplug_strerror(int code);

/*
 * HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES: the registration first receives an arrival for every
 * interface of its class that the agent has active (cause "existing"), then the live ones, with
 * no gap and no duplicate (PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES).
 */
#define HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES 0x1

/*
 * HOTPLUG_FLAG_MEMORY_DEVICES (this agent's extension; class "memory" or NULL): one arrival per
 * memory device (a DIMM, a virtio-mem device's plug) once all its blocks are online, and one
 * removal when the first of them goes, instead of one per memory block. Such notifications have
 * memory_block -1 and memory_device and memory_blocks set.
 */
#define HOTPLUG_FLAG_MEMORY_DEVICES 0x100

/* The action of a notification (CM_NOTIFY_ACTION_DEVICEINTERFACEARRIVAL / ...REMOVAL). */
typedef enum hotplug_action {
    HOTPLUG_ACTION_ARRIVAL = 1, /* the CPU or memory block came online */
    HOTPLUG_ACTION_REMOVAL = 2  /* it went offline or was removed */
} hotplug_action;

/*
 * One notification: DEVICE_INTERFACE_CHANGE_NOTIFICATION with the Linux details. The structure
 * and every string it points to are valid only during the callback: copy what you keep.
 */
typedef struct hotplug_notification {
    uint32_t struct_size;              /* sizeof(hotplug_notification) of the library */
    uint16_t version;                  /* 1 */
    hotplug_action action;             /* arrival or removal, the same as event */
    hotplug_guid event;                /* GUID_DEVICE_INTERFACE_ARRIVAL or _REMOVAL */
    hotplug_guid interface_class_guid; /* GUID_DEVICE_PROCESSOR or GUID_DEVICE_MEMORY */
    const char *symbolic_link;         /* the sysfs path, e.g. /sys/devices/system/cpu/cpu1 */
    const char *interface_class;       /* "processor", "memory", or the class GUID's text */
    int32_t cpu;                       /* processors: the CPU number; -1 otherwise */
    int64_t memory_block;              /* memory: the block index; -1 otherwise (and for a device) */
    uint64_t phys_start;               /* memory: the block's (a device's first block's) start */
    uint64_t size_bytes;               /* memory: the block's (the device's) size in bytes */
    int32_t node;                      /* the NUMA node; -1 when the kernel does not say */
    const char *state;                 /* as sysfs said: "online", "offline", ... ("" unknown) */
    const char *zones;                 /* memory: valid_zones as read ("" otherwise) */
    uint64_t seqnum;                   /* the kernel SEQNUM of the uevent; 0 if none */
    uint64_t id;                       /* the agent's notification ID; 0 for existing/resync */
    const char *cause;                 /* "uevent", "existing", "resync" or "startup" */
    int64_t read_at_unix_nano;         /* when the agent read the uevent (ns since 1970) */
    /* Since the memory devices: check struct_size before reading these. */
    const char *memory_device;         /* a memory device: its id, like "PNP0C80:00" ("" otherwise) */
    const char *memory_blocks;         /* a memory device: its blocks, like "32-35" ("" otherwise) */
} hotplug_notification;

/* An opaque registration handle (HCMNOTIFICATION). */
typedef struct hotplug_registration hotplug_registration;

/*
 * The callback (CM_NOTIFY_CALLBACK): reg is the registration, context the pointer given to
 * hotplug_register, n the notification. It may block; that delays only its own registration. A
 * non-zero return is logged as a callback error (it changes nothing else).
 */
typedef int (*hotplug_callback)(hotplug_registration *reg, void *context, const hotplug_notification *n);

/*
 * hotplug_register (CM_Register_Notification) registers cb for the interfaces of class_or_null
 * ("processor", "memory", a GUID, or NULL for every class) of the agent at url (such as
 * "http://localhost:19100"), with flags 0, HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES and/or
 * HOTPLUG_FLAG_MEMORY_DEVICES, and stores
 * the handle in *out. It returns HOTPLUG_OK or an error code, and does not wait for the agent:
 * the registration starts when the library first reaches it (hotplug_wait_ready waits for that),
 * and follows it across disconnections and restarts from then on. For an agent behind basic
 * auth, url carries the credentials ("http://user:password@localhost:19100"); the library's log
 * shows it with the password replaced by "xxxxx".
 */
int hotplug_register(const char *url, const char *class_or_null, int flags, hotplug_callback cb,
                     void *context, hotplug_registration **out);

/*
 * hotplug_wait_ready waits up to timeout_ms milliseconds (a negative value: no limit) until the
 * registration has started: with the flag its existing interfaces are queued, and every later
 * notification will follow. It returns HOTPLUG_OK, HOTPLUG_E_TIMEOUT or
 * HOTPLUG_E_NOT_REGISTERED.
 */
int hotplug_wait_ready(hotplug_registration *reg, int timeout_ms);

/* The connection states hotplug_state returns. */
enum {
    HOTPLUG_STATE_CONNECTING = 0,
    HOTPLUG_STATE_CONNECTED = 1,
    HOTPLUG_STATE_BACKOFF = 2, /* waiting before reconnecting */
    HOTPLUG_STATE_CLOSED = 3
};

/* hotplug_state returns reg's connection state, or -HOTPLUG_E_NOT_REGISTERED. */
int hotplug_state(hotplug_registration *reg);

/*
 * hotplug_unregister (CM_Unregister_Notification) removes reg, waits until no callback of reg is
 * running (from inside reg's own callback it does not wait: no other callback of reg starts
 * after it), and frees reg: do not use it again (a later registration's handle may have the same
 * address). It returns HOTPLUG_OK, or HOTPLUG_E_NOT_REGISTERED for NULL or a pointer that is no
 * registration's handle.
 */
int hotplug_unregister(hotplug_registration *reg);

#ifdef __cplusplus
}
#endif

#endif /* HOTPLUG_H */
