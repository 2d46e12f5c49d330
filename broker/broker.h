/*
 * broker.h - the broker's internal model, shared by the files of broker/.
 *
 * One `broker` owns one event loop and everything that loop serves: its
 * listeners, connections, sessions, subscription tree, retained store and
 * counters. There are no globals, so several brokers (one per core) can share
 * a process later.
 *
 * Ownership:
 *  - broker owns listeners, conns (list `conns`) and sessions (map by id).
 *  - A conn points to its session while attached; a session points back to
 *    its conn (NULL while the client is offline).
 *  - A conn is never freed inside one of its own callbacks: conn_close() marks
 *    it closing and the loop's prepare hook reaps it (see server.c).
 */
#ifndef GATEMQ_BROKER_H
#define GATEMQ_BROKER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/tls.h"
#include "broker/config.h"
#include "broker/msg.h"
#include "broker/retain.h"
#include "broker/strmap.h"
#include "broker/topictree.h"
#include "mqtt.h"

typedef struct broker broker;

/* Size classes of pooled write buffers: 1 KiB, 2 KiB, ... 64 KiB. */
#define GMQ_WPOOL_CLASSES 7
typedef struct conn conn;
typedef struct session session;
typedef struct listener listener;

/* ---- transport seam ---------------------------------------------------- */

/* Results of transport recv/send besides a byte count (> 0) or EOF (0). */
enum { GMQ_IO_ERROR = -1, GMQ_IO_WANT_READ = -2, GMQ_IO_WANT_WRITE = -3 };

/* How a connection moves bytes: plain TCP today, TLS next. recv/send return
 * bytes moved (> 0), 0 on orderly EOF (recv only), or a GMQ_IO_* code. */
typedef struct transport_ops {
    const char *name;
    ptrdiff_t (*recv)(conn *c, uint8_t *buf, size_t len);
    ptrdiff_t (*send)(conn *c, const uint8_t *buf, size_t len);
    /* Bytes already received and decrypted but not yet returned by recv
     * (the socket will not signal them). NULL: never. */
    bool (*pending)(conn *c);
    void (*free)(conn *c); /* releases c->tp_ctx; the fd is closed by the caller */
} transport_ops;

extern const transport_ops gmq_tcp_transport;

/* ---- listeners --------------------------------------------------------- */

struct listener {
    broker *b;
    const gmq_listener_cfg *cfg;
    int fd;
    ev_io io;
    tls_server *tls;      /* NULL: plain TCP; replaced on reload */
    tls_tickets *tickets; /* session ticket keys, for the listener's life */
};

/* ---- sessions ---------------------------------------------------------- */

/* One subscription of a session, kept so it can be removed from the tree
 * when the session ends (and, later, persisted). */
typedef struct sub {
    char *filter;
    uint8_t qos;
} session_sub;

/* An outgoing QoS 1/2 message awaiting its acknowledgement. */
enum { OUT_WAIT_PUBACK, OUT_WAIT_PUBREC, OUT_WAIT_PUBCOMP };
typedef struct outmsg {
    gmq_msg *msg; /* NULL once PUBREC arrived: only PUBREL/PUBCOMP remain */
    uint64_t seq; /* delivery number within the session (store key) */
    uint16_t packet_id;
    uint8_t qos;
    uint8_t state;
    bool retain; /* RETAIN flag of the PUBLISH we send */
} outmsg;

/* A message waiting for room in the in-flight window (or for the client). */
typedef struct queued {
    gmq_msg *msg;
    uint64_t seq;
    uint8_t qos;
    bool retain;
} queued;

/* Who a session belongs to, for namespaces and access rules. */
enum principal_kind {
    PRINCIPAL_UNKNOWN = 0, /* restored from the store, not reconnected yet */
    PRINCIPAL_ANONYMOUS,
    PRINCIPAL_USER,
    PRINCIPAL_DEVICE,
};

