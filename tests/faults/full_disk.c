/* A full disk for chosen files: loaded with LD_PRELOAD, it lets every file whose path
 * contains FAULT_FULL_DISK (a substring) open, takes FAULT_FULL_DISK_AFTER bytes (0 when
 * unset) written to each such file, and fails every write after them with ENOSPC, as a disk
 * that runs out of room does. The end-to-end tests build it with the system's C compiler. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
static unsigned char full[MAX_FDS];
static long long written[MAX_FDS];

static int matches(const char *path) {
    const char *pattern = getenv("FAULT_FULL_DISK");
    return pattern && *pattern && path && strstr(path, pattern) != NULL;
}

static int mark(int fd, const char *path, int flags) {
    if (fd >= 0 && fd < MAX_FDS) {
        full[fd] = (flags & (O_WRONLY | O_RDWR)) && matches(path);
        written[fd] = 0;
    }
    return fd;
}

/* Whether `n` more bytes to `fd` find no room (else they are counted). */
static int no_room(int fd, size_t n) {
    if (fd < 0 || fd >= MAX_FDS || !full[fd]) return 0;
    const char *after = getenv("FAULT_FULL_DISK_AFTER");
    long long room = after ? atoll(after) : 0;
    if (written[fd] + (long long)n > room) return 1;
    written[fd] += (long long)n;
    return 0;
}

#define OPEN(name, ...)                                                          \
    int name(const char *path, int flags, ...) {                                 \
        static int (*real)(const char *, int, ...);                              \
        if (!real) real = dlsym(RTLD_NEXT, #name);                               \
        mode_t mode = 0;                                                         \
        if (flags & (O_CREAT | O_TMPFILE)) {                                     \
            va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); \
        }                                                                        \
        return mark(real(path, flags, mode), path, flags);                       \
    }
OPEN(open)
OPEN(open64)

#define OPENAT(name)                                                             \
    int name(int dir, const char *path, int flags, ...) {                        \
        static int (*real)(int, const char *, int, ...);                         \
        if (!real) real = dlsym(RTLD_NEXT, #name);                               \
        mode_t mode = 0;                                                         \
        if (flags & (O_CREAT | O_TMPFILE)) {                                     \
            va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); \
        }                                                                        \
        return mark(real(dir, path, flags, mode), path, flags);                  \
    }
OPENAT(openat)
OPENAT(openat64)

int close(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "close");
    if (fd >= 0 && fd < MAX_FDS) full[fd] = 0;
    return real(fd);
}

#define NOSPACE(fd, n) if (no_room(fd, n)) { errno = ENOSPC; return -1; }

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    NOSPACE(fd, n)
    return real(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real) real = dlsym(RTLD_NEXT, "writev");
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    NOSPACE(fd, total)
    return real(fd, iov, n);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t at) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    NOSPACE(fd, n)
    return real(fd, buf, n, at);
}

ssize_t copy_file_range(int in, loff_t *in_at, int out, loff_t *out_at, size_t n,
                        unsigned int flags) {
    static ssize_t (*real)(int, loff_t *, int, loff_t *, size_t, unsigned int);
    if (!real) real = dlsym(RTLD_NEXT, "copy_file_range");
    NOSPACE(out, n)
    return real(in, in_at, out, out_at, n, flags);
}

ssize_t sendfile64(int out, int in, off_t *at, size_t n) {
    static ssize_t (*real)(int, int, off_t *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "sendfile64");
    NOSPACE(out, n)
    return real(out, in, at, n);
}

int fallocate64(int fd, int mode, off_t at, off_t len) {
    static int (*real)(int, int, off_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "fallocate64");
    NOSPACE(fd, (size_t)len)
    return real(fd, mode, at, len);
}
