// The SSE benchmark's load: N subscribers on one topic, and a publisher.
// One single-threaded epoll loop per process, non-blocking sockets, 127.0.0.1 only.
// Build: gcc -O2 -o /tmp/tw_sse_fanout bench/sse_fanout/fanout.c (scripts/bench_sse.sh does)
//
//   fanout sub --port P [--topic T] [-n N] [--inflight K] [--sources S]
//              [--last-event-id K] [--seconds S] [--report SECS] [--batch-us U]
//     Opens N connections to GET /events?topic=T, at most K (64) connecting at
//     once so the server's listen backlog never overflows; source addresses
//     rotate over 127.0.0.1..127.0.0.S (4). Decodes the chunked body and counts
//     the `\n\n`-terminated blocks that have an `id:` line; per connection it
//     keeps the last id and counts gaps (ids skipped) and duplicates (an id not
//     above the last one). A subscriber is open once its 200 header is in.
//     Once all are open it polls at most every U (1000) microseconds (0: at once).
//   fanout pub --port P [--topic T] [--rate R] [--seconds S] [--conns C] [--size B]
//     POST /publish?topic=T with a B-byte (64) one-line body over C (1) keep-alive
//     connections, one request in flight on each: R requests/s in all on a fixed
//     schedule (behind it, it sends as soon as a connection is free), or with
//     --rate 0 back to back (each connection sends again as soon as its answer
//     is in). Stops after S seconds (0: until signalled).
//
// Output: JSON lines on stdout, each with the counters so far (subscribers: open,
// events, gaps, dups, closed, errors, bytes, reads, polls; publisher: published,
// errors, last_id, latency) and this process's CPU seconds (getrusage): when all N subscribers are open ("all_open"), every
// --report seconds ("tick"), on SIGUSR1 ("signal") and at the end ("final",
// after S seconds or on SIGTERM/SIGINT).
//
// Epoll is level-triggered: one read() per ready socket per wakeup into a shared
// 64 KiB buffer (edge-triggered would need a second read to see EAGAIN), and a
// connection's parse state is a few words, so a delivered event costs the client
// about one read and a memchr.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

// SIGUSR1 asks for a report, SIGTERM/SIGINT for the end; they come in through a
// signalfd in the epoll set, so a busy loop sees them at once.
static int want_report, want_stop, sigfd;
#define SIG_TAG UINT32_MAX

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

// Options shared by both modes.
static int port, nsubs = 1000, inflight_max = 64, sources = 4, report_every, conns = 1, size = 64;
static int batch_us = 1000;
static double seconds, rate;
static const char *topic = "bench";
static long long resume_from = -1;

static void usage(void) {
  fprintf(stderr,
          "usage: fanout sub --port P [--topic T] [-n N] [--inflight K] [--sources S]\n"
          "                  [--last-event-id K] [--seconds S] [--report SECS] [--batch-us U]\n"
          "       fanout pub --port P [--topic T] [--rate R] [--seconds S] [--conns C] [--size B]\n");
  exit(2);
}

static void parse_args(int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--port")) port = atoi(v);
    else if (!strcmp(a, "--topic")) topic = v;
    else if (!strcmp(a, "-n")) nsubs = atoi(v);
    else if (!strcmp(a, "--inflight")) inflight_max = atoi(v);
    else if (!strcmp(a, "--sources")) sources = atoi(v);
    else if (!strcmp(a, "--last-event-id")) resume_from = atoll(v);
    else if (!strcmp(a, "--seconds")) seconds = atof(v);
    else if (!strcmp(a, "--report")) report_every = atoi(v);
    else if (!strcmp(a, "--batch-us")) batch_us = atoi(v);
    else if (!strcmp(a, "--rate")) rate = atof(v);
    else if (!strcmp(a, "--conns")) conns = atoi(v);
    else if (!strcmp(a, "--size")) size = atoi(v);
    else usage();
  }
  if (port <= 0 || nsubs <= 0 || inflight_max <= 0 || sources <= 0 || conns <= 0 || size < 0)
    usage();
}

static void setup_signals(void) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigfd < 0) die("signalfd");
}

static void watch_signals(int ep) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = SIG_TAG};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sigfd, &ev)) die("epoll_ctl");
}

static void read_signals(void) {
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGUSR1) want_report = 1;
    else want_stop = 1;
  }
}

static void raise_nofile(int need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl)) die("getrlimit");
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl)) die("setrlimit");
  if (rl.rlim_cur < (rlim_t)need) {
    fprintf(stderr, "RLIMIT_NOFILE hard limit %llu is below the %d needed\n",
            (unsigned long long)rl.rlim_cur, need);
    exit(1);
  }
}

