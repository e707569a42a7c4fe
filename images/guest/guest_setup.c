/*
 * Building the workload's world before it starts: the root overlay, the system mounts and
 * shares, /etc files, secrets, and the network (by ioctl: images such as debian-slim ship
 * no `ip`). Called in this order by main() in harness.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

void mkdir_p(const char *path, mode_t mode) {
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/') continue;
		*p = '\0';
		mkdir(buf, mode);
		*p = '/';
	}
	mkdir(buf, mode);
}

void mount_or_fail(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
	mkdir_p(target, 0755);
	if (mount(src, target, type, flags, data) != 0)
		fail("mount %s (%s) on %s: %s", src, type, target, strerror(errno));
}

int write_file(const char *path, const char *content, mode_t mode) {
	unlink(path); /* images often ship these as symlinks into /run; replace, don't follow */
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) return -1;
	size_t len = strlen(content);
	ssize_t n = write(fd, content, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/* Names in `path`, space-separated, for error messages. */
static const char *list_dir(const char *path) {
	static char names[512];
	size_t used = 0;
	names[0] = '\0';
	DIR *dir = opendir(path);
	struct dirent *entry;
	while (dir && (entry = readdir(dir)))
		if (entry->d_name[0] != '.' && used + strlen(entry->d_name) + 2 < sizeof names)
			used += snprintf(names + used, sizeof names - used, "%s ", entry->d_name);
	if (dir) closedir(dir);
	return names[0] ? names : "(none)";
}

/* The virtio-blk disk QEMU gave `serial` (no udev here to make /dev/disk/by-id): "/dev/vdX". */
static void find_disk_by_serial(const char *serial, char *device, size_t size) {
	double deadline = now_seconds() + 5;
	do {
		DIR *dir = opendir("/sys/block");
		struct dirent *entry;
		while (dir && (entry = readdir(dir))) {
			if (entry->d_name[0] == '.') continue;
			char path[300], found[64] = "";
			snprintf(path, sizeof path, "/sys/block/%s/serial", entry->d_name);
			FILE *f = fopen(path, "re");
			if (!f) continue;
			if (fgets(found, sizeof found, f)) found[strcspn(found, "\n")] = '\0';
			fclose(f);
			if (strcmp(found, serial) != 0) continue;
			snprintf(device, size, "/dev/%s", entry->d_name);
			closedir(dir);
			if (access(device, F_OK) == 0) return;
			break; /* devtmpfs has not made the node yet */
		}
		if (dir) closedir(dir);
		usleep(10000);
	} while (now_seconds() < deadline);
	fail("no disk with serial %s (block devices: %s)", serial, list_dir("/sys/block"));
}

/*
 * The image's share (or disk) read-only under an overlay: the host copy is never modified.
 * The writable layer is the instance's scratch disk when the kit sets resources.disk (ext4,
 * made on the host at exactly that size: writes past it fail with ENOSPC, and they fill neither
 * guest memory nor more host disk than that), else a tmpfs (bounded by the VM's memory only).
 */
void mount_root(const struct spec *spec) {
	const char *root = spec->root;
	mkdir_p("/lower", 0755);
	if (!strncmp(root, "virtiofs:", 9)) {
		if (mount(root + 9, "/lower", "virtiofs", MS_RDONLY, NULL) != 0)
			fail("mount root share %s: %s", root + 9, strerror(errno));
	} else if (!strncmp(root, "block:", 6)) {
		double deadline = now_seconds() + 5;
		while (access(root + 6, F_OK) != 0 && now_seconds() < deadline) usleep(10000);
		if (mount(root + 6, "/lower", "ext4", MS_RDONLY, "noload") != 0)
			fail("mount root disk %s: %s", root + 6, strerror(errno));
	} else {
		fail("unknown root kind %s", root);
	}
	if (spec->rw_disk[0]) {
		char device[300];
		find_disk_by_serial(spec->rw_disk, device, sizeof device);
		/* discard: what the workload deletes goes back to the host's sparse file. noinit_itable: the
		 * fresh file's inode tables are holes, zeros already; zeroing them would only grow it. */
		mount_or_fail(device, "/rw", "ext4", MS_NOATIME, "discard,noinit_itable");
	} else {
		mount_or_fail("tmpfs", "/rw", "tmpfs", 0, "mode=0755");
	}
	mkdir_p("/rw/upper", 0755);
	mkdir_p("/rw/work", 0755);
	mount_or_fail("overlay", NEWROOT, "overlay", 0,
		"lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work");
}

void mount_system(const struct spec *spec) {
	/* Move the early /proc, /sys, /dev into the new root rather than mounting twice. */
	const char *moved[] = {"/proc", "/sys", "/dev"};
	for (int i = 0; i < 3; i++) {
		char target[64];
		snprintf(target, sizeof target, NEWROOT "%s", moved[i]);
		mkdir_p(target, 0755);
		if (mount(moved[i], target, NULL, MS_MOVE, NULL) != 0) fail("move %s: %s", moved[i], strerror(errno));
	}
	mount_or_fail("devpts", NEWROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666");
	mount_or_fail("shm", NEWROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_or_fail("tmpfs", NEWROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_or_fail("tmpfs", NEWROOT "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	symlink("/proc/self/fd", NEWROOT "/dev/fd");
	symlink("/proc/self/fd/0", NEWROOT "/dev/stdin");
	symlink("/proc/self/fd/1", NEWROOT "/dev/stdout");
	symlink("/proc/self/fd/2", NEWROOT "/dev/stderr");

	for (int i = 0; i < spec->nmounts; i++) {
		char tag[256], target[4096];
		const char *colon = strchr(spec->mounts[i], ':');
		if (!colon || colon - spec->mounts[i] >= (long)sizeof tag) fail("bad mount record %s", spec->mounts[i]);
		snprintf(tag, sizeof tag, "%.*s", (int)(colon - spec->mounts[i]), spec->mounts[i]);
		snprintf(target, sizeof target, NEWROOT "%s", colon + 1);
		mount_or_fail(tag, target, "virtiofs", 0, NULL);
		/* A fresh workspace dir is root-owned on the host; let the workload's user write it. */
		struct stat st;
		if (spec->uid != 0 && stat(target, &st) == 0 && st.st_uid == 0 && st.st_nlink <= 2) {
			DIR *dir = opendir(target);
			int entries = 0;
			struct dirent *entry;
			while (dir && (entry = readdir(dir))) entries += entry->d_name[0] != '.';
			if (dir) closedir(dir);
			if (entries == 0 && chown(target, spec->uid, spec->gid) != 0)
				say("aegis: chown %s: %s", target, strerror(errno));
		}
	}
}

void write_etc(const struct spec *spec) {
	char buf[1024];
	mkdir_p(NEWROOT "/etc", 0755);
	if (spec->dns[0]) {
		snprintf(buf, sizeof buf, "nameserver %s\n", spec->dns);
		if (write_file(NEWROOT "/etc/resolv.conf", buf, 0644) != 0) say("aegis: cannot write /etc/resolv.conf");
	}
	/* The kit's internal_hosts names, each pointing where the network backend reaches that service. */
	static char hosts[MAX_ITEMS * 300 + 256];
	size_t used = snprintf(hosts, sizeof hosts,
		"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", spec->hostname);
	for (int i = 0; i < spec->nhosts && used < sizeof hosts; i++) {
		const char *space = strchr(spec->hosts[i], ' ');
		if (!space) fail("bad host record %s", spec->hosts[i]);
		used += snprintf(hosts + used, sizeof hosts - used, "%.*s\t%s\n", (int)(space - spec->hosts[i]), spec->hosts[i], space + 1);
	}
	if (used >= sizeof hosts) fail("the /etc/hosts entries do not fit in %zu bytes", sizeof hosts);
	if (write_file(NEWROOT "/etc/hosts", hosts, 0644) != 0) say("aegis: cannot write /etc/hosts");
	snprintf(buf, sizeof buf, "%s\n", spec->hostname);
	if (write_file(NEWROOT "/etc/hostname", buf, 0644) != 0) say("aegis: cannot write /etc/hostname");
	if (sethostname(spec->hostname, strlen(spec->hostname)) != 0) say("aegis: sethostname: %s", strerror(errno));
}

static void set_flags_up(int sock, const char *ifname) {
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) fail("interface %s: %s", ifname, strerror(errno));
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) fail("bring up %s: %s", ifname, strerror(errno));
}

static void set_ipv4(int sock, const char *ifname, unsigned long request, struct in_addr addr) {
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	sin->sin_addr = addr;
	if (ioctl(sock, request, &ifr) != 0) fail("configure %s: %s", ifname, strerror(errno));
}

/* ioctls rather than an `ip` binary: images such as debian-slim ship no iproute2. */
void setup_network(const struct spec *spec, struct in_addr *guest_ip) {
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) fail("socket: %s", strerror(errno));
	set_flags_up(sock, "lo");
	if (spec->net_addr[0]) {
		char addr[64];
		snprintf(addr, sizeof addr, "%s", spec->net_addr);
		char *slash = strchr(addr, '/');
		int prefix = slash ? atoi(slash + 1) : 24;
		if (slash) *slash = '\0';
		struct in_addr mask = {htonl(prefix ? 0xffffffffu << (32 - prefix) : 0)}, gw;
		if (inet_pton(AF_INET, addr, guest_ip) != 1) fail("bad guest address %s", spec->net_addr);
		double deadline = now_seconds() + 5;
		while (access("/sys/class/net/eth0", F_OK) != 0) {
			if (now_seconds() > deadline) fail("no network device eth0 (virtio-net missing?); interfaces: %s", list_dir("/sys/class/net"));
			usleep(10000);
		}
		set_ipv4(sock, "eth0", SIOCSIFADDR, *guest_ip);
		set_ipv4(sock, "eth0", SIOCSIFNETMASK, mask);
		set_flags_up(sock, "eth0");
		if (spec->net_gw[0]) {
			if (inet_pton(AF_INET, spec->net_gw, &gw) != 1) fail("bad gateway %s", spec->net_gw);
			struct rtentry route = {0};
			struct sockaddr_in *dst = (struct sockaddr_in *)&route.rt_dst;
			struct sockaddr_in *genmask = (struct sockaddr_in *)&route.rt_genmask;
			struct sockaddr_in *gateway = (struct sockaddr_in *)&route.rt_gateway;
			dst->sin_family = genmask->sin_family = gateway->sin_family = AF_INET;
			gateway->sin_addr = gw;
			route.rt_flags = RTF_UP | RTF_GATEWAY;
			if (ioctl(sock, SIOCADDRT, &route) != 0) fail("default route via %s: %s", spec->net_gw, strerror(errno));
		}
	}
	close(sock);
}

/* Secrets go to the workload's environment and to /run/secrets/NAME (tmpfs, 0400, its owner). */
void write_secrets(const struct spec *spec) {
	if (spec->nsecrets == 0) return;
	const char *dir = NEWROOT "/run/secrets";
	mkdir_p(dir, 0500);
	if (chown(dir, spec->uid, spec->gid) != 0) fail("chown %s: %s", dir, strerror(errno));
	for (int i = 0; i < spec->nsecrets; i++) {
		const char *eq = strchr(spec->secrets[i], '=');
		if (!eq || eq == spec->secrets[i] || memchr(spec->secrets[i], '/', eq - spec->secrets[i]))
			fail("bad secret record");
		char path[512];
		snprintf(path, sizeof path, "%s/%.*s", dir, (int)(eq - spec->secrets[i]), spec->secrets[i]);
		if (write_file(path, eq + 1, 0400) != 0 || chown(path, spec->uid, spec->gid) != 0)
			fail("write secret file %s: %s", path, strerror(errno));
	}
}

/* Like switch_root: make the overlay the root of everything that runs from now on. */
void enter_root(void) {
	if (chdir(NEWROOT) != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
		fail("switch to the new root: %s", strerror(errno));
}
