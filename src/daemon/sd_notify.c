/* SPDX-License-Identifier: MIT */
/*
 * sd_notify by hand (sd_notify.h says why). The address is read once, at
 * start, on the main thread; ss_notify() is then called from the main
 * thread only, so no locking.
 */
#include "config.h"

#include "sd_notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static int g_fd = -1;
static struct sockaddr_un g_addr;
static socklen_t g_addrlen;

int ss_notify_init(void)
{
    const char *e = getenv("NOTIFY_SOCKET");
    size_t n;

    if (!e || !*e)
        return 0;
    n = strlen(e);
    /* systemd sends an absolute path or an abstract name; anything else
     * (a relative path, a name too long for sun_path) is no address */
    if ((e[0] != '/' && e[0] != '@') || n >= sizeof(g_addr.sun_path) || n < 2) {
        unsetenv("NOTIFY_SOCKET");
        return -EINVAL;
    }
    memset(&g_addr, 0, sizeof(g_addr));
    g_addr.sun_family = AF_UNIX;
    memcpy(g_addr.sun_path, e, n);
    if (e[0] == '@')
        g_addr.sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL */
    /* a path counts its NUL; an abstract name is exactly its bytes */
    g_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
    unsetenv("NOTIFY_SOCKET");
    g_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return g_fd < 0 ? -errno : 1;
}

int ss_notify(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    int n;

    if (g_fd < 0)
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(msg))
        n = (int)sizeof(msg) - 1;
    if (sendto(g_fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&g_addr,
               g_addrlen) < 0)
        return -errno;
    return 0;
}