// Milliseconds epoll may wait until `deadline` (capped at one second).
static int wait_ms(double deadline) {
  double d = deadline - now();
  if (d <= 0) return 0;
  if (d > 1) return 1000;
  return (int)(d * 1000) + 1;
}

static char rbuf[65536];

// ---------------------------------------------------------------- subscribers

enum { S_IDLE, S_CONNECTING, S_HEADERS, S_BODY, S_DONE };
enum { C_SIZE, C_EXT, C_DATA, C_CRLF, C_END };                 // chunked decoder
enum { L_START, L_I, L_ID, L_IDSP, L_IDVAL, L_SKIP, L_BADID };  // SSE line scanner

struct sub {
  int fd;
  uint8_t state, attempts, chunked, cst, lst, block_has_id, have_last;
  uint32_t chunk_left;
  uint64_t idv, block_id, last_id;
  char *hdr;  // the response header while it comes in
  uint32_t hlen;
};

static struct sub *subs;
static int ep, nopen, ninflight, next_new, *retry, nretry, all_open_said;
static uint64_t events, gaps, dups, closed_n, errors, bad_status, bytes_in, reads, polls;
static double t_start;

/* Reports when SIGUSR1 asked for it, and every --report seconds. */
static void report_if_due(void (*report)(const char *), double *next_tick) {
  if (want_report) {
    want_report = 0;
    report("signal");
  }
  if (now() >= *next_tick) {
    report("tick");
    *next_tick += report_every;
  }
}

static void sub_report(const char *why) {
  printf("{\"mode\":\"sub\",\"event\":\"%s\",\"t\":%.3f,\"want\":%d,\"open\":%d,"
         "\"events\":%llu,\"gaps\":%llu,\"dups\":%llu,\"closed\":%llu,\"errors\":%llu,"
         "\"bad_status\":%llu,\"bytes\":%llu,\"reads\":%llu,\"polls\":%llu,\"cpu_s\":%.3f}\n",
         why, now() - t_start, nsubs, nopen, (unsigned long long)events,
         (unsigned long long)gaps, (unsigned long long)dups, (unsigned long long)closed_n,
         (unsigned long long)errors, (unsigned long long)bad_status,
         (unsigned long long)bytes_in, (unsigned long long)reads, (unsigned long long)polls,
         cpu_s());
  fflush(stdout);
}

// A blank line ends a block: an event if it had an id.
static inline void dispatch(struct sub *c) {
  if (c->block_has_id) {
    uint64_t id = c->block_id;
    events++;
    if (c->have_last) {
      if (id <= c->last_id) dups++;
      else if (id > c->last_id + 1) gaps += id - c->last_id - 1;
    }
    if (!c->have_last || id > c->last_id) c->last_id = id;
    c->have_last = 1;
    c->block_has_id = 0;
  }
}

