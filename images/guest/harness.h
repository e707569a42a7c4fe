/* What harness.c and guest_setup.c share: the run spec and the reporting helpers. */
#ifndef AEGIS_HARNESS_H
#define AEGIS_HARNESS_H
#include <netinet/in.h>
#include <sys/types.h>

#define MAX_ITEMS 256
/* Where the workload's root is assembled before the harness switches into it. */
#define NEWROOT "/newroot"

struct spec {
	char *argv[MAX_ITEMS + 1];
	int argc;
	char *env[MAX_ITEMS + 2];
	int envc;
	char *secrets[MAX_ITEMS]; /* NAME=VALUE */
	int nsecrets;
	char *mounts[MAX_ITEMS]; /* tag:path, virtiofs shares besides the root */
	int nmounts;
	int ports[MAX_ITEMS];
	int nports;
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_ITEMS];
	int ngroups;
	const char *workdir;
	const char *hostname;
	const char *root;     /* "virtiofs:<tag>" or "block:<device>" */
	const char *rw_disk;  /* the writable layer's virtio-blk serial; empty: a tmpfs */
	char *hosts[MAX_ITEMS]; /* "address name" lines added to /etc/hosts */
	int nhosts;
	const char *net_addr; /* a.b.c.d/prefix; empty: no network */
	const char *net_gw;
	const char *dns;
	int heartbeat_ms; /* activity samples for the host; 0: none */
};

/* Who a process runs as: the workload, or an exec session. */
struct identity {
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	int ngroups;
	const char *workdir;
};

/* Why a forked child could not exec, written to the parent over a close-on-exec pipe. */
struct exec_failure {
	int err;
	char what[64];
};

/*
 * In a forked child: the default signal mask, `who`'s groups, ids and workdir, then execvp with
 * `envp` (argv[0] searched on envp's PATH). On failure writes a struct exec_failure to failure_fd
 * and exits 127.
 */
void exec_as(const struct identity *who, char *const argv[], char **envp, int failure_fd) __attribute__((noreturn));

/* A line on the console. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A line for the host: on the control channel and on the console. */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports a harness failure (exit code 125) and powers off. */
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
double now_seconds(void);

/* guest_setup.c: the workload's root, system mounts, /etc files, network, secrets. */
void mkdir_p(const char *path, mode_t mode);
void mount_or_fail(const char *src, const char *target, const char *type, unsigned long flags, const char *data);
int write_file(const char *path, const char *content, mode_t mode);
void mount_root(const struct spec *spec);
void mount_system(const struct spec *spec);
void write_etc(const struct spec *spec);
void write_secrets(const struct spec *spec);
void enter_root(void);
void setup_network(const struct spec *spec, struct in_addr *guest_ip);

#endif