struct session {
    broker *b;
    /* Sessions of different companies never meet: the key is
     * "<company>/<client id>" for a company's client and "/<client id>"
     * otherwise (company names contain no '/', and none is empty). */
    char *key;
    const char *client_id;     /* the client's own id, inside key */
    uint16_t topic_prefix_len; /* "<company>/" leads every internal topic; 0: none */
    uint8_t kind;              /* enum principal_kind */
    char *username;            /* a user's name; NULL otherwise */
    char *company;             /* the company (copy of the key's prefix); NULL: none */
    unsigned acl_gen;          /* every subscription was allowed by rules of this generation */
    bool clean;
    bool anonymous;
    bool counted; /* persistent: included in the session caps' counts */
    conn *c; /* NULL while offline */
    /* A persistent session without its client: since when (Unix ms), and
     * its place in b->offline, oldest first, for session_expiry. */
    int64_t offline_since;
    bool offline_listed;
    session *offline_prev, *offline_next;

    session_sub *subs;
    size_t nsubs, capsubs;
    /* Filter -> position in subs plus one: a SUBSCRIBE of many filters must
     * not cost a scan of every existing subscription per filter. */
    strmap subidx;

    outmsg *inflight; /* in send order */
    size_t ninflight, capinflight;

    queued *queue; /* ring buffer */
    size_t qhead, qlen, qcap;
    size_t qbytes;

    uint16_t *rx_qos2; /* QoS 2 packet ids received, PUBREL not yet */
    size_t nrx_qos2, caprx_qos2;

    uint16_t next_id;
    uint64_t next_seq; /* numbers deliveries, for the store */

    /* Scratch for routing one message: fold overlapping subscriptions. */
    uint64_t match_gen;
    uint8_t match_qos;
    session *match_next;
};

/* ---- connections ------------------------------------------------------- */

/* NEW: before CONNECT (TLS handshake included); AUTH: CONNECT received,
 * password check running on a worker; ACTIVE: CONNACK 0 sent. */
enum conn_state { CONN_NEW, CONN_AUTH, CONN_ACTIVE, CONN_CLOSING };

/* What a CONNECT asked for, kept while its password is checked. */
typedef struct connect_req {
    char *client_id;
    char *username; /* NULL: none */
    bool clean;
    uint16_t keepalive;
    gmq_msg *will;
} connect_req;

typedef struct auth_job auth_job;

struct conn {
    broker *b;
    listener *l;
    int fd;
    enum conn_state state;
    const transport_ops *tp;
    void *tp_ctx;
    ev_io rio, wio;
    ev_timer timer; /* connect timeout, then keep alive */
    ev_tstamp last_rx;
    uint16_t keepalive;

    uint8_t *rbuf; /* partial packet carried between reads; NULL when none */
    size_t rlen, rcap;
    uint8_t *wbuf; /* bytes not yet written; NULL when none */
    size_t woff, wlen, wcap;
    bool flush_pending; /* on b->flush list */
    uint8_t wclass;     /* size class of the output the last buffer held (conn.c) */

    session *s;
    tls_identity *identity; /* device identity from its certificate, or NULL */
    connect_req *pending;   /* while state is CONN_AUTH */
    auth_job *auth;         /* the running password check, or NULL */
    struct aclcache *pubcache; /* topics the ACL lately let it publish to (aclcache.h) */
    bool read_wants_write;  /* the transport needs writability to read on */
    bool tls_done;          /* TLS handshake completed */
    struct hs_job *hs;      /* on a handshake thread (handshake.h): hands off */
    const char *hs_close;   /* conn_close asked while away: the reason */
    /* Acknowledgements held until the store commits what they vouch for,
     * in the order the packets they answer arrived [MQTT-4.6.0-2..4]. */
    struct pending_ack *acks;
    size_t nacks, capacks, ackhead;
    bool ack_waiting;       /* on b->ack_waiters */
    conn *ack_prev, *ack_next;
    gmq_msg *will;       /* this connection's will, NULL: none */
    bool send_will;      /* publish the will when reaped (abnormal close) */
    bool counted;        /* included in stats.clients_connected */
    bool close_after_flush;
    /* Input is not read while this much output waits: a client that sends
     * requests (PINGREQ, QoS 1 PUBLISH, SUBSCRIBE...) but never reads the
     * answers must not grow the broker (conn.c). */
    bool input_paused;
    /* Input is not read while the store's queue of uncommitted writes is
     * over store_queue_limit and this client added to it (persist.c). */
    bool store_paused;
    conn *store_paused_prev, *store_paused_next; /* b->store_paused, while store_paused */
    char peer[64];

