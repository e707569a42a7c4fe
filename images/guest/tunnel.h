/*
 * The tunnel: the harness listens on 127.0.0.1:TUNNEL_PORT in the guest; each connection becomes
 * a stream (odd ids, chosen here) the host serves, e.g. the guest API over HTTP.
 */
#ifndef AEGIS_TUNNEL_H
#define AEGIS_TUNNEL_H
#include <stddef.h>
#include <stdint.h>

#define TUNNEL_PORT 7777

void tunnel_start(void);
/* The instance's capability token (from the host, EVENT "token ..."), kept in this process's
 * memory only and sent with every TUNNEL_OPEN: the workload never sees it. */
void tunnel_set_token(const unsigned char *token, size_t len);
void tunnel_frame(uint8_t type, uint32_t stream, const unsigned char *payload, size_t len);
void tunnel_watch(void);
void tunnel_channel_closed(void);

#endif