// The decoded event stream: only `id:` lines are looked at; any other line is
// skipped with memchr.
static void sse_bytes(struct sub *c, const char *p, size_t n) {
  const char *end = p + n;
  while (p < end) {
    char ch;
    switch (c->lst) {
    case L_SKIP:
    case L_BADID: {
      const char *nl = memchr(p, '\n', end - p);
      if (!nl) return;
      p = nl + 1;
      c->lst = L_START;
      break;
    }
    case L_START:
      ch = *p++;
      if (ch == '\n') dispatch(c);
      else if (ch != '\r') c->lst = ch == 'i' ? L_I : L_SKIP;
      break;
    case L_I:
      ch = *p++;
      c->lst = ch == 'd' ? L_ID : ch == '\n' ? L_START : L_SKIP;
      break;
    case L_ID:
      ch = *p++;
      if (ch == ':') {
        c->idv = 0;
        c->lst = L_IDSP;
      } else {
        c->lst = ch == '\n' ? L_START : L_SKIP;
      }
      break;
    case L_IDSP:
      if (*p == ' ') p++;
      c->lst = L_IDVAL;
      break;
    case L_IDVAL:
      ch = *p++;
      if (ch >= '0' && ch <= '9') {
        c->idv = c->idv * 10 + (uint64_t)(ch - '0');
      } else if (ch == '\n') {
        c->block_has_id = 1;
        c->block_id = c->idv;
        c->lst = L_START;
      } else if (ch != '\r') {
        c->lst = L_BADID;  // not a number: the block does not count
      }
      break;
    }
  }
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// The response body: chunked framing off, the rest to the SSE scanner.
static void body_bytes(struct sub *c, const char *p, size_t n) {
  if (!c->chunked) {
    sse_bytes(c, p, n);
    return;
  }
  const char *end = p + n;
  while (p < end) {
    switch (c->cst) {
    case C_SIZE: {
      char ch = *p++;
      int v = hexval(ch);
      if (v >= 0) c->chunk_left = c->chunk_left * 16 + (uint32_t)v;
      else if (ch == '\n') c->cst = c->chunk_left ? C_DATA : C_END;
      else c->cst = C_EXT;  // '\r' or a chunk extension
      break;
    }
    case C_EXT: {
      const char *nl = memchr(p, '\n', end - p);
      if (!nl) return;
      p = nl + 1;
      c->cst = c->chunk_left ? C_DATA : C_END;
      break;
    }
    case C_DATA: {
      size_t take = (size_t)(end - p) < c->chunk_left ? (size_t)(end - p) : c->chunk_left;
      sse_bytes(c, p, take);
      p += take;
      c->chunk_left -= (uint32_t)take;
      if (!c->chunk_left) c->cst = C_CRLF;
      break;
    }
    case C_CRLF:
      if (*p++ == '\n') c->cst = C_SIZE;
      break;
    case C_END:  // the last chunk: the stream is over
      return;
    }
  }
}

static void sub_close(int i, int failed) {
  struct sub *c = &subs[i];
  if (c->fd >= 0) close(c->fd);  // also takes it out of the epoll set
  c->fd = -1;
  free(c->hdr);
  c->hdr = NULL;
  if (c->state == S_CONNECTING || c->state == S_HEADERS) ninflight--;
  if (c->state == S_BODY) {
    nopen--;
    closed_n++;
  }
  c->state = S_DONE;
  if (failed) {
    errors++;
    if (c->attempts < 3) {
      c->state = S_IDLE;
      retry[nretry++] = i;
    }
  }
}

static char sub_req[512];
static int sub_req_len;

static void sub_open(int i) {
  struct sub *c = &subs[i];
  c->attempts++;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  struct sockaddr_in src = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % sources))};
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(0x7f000001u)};
  c->fd = fd;
  c->state = S_CONNECTING;
  ninflight++;
  if (bind(fd, (struct sockaddr *)&src, sizeof src) ||
      (connect(fd, (struct sockaddr *)&dst, sizeof dst) && errno != EINPROGRESS)) {
    sub_close(i, 1);
    return;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl");
}

static void sub_writable(int i) {
  struct sub *c = &subs[i];
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err || write(c->fd, sub_req, sub_req_len) != sub_req_len) {
    sub_close(i, 1);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev)) die("epoll_ctl");
  c->state = S_HEADERS;
}

// The response header is in: 200 or not, chunked or not.
static void sub_header_done(int i, size_t hlen) {
  struct sub *c = &subs[i];
  char *h = c->hdr;
  h[hlen - 1] = 0;
  if (strncmp(h, "HTTP/1.1 200", 12) != 0 && strncmp(h, "HTTP/1.0 200", 12) != 0) {
    if (!bad_status++) fprintf(stderr, "fanout: not 200: %.*s\n", (int)strcspn(h, "\r\n"), h);
    sub_close(i, 0);
    errors++;
    return;
  }
  for (char *line = strstr(h, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    if (!strncasecmp(line + 2, "transfer-encoding:", 18)) {
      char *eol = strstr(line + 2, "\r\n");
      size_t l = eol ? (size_t)(eol - line) : strlen(line);
      char save = line[l];
      line[l] = 0;
      c->chunked = strcasestr(line, "chunked") != NULL;
      line[l] = save;
    }
  }
  ninflight--;
  nopen++;
  c->state = S_BODY;
  c->cst = C_SIZE;
  c->lst = L_START;
  if (resume_from >= 0) {
    c->have_last = 1;
    c->last_id = (uint64_t)resume_from;
  }
}

static void sub_readable(int i) {
  struct sub *c = &subs[i];
  ssize_t n = read(c->fd, rbuf, sizeof rbuf);
  reads++;
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    sub_close(i, c->state != S_BODY);
    return;
  }
  bytes_in += (uint64_t)n;
  if (c->state == S_BODY) {
    body_bytes(c, rbuf, (size_t)n);
    return;
  }
  // S_HEADERS: gather the header, then hand what follows it to the body.
  size_t old = c->hlen;
  if (old + (size_t)n > 16384) {
    sub_close(i, 1);
    return;
  }
  c->hdr = realloc(c->hdr, old + (size_t)n + 1);
  if (!c->hdr) die("realloc");
  memcpy(c->hdr + old, rbuf, (size_t)n);
  c->hlen = (uint32_t)(old + (size_t)n);
  c->hdr[c->hlen] = 0;
  char *e = strstr(c->hdr + (old > 3 ? old - 3 : 0), "\r\n\r\n");
  if (!e) return;
  size_t hlen = (size_t)(e - c->hdr) + 4;
  size_t rest = c->hlen - hlen;
  memcpy(rbuf, c->hdr + hlen, rest);  // n >= rest, so this fits
  sub_header_done(i, hlen);
  if (c->state == S_BODY) {
    free(c->hdr);
    c->hdr = NULL;
    c->hlen = 0;
    body_bytes(c, rbuf, rest);
  }
}

