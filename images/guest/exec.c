/*
 * Exec sessions (aegis-kit exec): the host opens a stream with EXEC_OPEN records
 *   "arg X" (argv, in order), "env NAME=VALUE" (added to the workload's environment, later
 *   wins), "workdir /path", "user uid:gid", "group gid" (with "user": the supplementary groups),
 *   "tty rows:cols" (a pseudo-terminal; without it, three pipes);
 * the process runs in the workload's root, namespaces and environment (secrets included), as the
 * workload's user and workdir unless the records say otherwise, in a session and process group
 * of its own. STDIN frames feed it (empty: EOF; on a tty, ^D), STDOUT/STDERR carry its output
 * (on a tty, STDOUT carries everything and STDERR ends at once), EXIT its code once the output
 * has reached EOF (or 1 s after it exited, if something it left behind holds the output open),
 * SIGNAL/RESIZE reach its process group and terminal, CLOSE from the host kills the group.
 */
#define _GNU_SOURCE
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "control.h"
#include "harness.h"

#define MAX_SESSIONS 64
#define MAX_ARGS 256
#define EXIT_GRACE_S 1.0

struct session {
	int used;
	uint32_t id;
	pid_t pid;
	int tty;
	int in_fd, out_fd, err_fd; /* with a tty, in_fd == out_fd == the pty master */
	struct inbuf stdin_buf;
	int stdin_eof;    /* the host sent EOF */
	int stdin_closed; /* ... and it reached the process */
	uint32_t credit;  /* STDOUT+STDERR bytes the host still takes */
	int out_done, err_done;
	int exited, status;
	double exit_deadline;
};

static struct session sessions[MAX_SESSIONS];
static const struct spec *workload_spec;
static char **base_env;

void exec_init(const struct spec *spec, char **workload_env) {
	workload_spec = spec;
	base_env = workload_env;
}

static struct session *find(uint32_t id) {
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (sessions[i].used && sessions[i].id == id) return &sessions[i];
	return NULL;
}

static void close_fd(int *fd) {
	if (*fd >= 0) close(*fd);
	*fd = -1;
}

static void close_session(struct session *s) {
	if (s->tty) {
		s->in_fd = -1; /* the same fd as out_fd */
		close_fd(&s->out_fd);
	} else {
		close_fd(&s->in_fd);
		close_fd(&s->out_fd);
		close_fd(&s->err_fd);
	}
	inbuf_free(&s->stdin_buf);
	s->used = 0;
}

static void kill_session(struct session *s) {
	if (s->pid > 0) kill(-s->pid, SIGKILL); /* the group: what it started in the background too */
	close_session(s);
}

static void send_exit(struct session *s, int code) {
	unsigned char payload[4];
	put_u32(payload, (uint32_t)code);
	ctl_send(F_EXIT, s->id, payload, sizeof payload);
}

/* The workload's environment with the request's additions, a later NAME replacing an earlier one. */
static char **merged_env(char **additions, int nadd) {
	int nbase = 0;
	while (base_env && base_env[nbase]) nbase++;
	char **env = calloc(nbase + nadd + 1, sizeof *env);
	if (!env) return base_env;
	int n = 0;
	for (int i = 0; i < nbase; i++) {
		size_t name = strcspn(base_env[i], "=");
		int replaced = 0;
		for (int j = 0; j < nadd && !replaced; j++)
			replaced = !strncmp(additions[j], base_env[i], name + 1);
		if (!replaced) env[n++] = base_env[i];
	}
	for (int j = 0; j < nadd; j++) env[n++] = additions[j];
	env[n] = NULL;
	return env;
}

