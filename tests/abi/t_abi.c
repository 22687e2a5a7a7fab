/* SPDX-License-Identifier: MIT */
/*
 * ===================================================================
 *  If this fails, the ABI changed: update libsealstore.sym / bump the
 *  version. (Add new symbols to a NEW node of src/lib/libsealstore.sym;
 *  never edit a released node.)
 * ===================================================================
 *
 * What a user links against, checked from the outside:
 *  - libsealstore.so exports exactly the names of libsealstore.sym's
 *    global: lists, each under the version node it is listed in; nothing
 *    else (no ss__ internal, no helper of a dependency) leaks;
 *  - every SS_API function that sealstore.h declares is in the .sym, and
 *    every name in the .sym is public (ss_, never ss__);
 *  - sealstore.h is self-contained: this file includes it before anything
 *    else, and a strict C11 and a C++11 compiler accept it on its own;
 *  - the structs a caller allocates keep their layout (sizes and offsets
 *    pinned below: a change there breaks binaries built before it).
 *
 * Needs SS_SRCDIR and SS_BUILDDIR (make check sets both) and nm (binutils).
 */
#include "sealstore.h" /* first, and the only library header: it must stand alone */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../t_helpers.h"

#define MAX_SYMS 512

typedef struct sym {
    char name[128];
    char node[64]; /* version node */
} sym;

typedef struct symset {
    int n;
    sym s[MAX_SYMS];
} symset;

static char srcdir[PATH_MAX], builddir[PATH_MAX];

static const sym *find(const symset *set, const char *name)
{
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->s[i].name, name) == 0)
            return &set->s[i];
    return NULL;
}

