/*
 * The control channel's frames: one bounded outgoing buffer (written as the port takes it), an
 * incoming parser, and the dispatch of host frames to the modules that own their streams:
 * stream 0 is the harness's (events), even streams are exec sessions (exec.c, ids chosen by the
 * host), odd streams are tunnel connections (tunnel.c, ids chosen here).
 *
 * Back-pressure: a data frame is queued only while the outgoing buffer has room (callers check
 * ctl_has_room and otherwise stop reading their source until the port drains), and per stream
 * only within the credit the host granted (WINDOW frames), so one slow reader on the host cannot
 * fill the buffer for the others. The same holds the other way: the host sends at most
 * STREAM_WINDOW unacknowledged bytes per stream, which is what each stream's buffer here holds.
 */
#define _GNU_SOURCE
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "harness.h"
#include "tunnel.h"

/* Data frames stop being queued above this; control frames still fit below OUT_CAP. */
#define OUT_SOFT (512 * 1024)
#define OUT_CAP (OUT_SOFT + FRAME_HEADER + FRAME_MAX_PAYLOAD + 64 * 1024)
#define IN_CAP (2 * (FRAME_HEADER + FRAME_MAX_PAYLOAD))

static int fd = -1;
static int nonblocking;
static int broken;
static unsigned char out[OUT_CAP];
static size_t out_start, out_end;
static unsigned char in[IN_CAP];
static size_t in_used;

void put_u16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
void put_u64(unsigned char *p, uint64_t v) { put_u32(p, v >> 32); put_u32(p + 4, (uint32_t)v); }
uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
uint32_t get_u32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

void ctl_attach(int port) { fd = port; }

void ctl_start(int port) {
	fd = port;
	int flags = fcntl(fd, F_GETFL);
	if (flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0) nonblocking = 1;
}

int ctl_open(void) { return fd >= 0 && !broken; }

int ctl_has_room(size_t len) { return ctl_open() && out_end - out_start + FRAME_HEADER + len <= OUT_SOFT; }

/* Writes what the port takes now (everything, when the port is still blocking). */
static void flush(void) {
	while (out_start < out_end && !broken) {
		ssize_t n = write(fd, out + out_start, out_end - out_start);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == EAGAIN) break;
		if (n <= 0) { broken = 1; break; }
		out_start += n;
	}
	if (out_start == out_end) out_start = out_end = 0;
}

void ctl_send(uint8_t type, uint32_t stream, const void *payload, size_t len) {
	if (fd < 0 || broken) return;
	if (len > FRAME_MAX_PAYLOAD) len = FRAME_MAX_PAYLOAD;
	if (out_end + FRAME_HEADER + len > OUT_CAP) {
		memmove(out, out + out_start, out_end - out_start);
		out_end -= out_start;
		out_start = 0;
	}
	if (out_end + FRAME_HEADER + len > OUT_CAP) return; /* only a stuck host gets here: drop, never block */
	unsigned char *frame = out + out_end;
	put_u32(frame, 5 + len);
	frame[4] = type;
	put_u32(frame + 5, stream);
	if (len) memcpy(frame + FRAME_HEADER, payload, len);
	out_end += FRAME_HEADER + len;
	flush();
}

static int signal_by_name(const char *name) {
	static const struct { const char *name; int sig; } names[] = {
		{"TERM", SIGTERM}, {"INT", SIGINT}, {"KILL", SIGKILL}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
		{"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"STOP", SIGSTOP}, {"CONT", SIGCONT},
	};
	if (!strncmp(name, "SIG", 3)) name += 3;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(name, names[i].name)) return names[i].sig;
	return 0;
}

int signal_from_payload(const unsigned char *payload, size_t len) {
	char name[16];
	if (len == 0 || len >= sizeof name) return 0;
	memcpy(name, payload, len);
	name[len] = '\0';
	return signal_by_name(name);
}

/* Host requests on stream 0: "signal TERM|INT|KILL|..." for the workload, "heartbeat" for a sample
 * now, "token T": the capability token to send with each tunnel connection. */
static void handle_event(const unsigned char *payload, size_t len, pid_t workload) {
	if (len > 7 && !memcmp(payload, "signal ", 7)) {
		int sig = signal_from_payload(payload + 7, len - 7);
		if (sig && workload > 0) kill(-workload, sig);
	} else if (len > 6 && !memcmp(payload, "token ", 6)) {
		tunnel_set_token(payload + 6, len - 6);
	} else if (len == 9 && !memcmp(payload, "heartbeat", 9)) {
		heartbeat_tick(1);
	}
}

