/* SPDX-License-Identifier: MIT */
/*
 * `sealstore doctor`: what this machine gives the store and how to get
 * more (tools/doctor.c). The command line and the output formatting it
 * shares live in tools/sealstore.c.
 */
#ifndef SEALSTORE_TOOLS_DOCTOR_H
#define SEALSTORE_TOOLS_DOCTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status of doctor: the worst finding. */
enum doctor_exit {
    DOCTOR_OK = 0,      /* nothing to improve */
    DOCTOR_PERF = 1,    /* findings that cost performance or capacity */
    DOCTOR_MISSING = 2, /* a kernel feature the store needs is missing */
};

struct doctor_args {
    const char *socket;    /* NULL: $SEALSTORE_SOCKET or the default */
    const char *spill_dir; /* NULL: the running store's, else the default */
    bool json;
};

int sealstore_doctor(const struct doctor_args *a);

/* From tools/sealstore.c: the CLI's formatters. */
const char *cli_fmt_size(uint64_t v, char *buf, size_t len);
void cli_json_cstr(FILE *f, const char *s);

#endif /* SEALSTORE_TOOLS_DOCTOR_H */
