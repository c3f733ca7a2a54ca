/*
 * loadgen: closed-loop load for socketmap / tcp_table servers.
 *
 * Written in C so that the load generator is never the bottleneck of the
 * benchmark (a Python client tops out below the daemons it measures; see
 * the "limit" column the bench prints from an echo server).  N connections,
 * each sends PIPELINE requests, waits for all replies, records the batch
 * latency, and repeats until the deadline.
 *
 * usage: loadgen HOST PORT s|t CONNECTIONS PIPELINE SECONDS KEYSFILE MAPNAME
 * prints: {"requests": N, "rps": X, "p50_ms": X, "p99_ms": X, "errors": N}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_BYTES 65536

struct conn {
    int fd;
    int outstanding;      /* replies still expected for the current batch */
    double started;       /* when the current batch was sent */
    size_t next_key;
    char buf[BUF_BYTES];
    size_t used;
};

static char **requests;
static size_t *request_lens;
static size_t n_requests;
static int socketmap;
static int pipeline;
static double *latencies;
static size_t n_latencies, cap_latencies;
static long long done_requests, errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void load_keys(const char *path, const char *map_name) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    char line[1024];
    size_t cap = 1024;
    requests = malloc(cap * sizeof *requests);
    request_lens = malloc(cap * sizeof *request_lens);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        if (n_requests == cap) {
            cap *= 2;
            requests = realloc(requests, cap * sizeof *requests);
            request_lens = realloc(request_lens, cap * sizeof *request_lens);
        }
        char *req = malloc(2100);
        int len;
        if (socketmap) {
            char payload[2048];
            int plen = snprintf(payload, sizeof payload, "%s %s", map_name, line);
            len = snprintf(req, 2100, "%d:%s,", plen, payload);
        } else {
            len = snprintf(req, 2100, "get %s\n", line);
        }
        requests[n_requests] = req;
        request_lens[n_requests++] = (size_t)len;
    }
    fclose(f);
    if (!n_requests) { fprintf(stderr, "no keys\n"); exit(2); }
}

static int send_batch(struct conn *c) {
    char out[BUF_BYTES];
    size_t len = 0;
    for (int i = 0; i < pipeline; i++) {
        size_t k = c->next_key++ % n_requests;
        memcpy(out + len, requests[k], request_lens[k]);
        len += request_lens[k];
    }
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = write(c->fd, out + sent, len - sent);
        if (n < 0) {
            if (errno == EAGAIN) continue;  /* tiny batches: the socket buffer never stays full */
            return -1;
        }
        sent += (size_t)n;
    }
    c->outstanding = pipeline;
    c->started = now();
    return 0;
}

/* Consume complete replies from the buffer; returns how many. */
static int parse_replies(struct conn *c) {
    int count = 0;
    size_t pos = 0;
    for (;;) {
        if (socketmap) {
            char *colon = memchr(c->buf + pos, ':', c->used - pos);
            if (!colon) break;
            long length = strtol(c->buf + pos, NULL, 10);
            size_t end = (size_t)(colon - c->buf) + 1 + (size_t)length + 1;
            if (end > c->used) break;
            pos = end;
        } else {
            char *nl = memchr(c->buf + pos, '\n', c->used - pos);
            if (!nl) break;
            pos = (size_t)(nl - c->buf) + 1;
        }
        count++;
    }
    memmove(c->buf, c->buf + pos, c->used - pos);
    c->used -= pos;
    return count;
}

static void record(double latency) {
    if (n_latencies == cap_latencies) {
        cap_latencies = cap_latencies ? cap_latencies * 2 : 1 << 16;
        latencies = realloc(latencies, cap_latencies * sizeof *latencies);
    }
    latencies[n_latencies++] = latency;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT s|t CONNECTIONS PIPELINE SECONDS KEYSFILE MAPNAME\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    socketmap = argv[3][0] == 's';
    int n_conns = atoi(argv[4]);
    pipeline = atoi(argv[5]);
    double seconds = atof(argv[6]);
    load_keys(argv[7], argv[8]);

    int ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)n_conns, sizeof *conns);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    for (int i = 0; i < n_conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        conns[i].next_key = (size_t)i * 7919;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double start = now(), deadline = start + seconds;
    for (int i = 0; i < n_conns; i++)
        if (send_batch(&conns[i]) < 0) { perror("write"); return 1; }
    struct epoll_event events[256];
    int active = n_conns;
    while (active > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        double t = now();
        if (n == 0 && t > deadline + 5) break;  /* a server that stopped answering */
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->used, BUF_BYTES - c->used);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                active--;
                continue;
            }
            c->used += (size_t)got;
            c->outstanding -= parse_replies(c);
            if (c->outstanding <= 0) {
                double finished = now();
                record((finished - c->started) / pipeline);
                done_requests += pipeline;
                if (finished >= deadline) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    active--;
                } else if (send_batch(c) < 0) {
                    errors++;
                    active--;
                }
            }
        }
    }
    double elapsed = now() - start;
    qsort(latencies, n_latencies, sizeof *latencies, cmp_double);
    double p50 = n_latencies ? latencies[n_latencies / 2] : 0;
    double p99 = n_latencies ? latencies[(size_t)(n_latencies * 0.99)] : 0;
    printf("{\"requests\": %lld, \"rps\": %.1f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, \"errors\": %lld}\n",
           done_requests, done_requests / elapsed, p50 * 1000, p99 * 1000, errors);
    return 0;
}
