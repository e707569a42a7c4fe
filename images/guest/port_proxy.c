/*
 * Port relay for apps that listen only on 127.0.0.1 (OpenClaw's default): traffic
 * forwarded to the VM arrives at the guest's eth0 address, which such an app never sees.
 *
 * For each exposed port the relay waits until something listens on it, then decides:
 * a listener on 0.0.0.0, :: or the guest address needs no help; a listener on loopback
 * only gets a relay bound to the guest address specifically (binding 0.0.0.0 would
 * collide with the app's own socket). Each connection is a forked byte pump with
 * half-close passed through, so anything over TCP, WebSocket upgrades included, works.
 */
#define _GNU_SOURCE
#include "port_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PORTS 256
#define RESCAN_MS 200

enum listener_kind { NOBODY, LOOPBACK_ONLY, REACHABLE };

static int is_loopback4(unsigned int raw) { return (ntohl(raw) >> 24) == 127; }

/* /proc/net/tcp{,6} print addresses as the raw in-memory 32-bit words, in hex. */
static enum listener_kind scan_listeners(int port, struct in_addr guest_ip) {
	enum listener_kind kind = NOBODY;
	const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	for (int t = 0; t < 2; t++) {
		FILE *f = fopen(tables[t], "re");
		char line[512];
		if (!f) continue;
		if (!fgets(line, sizeof line, f)) { fclose(f); continue; } /* header */
		while (fgets(line, sizeof line, f)) {
			char local[64];
			unsigned int local_port, state;
			if (sscanf(line, " %*d: %63[0-9A-Fa-f]:%x %*s %x", local, &local_port, &state) != 3) continue;
			if (state != 0x0A || (int)local_port != port) continue; /* 0x0A: TCP_LISTEN */
			unsigned int words[4] = {0};
			int nwords = strlen(local) / 8;
			for (int i = 0; i < nwords && i < 4; i++) {
				char word[9];
				memcpy(word, local + 8 * i, 8);
				word[8] = '\0';
				words[i] = strtoul(word, NULL, 16);
			}
			int loopback;
			if (nwords == 1) {
				loopback = is_loopback4(words[0]);
				if (words[0] == 0 || words[0] == guest_ip.s_addr) { fclose(f); return REACHABLE; }
			} else {
				int zero_prefix = words[0] == 0 && words[1] == 0;
				int mapped = zero_prefix && words[2] == htonl(0xffff);
				if (zero_prefix && words[2] == 0 && words[3] == 0) { fclose(f); return REACHABLE; } /* :: */
				if (mapped && (words[3] == 0 || words[3] == guest_ip.s_addr)) { fclose(f); return REACHABLE; }
				loopback = (zero_prefix && words[2] == 0 && words[3] == htonl(1)) || (mapped && is_loopback4(words[3]));
				if (!loopback) { fclose(f); return REACHABLE; } /* some other v6 address: not ours to shadow */
			}
			if (loopback) kind = LOOPBACK_ONLY;
		}
		fclose(f);
	}
	return kind;
}

static int listen_on(struct in_addr addr, int port) {
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr};
	if (fd < 0) return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 128) != 0) {
		fprintf(stderr, "aegis: port relay for %d: %s\n", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *buf, ssize_t len) {
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) return -1;
		buf += n;
		len -= n;
	}
	return 0;
}

/* Copy both ways until both sides have closed; an EOF becomes a half-close on the other side. */
static void pump(int client, int port) {
	int one = 1;
	int app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in loopback = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = {htonl(INADDR_LOOPBACK)}};
	if (app < 0 || connect(app, (struct sockaddr *)&loopback, sizeof loopback) != 0) return;
	setsockopt(client, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
	setsockopt(app, IPPROTO_TCP, 1, &one, sizeof one);
	struct pollfd fds[2] = {{client, POLLIN, 0}, {app, POLLIN, 0}};
	int open_directions = 2;
	static char buf[65536];
	while (open_directions > 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR) continue;
			return;
		}
		for (int i = 0; i < 2; i++) {
			if (!fds[i].revents) continue;
			int other = i == 0 ? app : client;
			ssize_t n = read(fds[i].fd, buf, sizeof buf);
			if (n < 0 && errno == EINTR) continue;
			if (n <= 0) {
				if (n < 0) return; /* reset: closing both ends passes it on */
				shutdown(other, SHUT_WR);
				fds[i].fd = -1;
				open_directions--;
			} else if (write_all(other, buf, n) != 0) {
				return;
			}
		}
	}
}

pid_t start_port_proxy(const int *ports, int count, struct in_addr guest_ip) {
	if (count > MAX_PORTS) count = MAX_PORTS;
	pid_t pid = fork();
	if (pid != 0) return pid; /* PID 1 goes on; it reaps this process like any other */

	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGCHLD, SIG_IGN); /* connection pumps are reaped by the kernel */
	signal(SIGPIPE, SIG_IGN);
	struct pollfd listeners[MAX_PORTS];
	int decided[MAX_PORTS] = {0};
	for (int i = 0; i < count; i++) listeners[i] = (struct pollfd){-1, POLLIN, 0};
	for (;;) {
		for (int i = 0; i < count; i++) {
			if (decided[i]) continue;
			enum listener_kind kind = scan_listeners(ports[i], guest_ip);
			if (kind == REACHABLE) decided[i] = 1;
			if (kind == LOOPBACK_ONLY) {
				decided[i] = 1;
				listeners[i].fd = listen_on(guest_ip, ports[i]);
			}
		}
		if (poll(listeners, count, RESCAN_MS) <= 0) continue;
		for (int i = 0; i < count; i++) {
			if (!(listeners[i].revents & POLLIN)) continue;
			int client = accept4(listeners[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (client < 0) continue;
			if (fork() == 0) {
				for (int j = 0; j < count; j++)
					if (listeners[j].fd >= 0) close(listeners[j].fd);
				pump(client, ports[i]);
				_exit(0);
			}
			close(client);
		}
	}
}
