/*
 * api_check: checks libhotplug's C interface against a running agent (argv[1]) and an address
 * where nothing listens (argv[2]). Prints one line per failed check and exits 1 if any failed.
 */
#define _XOPEN_SOURCE 700

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hotplug.h"

static int failures;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
            failures++;                                    \
        }                                                  \
    } while (0)

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int noop(hotplug_registration *reg, void *ctx, const hotplug_notification *n)
{
    (void)reg, (void)ctx, (void)n;
    return 0;
}

/* What the first notification looked like, copied in the callback. */
struct first {
    pthread_mutex_t mu;
    int count;
    hotplug_notification n;
    char link[256], cls[64], cause[32], state[32];
};

static int record(hotplug_registration *reg, void *ctx, const hotplug_notification *n)
{
    (void)reg;
    struct first *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (f->count++ == 0) {
        f->n = *n;
        snprintf(f->link, sizeof f->link, "%s", n->symbolic_link);
        snprintf(f->cls, sizeof f->cls, "%s", n->interface_class);
        snprintf(f->cause, sizeof f->cause, "%s", n->cause);
        snprintf(f->state, sizeof f->state, "%s", n->state);
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* register_first resets f and registers record in it for class, the existing interfaces included,
 * then waits for the stream and for a first notification (up to 30 s: a class may have none). It
 * returns the registration, NULL if registering failed, for the caller to check and unregister. */
static hotplug_registration *register_first(const char *url, const char *class, struct first *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    hotplug_registration *reg = NULL;
    int rc = hotplug_register(url, class, HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES, record, f, &reg);
    CHECK(rc == HOTPLUG_OK, "register for %s: %s", class, hotplug_strerror(rc));
    if (rc != HOTPLUG_OK)
        return NULL;
    rc = hotplug_wait_ready(reg, 30000);
    CHECK(rc == HOTPLUG_OK, "wait_ready (%s): %s", class, hotplug_strerror(rc));
    for (int i = 0; i < 3000; i++) {
        pthread_mutex_lock(&f->mu);
        int c = f->count;
        pthread_mutex_unlock(&f->mu);
        if (c > 0)
            break;
        sleep_ms(10);
    }
    return reg;
}

/* Unregisters its own registration from inside its first callback. */
struct self {
    int calls;
    int rc;
    int done[2];
};

static int unregister_self(hotplug_registration *reg, void *ctx, const hotplug_notification *n)
{
    (void)n;
    struct self *s = ctx;
    if (++s->calls == 1) {
        s->rc = hotplug_unregister(reg); /* must not deadlock */
        char b = 1;
        if (write(s->done[1], &b, 1) != 1)
            s->rc = -100;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: api_check AGENT_URL DEAD_URL\n");
        return 2;
    }
    const char *url = argv[1], *dead = argv[2];
    hotplug_registration *reg = NULL;

    /* Bad arguments: a code each, and a description. */
    CHECK(hotplug_register(NULL, NULL, 0, noop, NULL, &reg) == HOTPLUG_E_INVALID_ARGUMENT, "NULL url");
    CHECK(hotplug_register(url, NULL, 0, NULL, NULL, &reg) == HOTPLUG_E_INVALID_ARGUMENT, "NULL callback");
    CHECK(hotplug_register(url, NULL, 0, noop, NULL, NULL) == HOTPLUG_E_INVALID_ARGUMENT, "NULL out");
    CHECK(hotplug_register("localhost:1", NULL, 0, noop, NULL, &reg) == HOTPLUG_E_INVALID_URL, "bad URL");
    CHECK(hotplug_register(url, "disk", 0, noop, NULL, &reg) == HOTPLUG_E_INVALID_CLASS, "bad class");
    CHECK(hotplug_register(url, "", 0, noop, NULL, &reg) == HOTPLUG_E_INVALID_CLASS, "empty class");
    CHECK(hotplug_register(url, NULL, 0x4, noop, NULL, &reg) == HOTPLUG_E_INVALID_FLAGS, "bad flags");
    CHECK(hotplug_register(url, "processor", HOTPLUG_FLAG_MEMORY_DEVICES, noop, NULL, &reg) == HOTPLUG_E_INVALID_CLASS,
          "memory devices of processors");
    {
        hotplug_registration *devs = NULL;
        int rc = hotplug_register(url, "memory", HOTPLUG_FLAG_MEMORY_DEVICES, noop, NULL, &devs);
        CHECK(rc == HOTPLUG_OK && devs != NULL, "register for memory devices: %s", hotplug_strerror(rc));
        if (devs != NULL) {
            rc = hotplug_wait_ready(devs, 30000);
            CHECK(rc == HOTPLUG_OK, "the memory devices' stream: %s", hotplug_strerror(rc));
            CHECK(hotplug_unregister(devs) == HOTPLUG_OK, "unregister the memory devices' registration");
        }
    }
    CHECK(strstr(hotplug_strerror(HOTPLUG_E_INVALID_CLASS), "processor") != NULL, "strerror: %s",
          hotplug_strerror(HOTPLUG_E_INVALID_CLASS));
    CHECK(strstr(hotplug_strerror(HOTPLUG_E_INVALID_FLAGS), "HOTPLUG_FLAG_MEMORY_DEVICES") != NULL, "strerror: %s",
          hotplug_strerror(HOTPLUG_E_INVALID_FLAGS));
    CHECK(strcmp(hotplug_strerror(12345), "unknown result code") == 0, "strerror of an unknown code");
    CHECK(hotplug_unregister(NULL) == HOTPLUG_E_NOT_REGISTERED, "unregister NULL");
    CHECK(hotplug_state(NULL) == -HOTPLUG_E_NOT_REGISTERED, "state of NULL");

    /* An agent that is not there: registering works, waiting times out, unregistering works. */
    CHECK(hotplug_register(dead, "processor", 0, noop, NULL, &reg) == HOTPLUG_OK, "register at a dead address");
    CHECK(hotplug_wait_ready(reg, 200) == HOTPLUG_E_TIMEOUT, "wait_ready without an agent");
    int st = hotplug_state(reg);
    CHECK(st == HOTPLUG_STATE_CONNECTING || st == HOTPLUG_STATE_BACKOFF, "state without an agent: %d", st);
    CHECK(hotplug_unregister(reg) == HOTPLUG_OK, "unregister");
    /* (reg is freed: a second hotplug_unregister of it may name a later registration, whose
       handle can have the same address. Not checked here.) */

    /* The existing processors, with the Windows GUIDs in the Windows layout. */
    struct first f;
    reg = register_first(url, "processor", &f);
    CHECK(hotplug_state(reg) == HOTPLUG_STATE_CONNECTED, "state: %d", hotplug_state(reg));
    CHECK(hotplug_unregister(reg) == HOTPLUG_OK, "unregister");
    pthread_mutex_lock(&f.mu);
    static const hotplug_guid processor = HOTPLUG_GUID_DEVICE_PROCESSOR;
    static const hotplug_guid arrival = HOTPLUG_GUID_DEVICE_INTERFACE_ARRIVAL;
    char text[HOTPLUG_GUID_STRING_SIZE];
    CHECK(f.count > 0, "no existing processor delivered");
    CHECK(f.n.struct_size == sizeof(hotplug_notification), "struct_size %u; sizeof %zu", f.n.struct_size,
          sizeof(hotplug_notification));
    CHECK(f.n.version == 1, "version %u", f.n.version);
    CHECK(f.n.action == HOTPLUG_ACTION_ARRIVAL, "action %d", f.n.action);
    CHECK(hotplug_guid_equal(&f.n.event, &arrival), "event GUID %s", hotplug_guid_format(&f.n.event, text));
    CHECK(hotplug_guid_equal(&f.n.interface_class_guid, &processor), "class GUID %s",
          hotplug_guid_format(&f.n.interface_class_guid, text));
    CHECK(strcmp(hotplug_guid_format(&f.n.interface_class_guid, text), "97fadb10-4e33-40ae-359c-8bef029dbdd0") == 0,
          "class GUID text %s", text);
    CHECK(strcmp(f.link, "/sys/devices/system/cpu/cpu0") == 0, "first link %s", f.link);
    CHECK(strcmp(f.cls, "processor") == 0, "class %s", f.cls);
    CHECK(strcmp(f.cause, "existing") == 0, "cause %s", f.cause);
    CHECK(strcmp(f.state, "online") == 0, "state %s", f.state);
    CHECK(f.n.cpu == 0 && f.n.memory_block == -1 && f.n.size_bytes == 0, "cpu %d block %lld", (int)f.n.cpu,
          (long long)f.n.memory_block);
    CHECK(f.n.id == 0 && f.n.seqnum == 0, "an existing interface has id %llu seqnum %llu", (unsigned long long)f.n.id,
          (unsigned long long)f.n.seqnum);
    CHECK(f.n.read_at_unix_nano > 0, "read_at %lld", (long long)f.n.read_at_unix_nano);
    pthread_mutex_unlock(&f.mu);

    /* Memory: the block fields. */
    reg = register_first(url, "memory", &f);
    CHECK(hotplug_unregister(reg) == HOTPLUG_OK, "unregister (memory)");
    static const hotplug_guid memory = HOTPLUG_GUID_DEVICE_MEMORY;
    if (f.count > 0) {
        CHECK(hotplug_guid_equal(&f.n.interface_class_guid, &memory), "memory class GUID %s",
              hotplug_guid_format(&f.n.interface_class_guid, text));
        CHECK(f.n.cpu == -1 && f.n.memory_block >= 0 && f.n.size_bytes > 0, "memory: cpu %d block %lld size %llu",
              (int)f.n.cpu, (long long)f.n.memory_block, (unsigned long long)f.n.size_bytes);
        CHECK(strncmp(f.link, "/sys/devices/system/memory/memory", 33) == 0, "memory link %s", f.link);
    }

    /* Unregistering from inside the registration's own callback: no deadlock, no later call. */
    struct self s = {0, -1, {-1, -1}};
    if (pipe(s.done) != 0)
        return 1;
    CHECK(hotplug_register(url, NULL, HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES, unregister_self, &s, &reg) == HOTPLUG_OK,
          "register (self)");
    char b;
    CHECK(read(s.done[0], &b, 1) == 1, "the callback never ran");
    sleep_ms(100); /* room for a wrong second call to show */
    CHECK(s.rc == HOTPLUG_OK, "hotplug_unregister from inside the callback: %d", s.rc);
    CHECK(s.calls == 1, "%d callbacks; want 1 (none after unregistering)", s.calls);

    if (failures == 0)
        printf("api_check: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