static int run_sub(void) {
  raise_nofile(nsubs + 32);
  subs = calloc((size_t)nsubs, sizeof *subs);
  retry = calloc((size_t)nsubs, sizeof *retry);
  if (!subs || !retry) die("calloc");
  for (int i = 0; i < nsubs; i++) subs[i].fd = -1;
  sub_req_len = snprintf(sub_req, sizeof sub_req,
                         "GET /events?topic=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         "Accept: text/event-stream\r\n",
                         topic, port);
  if (resume_from >= 0)
    sub_req_len += snprintf(sub_req + sub_req_len, sizeof sub_req - (size_t)sub_req_len,
                            "Last-Event-ID: %lld\r\n", resume_from);
  sub_req_len += snprintf(sub_req + sub_req_len, sizeof sub_req - (size_t)sub_req_len, "\r\n");
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  watch_signals(ep);
  static struct epoll_event evs[4096];
  t_start = now();
  double end = seconds > 0 ? t_start + seconds : 1e300;
  double next_tick = report_every > 0 ? t_start + report_every : 1e300;
  double last_wait = 0;
  while (!want_stop && now() < end) {
    while (ninflight < inflight_max && (nretry || next_new < nsubs))
      sub_open(nretry ? retry[--nretry] : next_new++);
    if (!all_open_said && nopen == nsubs) {
      all_open_said = 1;
      sub_report("all_open");
    }
    double deadline = end < next_tick ? end : next_tick;
    // Once all are open, wake at most every --batch-us: the events of many
    // connections then come in one epoll_wait, and the server does not pay for
    // waking this process up for each of them.
    if (batch_us > 0 && all_open_said) {
      double pause = last_wait + batch_us * 1e-6 - now();
      if (pause > 0) {
        struct timespec ts = {0, (long)(pause * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    int n = epoll_wait(ep, evs, 4096, wait_ms(deadline));
    last_wait = now();
    polls++;
    if (n < 0) {
      if (errno != EINTR) die("epoll_wait");
      n = 0;
    }
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u32 == SIG_TAG) {
        read_signals();
        continue;
      }
      int i = (int)evs[k].data.u32;
      if (subs[i].state == S_CONNECTING) sub_writable(i);
      else if (subs[i].state == S_HEADERS || subs[i].state == S_BODY) sub_readable(i);
    }
    report_if_due(sub_report, &next_tick);
  }
  sub_report("final");
  return 0;
}

// ------------------------------------------------------------------ publisher

struct pubc {
  int fd, busy;
  double sent_at;
  size_t rlen;
  char rb[8192];
};

static struct pubc *pubs;
static uint64_t published, pub_errors, sent, last_id;
static double lat_sum, lat_max;
static char *pub_req;
static size_t pub_req_len;

static void pub_report(const char *why) {
  double t = now() - t_start;
  printf("{\"mode\":\"pub\",\"event\":\"%s\",\"t\":%.3f,\"published\":%llu,\"errors\":%llu,"
         "\"last_id\":%llu,\"per_s\":%.1f,\"lat_avg_us\":%.1f,\"lat_max_us\":%.1f,\"cpu_s\":%.3f}\n",
         why, t, (unsigned long long)published, (unsigned long long)pub_errors,
         (unsigned long long)last_id, t > 0 ? published / t : 0.0,
         published ? lat_sum / published * 1e6 : 0.0, lat_max * 1e6, cpu_s());
  fflush(stdout);
}

static int pub_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(0x7f000001u)};
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst)) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void pub_send(struct pubc *c) {
  if (write(c->fd, pub_req, pub_req_len) != (ssize_t)pub_req_len) die("publish write");
  c->busy = 1;
  c->sent_at = now();
  sent++;
}