    conn *prev, *next;  /* b->conns */
    conn *flush_next;   /* b->flush list */
    conn *closing_next; /* b->closing list */
};

/* ---- counters ---------------------------------------------------------- */

typedef struct broker_stats {
    uint64_t msgs_received, msgs_sent;
    uint64_t bytes_received, bytes_sent;
    uint64_t msgs_dropped;
    uint64_t msgs_denied;
    uint64_t connections_refused;
    uint64_t tls_handshakes_failed;
    uint64_t auth_failures;
    uint64_t lockouts;
    uint64_t store_pauses; /* connections paused for the store's queue */
    uint64_t sessions_refused; /* CONNACK 3: a session cap was reached */
    uint64_t sessions_expired; /* discarded by session_expiry */
    unsigned clients_connected;
    unsigned conns_open;
} broker_stats;

/* Sessions by key (see struct session). */
typedef strmap session_map;

struct broker {
    struct ev_loop *loop;
    const gmq_config *cfg;
    listener *listeners;
    size_t nlisteners;

    conn *conns;
    conn *flush;
    conn *flush_last; /* the tail of flush while it is not empty */
    /* Drained write buffers kept for reuse, by size class (conn.c). */
    void *wpool[GMQ_WPOOL_CLASSES];
    size_t wpool_bytes;
    /* The message router_publish is delivering to more than one session,
     * encoded once per variant and copied for each (session.c). */
    struct pub_encoding {
        const gmq_msg *m; /* NULL: not routing to several sessions */
        bool valid;       /* buf holds m encoded with the fields below */
        bool dup, retain;
        uint8_t qos;
        uint16_t prefix;  /* topic_prefix_len the topic was cut by */
        size_t len;       /* bytes in buf */
        uint8_t *buf;
        size_t cap;
    } enc;
    conn *closing;
    session_map sessions;
    /* Persistent sessions, for the caps: in all, and per namespace
     * (company name, "" for none) -> struct session_count (session.c). */
    size_t persistent_sessions;
    strmap company_sessions;
    session *offline_head, *offline_tail; /* by offline_since */
    ev_timer expiry_timer;

    topictree *subs;
    retain_store *retained;
    broker_stats stats;
    uint64_t match_gen;
    uint64_t next_msg_id;
    uint64_t next_auto_id;
    ev_tstamp started;

    int spare_fd;             /* held to free one descriptor when out of them */
    ev_tstamp last_emfile_log;
    uint8_t *scratch; /* read buffer shared by every conn of this loop */
    size_t scratch_len;

    ev_prepare prepare;
    ev_idle kick; /* one poll without blocking (server.c on_prepare) */
    ev_timer sys_timer;
    bool stopping;

    tls_rng *rng;              /* NULL until a TLS listener needs it */
    struct worker_pool *workers;
    struct hs_pool *handshakes;    /* NULL: handshakes run on the loop */
    struct passwd_file *passwords; /* NULL: no password logins */
    struct lockout *lock_users;
    struct lockout *lock_addrs;
    bool reloading, reload_again;
    unsigned reload_count;

    struct store *store; /* NULL: nothing survives a restart */
    struct acl *acl;     /* rules in force; NULL: none (see access.h) */
    unsigned acl_gen;    /* bumped each time rules are swapped in */
    bool loading;        /* restoring from the store: do not write back */
    conn *ack_waiters;   /* conns with acknowledgements waiting for a commit */
    conn *store_paused;     /* conns paused for the store's queue (persist.c) */
    ev_tstamp store_warned; /* last warning that clients were paused for the store */

    strmap devices;              /* device_state by "<company>/<device>" (bridge.c) */
    struct outbox *outbox;       /* telemetry drain; NULL: no sink */
    uint64_t tele_points, tele_bad, notifications;
};

/* server.c */
broker *broker_new(struct ev_loop *loop, const gmq_config *cfg);
/* Load TLS material, the password file, start worker threads. */
int broker_prepare(broker *b);
/* Open the listening sockets. */
int broker_listen(broker *b);
/* Build a listener's TLS material from its configuration (any thread). */
int broker_load_tls(broker *b, const gmq_listener_cfg *lc, tls_tickets *tickets,
                    tls_server **out, char *err, size_t errlen);