static void add(symset *set, const char *name, const char *node)
{
    if (set->n == MAX_SYMS)
        fail_msg("more than %d symbols", MAX_SYMS);
    snprintf(set->s[set->n].name, sizeof(set->s[0].name), "%s", name);
    snprintf(set->s[set->n].node, sizeof(set->s[0].node), "%s", node);
    set->n++;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/*
 * Read the version script: `NODE { global: a; b; local: *; };` and later
 * `NODE2 { global: c; } NODE;`. Comments (# ... and C style) are dropped.
 */
static void read_version_script(symset *out)
{
    char path[PATH_MAX + 32], *text, *p, node[64] = "";
    bool global = false;

    snprintf(path, sizeof(path), "%s/src/lib/libsealstore.sym", srcdir);
    text = slurp(path);
    for (p = text; *p; p++) {
        if (*p == '#') {
            while (*p && *p != '\n')
                *p++ = ' ';
            if (!*p)
                break;
        } else if (p[0] == '/' && p[1] == '*') {
            char *e = strstr(p + 2, "*/");
            if (!e)
                fail_msg("unterminated comment in %s", path);
            memset(p, ' ', (size_t)(e + 2 - p));
        }
    }
    for (p = strtok(text, " \t\r\n"); p; p = strtok(NULL, " \t\r\n")) {
        size_t n = strlen(p);
        if (strcmp(p, "global:") == 0) {
            global = true;
        } else if (strcmp(p, "local:") == 0) {
            global = false;
        } else if (p[0] == '}') {
            global = false;
            node[0] = '\0';
        } else if (strcmp(p, "{") == 0) {
            /* node name came just before */
        } else if (!node[0] && !global && p[n - 1] != ';') {
            snprintf(node, sizeof(node), "%s", p); /* "SEALSTORE_0.1" */
            if (n > 1 && p[n - 1] == '{')
                node[n - 1] = '\0';
        } else if (global) {
            if (p[n - 1] != ';')
                fail_msg("%s: \"%s\" lacks its ';'", path, p);
            p[n - 1] = '\0';
            if (!node[0])
                fail_msg("%s: symbol %s outside a version node", path, p);
            if (find(out, p))
                fail_msg("%s: %s listed twice", path, p);
            add(out, p, node);
        }
    }
    free(text);
    if (out->n == 0)
        fail_msg("no global symbols found in %s", path);
}

/* Run a command; its stdout into buf. Returns the exit status, or -1. */
static int run(const char *cmd, char *buf, size_t len)
{
    FILE *f = popen(cmd, "r");
    size_t n = 0, k;
    int st;

    if (!f)
        return -1;
    while (len > 1 && (k = fread(buf + n, 1, len - 1 - n, f)) > 0)
        n += k;
    buf[len > 0 ? n : 0] = '\0';
    st = pclose(f);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* ----------------------------------------------------------------- tests */

static void test_version_script_is_public(void **state)
{
    static symset vs;

    (void)state;
    vs.n = 0;
    read_version_script(&vs);
    for (int i = 0; i < vs.n; i++) {
        const char *n = vs.s[i].name;
        if (strncmp(n, "ss_", 3) != 0 || strncmp(n, "ss__", 4) == 0)
            fail_msg("libsealstore.sym exports %s: only ss_ names are public", n);
        if (strchr(n, '*') || strchr(n, '?'))
            fail_msg("libsealstore.sym global: uses a wildcard (%s)", n);
        if (strncmp(vs.s[i].node, "SEALSTORE_", 10) != 0)
            fail_msg("%s is in node %s, not SEALSTORE_x.y", n, vs.s[i].node);
    }
}

static void test_exports_match_version_script(void **state)
{
    static symset vs, ex;
    static char out[1 << 16];
    char so[PATH_MAX + 64], cmd[PATH_MAX + 128];
    int rc, bad = 0;

    (void)state;
    vs.n = ex.n = 0;
    read_version_script(&vs);
    snprintf(so, sizeof(so), "%s/src/lib/.libs/libsealstore.so", builddir);
    snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s' 2>&1", so);
    rc = run(cmd, out, sizeof(out));
    T_SKIP_IF(rc == 127, NULL, "nm not found: install binutils");
    if (rc != 0)
        fail_msg("%s failed (%d): %s", cmd, rc, out);

    /* "0000000000004660 T ss_version@@SEALSTORE_0.1" */
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char addr[32], type[8], name[256], *at, node[64] = "";
        if (sscanf(line, "%31s %7s %255s", addr, type, name) != 3)
            fail_msg("unexpected nm line: %s", line);
        if (strcmp(type, "A") == 0)
            continue; /* the version nodes themselves */
        at = strchr(name, '@');
        if (at) {
            char *v = at + 1 + (at[1] == '@');
            snprintf(node, sizeof(node), "%s", v);
            *at = '\0';
        }
        add(&ex, name, node);
    }

    for (int i = 0; i < ex.n; i++) {
        const sym *s = find(&vs, ex.s[i].name);
        if (!s) {
            print_error("libsealstore.so exports %s, which libsealstore.sym does not "
                        "list%s\n", ex.s[i].name,
                        strncmp(ex.s[i].name, "ss__", 4) == 0 ? " (an internal leaked)" : "");
            bad++;
        } else if (strcmp(s->node, ex.s[i].node) != 0) {
            print_error("%s is exported as version \"%s\" but listed in node %s\n",
                        ex.s[i].name, ex.s[i].node, s->node);
            bad++;
        }
    }
    for (int i = 0; i < vs.n; i++) {
        if (!find(&ex, vs.s[i].name)) {
            print_error("libsealstore.sym lists %s, but libsealstore.so does not define it\n",
                        vs.s[i].name);
            bad++;
        }
    }
    if (bad)
        fail_msg("%d difference(s) between %s and libsealstore.sym", bad, so);
    assert_int_equal(ex.n, vs.n);
}

/*
 * Every function sealstore.h declares with SS_API is in the version
 * script, or users would compile against a symbol they cannot link.
 */
static void test_header_declarations_listed(void **state)
{
    static symset vs;
    char path[PATH_MAX + 32], *text, *p;
    int found = 0, missing = 0;

    (void)state;
    vs.n = 0;
    read_version_script(&vs);
    snprintf(path, sizeof(path), "%s/include/sealstore.h", srcdir);
    text = slurp(path);
    for (p = strstr(text, "SS_API"); p; p = strstr(p + 6, "SS_API")) {
        char *paren, *end, *start, name[128];
        /* skip the macro's own definition lines */
        char *bol = p;
        while (bol > text && bol[-1] != '\n')
            bol--;
        if (strncmp(bol, "#", 1) == 0)
            continue;
        if (p > text && (p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z')))
            continue;
        paren = strchr(p, '(');
        if (!paren)
            break;
        end = paren;
        while (end > p && end[-1] == ' ')
            end--;
        start = end;
        while (start > p && (start[-1] == '_' || (start[-1] >= 'a' && start[-1] <= 'z') ||
                             (start[-1] >= '0' && start[-1] <= '9')))
            start--;
        if (end - start <= 0 || (size_t)(end - start) >= sizeof(name))
            fail_msg("cannot read the declaration at: %.60s", p);
        memcpy(name, start, (size_t)(end - start));
        name[end - start] = '\0';
        found++;
        if (!find(&vs, name)) {
            print_error("sealstore.h declares SS_API %s, but libsealstore.sym does not "
                        "list it\n", name);
            missing++;
        }
    }
    free(text);
    assert_true(found >= 8); /* the parser saw the declarations at all */
    if (missing)
        fail_msg("%d declared function(s) missing from libsealstore.sym", missing);
}

/* Compile a tiny program that includes only sealstore.h, with a strict
 * compiler. Skips when that compiler is not installed (status 127). */
static void compile_alone(const char *compiler, const char *lang, const char *std)
{
    static char out[8192];
    char cmd[2 * PATH_MAX];
    int rc;

    snprintf(cmd, sizeof(cmd),
             "printf '#include <sealstore.h>\\n"
             "int main(void) { return ss_version() == 0 || ss_strerror(0) == 0; }\\n' | "
             "%s -x %s -std=%s -Wall -Wextra -Werror -pedantic-errors -fsyntax-only "
             "-I'%s/include' - 2>&1",
             compiler, lang, std, srcdir);
    rc = run(cmd, out, sizeof(out));
    T_SKIP_IF(rc == 127, NULL, "compiler not installed");
    if (rc != 0)
        fail_msg("sealstore.h does not compile alone as %s (%s):\n%s", lang, std, out);
}

static void test_header_standalone_c(void **state)
{
    (void)state;
    compile_alone("cc", "c", "c11");
}

static void test_header_standalone_cxx(void **state)
{
    (void)state;
    compile_alone("c++", "c++", "c++11");
}

/* Structs the caller allocates and the library fills. ss_object.uid sits
 * in what was padding after the id (x86-64 and other LP64 ABIs): its size
 * and every older offset stayed. */
static void test_public_layouts(void **state)
{
    (void)state;
    assert_int_equal(sizeof(ss_id), 20);
    assert_int_equal(offsetof(ss_object, id), 0);
    assert_int_equal(offsetof(ss_object, uid), 20);
    assert_int_equal(offsetof(ss_object, data), 24);
    assert_int_equal(offsetof(ss_object, size), 32);
    assert_int_equal(offsetof(ss_object, meta), 40);
    assert_int_equal(offsetof(ss_object, meta_size), 48);
    assert_int_equal(sizeof(ss_object), 56);

    assert_int_equal(offsetof(ss_obj_info, id), 0);
    assert_int_equal(offsetof(ss_obj_info, state), 20);
    assert_int_equal(offsetof(ss_obj_info, size), 24);
    assert_int_equal(offsetof(ss_obj_info, meta_size), 32);
    assert_int_equal(offsetof(ss_obj_info, refs), 40);
    assert_int_equal(offsetof(ss_obj_info, node), 44);
    assert_int_equal(offsetof(ss_obj_info, backing), 48);
    assert_int_equal(offsetof(ss_obj_info, uid), 56);
    assert_int_equal(offsetof(ss_obj_info, flags), 60);
    assert_int_equal(SS_LIFETIME_CREATOR, 1);
    assert_int_equal(sizeof(ss_obj_info), 64);
    assert_int_equal(SS_UID_UNKNOWN, 0xffffffffu);
}

/* The installed library actually runs (through the dynamic linker). */
static void test_calls_through_the_library(void **state)
{
    char buf[16];

    (void)state;
    assert_non_null(ss_version());
    assert_string_equal(ss_strerror(0), "success");
    assert_string_equal(ss_option_name(SS_OPT_LOG), "SEALSTORE_LOG");
    assert_int_equal(ss_option_lookup("SEALSTORE_LOG"), SS_OPT_LOG);
    assert_true(ss_option_get(SS_OPT_LOG, buf, sizeof(buf)) > 0);
    assert_int_equal(ss_log_set_sink(NULL, NULL), 0);
    assert_true(ss_get_support() & SS_SUPPORT_MEMFD_SEAL);
}

int main(void)
{
    const char *s = getenv("SS_SRCDIR"), *b = getenv("SS_BUILDDIR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_script_is_public),
        cmocka_unit_test(test_exports_match_version_script),
        cmocka_unit_test(test_header_declarations_listed),
        cmocka_unit_test(test_header_standalone_c),
        cmocka_unit_test(test_header_standalone_cxx),
        cmocka_unit_test(test_public_layouts),
        cmocka_unit_test(test_calls_through_the_library),
    };

    if (!s || !b)
        return t_skip_program(NULL, "SS_SRCDIR/SS_BUILDDIR not set: run through make check");
    snprintf(srcdir, sizeof(srcdir), "%s", s);
    snprintf(builddir, sizeof(builddir), "%s", b);
    return t_run(tests, NULL, NULL);
}
