/*
 * The floor of benchmarks/forward.py: a bare UDP forwarder with no crypto.
 *
 * recvmmsg batches -> look up the destination by source port -> sendmmsg,
 * sending straight out of the receive buffers (no copy). It wakes the same way
 * the SFU does (poll on the socket, then drain it in batches of 64), so the
 * difference in CPU per packet between the two is what the SFU adds: SRTP,
 * routing, rewriting, statistics and its event loop.
 *
 *   bare_forwarder MAX_SECONDS SRC_PORT:DST_PORT [SRC_PORT:DST_PORT ...]
 *
 * Binds 127.0.0.1 on a free port and prints "PORT <n>". Every mapping is
 * 127.0.0.1:SRC_PORT -> 127.0.0.1:DST_PORT (loopback only, by construction).
 * Commands on stdin, one per line: "stats" prints
 * "STATS <received> <forwarded> <unmapped> <send_failed> <batches>"; EOF or
 * "quit" exits. It also exits after MAX_SECONDS and when its parent dies.
 *
 * Built by benchmarks/forward.py: gcc -O2 -o bare_forwarder bare_forwarder.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 2048
#define MAX_BATCHES 16 /* per wake-up, as the SFU's Router.drain */
#define SOCKET_BUFFER (4 * 1024 * 1024)

static int32_t route[65536]; /* source port -> destination port, or -1 */

int main(int argc, char **argv)
{
    static uint8_t buf[BATCH][SLOT];
    struct mmsghdr rx[BATCH], tx[BATCH];
    struct iovec rx_iov[BATCH], tx_iov[BATCH];
    struct sockaddr_in rx_addr[BATCH], tx_addr[BATCH];
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    uint64_t received = 0, forwarded = 0, unmapped = 0, send_failed = 0, batches = 0;
    char line[256];
    size_t line_len = 0;
    int fd, i, size = SOCKET_BUFFER;
    uint32_t loopback = htonl(INADDR_LOOPBACK);

    if (argc < 3) {
        fprintf(stderr, "usage: %s MAX_SECONDS SRC_PORT:DST_PORT [...]\n", argv[0]);
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm((unsigned)atoi(argv[1])); /* SIGALRM's default action ends the process */
    for (i = 0; i < 65536; i++)
        route[i] = -1;
    for (i = 2; i < argc; i++) {
        unsigned src, dst;
        if (sscanf(argv[i], "%u:%u", &src, &dst) != 2 || src > 65535 || dst > 65535) {
            fprintf(stderr, "bad mapping %s\n", argv[i]);
            return 2;
        }
        route[src] = (int32_t)dst;
    }

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    memset(&me, 0, sizeof(me));
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = loopback;
    if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0 ||
        getsockname(fd, (struct sockaddr *)&me, &len) < 0) {
        perror("bind");
        return 1;
    }
    printf("PORT %u\n", ntohs(me.sin_port));
    fflush(stdout);

    memset(rx, 0, sizeof(rx));
    memset(tx, 0, sizeof(tx));
    for (i = 0; i < BATCH; i++) {
        rx_iov[i].iov_base = buf[i];
        rx_iov[i].iov_len = SLOT;
        rx[i].msg_hdr.msg_iov = &rx_iov[i];
        rx[i].msg_hdr.msg_iovlen = 1;
        rx[i].msg_hdr.msg_name = &rx_addr[i];
        tx[i].msg_hdr.msg_iov = &tx_iov[i];
        tx[i].msg_hdr.msg_iovlen = 1;
        tx[i].msg_hdr.msg_name = &tx_addr[i];
        tx[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        tx_addr[i].sin_family = AF_INET;
        tx_addr[i].sin_addr.s_addr = loopback;
    }

    for (;;) {
        struct pollfd fds[2] = {{fd, POLLIN, 0}, {0, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            int b;
            for (b = 0; b < MAX_BATCHES; b++) {
                int n, ntx = 0, done = 0;
                for (i = 0; i < BATCH; i++)
                    rx[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
                n = recvmmsg(fd, rx, BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0)
                    break;
                batches++;
                received += (uint64_t)n;
                for (i = 0; i < n; i++) {
                    int32_t dst = rx_addr[i].sin_addr.s_addr == loopback
                                      ? route[ntohs(rx_addr[i].sin_port)]
                                      : -1;
                    if (dst < 0) {
                        unmapped++;
                        continue;
                    }
                    tx_iov[ntx].iov_base = buf[i];
                    tx_iov[ntx].iov_len = rx[i].msg_len;
                    tx_addr[ntx].sin_port = htons((uint16_t)dst);
                    ntx++;
                }
                while (done < ntx) {
                    int r = sendmmsg(fd, &tx[done], (unsigned)(ntx - done), MSG_DONTWAIT);
                    if (r < 0) {
                        if (errno == EINTR)
                            continue;
                        send_failed += (uint64_t)(ntx - done);
                        break;
                    }
                    done += r;
                }
                forwarded += (uint64_t)done;
                if (n < BATCH)
                    break;
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(0, line + line_len, sizeof(line) - 1 - line_len);
            char *nl;
            if (r <= 0)
                return 0;
            line_len += (size_t)r;
            line[line_len] = 0;
            while ((nl = strchr(line, '\n')) != NULL) {
                *nl = 0;
                if (strcmp(line, "stats") == 0) {
                    printf("STATS %llu %llu %llu %llu %llu\n", (unsigned long long)received,
                           (unsigned long long)forwarded, (unsigned long long)unmapped,
                           (unsigned long long)send_failed, (unsigned long long)batches);
                    fflush(stdout);
                } else if (strcmp(line, "quit") == 0) {
                    return 0;
                }
                line_len -= (size_t)(nl + 1 - line);
                memmove(line, nl + 1, line_len + 1);
            }
            if (line_len >= sizeof(line) - 1)
                line_len = 0; /* an overlong line: forget it */
        }
    }
}