static void dispatch(uint8_t type, uint32_t stream, const unsigned char *payload, size_t len, pid_t workload) {
	if (stream == 0) {
		if (type == F_EVENT) handle_event(payload, len, workload);
		return;
	}
	if (stream & 1) tunnel_frame(type, stream, payload, len);
	else exec_frame(type, stream, payload, len);
}

static void read_frames(pid_t workload) {
	for (;;) {
		ssize_t n = read(fd, in + in_used, sizeof in - in_used);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == EAGAIN) return;
		if (n <= 0) { broken = 1; return; }
		in_used += n;
		size_t at = 0;
		while (in_used - at >= 4) {
			uint32_t length = get_u32(in + at);
			if (length < 5 || length > 5 + FRAME_MAX_PAYLOAD) {
				say("aegis: control channel: bad frame length %u; closing it", length);
				broken = 1;
				return;
			}
			if (in_used - at < 4 + length) break;
			dispatch(in[at + 4], get_u32(in + at + 5), in + at + FRAME_HEADER, length - 5, workload);
			at += 4 + length;
		}
		memmove(in, in + at, in_used - at);
		in_used -= at;
		if (!nonblocking) return;
	}
}

void ctl_ready(short revents, pid_t workload) {
	if (!ctl_open()) return;
	if (revents & POLLOUT) flush();
	if (revents & POLLIN) read_frames(workload);
	/* POLLHUP: the host's end closed (QEMU's socket gone). Exec'd processes die with it. */
	if ((revents & (POLLHUP | POLLERR)) && !(revents & POLLIN)) broken = 1;
	if (broken) {
		exec_channel_closed();
		tunnel_channel_closed();
	}
}

void ctl_drain(double seconds) {
	double deadline = now_seconds() + seconds;
	while (ctl_open() && out_end > out_start && now_seconds() < deadline) {
		struct pollfd pfd = {fd, POLLOUT, 0};
		if (poll(&pfd, 1, 50) > 0) flush();
	}
}

int inbuf_put(struct inbuf *b, const unsigned char *data, size_t len) {
	if (!b->data && !(b->data = malloc(STREAM_WINDOW))) return -1;
	if (b->start > 0 && b->end + len > STREAM_WINDOW) {
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	if (b->end + len > STREAM_WINDOW) return -1;
	memcpy(b->data + b->end, data, len);
	b->end += len;
	return 0;
}

int inbuf_empty(const struct inbuf *b) { return b->start == b->end; }

ssize_t inbuf_write_to(struct inbuf *b, int to) {
	size_t total = 0;
	while (b->start < b->end) {
		ssize_t n = write(to, b->data + b->start, b->end - b->start);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == EAGAIN) break;
		if (n <= 0) return -1;
		b->start += n;
		total += n;
	}
	if (b->start == b->end) b->start = b->end = 0;
	return total;
}

void inbuf_free(struct inbuf *b) {
	free(b->data);
	b->data = NULL;
	b->start = b->end = 0;
}

#define MAX_WATCHES 512
static struct pollfd watched[MAX_WATCHES];
static struct { watch_fn fn; void *ctx; } handlers[MAX_WATCHES];
static int nwatched;

void watch_reset(void) { nwatched = 0; }

void watch_add(int wfd, short events, watch_fn fn, void *ctx) {
	if (wfd < 0 || nwatched == MAX_WATCHES) return;
	watched[nwatched] = (struct pollfd){wfd, events, 0};
	handlers[nwatched].fn = fn;
	handlers[nwatched].ctx = ctx;
	nwatched++;
}

void watch_poll(int timeout_ms) {
	if (poll(watched, nwatched, timeout_ms) < 0) {
		if (errno != EINTR) say("aegis: poll: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < nwatched; i++)
		if (watched[i].revents) handlers[i].fn(handlers[i].ctx, watched[i].fd, watched[i].revents);
}

static void ctl_watched(void *workload, int wfd, short revents) {
	(void)wfd;
	ctl_ready(revents, (pid_t)(intptr_t)workload);
}

void ctl_watch(pid_t workload) {
	if (!ctl_open()) return;
	watch_add(fd, POLLIN | (out_end > out_start ? POLLOUT : 0), ctl_watched, (void *)(intptr_t)workload);
}
