/*
 * aegis guest harness: PID 1 of every aegis-kit microVM.
 *
 * Built static (gcc -static -Os) so it depends on nothing in the image: it works the same
 * on glibc, musl and distroless roots. It loads the kernel modules shipped beside it in the
 * initramfs, reads its run spec from the control channel, builds the workload's root (the
 * image read-only under an overlay whose writable layer is a disk of the kit's resources.disk,
 * or a tmpfs), sets up network and secrets, runs the
 * workload as the image's user, relays exposed ports that the app binds only on loopback,
 * serves the host over the control channel (exec sessions, heartbeats, the 127.0.0.1:7777
 * tunnel), stays PID 1 reaping orphans, reports the exit code and powers the VM off.
 *
 * Control channel: the virtio-serial port named "aegis.ctl" (module virtio_console).
 * Chosen over the kernel command line because secrets travel in the spec and
 * /proc/cmdline is world-readable in the guest; chosen over a file on a second share
 * because nothing is ever written to disk on the host, the channel stays open for stop
 * requests and exit reports, and a virtio-serial device (unlike vhost-user-fs) does not
 * block VM snapshots. The host half is src/guest/spec.ts and src/guest/control-channel.ts.
 *
 *   host -> guest, first: "AEGIS-SPEC/1 <n>\n" then n bytes of records "key value\0" (spec.ts).
 *   After it, and guest -> host from the first byte: frames
 *     u32 BE length of the rest | u8 type | u32 BE stream id | payload (<= 64 KiB)
 *   (a frame's first byte is always 0, an old harness's report line starts with "A": the host
 *   tells them apart). Types (control.h):
 *     0x01 EVENT      stream 0. guest: the reports AEGIS_READY, AEGIS_STARTED, AEGIS_ERROR=<text>,
 *                     AEGIS_OOM=1, AEGIS_EXIT=<code> (also echoed on the console, the host's
 *                     fallback); host: "signal TERM|INT|KILL|..." for the workload, "heartbeat"
 *                     (a sample now: the host asks after a resume).
 *     0x02 HEARTBEAT  stream 0, guest: u32 ESTABLISHED TCP connections (the tunnel's own left
 *                     out), u64 workload CPU ms, u64 rx+tx bytes of the NICs but lo; cumulative,
 *                     every heartbeat_ms (spec record, default 5000) and on request (heartbeat.c).
 *     0x03 WINDOW     stream n: u32 bytes the sender consumed; the other side may send that many
 *                     more data bytes (STDIN/STDOUT/STDERR/DATA) on the stream. Each side starts
 *                     with 256 KiB per stream and direction, so no stream can fill the channel.
 *     0x04 CLOSE      stream n: the stream is gone (host: kill the exec'd process group, or
 *                     reset the tunnel connection; guest: the tunnel connection was reset).
 *     0x10 EXEC_OPEN  host, even stream ids: records "arg", "env", "workdir", "user", "group",
 *                     "tty rows:cols" (exec.c). 0x11 STDIN (host), 0x12 STDOUT, 0x13 STDERR
 *                     (guest), empty = EOF; 0x14 EXIT (guest, i32 BE: code, or 128+signal, after
 *                     both outputs' EOF); 0x15 SIGNAL (host, a name: "TERM"); 0x16 RESIZE (host,
 *                     u16 rows, u16 cols).
 *     0x20 TUNNEL_OPEN guest, odd stream ids: a connection to 127.0.0.1:7777 in the guest (port, token)
 *                     (payload u16 port); 0x21 DATA both ways, empty = half-close (tunnel.c).
 *   The harness is one poll loop (supervise()); per stream it reads a source only while the
 *   host has granted credit and the outgoing buffer has room, and buffers at most the credit it
 *   granted, so a slow stream waits alone.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "exec.h"
#include "harness.h"
#include "port_proxy.h"
#include "tunnel.h"

#define EXIT_HARNESS_ERROR 125

extern char **environ;

/* Formats one console line (newline-terminated, truncated to fit); returns its length or -1. */
static int format_line(char *line, size_t size, const char *fmt, va_list ap) {
	int n = vsnprintf(line, size - 1, fmt, ap);
	if (n < 0) return -1;
	if (n > (int)size - 2) n = (int)size - 2;
	line[n++] = '\n';
	return n;
}

