/* Relay guestIP:port -> 127.0.0.1:port for exposed ports the app binds only on loopback. */
#ifndef AEGIS_PORT_PROXY_H
#define AEGIS_PORT_PROXY_H
#include <netinet/in.h>
#include <sys/types.h>

/* Forks the relay process and returns its pid; the relay runs until the VM powers off. */
pid_t start_port_proxy(const int *ports, int count, struct in_addr guest_ip);

#endif
