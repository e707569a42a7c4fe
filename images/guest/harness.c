/*
 * aegis guest harness: PID 1 of every aegis-kit microVM.
 *
 * Built static (gcc -static -Os) so it depends on nothing in the image: it works the same
 * on glibc, musl and distroless roots. It loads the kernel modules shipped beside it in the
 * initramfs, reads its run spec from the control channel, builds the workload's root (the
 * image read-only under an overlay whose writable layer is a disk of the kit's resources.disk,
 * or a tmpfs), sets up network and secrets, runs the
 * workload as the image's user, relays exposed ports that the app binds only on loopback,
 * stays PID 1 reaping orphans, reports the exit code and powers the VM off.
 *
 * Control channel: the virtio-serial port named "aegis.ctl" (module virtio_console).
 * Chosen over the kernel command line because secrets travel in the spec and
 * /proc/cmdline is world-readable in the guest; chosen over a file on a second share
 * because nothing is ever written to disk on the host, the channel stays open for stop
 * requests and exit reports, and a virtio-serial device (unlike vhost-user-fs) does not
 * block VM snapshots. Wire format, see src/guest/spec.ts:
 *   host -> guest: "AEGIS-SPEC/1 <n>\n" then n bytes of records "key value\0";
 *                  later lines "signal TERM" | "signal INT" | "signal KILL".
 *   guest -> host: lines "AEGIS_READY", "AEGIS_STARTED", "AEGIS_ERROR=<text>",
 *                  "AEGIS_OOM=1", "AEGIS_EXIT=<code>".
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

#include "harness.h"
#include "port_proxy.h"

#define EXIT_HARNESS_ERROR 125

extern char **environ;

static int ctl_fd = -1;

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
	if (ctl_fd >= 0 && write(ctl_fd, line, n) < 0) { /* host gone: the console still has it */ }
	if (write(2, line, n) < 0) { /* nothing else to tell */ }
}

static __attribute__((noreturn)) void power_off(void) {
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


struct exec_failure {
	int err;
	char what[64];
};

static pid_t start_workload(const struct spec *spec, char **envp) {
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0) fail("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0) fail("fork: %s", strerror(errno));
	if (pid == 0) {
		struct exec_failure failure = {0};
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) dup2(devnull, 0);
		if (setgroups(spec->ngroups, spec->groups) != 0) { failure.err = errno; strcpy(failure.what, "setgroups"); }
		else if (setgid(spec->gid) != 0) { failure.err = errno; strcpy(failure.what, "setgid"); }
		else if (setuid(spec->uid) != 0) { failure.err = errno; strcpy(failure.what, "setuid"); }
		else if (chdir(spec->workdir) != 0) { failure.err = errno; snprintf(failure.what, sizeof failure.what, "workdir %s", spec->workdir); }
		else {
			environ = envp; /* execvp searches the workload's PATH, not the harness's */
			execvp(spec->argv[0], spec->argv);
			failure.err = errno;
			snprintf(failure.what, sizeof failure.what, "run %s", spec->argv[0]);
		}
		if (write(pipefd[1], &failure, sizeof failure) < 0) { /* parent sees a short read */ }
		_exit(127);
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

/* The host may ask to stop the workload: "signal TERM|INT|KILL". */
static void handle_control_input(pid_t workload) {
	static char buf[256];
	static size_t used;
	ssize_t n = read(ctl_fd, buf + used, sizeof buf - 1 - used);
	if (n <= 0) return;
	used += n;
	char *newline;
	while ((newline = memchr(buf, '\n', used))) {
		*newline = '\0';
		int sig = !strcmp(buf, "signal TERM") ? SIGTERM : !strcmp(buf, "signal INT") ? SIGINT
			: !strcmp(buf, "signal KILL") ? SIGKILL : 0;
		if (sig) kill(-workload, sig);
		used -= newline + 1 - buf;
		memmove(buf, newline + 1, used);
	}
	if (used == sizeof buf - 1) used = 0; /* an overlong line: drop it */
}

/* PID 1 until the workload exits: reap every child, forward signals, listen to the host. */
static int supervise(pid_t workload, int sigfd) {
	struct pollfd fds[2] = {{sigfd, POLLIN, 0}, {ctl_fd, POLLIN, 0}};
	for (;;) {
		if (poll(fds, 2, -1) < 0 && errno != EINTR) fail("poll: %s", strerror(errno));
		if (fds[1].revents & POLLIN) handle_control_input(workload);
		if (fds[1].revents & (POLLHUP | POLLERR)) fds[1].fd = -1; /* host disconnected: keep running */
		if (!(fds[0].revents & POLLIN)) continue;
		struct signalfd_siginfo info;
		if (read(sigfd, &info, sizeof info) != sizeof info) continue;
		if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) {
			kill(-workload, info.ssi_signo);
			continue;
		}
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			if (pid == workload) return status;
	}
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
	ctl_fd = open_control_port("aegis.ctl");
	report("AEGIS_READY");

	struct spec spec;
	read_spec(ctl_fd, &spec);
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

	if (spec.nports > 0 && guest_ip.s_addr != 0) start_port_proxy(spec.ports, spec.nports, guest_ip);
	long oom_before = oom_kills();
	pid_t workload = start_workload(&spec, build_env(&spec));
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
