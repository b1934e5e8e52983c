/*
 * vnet.h: sockets in a chosen vnet, for C programs.
 *
 * Link with -lvnet_preload (or run under `vnetctl exec`, which preloads
 * it). Sockets made by socket(2) go to the vnet named by $VNET when it is
 * set, and are host sockets otherwise; these calls choose per socket, the
 * way FreeBSD's SO_SETFIB chooses a routing table:
 *
 *     int fd = vnet_socket("red", AF_INET, SOCK_STREAM, 0);
 *
 *     int fd = socket(AF_INET, SOCK_STREAM, 0);
 *     setsockopt(fd, SOL_VNET, SO_VNET, "red", sizeof "red");
 *
 * A socket changes vnet only before it is bound or connected. Calls fail
 * with -1 and errno: ENXIO (no such vnet), EACCES (not yours to use),
 * EISCONN (already bound or connected), ENETDOWN (vnetd not reachable).
 */
#ifndef VNET_H
#define VNET_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* setsockopt/getsockopt level and option: the socket's vnet, by name. */
#define SOL_VNET 0x564e
#define SO_VNET 1

/* A new socket in `vnet` (as socket(2) otherwise). */
int vnet_socket(const char *vnet, int domain, int type, int protocol);

/* Moves `fd` (a socket not yet bound or connected) to `vnet`; `fd` keeps
 * its number and flags. A host socket becomes a vnet socket. */
int vnet_setvnet(int fd, const char *vnet);

/* Writes the name of `fd`'s vnet, NUL-terminated, into `buf`. */
int vnet_getvnet(int fd, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* VNET_H */