static void set_nonblocking(int fd) {
	int flags = fcntl(fd, F_GETFL);
	if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* A session that could not start: the reason on its stderr, then its exit code. */
static void refuse(uint32_t id, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(uint32_t id, int code, const char *fmt, ...) {
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof message - 1) n = sizeof message - 1;
	ctl_send(F_STDERR, id, message, n);
	ctl_send(F_STDOUT, id, NULL, 0);
	ctl_send(F_STDERR, id, NULL, 0);
	unsigned char payload[4];
	put_u32(payload, (uint32_t)code);
	ctl_send(F_EXIT, id, payload, sizeof payload);
}

static void open_session(uint32_t id, const unsigned char *payload, size_t len) {
	if (find(id)) { refuse(id, 125, "aegis: exec stream %u is already open\n", id); return; }
	struct session *s = NULL;
	for (int i = 0; i < MAX_SESSIONS && !s; i++)
		if (!sessions[i].used) s = &sessions[i];
	if (!s) { refuse(id, 125, "aegis: too many exec sessions (%d)\n", MAX_SESSIONS); return; }

	/* The records, copied: the payload lives in the channel's input buffer. */
	char *records = malloc(len + 1);
	if (!records) { refuse(id, 125, "aegis: out of memory\n"); return; }
	memcpy(records, payload, len);
	records[len] = '\0';
	char *argv[MAX_ARGS + 1], *additions[MAX_ARGS];
	int argc = 0, nadd = 0, tty = 0;
	struct winsize size = {24, 80, 0, 0};
	struct identity who = {workload_spec->uid, workload_spec->gid, workload_spec->groups, workload_spec->ngroups,
		workload_spec->workdir};
	gid_t groups[MAX_ITEMS];
	int ngroups = 0, user_given = 0;
	for (char *record = records, *next; record < records + len; record = next) {
		next = record + strlen(record) + 1;
		char *value = strchr(record, ' ');
		if (!value) continue;
		*value++ = '\0';
		if (!strcmp(record, "arg") && argc < MAX_ARGS) argv[argc++] = value;
		else if (!strcmp(record, "env") && nadd < MAX_ARGS) additions[nadd++] = value;
		else if (!strcmp(record, "workdir")) who.workdir = value;
		else if (!strcmp(record, "user")) {
			char *end;
			who.uid = strtoul(value, &end, 10);
			who.gid = *end == ':' ? strtoul(end + 1, NULL, 10) : who.uid;
			user_given = 1;
		} else if (!strcmp(record, "group") && ngroups < MAX_ITEMS) groups[ngroups++] = strtoul(value, NULL, 10);
		else if (!strcmp(record, "tty")) {
			tty = 1;
			unsigned rows = 24, cols = 80;
			sscanf(value, "%u:%u", &rows, &cols);
			size.ws_row = rows;
			size.ws_col = cols;
		}
	}
	argv[argc] = NULL;
	if (user_given) { who.groups = groups; who.ngroups = ngroups; }
	if (argc == 0) { free(records); refuse(id, 125, "aegis: exec without a command\n"); return; }

	int child_in = -1, child_out = -1, child_err = -1, master = -1;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	char slave_name[64] = "";
	if (tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
			ptsname_r(master, slave_name, sizeof slave_name) != 0) {
			if (master >= 0) close(master);
			free(records);
			refuse(id, 125, "aegis: no pseudo-terminal: %s\n", strerror(errno));
			return;
		}
		ioctl(master, TIOCSWINSZ, &size);
	} else if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
		for (int i = 0; i < 2; i++) { if (in[i] >= 0) close(in[i]); if (out[i] >= 0) close(out[i]); if (err[i] >= 0) close(err[i]); }
		free(records);
		refuse(id, 125, "aegis: pipe: %s\n", strerror(errno));
		return;
	} else {
		child_in = in[0];
		child_out = out[1];
		child_err = err[1];
	}
	char **envp = merged_env(additions, nadd);
	int failure_pipe[2];
	if (pipe2(failure_pipe, O_CLOEXEC) != 0) failure_pipe[0] = failure_pipe[1] = -1;
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		if (tty) {
			int slave = open(slave_name, O_RDWR);
			if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(126);
			if (fchown(slave, who.uid, -1) != 0) { /* the terminal stays root's; the process has it open anyway */ }
			child_in = child_out = child_err = slave;
		}
		dup2(child_in, 0);
		dup2(child_out, 1);
		dup2(child_err, 2);
		exec_as(&who, argv, envp, failure_pipe[1]);
	}
	int fork_errno = errno;
	if (envp != base_env) free(envp);
	if (failure_pipe[1] >= 0) close(failure_pipe[1]);
	if (!tty) { close(in[0]); close(out[1]); close(err[1]); }
	struct exec_failure failure;
	ssize_t got = -1;
	if (pid > 0 && failure_pipe[0] >= 0) {
		do got = read(failure_pipe[0], &failure, sizeof failure);
		while (got < 0 && errno == EINTR);
	}
	if (failure_pipe[0] >= 0) close(failure_pipe[0]);
	if (pid < 0 || got == (ssize_t)sizeof failure) {
		if (tty) close(master);
		else { close(in[1]); close(out[0]); close(err[0]); }
		if (pid < 0) refuse(id, 125, "aegis: fork: %s\n", strerror(fork_errno));
		else refuse(id, failure.err == ENOENT ? 127 : 126, "aegis: %s: %s\n", failure.what, strerror(failure.err));
		free(records);
		return; /* the failed child is reaped by the main loop like any orphan */
	}
	free(records);
	memset(s, 0, sizeof *s);
	s->used = 1;
	s->id = id;
	s->pid = pid;
	s->tty = tty;
	s->credit = STREAM_WINDOW;
	if (tty) {
		s->in_fd = s->out_fd = master;
		s->err_fd = -1;
		s->err_done = 1;
		ctl_send(F_STDERR, id, NULL, 0);
	} else {
		s->in_fd = in[1];
		s->out_fd = out[0];
		s->err_fd = err[0];
	}
	set_nonblocking(s->out_fd);
	if (!tty) { set_nonblocking(s->in_fd); set_nonblocking(s->err_fd); }
}