// Takes the complete responses off the front of c->rb; returns -1 on EOF/error.
static int pub_readable(struct pubc *c) {
  ssize_t n = read(c->fd, c->rb + c->rlen, sizeof c->rb - 1 - c->rlen);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  if (n <= 0) return -1;
  c->rlen += (size_t)n;
  c->rb[c->rlen] = 0;
  for (;;) {
    char *e = strstr(c->rb, "\r\n\r\n");
    if (!e) break;
    char *body = e + 4;
    size_t total;
    const char *id_at = body;
    char *cl = NULL;
    int chunked = 0;
    for (char *l = strstr(c->rb, "\r\n"); l && l < e; l = strstr(l + 2, "\r\n")) {
      if (!strncasecmp(l + 2, "content-length:", 15)) cl = l + 17;
      else if (!strncasecmp(l + 2, "transfer-encoding:", 18)) chunked = 1;
    }
    if (chunked) {  // a short body: "N\r\n<id>\r\n0\r\n\r\n"
      char *fin = strstr(e + 2, "\r\n0\r\n\r\n");
      if (!fin) break;
      total = (size_t)(fin - c->rb) + 7;
      char *first = strstr(body, "\r\n");
      id_at = first ? first + 2 : body;
    } else {
      total = (size_t)(body - c->rb) + (cl ? strtoul(cl, NULL, 10) : 0);
      if (c->rlen < total) break;
    }
    int ok = !strncmp(c->rb + 9, "200", 3);
    if (ok) {
      published++;
      last_id = strtoull(id_at, NULL, 10);
    } else {
      if (!pub_errors++) fprintf(stderr, "fanout: publish not 200: %.*s\n", (int)strcspn(c->rb, "\r\n"), c->rb);
    }
    double lat = now() - c->sent_at;
    lat_sum += lat;
    if (lat > lat_max) lat_max = lat;
    c->busy = 0;
    memmove(c->rb, c->rb + total, c->rlen - total + 1);
    c->rlen -= total;
  }
  if (c->rlen >= sizeof c->rb - 1) return -1;
  return 0;
}

static int run_pub(void) {
  raise_nofile(conns + 32);
  pubs = calloc((size_t)conns, sizeof *pubs);
  if (!pubs) die("calloc");
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "POST /publish?topic=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n",
                    topic, port, size);
  pub_req_len = (size_t)hl + (size_t)size;
  pub_req = malloc(pub_req_len);
  if (!pub_req) die("malloc");
  memcpy(pub_req, head, (size_t)hl);
  for (int k = 0; k < size; k++) pub_req[hl + k] = "event-payload-0123456789abcdefghijklmnopqrstuvwxyz"[k % 50];
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  watch_signals(ep);
  for (int k = 0; k < conns; k++) {
    pubs[k].fd = pub_connect();
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pubs[k].fd, &ev)) die("epoll_ctl");
  }
  struct epoll_event evs[64];
  t_start = now();
  double end = seconds > 0 ? t_start + seconds : 1e300;
  double next_tick = report_every > 0 ? t_start + report_every : 1e300;
  double drain_until = 0;
  for (;;) {
    double t = now();
    int sending = !want_stop && t < end;
    if (!sending) {  // let the answers in flight come in (at most a second)
      int busy = 0;
      for (int k = 0; k < conns; k++) busy |= pubs[k].busy;
      if (!drain_until) drain_until = t + 1;
      if (!busy || t >= drain_until) break;
    }
    double deadline = sending ? (end < next_tick ? end : next_tick) : drain_until;
    for (int k = 0; sending && k < conns; k++) {
      if (pubs[k].busy) continue;
      if (rate > 0) {
        double due = t_start + (double)sent / rate;
        if (t < due) {
          if (due < deadline) deadline = due;
          break;
        }
      }
      pub_send(&pubs[k]);
    }
    int n = epoll_wait(ep, evs, 64, wait_ms(deadline));
    if (n < 0) {
      if (errno != EINTR) die("epoll_wait");
      n = 0;
    }
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u32 == SIG_TAG) {
        read_signals();
        continue;
      }
      if (pub_readable(&pubs[evs[k].data.u32])) {
        fprintf(stderr, "fanout: publish connection closed\n");
        pub_report("final");
        return 1;
      }
    }
    report_if_due(pub_report, &next_tick);
  }
  pub_report("final");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  parse_args(argc, argv);
  setup_signals();
  if (!strcmp(argv[1], "sub")) return run_sub();
  if (!strcmp(argv[1], "pub")) return run_pub();
  usage();
}
