/* Exec sessions: processes the host starts in the workload's world, on even stream ids. */
#ifndef AEGIS_EXEC_H
#define AEGIS_EXEC_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct spec;

/* Who an exec runs as by default, and the environment it starts from (the workload's, secrets included). */
void exec_init(const struct spec *spec, char **workload_env);
void exec_frame(uint8_t type, uint32_t stream, const unsigned char *payload, size_t len);
void exec_watch(void);
/* A child was reaped: if it was a session's process, its exit is reported once its output is drained. */
void exec_reaped(pid_t pid, int status);
/* Sends the exits that are due, frees finished sessions; returns ms until the next deadline (-1: none). */
int exec_tick(void);
/* The host is gone: every session's process group is killed. */
void exec_channel_closed(void);

#endif