static void output_done(struct session *s, int is_err) {
	ctl_send(is_err ? F_STDERR : F_STDOUT, s->id, NULL, 0);
	if (is_err) {
		s->err_done = 1;
		close_fd(&s->err_fd);
	} else {
		s->out_done = 1;
		if (s->tty) s->in_fd = -1; /* the master: stdin ends with it */
		close_fd(&s->out_fd);
	}
}

static void read_output(struct session *s, int is_err) {
	static unsigned char buf[FRAME_MAX_PAYLOAD];
	int fd = is_err ? s->err_fd : s->out_fd;
	size_t want = s->credit < sizeof buf ? s->credit : sizeof buf;
	if (want == 0 || !ctl_has_room(want)) return;
	ssize_t n = read(fd, buf, want);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
	if (n <= 0) { output_done(s, is_err); return; } /* EOF; on a pty, EIO once the terminal is gone */
	ctl_send(is_err ? F_STDERR : F_STDOUT, s->id, buf, n);
	s->credit -= n;
	if (s->exited) s->exit_deadline = now_seconds() + EXIT_GRACE_S;
}

static void write_input(struct session *s) {
	ssize_t n = inbuf_write_to(&s->stdin_buf, s->in_fd);
	if (n < 0) { /* the process closed its stdin: drop what it will never read */
		inbuf_free(&s->stdin_buf);
		s->stdin_closed = 1;
		if (!s->tty) close_fd(&s->in_fd);
		return;
	}
	if (n > 0) {
		unsigned char credit[4];
		put_u32(credit, n);
		ctl_send(F_WINDOW, s->id, credit, sizeof credit);
	}
	if (inbuf_empty(&s->stdin_buf) && s->stdin_eof && !s->stdin_closed) {
		s->stdin_closed = 1;
		if (s->tty) {
			static const char eof = 4; /* ^D: the terminal's EOF in canonical mode */
			if (write(s->in_fd, &eof, 1) < 0) { /* the terminal is gone: nothing to end */ }
		} else {
			close_fd(&s->in_fd);
		}
	}
}

