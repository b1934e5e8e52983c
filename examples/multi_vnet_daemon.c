/*
 * A daemon with sockets in several vnets: it listens on one TCP port in
 * each vnet named on its command line and answers every connection with
 * "hello from VNET\n", from one thread and one epoll set.
 *
 *   cc -Iinclude examples/multi_vnet_daemon.c -Ltarget/release \
 *      -lvnet_preload -Wl,-rpath,target/release -o multi_vnet_daemon
 *   ./multi_vnet_daemon 7000 red blue green
 *
 * The first vnet's socket is made with vnet_socket(); the others the
 * SO_SETFIB way, a socket(2) moved with setsockopt(SOL_VNET, SO_VNET).
 * It prints "ready" once every socket listens.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vnet.h"

#define MAX_VNETS 16

static void die(const char *what, const char *vnet) {
    fprintf(stderr, "multi_vnet_daemon: %s (%s): %s\n", what, vnet, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc - 2 > MAX_VNETS) {
        fprintf(stderr, "usage: %s PORT VNET...\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1", "-");
    int n = argc - 2;
    int fds[MAX_VNETS];
    for (int i = 0; i < n; i++) {
        const char *vnet = argv[i + 2];
        int fd;
        if (i == 0) {
            fd = vnet_socket(vnet, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                die("vnet_socket", vnet);
        } else {
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                die("socket", vnet);
            if (setsockopt(fd, SOL_VNET, SO_VNET, vnet, strlen(vnet) + 1) < 0)
                die("setsockopt SO_VNET", vnet);
        }
        char name[64];
        if (vnet_getvnet(fd, name, sizeof name) < 0 || strcmp(name, vnet) != 0)
            die("vnet_getvnet", vnet);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("bind", vnet);
        if (listen(fd, 64) < 0)
            die("listen", vnet);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl", vnet);
        fds[i] = fd;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct epoll_event evs[MAX_VNETS];
        int k = epoll_wait(ep, evs, MAX_VNETS, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("epoll_wait", "-");
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32;
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            int c = accept4(fds[i], (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            char msg[96];
            int m = snprintf(msg, sizeof msg, "hello from %s\n", argv[i + 2]);
            if (write(c, msg, m) != m)
                perror("write");
            close(c);
        }
    }
}