void say(const char *fmt, ...) {
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = format_line(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (write(2, line, n) < 0) { /* console gone: nothing else to tell */ }
}

/* A line for the host, on the control channel and on the console (the host's fallback). */
void report(const char *fmt, ...) {
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = format_line(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	ctl_send(F_EVENT, 0, line, n - 1); /* the frame has no newline */
	if (write(2, line, n) < 0) { /* nothing else to tell */ }
}

static __attribute__((noreturn)) void power_off(void) {
	ctl_drain(2); /* the last reports */
	sync();
	reboot(RB_POWER_OFF);
	/* Only reached if ACPI power-off failed: a reset is an exit under QEMU -no-reboot. */
	reboot(RB_AUTOBOOT);
	for (;;) pause();
}

void fail(const char *fmt, ...) {
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	report("AEGIS_ERROR=%s", msg);
	report("AEGIS_EXIT=%d", EXIT_HARNESS_ERROR);
	power_off();
}

double now_seconds(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Modules in dependency order, listed one per line in /modules/order by the assembler. */
static void load_modules(void) {
	FILE *order = fopen("/modules/order", "re");
	if (!order) return;
	char name[256], path[512];
	while (fgets(name, sizeof name, order)) {
		name[strcspn(name, "\n")] = '\0';
		if (!name[0]) continue;
		snprintf(path, sizeof path, "/modules/%s", name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) { say("aegis: module %s: %s", name, strerror(errno)); continue; }
		if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
			say("aegis: module %s: %s", name, strerror(errno));
		close(fd);
		unlink(path); /* the initramfs lives in RAM until power-off */
	}
	fclose(order);
}

/* udev would make /dev/virtio-ports/NAME; without it, find the port through sysfs. */
static int open_control_port(const char *wanted) {
	double deadline = now_seconds() + 10;
	do {
		DIR *dir = opendir("/sys/class/virtio-ports");
		struct dirent *entry;
		while (dir && (entry = readdir(dir))) {
			if (entry->d_name[0] == '.') continue;
			char path[300], name[64] = "";
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
			FILE *f = fopen(path, "re");
			if (!f) continue;
			if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = '\0';
			fclose(f);
			if (strcmp(name, wanted) != 0) continue;
			snprintf(path, sizeof path, "/dev/%s", entry->d_name);
			closedir(dir);
			int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
			if (fd < 0) fail("open %s: %s", path, strerror(errno));
			return fd;
		}
		if (dir) closedir(dir);
		usleep(10000);
	} while (now_seconds() < deadline);
	fail("no control port %s: is the virtio-serial device missing?", wanted);
	return -1;
}

static void read_exact(int fd, char *buf, size_t len) {
	while (len > 0) {
		ssize_t n = read(fd, buf, len);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) fail("control channel closed while reading the run spec");
		buf += n;
		len -= n;
	}
}

static void parse_ids(const char *value, struct spec *spec) {
	char *end;
	spec->uid = strtoul(value, &end, 10);
	spec->gid = *end == ':' ? strtoul(end + 1, &end, 10) : spec->uid;
}

static void read_spec(int fd, struct spec *spec) {
	char header[64];
	size_t used = 0;
	while (used < sizeof header - 1) {
		read_exact(fd, header + used, 1);
		if (header[used++] == '\n') break;
	}
	header[used] = '\0';
	unsigned long size;
	if (sscanf(header, "AEGIS-SPEC/1 %lu", &size) != 1 || size > (16u << 20))
		fail("bad run spec header");
	char *body = malloc(size + 1);
	if (!body) fail("run spec too large");
	read_exact(fd, body, size);
	body[size] = '\0';

	memset(spec, 0, sizeof *spec);
	spec->workdir = "/";
	spec->hostname = "aegis";
	spec->root = "virtiofs:root";
	spec->rw_disk = "";
	spec->net_addr = spec->net_gw = spec->dns = "";
	spec->heartbeat_ms = 5000;
	for (char *record = body, *next; record < body + size; record = next) {
		next = record + strlen(record) + 1;
		char *value = strchr(record, ' ');
		if (!value) continue;
		*value++ = '\0';
#define FULL(n) if ((n) >= MAX_ITEMS) fail("run spec: too many %s records", record)
		if (!strcmp(record, "arg")) { FULL(spec->argc); spec->argv[spec->argc++] = value; }
		else if (!strcmp(record, "env")) { FULL(spec->envc); spec->env[spec->envc++] = value; }
		else if (!strcmp(record, "secret")) { FULL(spec->nsecrets); spec->secrets[spec->nsecrets++] = value; }
		else if (!strcmp(record, "mount")) { FULL(spec->nmounts); spec->mounts[spec->nmounts++] = value; }
		else if (!strcmp(record, "port")) { FULL(spec->nports); spec->ports[spec->nports++] = atoi(value); }
		else if (!strcmp(record, "group")) { FULL(spec->ngroups); spec->groups[spec->ngroups++] = strtoul(value, NULL, 10); }
		else if (!strcmp(record, "user")) parse_ids(value, spec);
		else if (!strcmp(record, "workdir")) spec->workdir = value;
		else if (!strcmp(record, "hostname")) spec->hostname = value;
		else if (!strcmp(record, "host")) { FULL(spec->nhosts); spec->hosts[spec->nhosts++] = value; }
		else if (!strcmp(record, "root")) spec->root = value;
		else if (!strcmp(record, "rwdisk")) spec->rw_disk = value;
		else if (!strcmp(record, "net")) spec->net_addr = value;
		else if (!strcmp(record, "gateway")) spec->net_gw = value;
		else if (!strcmp(record, "dns")) spec->dns = value;
		else if (!strcmp(record, "heartbeat_ms")) spec->heartbeat_ms = atoi(value);
		/* Unknown keys are skipped so a newer host can talk to an older harness. */
#undef FULL
	}
	if (spec->argc == 0) fail("run spec has no command");
}

static long oom_kills(void) {
	FILE *f = fopen("/proc/vmstat", "re");
	char line[128];
	long count = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "oom_kill %ld", &count) == 1) break;
	if (f) fclose(f);
	return count;
}