static void session_ready(void *ctx, int fd, short revents) {
	struct session *s = ctx;
	if (!s->used) return;
	if (fd == s->in_fd && (revents & (POLLOUT | POLLERR)) && !s->stdin_closed) write_input(s);
	if (!s->used) return;
	if (fd == s->out_fd && !s->out_done && (revents & (POLLIN | POLLHUP | POLLERR))) read_output(s, 0);
	if (fd == s->err_fd && !s->err_done && (revents & (POLLIN | POLLHUP | POLLERR))) read_output(s, 1);
}

void exec_watch(void) {
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *s = &sessions[i];
		if (!s->used) continue;
		int can_send = s->credit > 0 && ctl_has_room(s->credit < FRAME_MAX_PAYLOAD ? s->credit : FRAME_MAX_PAYLOAD);
		short in_events = !s->stdin_closed && (!inbuf_empty(&s->stdin_buf) || s->stdin_eof) ? POLLOUT : 0;
		if (s->tty) {
			short events = in_events | (!s->out_done && can_send ? POLLIN : 0);
			if (events) watch_add(s->out_fd, events, session_ready, s);
			continue;
		}
		if (in_events) watch_add(s->in_fd, in_events, session_ready, s);
		if (!s->out_done && can_send) watch_add(s->out_fd, POLLIN, session_ready, s);
		if (!s->err_done && can_send) watch_add(s->err_fd, POLLIN, session_ready, s);
	}
}

void exec_reaped(pid_t pid, int status) {
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *s = &sessions[i];
		if (!s->used || s->pid != pid || s->exited) continue;
		s->exited = 1;
		s->status = status;
		s->exit_deadline = now_seconds() + EXIT_GRACE_S;
	}
}

int exec_tick(void) {
	double now = now_seconds(), next = -1;
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *s = &sessions[i];
		if (!s->used || !s->exited) continue;
		/* Output the host has not yet taken (no credit) is waited for, however long. */
		if (!(s->out_done && s->err_done) && (s->credit == 0 || !ctl_has_room(0))) s->exit_deadline = now + EXIT_GRACE_S;
		if (!(s->out_done && s->err_done) && now < s->exit_deadline) {
			if (next < 0 || s->exit_deadline < next) next = s->exit_deadline;
			continue;
		}
		if (!s->out_done) output_done(s, 0);
		if (!s->err_done) output_done(s, 1);
		int code = WIFEXITED(s->status) ? WEXITSTATUS(s->status) : 128 + WTERMSIG(s->status);
		send_exit(s, code);
		close_session(s);
	}
	return next < 0 ? -1 : (int)((next - now) * 1000) + 1;
}

void exec_frame(uint8_t type, uint32_t stream, const unsigned char *payload, size_t len) {
	if (type == F_EXEC_OPEN) { open_session(stream, payload, len); return; }
	struct session *s = find(stream);
	if (!s) return; /* already finished: frames in flight are moot */
	switch (type) {
	case F_STDIN:
		if (len == 0) s->stdin_eof = 1;
		else if (s->stdin_closed) { /* nobody reads: credit it back so the host is not stuck */
			unsigned char credit[4];
			put_u32(credit, len);
			ctl_send(F_WINDOW, s->id, credit, sizeof credit);
		} else if (inbuf_put(&s->stdin_buf, payload, len) != 0) say("aegis: exec %u: stdin over its window, dropped", stream);
		break;
	case F_WINDOW:
		if (len == 4) s->credit += get_u32(payload);
		break;
	case F_SIGNAL: {
		int sig = signal_from_payload(payload, len);
		if (sig) kill(-s->pid, sig);
		break;
	}
	case F_RESIZE:
		if (s->tty && len == 4 && s->out_fd >= 0) {
			struct winsize size = {get_u16(payload), get_u16(payload + 2), 0, 0};
			ioctl(s->out_fd, TIOCSWINSZ, &size);
		}
		break;
	case F_CLOSE:
		kill_session(s);
		break;
	}
}

void exec_channel_closed(void) {
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (sessions[i].used) kill_session(&sessions[i]);
}
