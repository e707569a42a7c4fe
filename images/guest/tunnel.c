/*
 * The tunnel listener: 127.0.0.1:7777 in the guest (the workload's network namespace: the
 * harness never leaves it), each accepted connection a stream with an odd id. TUNNEL_OPEN tells
 * the host (payload: the port, then the instance's capability token), DATA frames carry the bytes both ways within each side's credit,
 * an empty DATA is a half-close of that direction (shutdown(SHUT_WR) here), and CLOSE from either
 * side ends the connection at once (a reset, or the host's handler gone). A connection whose two
 * directions have both ended is closed without a frame.
 */
#define _GNU_SOURCE
#include "tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"
#include "harness.h"

#define MAX_TUNNELS 64

struct tunnel {
	int used;
	uint32_t id;
	int fd;
	struct inbuf to_guest;
	int host_eof;  /* the host sent EOF */
	int write_shut; /* ... and it was passed on */
	int read_eof;  /* EOF from the guest side, sent to the host */
	uint32_t credit;
};

/* Tokens are base64url text well under a kilobyte. */
#define MAX_TOKEN 1024

static struct tunnel tunnels[MAX_TUNNELS];
static unsigned char token[MAX_TOKEN];
static size_t token_len;

void tunnel_set_token(const unsigned char *value, size_t len) {
	if (len > MAX_TOKEN) return;
	memcpy(token, value, len);
	token_len = len;
}
static int listener = -1;
static uint32_t next_id = 1;

void tunnel_start(void) {
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(TUNNEL_PORT), .sin_addr = {htonl(INADDR_LOOPBACK)}};
	if (fd < 0) { say("aegis: tunnel: socket: %s", strerror(errno)); return; }
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0) {
		say("aegis: tunnel: listen on 127.0.0.1:%d: %s", TUNNEL_PORT, strerror(errno));
		close(fd);
		return;
	}
	listener = fd;
}

static struct tunnel *find(uint32_t id) {
	for (int i = 0; i < MAX_TUNNELS; i++)
		if (tunnels[i].used && tunnels[i].id == id) return &tunnels[i];
	return NULL;
}

static void drop(struct tunnel *t, int tell_host) {
	if (tell_host) ctl_send(F_CLOSE, t->id, NULL, 0);
	close(t->fd);
	inbuf_free(&t->to_guest);
	t->used = 0;
}

static void finish_if_done(struct tunnel *t) {
	if (t->read_eof && t->write_shut) drop(t, 0);
}

static void accept_one(void *ctx, int fd, short revents) {
	(void)ctx;
	(void)revents;
	struct tunnel *t = NULL;
	for (int i = 0; i < MAX_TUNNELS && !t; i++)
		if (!tunnels[i].used) t = &tunnels[i];
	if (!t || !ctl_open()) return;
	int client = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (client < 0) return;
	memset(t, 0, sizeof *t);
	t->used = 1;
	t->fd = client;
	t->id = next_id;
	next_id += 2;
	if (next_id > 0x7fffffff) next_id = 1;
	t->credit = STREAM_WINDOW;
	unsigned char open[2 + MAX_TOKEN];
	put_u16(open, TUNNEL_PORT);
	memcpy(open + 2, token, token_len);
	ctl_send(F_TUNNEL_OPEN, t->id, open, 2 + token_len);
}

static void tunnel_ready(void *ctx, int fd, short revents) {
	static unsigned char buf[FRAME_MAX_PAYLOAD];
	struct tunnel *t = ctx;
	if (!t->used || t->fd != fd) return;
	if ((revents & (POLLOUT | POLLERR | POLLHUP)) && !t->write_shut && (!inbuf_empty(&t->to_guest) || t->host_eof)) {
		ssize_t n = inbuf_write_to(&t->to_guest, fd);
		if (n < 0) { drop(t, 1); return; }
		if (n > 0) {
			unsigned char credit[4];
			put_u32(credit, n);
			ctl_send(F_WINDOW, t->id, credit, sizeof credit);
		}
		if (inbuf_empty(&t->to_guest) && t->host_eof) {
			shutdown(fd, SHUT_WR);
			t->write_shut = 1;
			finish_if_done(t);
			if (!t->used) return;
		}
	}
	if ((revents & (POLLIN | POLLHUP | POLLERR)) && !t->read_eof) {
		size_t want = t->credit < sizeof buf ? t->credit : sizeof buf;
		if (want == 0 || !ctl_has_room(want)) return;
		ssize_t n = read(fd, buf, want);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
		if (n < 0) { drop(t, 1); return; } /* a reset: the host's side is reset too */
		ctl_send(F_DATA, t->id, buf, n); /* n == 0: the half-close */
		if (n == 0) {
			t->read_eof = 1;
			finish_if_done(t);
		} else {
			t->credit -= n;
		}
	}
}

void tunnel_watch(void) {
	if (!ctl_open()) return;
	int free_slot = 0;
	for (int i = 0; i < MAX_TUNNELS; i++) {
		struct tunnel *t = &tunnels[i];
		if (!t->used) { free_slot = 1; continue; }
		short events = 0;
		if (!t->write_shut && (!inbuf_empty(&t->to_guest) || t->host_eof)) events |= POLLOUT;
		if (!t->read_eof && t->credit > 0 && ctl_has_room(t->credit < FRAME_MAX_PAYLOAD ? t->credit : FRAME_MAX_PAYLOAD))
			events |= POLLIN;
		if (events) watch_add(t->fd, events, tunnel_ready, t);
	}
	/* A full table leaves new connections in the backlog until one ends. */
	if (free_slot && listener >= 0) watch_add(listener, POLLIN, accept_one, NULL);
}

void tunnel_frame(uint8_t type, uint32_t stream, const unsigned char *payload, size_t len) {
	struct tunnel *t = find(stream);
	if (!t) return;
	switch (type) {
	case F_DATA:
		if (len == 0) t->host_eof = 1;
		else if (t->write_shut || inbuf_put(&t->to_guest, payload, len) != 0)
			say("aegis: tunnel %u: data past its end or window, dropped", stream);
		break;
	case F_WINDOW:
		if (len == 4) t->credit += get_u32(payload);
		break;
	case F_CLOSE:
		drop(t, 0);
		break;
	}
}

void tunnel_channel_closed(void) {
	for (int i = 0; i < MAX_TUNNELS; i++)
		if (tunnels[i].used) drop(&tunnels[i], 0);
	if (listener >= 0) close(listener);
	listener = -1;
}
