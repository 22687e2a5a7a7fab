/* SPDX-License-Identifier: MIT */
/*
 * The service manager's notification protocol (sd_notify(3)), by hand:
 * one datagram of "KEY=VALUE" lines sent to the AF_UNIX socket that
 * $NOTIFY_SOCKET names, a filesystem path or, with a leading '@', a name in
 * the abstract namespace. Not libsystemd: the protocol is one sendto(), and
 * a shared-library dependency (with its own dependencies) for it would be
 * the daemon's only one outside hwloc and liburing, on systems without
 * systemd too.
 */
#ifndef SEALSTORE_SRC_DAEMON_SD_NOTIFY_H
#define SEALSTORE_SRC_DAEMON_SD_NOTIFY_H

/* Read $NOTIFY_SOCKET and unset it (nothing we start should notify for
 * us). 1: notifications will be sent; 0: no manager asked for them; -errno:
 * the variable holds no usable address (then nothing is sent). */
int ss_notify_init(void);

/* Send one datagram (printf format; lines separated by '\n'). Never
 * blocks, never raises SIGPIPE; a manager that is gone is ignored. 0, or
 * -errno from sendto (also 0 when ss_notify_init found no socket). */
int ss_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* SEALSTORE_SRC_DAEMON_SD_NOTIFY_H */
