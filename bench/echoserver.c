/*
 * echoserver: the fastest possible socketmap / tcp_table "server": it
 * answers every complete request with a fixed NOTFOUND reply and does no
 * lookup at all.  Driving it with loadgen gives the ceiling of the
 * benchmark rig itself (the "limit" column): a daemon measured near that
 * figure is limited by the rig, not by its own code.
 *
 * usage: echoserver PORT s|t      (listens on 127.0.0.1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_BYTES 65536

struct client { int fd; size_t used; char buf[BUF_BYTES]; };

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT s|t\n", argv[0]); return 2; }
    int socketmap = argv[2][0] == 's';
    const char *reply = socketmap ? "9:NOTFOUND ," : "500 \n";
    size_t reply_len = strlen(reply);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 512) < 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    char out[BUF_BYTES];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            struct client *c = events[i].data.ptr;
            if (!c) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) continue;
                c = calloc(1, sizeof *c);
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            ssize_t got = read(c->fd, c->buf + c->used, BUF_BYTES - c->used);
            if (got <= 0) { close(c->fd); free(c); continue; }
            c->used += (size_t)got;
            size_t pos = 0, out_len = 0;
            for (;;) {
                char *end;
                if (socketmap) {
                    char *colon = memchr(c->buf + pos, ':', c->used - pos);
                    if (!colon) break;
                    size_t stop = (size_t)(colon - c->buf) + 1 + (size_t)strtol(c->buf + pos, NULL, 10) + 1;
                    if (stop > c->used) break;
                    pos = stop;
                } else {
                    end = memchr(c->buf + pos, '\n', c->used - pos);
                    if (!end) break;
                    pos = (size_t)(end - c->buf) + 1;
                }
                if (out_len + reply_len <= sizeof out) { memcpy(out + out_len, reply, reply_len); out_len += reply_len; }
            }
            memmove(c->buf, c->buf + pos, c->used - pos);
            c->used -= pos;
            if (out_len && write(c->fd, out, out_len) < 0) { close(c->fd); free(c); }
        }
    }
}