void exec_as(const struct identity *who, char *const argv[], char **envp, int failure_fd) {
	struct exec_failure failure = {0};
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setgroups(who->ngroups, who->groups) != 0) { failure.err = errno; strcpy(failure.what, "setgroups"); }
	else if (setgid(who->gid) != 0) { failure.err = errno; strcpy(failure.what, "setgid"); }
	else if (setuid(who->uid) != 0) { failure.err = errno; strcpy(failure.what, "setuid"); }
	else if (chdir(who->workdir) != 0) { failure.err = errno; snprintf(failure.what, sizeof failure.what, "workdir %s", who->workdir); }
	else {
		environ = envp; /* execvp searches the workload's PATH, not the harness's */
		execvp(argv[0], argv);
		failure.err = errno;
		snprintf(failure.what, sizeof failure.what, "run %s", argv[0]);
	}
	if (write(failure_fd, &failure, sizeof failure) < 0) { /* parent sees a short read */ }
	_exit(127);
}

static pid_t start_workload(const struct spec *spec, char **envp) {
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0) fail("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0) fail("fork: %s", strerror(errno));
	if (pid == 0) {
		setsid();
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) dup2(devnull, 0);
		struct identity who = {spec->uid, spec->gid, spec->groups, spec->ngroups, spec->workdir};
		exec_as(&who, spec->argv, envp, pipefd[1]);
	}
	close(pipefd[1]);
	struct exec_failure failure;
	ssize_t n = read(pipefd[0], &failure, sizeof failure);
	close(pipefd[0]);
	if (n == (ssize_t)sizeof failure) {
		int code = (failure.err == ENOENT) ? 127 : 126;
		report("AEGIS_ERROR=%s: %s", failure.what, strerror(failure.err));
		waitpid(pid, NULL, 0);
		report("AEGIS_EXIT=%d", code);
		power_off();
	}
	return pid;
}

