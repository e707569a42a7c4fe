/*
 * The control channel after the run spec: binary frames both ways over the virtio-serial port
 * "aegis.ctl" (wire format at the top of harness.c; the host half is src/guest/control-channel.ts).
 */
#ifndef AEGIS_CONTROL_H
#define AEGIS_CONTROL_H
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Frame: u32 BE length of what follows, u8 type, u32 BE stream id, payload (<= FRAME_MAX_PAYLOAD). */
#define FRAME_HEADER 9
#define FRAME_MAX_PAYLOAD 65536
/* Bytes of STDIN/STDOUT/STDERR/DATA payload a sender may have unacknowledged per stream and direction. */
#define STREAM_WINDOW (256 * 1024)

enum frame_type {
	F_EVENT = 0x01,      /* stream 0, both ways: a report line (guest) or a request line (host) */
	F_HEARTBEAT = 0x02,  /* stream 0, guest -> host: u32 tcp established, u64 cpu ms, u64 net bytes */
	F_WINDOW = 0x03,     /* stream n, both ways: u32 bytes consumed, credit for the other side */
	F_CLOSE = 0x04,      /* stream n, both ways: the stream is gone (host: kill the exec'd tree) */
	F_EXEC_OPEN = 0x10,  /* host -> guest: "key value\0" records */
	F_STDIN = 0x11,      /* host -> guest; empty = EOF */
	F_STDOUT = 0x12,     /* guest -> host; empty = EOF */
	F_STDERR = 0x13,     /* guest -> host; empty = EOF */
	F_EXIT = 0x14,       /* guest -> host: i32 BE exit code (128+N for signal N); ends the stream */
	F_SIGNAL = 0x15,     /* host -> guest: a signal name ("TERM") for the exec'd process group */
	F_RESIZE = 0x16,     /* host -> guest: u16 BE rows, u16 BE cols */
	F_TUNNEL_OPEN = 0x20, /* guest -> host: u16 BE guest port the connection arrived on, then the token */
	F_DATA = 0x21,       /* tunnel bytes, both ways; empty = EOF of that direction */
};

/* Byte order helpers for payloads. */
void put_u16(unsigned char *p, uint16_t v);
void put_u32(unsigned char *p, uint32_t v);
void put_u64(unsigned char *p, uint64_t v);
uint16_t get_u16(const unsigned char *p);
uint32_t get_u32(const unsigned char *p);

/* The port, blocking while the spec is read (frames are written at once). */
void ctl_attach(int fd);
/* Switches the port to non-blocking once the spec has been read: frames queue and poll drains them. */
void ctl_start(int fd);
/* The channel is up (not closed by the host, no protocol error). */
int ctl_open(void);
/* Room for a data frame of `len` payload bytes in the outgoing buffer (which stays bounded). */
int ctl_has_room(size_t len);
/* Queues a frame; control frames (events, window, exit, close) always fit. */
void ctl_send(uint8_t type, uint32_t stream, const void *payload, size_t len);
/* After poll: writes what waits, reads and dispatches frames. */
void ctl_ready(short revents, pid_t workload);
/* Before power-off: writes what waits, for up to `seconds`. */
void ctl_drain(double seconds);

/* "TERM", "SIGTERM", ... as a signal number; 0 if unknown. */
int signal_from_payload(const unsigned char *payload, size_t len);

/* Heartbeats: every `interval_ms` (0: never); ms until the next one is due. */
void heartbeat_init(int interval_ms);
int heartbeat_due_ms(void);
void heartbeat_tick(int force);
/* Processes that are the harness's own (the port relay), not the workload: left out of cpu ms. */
void heartbeat_exclude(pid_t pid);

/*
 * What the host sent for one stream and the guest has not yet written on: at most STREAM_WINDOW
 * bytes (the host's credit), allocated on first use.
 */
struct inbuf {
	unsigned char *data;
	size_t start, end;
};
/* Appends; -1 if the host overran its credit (the bytes are dropped). */
int inbuf_put(struct inbuf *b, const unsigned char *data, size_t len);
int inbuf_empty(const struct inbuf *b);
/* Writes what fd takes; returns the bytes written (then credit them back) or -1 on an error. */
ssize_t inbuf_write_to(struct inbuf *b, int fd);
void inbuf_free(struct inbuf *b);

/*
 * The harness's poll loop: each round, every module adds the fds it waits on with a handler;
 * handlers get their fd back and must check it is still theirs (a handler that ran earlier in the
 * round may have closed it).
 */
typedef void (*watch_fn)(void *ctx, int fd, short revents);
void watch_reset(void);
void watch_add(int fd, short events, watch_fn fn, void *ctx);
/* Polls up to timeout_ms (-1: no limit) and runs the handlers of the ready fds. */
void watch_poll(int timeout_ms);
/* Adds the control port itself. */
void ctl_watch(pid_t workload);

#endif