/* reload.c: reload certificates, CRLs and the password file (SIGHUP). */
void broker_reload(broker *b);
void broker_shutdown(broker *b);
void broker_free(broker *b);

/* conn.c */
conn *conn_new(broker *b, listener *l, int fd, const struct sockaddr *sa, socklen_t salen);
void conn_close(conn *c, const char *reason);
void conn_reap(conn *c);
void conn_resume_input(conn *c);
void conn_restart_connect_timer(conn *c);
/* The source address of c without the port, for lockout by address. */
const char *conn_address(const conn *c, char *buf, size_t len);
void conn_flush(conn *c);
/* Reserve n bytes at the end of the write buffer (NULL on no memory); the
 * caller writes them and calls conn_commit. */
uint8_t *conn_reserve(conn *c, size_t n);
void conn_commit(conn *c, size_t n);
/* Queue PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK; on no memory c is
 * closed and -1 returned. */
int conn_send_packet_id(conn *c, enum mqtt_type type, uint16_t id);
size_t conn_pending_bytes(const conn *c);
/* Frees the pool of spare write buffers (broker_free). */
void conn_wpool_free(broker *b);

/* session.c */
/* Write the session key of a client id into out; -1 if it does not fit. */
int session_make_key(char *out, size_t cap, const char *company, const char *id, size_t idlen);
/* A new session for key (see struct session); NULL on no memory or a
 * malformed key. Not yet in the map. */
session *session_new(broker *b, const char *key, size_t keylen);
/* Ends a session: removes its subscriptions from the tree, drops its
 * messages, takes it out of the map and frees it. */
void session_destroy(session *s);
/* Ends a session for good: also deletes what the store keeps of it. */
void session_discard(session *s);
/* Count s, a persistent session just put in the map, against the session
 * caps (max_sessions, max_sessions_per_company). Returns 0, or -1 on no
 * memory with s not counted. session_destroy takes it off the count. */
int session_track(session *s);
/* Would one more persistent session in company's namespace (NULL: none)
 * exceed a cap? Then true, with the cap named in why. */
bool session_cap_reached(const broker *b, const char *company, char *why, size_t len);
/* The client of persistent session s went away (now, or at since_ms, Unix
 * ms, for a restored one), or came back: the offline list that
 * session_expiry sweeps. The time is stored. */
void session_went_offline(session *s);
void session_offline_since(session *s, int64_t since_ms);
void session_came_online(session *s);
/* Order the offline list after sessions were restored in key order. */
void session_sort_offline(broker *b);
/* Discard at most max sessions offline for session_expiry or longer at
 * now_ms; returns how many. */
size_t session_expire(broker *b, int64_t now_ms, size_t max);
/* Start the periodic expiry sweep (no-op when session_expiry is 0). */
void session_expiry_start(broker *b);
session *session_map_get(const session_map *m, const char *id, size_t len);
int session_map_put(session_map *m, session *s);
void session_map_del(session_map *m, session *s);
void session_map_free(session_map *m);
int session_subscribe(session *s, const char *filter, size_t flen, uint8_t qos);
bool session_unsubscribe(session *s, const char *filter, size_t flen);
void session_deliver(session *s, gmq_msg *m, uint8_t qos, bool retain);
void session_resume(session *s);
void session_pump(session *s);
int session_ack(session *s, uint8_t type, uint16_t packet_id);
bool session_rx_qos2_has(const session *s, uint16_t id);
/* Restore one stored delivery (m NULL only for STORE_WAIT_PUBCOMP). */
int session_restore_delivery(session *s, gmq_msg *m, uint64_t seq, uint8_t qos, bool retain,
                             uint16_t packet_id, int state);
int session_rx_qos2_add(session *s, uint16_t id);
void session_rx_qos2_del(session *s, uint16_t id);

/* router.c */
/* Route m to every matching session; a message with retain set first
 * replaces the topic's retained message (in the store too). Returns 0, or
 * -1 (logged, counted in msgs_dropped) when there was no memory to retain
 * m: then it was not routed either. A subscriber's full queue only drops
 * (and counts) its own copy. */
int router_publish(broker *b, gmq_msg *m);
void router_send_retained(broker *b, session *s, const char *filter, size_t flen,
                          uint8_t granted);

/* sys.c */
void sys_start(broker *b);
void sys_publish(broker *b);

#endif
