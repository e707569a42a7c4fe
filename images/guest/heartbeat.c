/*
 * Heartbeats: the activity sample Aegis's idle policy reads, every heartbeat_ms (spec record
 * "heartbeat_ms", default 5000) and on the host's "heartbeat" request (sent after a resume).
 * Cumulative counters; the host computes the deltas.
 *   - ESTABLISHED TCP connections (/proc/net/tcp and tcp6, state 01), leaving out both ends of
 *     connections to the harness's own tunnel listener 127.0.0.1:7777 (the guest API's
 *     keepalive calls must not count as activity by themselves);
 *   - the workload's CPU time in ms: utime+stime+cutime+cstime of every process but PID 1 (the
 *     harness), kernel threads and the harness's port relay, plus PID 1's cutime+cstime (what the
 *     processes it reaped used). A process that dies unreaped under a parent ignoring SIGCHLD
 *     takes its time with it, so the sum can step back a little: the host clamps deltas at 0;
 *   - rx+tx bytes of every interface but lo (/proc/net/dev).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "harness.h"
#include "tunnel.h"

#define PF_KTHREAD 0x00200000u
#define MAX_EXCLUDED 8

static int interval_ms;
static double next_at;
static pid_t excluded[MAX_EXCLUDED];
static int nexcluded;

void heartbeat_init(int ms) {
	interval_ms = ms;
	next_at = now_seconds();
}

void heartbeat_exclude(pid_t pid) {
	if (nexcluded < MAX_EXCLUDED) excluded[nexcluded++] = pid;
}

int heartbeat_due_ms(void) {
	if (interval_ms <= 0 || !ctl_open()) return -1;
	double left = next_at - now_seconds();
	return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* Is this /proc/net/tcp{,6} address ("0100007F:1E61") the tunnel listener's? */
static int is_tunnel_end(const char *address) {
	char want[64];
	snprintf(want, sizeof want, ":%04X", TUNNEL_PORT);
	size_t len = strlen(address);
	if (len < 5 || strcmp(address + len - 5, want) != 0) return 0;
	return (len == 13 && !strncmp(address, "0100007F", 8)) ||
		(len == 37 && !strncmp(address, "0000000000000000FFFF00000100007F", 32));
}

static unsigned count_established(void) {
	unsigned count = 0;
	const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	for (int t = 0; t < 2; t++) {
		FILE *f = fopen(tables[t], "re");
		char line[512];
		if (!f) continue;
		if (!fgets(line, sizeof line, f)) { fclose(f); continue; } /* header */
		while (fgets(line, sizeof line, f)) {
			char local[64], remote[64];
			unsigned state;
			if (sscanf(line, " %*d: %63s %63s %x", local, remote, &state) != 3) continue;
			if (state == 0x01 && !is_tunnel_end(local) && !is_tunnel_end(remote)) count++;
		}
		fclose(f);
	}
	return count;
}

static int is_excluded(pid_t pid) {
	for (int i = 0; i < nexcluded; i++)
		if (excluded[i] == pid) return 1;
	return 0;
}

static unsigned long long cpu_ms(void) {
	unsigned long long ticks = 0;
	DIR *proc = opendir("/proc");
	struct dirent *entry;
	while (proc && (entry = readdir(proc))) {
		if (!isdigit((unsigned char)entry->d_name[0])) continue;
		pid_t pid = atoi(entry->d_name);
		if (pid == 2 || is_excluded(pid)) continue;
		char path[64], stat[1024];
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		FILE *f = fopen(path, "re");
		if (!f) continue;
		size_t n = fread(stat, 1, sizeof stat - 1, f);
		fclose(f);
		stat[n] = '\0';
		char *after = strrchr(stat, ')'); /* the command name may hold spaces and parentheses */
		if (!after) continue;
		unsigned flags;
		unsigned long long utime, stime, cutime, cstime;
		/* After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime */
		if (sscanf(after + 2, "%*c %*d %*d %*d %*d %*d %u %*u %*u %*u %*u %llu %llu %llu %llu",
			&flags, &utime, &stime, &cutime, &cstime) != 5) continue;
		if (flags & PF_KTHREAD) continue;
		ticks += pid == 1 ? cutime + cstime : utime + stime + cutime + cstime;
	}
	if (proc) closedir(proc);
	long hz = sysconf(_SC_CLK_TCK);
	return ticks * 1000 / (hz > 0 ? hz : 100);
}

static unsigned long long net_bytes(void) {
	unsigned long long total = 0;
	FILE *f = fopen("/proc/net/dev", "re");
	char line[512];
	while (f && fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (!colon) continue; /* the two header lines */
		*colon = '\0';
		char *name = line;
		while (*name == ' ') name++;
		if (!strcmp(name, "lo")) continue;
		unsigned long long rx, tx;
		if (sscanf(colon + 1, "%llu %*u %*u %*u %*u %*u %*u %*u %llu", &rx, &tx) == 2) total += rx + tx;
	}
	if (f) fclose(f);
	return total;
}

void heartbeat_tick(int force) {
	if (!ctl_open() || (!force && (interval_ms <= 0 || now_seconds() < next_at))) return;
	if (interval_ms > 0) next_at = now_seconds() + interval_ms / 1000.0;
	unsigned char sample[20];
	put_u32(sample, count_established());
	put_u64(sample + 4, cpu_ms());
	put_u64(sample + 12, net_bytes());
	ctl_send(F_HEARTBEAT, 0, sample, sizeof sample);
}