static char **build_env(const struct spec *spec) {
	static char *envp[2 * MAX_ITEMS + 3];
	int n = 0, has_path = 0, has_home = 0;
	for (int i = 0; i < spec->envc; i++) {
		has_path |= !strncmp(spec->env[i], "PATH=", 5);
		has_home |= !strncmp(spec->env[i], "HOME=", 5);
		envp[n++] = spec->env[i];
	}
	for (int i = 0; i < spec->nsecrets; i++) envp[n++] = spec->secrets[i];
	if (!has_path) envp[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	if (!has_home) envp[n++] = "HOME=/";
	envp[n] = NULL;
	return envp;
}

static int min_timeout(int a, int b) { return a < 0 ? b : b < 0 ? a : a < b ? a : b; }

static struct {
	pid_t workload;
	int done, status;
} supervised;

/* SIGTERM/SIGINT go to the workload's process group; SIGCHLD reaps everything (PID 1's job). */
static void signal_ready(void *ctx, int sigfd, short revents) {
	(void)ctx;
	(void)revents;
	struct signalfd_siginfo info;
	if (read(sigfd, &info, sizeof info) != sizeof info) return;
	if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) {
		kill(-supervised.workload, info.ssi_signo);
		return;
	}
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == supervised.workload) {
			supervised.done = 1;
			supervised.status = status;
		}
		exec_reaped(pid, status);
	}
}

/* PID 1 until the workload exits: the control channel, exec sessions, tunnel, heartbeats, signals. */
static int supervise(pid_t workload, int sigfd) {
	supervised.workload = workload;
	while (!supervised.done) {
		int timeout = min_timeout(heartbeat_due_ms(), exec_tick()); /* exits due: sent, sessions freed */
		watch_reset();
		watch_add(sigfd, POLLIN, signal_ready, NULL);
		ctl_watch(workload);
		exec_watch();
		tunnel_watch();
		watch_poll(timeout);
		heartbeat_tick(0);
	}
	return supervised.status;
}

static void stop_everything(void) {
	kill(-1, SIGTERM);
	double deadline = now_seconds() + 2;
	while (now_seconds() < deadline) {
		pid_t pid = waitpid(-1, NULL, WNOHANG);
		if (pid < 0 && errno == ECHILD) return;
		if (pid == 0) usleep(10000);
	}
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0) {}
}

int main(void) {
	if (getpid() != 1) {
		fprintf(stderr, "aegis-harness runs as PID 1 inside an aegis microVM only\n");
		return 2;
	}
	mount_or_fail("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_fail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_or_fail("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	if (fcntl(2, F_GETFD) < 0) {
		int console = open("/dev/console", O_RDWR | O_NOCTTY);
		if (console >= 0) { dup2(console, 0); dup2(console, 1); dup2(console, 2); }
	}
	load_modules();
	int port = open_control_port("aegis.ctl");
	ctl_attach(port);
	report("AEGIS_READY");

	struct spec spec;
	read_spec(port, &spec);
	mount_root(&spec);
	mount_system(&spec);
	write_etc(&spec);
	write_secrets(&spec);
	enter_root();
	struct in_addr guest_ip = {0};
	setup_network(&spec, &guest_ip);

	sigset_t handled;
	sigemptyset(&handled);
	sigaddset(&handled, SIGCHLD);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGINT);
	sigprocmask(SIG_BLOCK, &handled, NULL);
	int sigfd = signalfd(-1, &handled, SFD_CLOEXEC);
	if (sigfd < 0) fail("signalfd: %s", strerror(errno));
	reboot(RB_DISABLE_CAD); /* ctrl-alt-del becomes SIGINT to PID 1, forwarded like any other */

	if (spec.nports > 0 && guest_ip.s_addr != 0) heartbeat_exclude(start_port_proxy(spec.ports, spec.nports, guest_ip));
	long oom_before = oom_kills();
	char **envp = build_env(&spec);
	tunnel_start(); /* before the workload, which may call the guest API at once */
	pid_t workload = start_workload(&spec, envp);
	exec_init(&spec, envp);
	ctl_start(port);
	heartbeat_init(spec.heartbeat_ms);
	report("AEGIS_STARTED");
	int status = supervise(workload, sigfd);

	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int oom = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && oom_kills() > oom_before;
	stop_everything();
	sync();
	if (oom) {
		struct sysinfo si;
		sysinfo(&si);
		say("aegis: the workload was killed by the kernel's OOM killer: it ran out of memory (%lu MiB in this VM); give the VM more memory",
			(unsigned long)(si.totalram * si.mem_unit >> 20));
		report("AEGIS_OOM=1");
	}
	report("AEGIS_EXIT=%d", code);
	power_off();
	return 0;
}
